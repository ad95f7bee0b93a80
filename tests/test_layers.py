"""The package's layering: a module imports only from its own subpackage or a lower layer,
there is no import cycle, and each subpackage's ``__init__`` is its description only (so
that importing one module runs no other code)."""

from __future__ import annotations

import ast

import pytest
from imports import LAYERS, PACKAGE, imported_modules, layer, module_path, package_modules

MODULES = package_modules()


def test_every_module_lives_in_a_layer():
    assert {name.split(".")[0] for name in MODULES} == set(LAYERS)
    assert not [path.name for path in PACKAGE.glob("*.py") if path.name not in ("__init__.py", "__main__.py")]


@pytest.mark.parametrize("name", MODULES)
def test_a_module_imports_nothing_from_a_higher_layer(name):
    upward = sorted(other for other in imported_modules(module_path(name)) if layer(other) > layer(name))
    assert not upward, f"{name} ({name.split('.')[0]}) imports from higher layers: {upward}"


def test_there_is_no_import_cycle():
    graph = {name: imported_modules(module_path(name)) - {name} for name in MODULES}
    state: dict[str, str] = {}

    def visit(name, path):
        state[name] = "open"
        for other in sorted(graph[name]):
            if state.get(other) == "open":
                raise AssertionError("import cycle: " + " -> ".join([*path, name, other]))
            if other not in state:
                visit(other, [*path, name])
        state[name] = "done"

    for name in MODULES:
        if name not in state:
            visit(name, [])


@pytest.mark.parametrize("layer_name", LAYERS)
def test_each_subpackage_init_is_a_description_and_nothing_else(layer_name):
    tree = ast.parse((PACKAGE / layer_name / "__init__.py").read_text())
    docstring = ast.get_docstring(tree)
    assert docstring and len(docstring.split()) >= 15, f"{layer_name}/__init__.py: describe the layer"
    assert len(tree.body) == 1, f"{layer_name}/__init__.py runs code: importing one module would run it too"


@pytest.mark.parametrize("name", MODULES)
def test_no_module_is_over_400_lines(name):
    lines = len(module_path(name).read_text().splitlines())
    assert lines <= 420, f"{name}: {lines} lines; split it by what its parts do"


def test_the_layering_check_sees_an_upward_import(tmp_path):
    probe = PACKAGE / "core" / "_probe_upward.py"
    probe.write_text("def f():\n    from gestural.figures.style import save_figure\n")
    try:
        assert "figures.style" in imported_modules(probe)
        assert layer("figures.style") > layer("core._probe_upward")
    finally:
        probe.unlink()
