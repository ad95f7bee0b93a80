"""The package's import graph, read from the source (no import is run): which gestural
modules a file imports, anywhere in its code, and what running a script can import."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "src" / "gestural"
# Lowest first: a module imports only from its own subpackage or one listed before it.
LAYERS = ("core", "data", "synthetic", "classical", "model", "training", "evaluation", "figures", "cli")


def module_path(name: str) -> Path:
    """src/gestural/<a>/<b>.py for the module name ``a.b`` (relative to the package)."""
    return PACKAGE.joinpath(*name.split(".")).with_suffix(".py")


def module_name(path: Path) -> str | None:
    """``a.b`` for src/gestural/a/b.py; None outside the package."""
    try:
        relative = path.resolve().relative_to(PACKAGE)
    except ValueError:
        return None
    return ".".join(relative.with_suffix("").parts)


def package_modules() -> list[str]:
    """Every module of the package but the ``__init__`` and ``__main__`` files."""
    return sorted(module_name(path) for path in PACKAGE.rglob("*.py")
                  if path.name not in ("__init__.py", "__main__.py"))


def imported_modules(path: Path) -> set[str]:
    """Names (``a.b``) of the gestural modules that ``path`` imports anywhere in its code."""
    tree = ast.parse(path.read_text(), filename=str(path))
    own = module_name(path)
    found = set()
    for node in _runtime_nodes(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name.partition(".")[2] for alias in node.names
                         if alias.name.startswith("gestural."))
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                if own is None:
                    continue
                parts = own.split(".")[:-node.level]
                base = ".".join(parts + ([node.module] if node.module else []))
            elif node.module == "gestural" or (node.module or "").startswith("gestural."):
                base = node.module.partition(".")[2]
            else:
                continue
            # `from gestural.data import ema` names a module; `from gestural.data.ema import X` a name
            for alias in node.names:
                candidate = f"{base}.{alias.name}" if base else alias.name
                found.add(candidate if module_path(candidate).is_file() else base)
    return {name for name in found if name and module_path(name).is_file()}


def _runtime_nodes(tree: ast.AST):
    """Every node but those under ``if TYPE_CHECKING:`` (imports for annotations only)."""
    todo = [tree]
    while todo:
        node = todo.pop()
        yield node
        for child in ast.iter_child_nodes(node):
            test = child.test if isinstance(child, ast.If) else None
            if test is not None and ast.unparse(test) in ("TYPE_CHECKING", "typing.TYPE_CHECKING"):
                todo.extend(child.orelse)
                continue
            todo.append(child)


def import_closure(script: Path) -> set[str]:
    """Module names (``a.b``) that running ``script`` can import."""
    todo, seen = list(imported_modules(script)), set()
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        todo.extend(imported_modules(module_path(name)) - seen)
    return seen


def layer(name: str) -> int:
    """Position of a module's subpackage in :data:`LAYERS`."""
    return LAYERS.index(name.split(".")[0])
