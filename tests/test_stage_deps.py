"""Each DVC stage lists as deps exactly the package modules its script imports, directly or
through other modules (function-level imports included): an edit to any of them reruns the
stage, and an edit to a module it never runs does not."""

from __future__ import annotations

import re

import pytest
import yaml
from imports import ROOT, import_closure, imported_modules, module_path

STAGES = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
# What a stage imports only to draw its TensorBoard figures: runs/ is no DVC output, so an edit
# there must not rerun the stage.
RUN_ONLY = {"train": "src/gestural/figures/"}


def closure_paths(script) -> set[str]:
    return {str(module_path(name).relative_to(ROOT)) for name in import_closure(script)}


def needed_deps(name: str) -> set[str]:
    """The stage's import closure, without what it reaches only through its run-only imports."""
    skip = RUN_ONLY.get(name)
    todo, seen = list(imported_modules(ROOT / stage_script(STAGES[name]))), set()
    while todo:
        module = todo.pop()
        path = str(module_path(module).relative_to(ROOT))
        if module in seen or (skip and path.startswith(skip)):
            continue
        seen.add(module)
        todo.extend(imported_modules(module_path(module)) - seen)
    return {str(module_path(module).relative_to(ROOT)) for module in seen}


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
    needed = needed_deps(name)
    assert not needed - listed, f"dvc.yaml {name}: missing deps {sorted(needed - listed)}"
    assert not listed - needed, f"dvc.yaml {name}: deps it never imports {sorted(listed - needed)}"


def test_the_closure_follows_function_level_and_package_relative_imports(tmp_path):
    script = tmp_path / "stage.py"
    script.write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import gestural.classical.cnmf\n"
                      "def main():\n    from gestural.core.stage import run_stage\n"
                      "    from gestural.data import ema\n")
    closure = closure_paths(script)
    assert "src/gestural/classical/cnmf.py" not in closure  # annotations only
    assert {"src/gestural/core/stage.py", "src/gestural/data/ema.py"} <= closure
    # what stage.py imports inside the package comes along
    assert {str(module_path(name).relative_to(ROOT)) for name in imported_modules(module_path("core.stage"))} <= closure


def test_the_training_and_evaluation_stages_do_not_depend_on_how_figures_look():
    for name in ("train", "evaluate"):
        figures = sorted(path for path in needed_deps(name) if path.startswith("src/gestural/figures/"))
        assert not figures, f"{name} would rerun after a figure edit: it depends on {figures}"
    # nor, through the figures, on the evaluation layer above it
    assert not any(path.startswith("src/gestural/evaluation/") for path in needed_deps("train"))
    # the train stage draws TensorBoard figures, and only from the stage script
    assert any(path.startswith("src/gestural/figures/") for path in closure_paths(ROOT / "stages/train.py"))
    assert not any(path.startswith("src/gestural/figures/") for path in closure_paths(module_path("training.trainer")))


def test_the_train_stage_params_are_every_training_setting_but_the_run_only_knobs():
    from dataclasses import fields

    from gestural.training.config import RUN_ONLY, TOP_LEVEL, TrainConfig

    expected = {key if key in TOP_LEVEL else f"train.{key}" for key in (f.name for f in fields(TrainConfig))
                if key not in RUN_ONLY}
    assert set(STAGES["train"]["params"]) == expected
