"""Each DVC stage lists as deps exactly the package modules its script imports, directly or
through other modules (function-level imports included): an edit to any of them reruns the
stage, and an edit to a module it never runs does not."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "src" / "gestural"
STAGES = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]


def imported_modules(path: Path) -> set[str]:
    """Names of the gestural modules that ``path`` imports anywhere in its code."""
    tree = ast.parse(path.read_text(), filename=str(path))
    inside_package = path.parent == PACKAGE
    found = set()
    for node in _runtime_nodes(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name.split(".")[1] for alias in node.names
                         if alias.name.startswith("gestural.") and alias.name.count(".") >= 1)
        elif isinstance(node, ast.ImportFrom):
            if node.level == 1 and inside_package:
                base = node.module
            elif node.level == 0 and node.module and (node.module == "gestural" or node.module.startswith("gestural.")):
                base = node.module.partition(".")[2] or None
            else:
                continue
            if base:
                found.add(base.split(".")[0])
            else:  # from . import plots / from gestural import plots
                found.update(alias.name for alias in node.names)
    return {name for name in found if (PACKAGE / f"{name}.py").is_file()}


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
    """src/gestural/<name>.py paths (relative to the project) that running ``script`` can import."""
    todo, seen = list(imported_modules(script)), set()
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        todo.extend(imported_modules(PACKAGE / f"{name}.py") - seen)
    return {f"src/gestural/{name}.py" for name in seen}


def stage_script(stage: dict) -> str:
    match = re.search(r"python (stages/\w+\.py)", stage["cmd"])
    assert match, f"stage command {stage['cmd']!r} does not run a stages/*.py script"
    return match.group(1)


@pytest.mark.parametrize("name", sorted(STAGES))
def test_each_stage_depends_on_exactly_the_modules_it_imports(name):
    stage = STAGES[name]
    script = stage_script(stage)
    deps = {d if isinstance(d, str) else next(iter(d)) for d in stage.get("deps", [])}
    assert script in deps, f"{name}: {script} is not among its deps"
    listed = {d for d in deps if d.startswith("src/gestural/")}
    needed = import_closure(ROOT / script)
    assert not needed - listed, f"dvc.yaml {name}: missing deps {sorted(needed - listed)}"
    assert not listed - needed, f"dvc.yaml {name}: deps it never imports {sorted(listed - needed)}"


def test_the_closure_follows_function_level_and_package_relative_imports(tmp_path):
    script = tmp_path / "stage.py"
    script.write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import gestural.cnmf\n"
                      "def main():\n    from gestural.stage import run_stage\n")
    closure = import_closure(script)
    assert "src/gestural/cnmf.py" not in closure  # annotations only
    # stage.py imports params (and whatever params imports) only inside the package.
    assert "src/gestural/stage.py" in closure
    assert {f"src/gestural/{name}.py" for name in imported_modules(PACKAGE / "stage.py")} <= closure
