"""Hard values in params.yaml (and --dpi): each is refused with ONE line naming the key and the
real problem, exit status 1, nothing written; and the check stage refuses them all before DVC
removes any stage's outputs (the DVC side is in tests/test_pipeline_full.py)."""

from __future__ import annotations

import math
import re

import pytest
import torch
import yaml
from conftest import PROJECT_ROOT, load_stage, project_params, the_one_line

from gestural.cli.main import main as gestural
from gestural.core.params import DataParams, ParamsError, load_params
from gestural.core.stage import run_stage
from gestural.evaluation.held_out import EvaluateParams
from gestural.figures.summary import PlotParams
from gestural.synthetic.generator import synthetic_config
from gestural.training.config import TrainConfig

NAMES = "of letters, digits, '_' and '-'"


def section(name, key, value):
    return lambda params: params[name].update({key: value})


def write_params(root, change=lambda params: None, text=lambda text: text):
    """The project's params.yaml with ``change`` applied to the mapping, then ``text`` to the YAML."""
    params = project_params()
    change(params)
    (root / "params.yaml").write_text(text(yaml.safe_dump(params, sort_keys=False)))


def insert_after(line: str, extra: str):
    """Repeat a key in the YAML text: ``extra`` goes on its own line after ``line``."""
    def edit(text: str) -> str:
        assert f"\n{line}\n" in text, line
        return text.replace(f"\n{line}\n", f"\n{line}\n{extra}\n", 1)
    return edit


def run(stage: str, root, monkeypatch) -> int:
    monkeypatch.chdir(root)
    return run_stage(stage, load_stage(stage).main)


# (id, change to the mapping, edit of the text, stages that read the key, message after "<stage>: ")
HARD_PARAMS = [
    ("plot-dpi-huge", section("plot", "dpi", 10_000_000), None, ("plot",),
     "params.yaml plot.dpi: must be an integer >= 30 and <= 1200 (got 10000000)"),
    ("utterances-not-whole", section("synthetic", "utterances_per_speaker", 2.5), None, ("download",),
     "params.yaml synthetic.utterances_per_speaker: must be an integer >= 2 and <= 100000 (got 2.5)"),
    ("utterances-a-word", section("synthetic", "utterances_per_speaker", "many"), None, ("download",),
     "params.yaml synthetic.utterances_per_speaker: must be an integer >= 2 and <= 100000 (got 'many')"),
    ("max-seconds-infinite", section("synthetic", "max_seconds", math.inf), None, ("download",),
     "params.yaml synthetic.max_seconds: must be a finite number in [0.2, 60] (got inf)"),
    ("snr-nan", section("synthetic", "snr_db", math.nan), None, ("download",),
     "params.yaml synthetic.snr_db: must be a finite number in [-40, 200] (got nan)"),
    ("speakers-a-string", section("synthetic", "speakers", "fsyn0"), None, ("download",),
     f"params.yaml synthetic.speakers: must be a list of distinct speaker names {NAMES}; for one, write [fsyn0] "
     "(got 'fsyn0')"),
    ("speakers-a-path", section("synthetic", "speakers", ["../evil"]), None, ("download",),
     f"params.yaml synthetic.speakers: must be a list of distinct speaker names {NAMES} (got ['../evil'])"),
    ("data-speakers-a-path", section("data", "speakers", ["fsyn0", "../evil"]), None, ("download", "nema2npy"),
     f"params.yaml data.speakers: must be 'all' or a list of distinct speaker names {NAMES} "
     "(got ['fsyn0', '../evil'])"),
    ("data-speaker-a-path", section("data", "speakers", "../evil"), None, ("download", "nema2npy"),
     f"params.yaml data.speakers: must be 'all' or a list of distinct speaker names {NAMES} (got '../evil')"),
    ("missing-wav-true", section("synthetic", "missing_wav", True), None, ("download",),
     "params.yaml synthetic.missing_wav: must be an integer >= 0 (got True)"),
    ("duplicate-top-level-key", None, insert_after("num_gestures: 20", "num_gestures: 40"), ("download", "train"),
     r"params.yaml num_gestures: duplicate key \(lines \d+ and \d+\); keep one, YAML would silently take the last"),
    ("duplicate-nested-key", None, insert_after("    noise_mm: 0.3", "    noise_mm: 3.0"), ("download",),
     r"params.yaml synthetic.articulatory.noise_mm: duplicate key \(lines \d+ and \d+\); keep one, .*"),
]


@pytest.mark.parametrize("stage", ["check", "owner"])
@pytest.mark.parametrize("change, edit, owners, expected", [row[1:] for row in HARD_PARAMS],
                         ids=[row[0] for row in HARD_PARAMS])
def test_a_hard_param_is_refused_with_one_line(tmp_path, monkeypatch, capsys, stage, change, edit, owners,
                                               expected):
    write_params(tmp_path, change or (lambda params: None), edit or (lambda text: text))
    for name in ("check",) if stage == "check" else owners:
        assert run(name, tmp_path, monkeypatch) == 1
        err = capsys.readouterr().err
        the_one_line(err)
        assert re.fullmatch(rf"{name}: {expected if edit else re.escape(expected)}\n", err), err
    assert sorted(path.name for path in tmp_path.iterdir()) == ["params.yaml"]  # nothing written


def test_the_duplicate_key_message_gives_both_lines(tmp_path, monkeypatch, capsys):
    write_params(tmp_path, text=insert_after("num_gestures: 20", "num_gestures: 40"))
    assert run("check", tmp_path, monkeypatch) == 1
    lines = (tmp_path / "params.yaml").read_text().splitlines()
    first, second = (lines.index(line) + 1 for line in ("num_gestures: 20", "num_gestures: 40"))
    assert f"(lines {first} and {second})" in capsys.readouterr().err


@pytest.mark.parametrize("dpi", ["100000", "10000000", "29", "-1"])
def test_factorize_refuses_a_dpi_out_of_range_before_reading_anything(tmp_path, capsys, dpi):
    status = gestural(["factorize", "--model", str(tmp_path / "none.pt"), "--ema", str(tmp_path / "none.ema"),
                       "--out", str(tmp_path / "out"), "--dpi", dpi])
    assert status == 2
    assert the_one_line(capsys.readouterr().err) == f"gestural factorize: error: --dpi must be in 30..1200 (got {dpi})"
    assert not (tmp_path / "out").exists()


# --------------------------------------------------------------------------
# Every number of params.yaml refuses NaN and infinities, every count 2.5 and true
# --------------------------------------------------------------------------


def numeric_leaves(tree: dict, where: tuple = ()) -> list[tuple[tuple, str]]:
    """(path to the value, the key a message names) of every number; a list's items name the list."""
    leaves = []
    for key, value in tree.items():
        path = (*where, key)
        if isinstance(value, dict):
            leaves += numeric_leaves(value, path)
        elif isinstance(value, list):
            leaves += [((*path, i), ".".join(path)) for i, item in enumerate(value)
                       if isinstance(item, (int, float)) and not isinstance(item, bool)]
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            leaves.append((path, ".".join(path)))
    return leaves


def value_at(tree, path):
    for step in path:
        tree = tree[step]
    return tree


def set_at(path, value):
    def change(params):
        value_at(params, path[:-1])[path[-1]] = value
    return change


LEAVES = numeric_leaves(project_params())
COUNTS = [(path, key) for path, key in LEAVES if type(value_at(project_params(), path)) is int]


def test_the_sweep_sees_every_section():
    assert {key.split(".")[0] for _, key in LEAVES} >= {"data", "synthetic", "train", "evaluate", "plot", "seed"}
    assert len(COUNTS) >= 30 and len(LEAVES) - len(COUNTS) >= 30


@pytest.mark.parametrize("value", [math.nan, math.inf], ids=["nan", "inf"])
@pytest.mark.parametrize("path, key", LEAVES, ids=[key for _, key in LEAVES])
def test_no_number_of_params_yaml_may_be_nan_or_infinite(tmp_path, monkeypatch, capsys, path, key, value):
    write_params(tmp_path, set_at(path, value))
    assert run("check", tmp_path, monkeypatch) == 1
    assert the_one_line(capsys.readouterr().err).startswith(f"check: params.yaml {key}: must be ")


@pytest.mark.parametrize("value", [2.5, True], ids=["2.5", "true"])
@pytest.mark.parametrize("path, key", COUNTS, ids=[key for _, key in COUNTS])
def test_no_count_of_params_yaml_may_be_a_fraction_or_a_boolean(tmp_path, monkeypatch, capsys, path, key, value):
    write_params(tmp_path, set_at(path, value))
    assert run("check", tmp_path, monkeypatch) == 1
    line = the_one_line(capsys.readouterr().err)
    assert line.startswith(f"check: params.yaml {key}: must be ") and "integer" in line, line


# --------------------------------------------------------------------------
# The check stage: what it checks beyond the sections, what it writes, where it sits in dvc.yaml
# --------------------------------------------------------------------------


def top(key, value):
    return lambda params: params.update({key: value})


def without(name, key):
    return lambda params: params[name].pop(key)


# What a later stage refuses (by the validator of its own sections), which the check must refuse
# first with the very same message: (change, the validator of the stage that reads the key).
LATER_REFUSALS = [
    (top("num_gestures", 0), "train"), (top("num_gestures", True), "train"), (top("seed", -1), "train"),
    (top("win_size", 600), "train"), (top("device", 0), "train"), (top("num_gesturez", 40), "train"),
    (section("train", "lr", "abc"), "train"), (section("train", "lr", math.inf), "train"),
    (section("train", "hidden", 1.5), "train"), (section("train", "run_name", 123), "train"),
    (without("train", "lr"), "train"), (section("train", "kernels", "round"), "train"),
    (section("evaluate", "batch_size", 0), "evaluate"), (section("evaluate", "score_tolerance", -1), "evaluate"),
    (lambda params: params["evaluate"]["baseline"].update(max_iter=0), "evaluate"),
    (section("plot", "max_gestures", 0), "plot"), (section("plot", "colour", "red"), "plot"),
    (section("data", "test_fraction", 1.5), "data"), (section("data", "nan_policy", "fill"), "data"),
    (lambda params: params["data"]["extract"].update(max_members=0), "data"),
    (lambda params: params["synthetic"]["articulatory"].update(noise_mm=10), "synthetic"),
]
VALIDATORS = {"train": TrainConfig.from_params, "evaluate": EvaluateParams.from_params,
              "plot": PlotParams.from_params, "data": DataParams.from_params, "synthetic": synthetic_config}


@pytest.mark.parametrize("change, owner", LATER_REFUSALS)
def test_the_check_refuses_what_a_later_stage_would_with_its_message(tmp_path, monkeypatch, capsys, change, owner):
    write_params(tmp_path, change)
    with pytest.raises(ParamsError) as caught:
        VALIDATORS[owner](load_params(tmp_path / "params.yaml"))
    assert run("check", tmp_path, monkeypatch) == 1
    assert the_one_line(capsys.readouterr().err) == f"check: {caught.value}"
    assert not (tmp_path / "data").exists()


def test_a_missing_model_to_continue_from_is_refused_by_the_check(tmp_path, monkeypatch, capsys):
    write_params(tmp_path, section("train", "init", "models/old.pt"))
    assert run("check", tmp_path, monkeypatch) == 1
    assert the_one_line(capsys.readouterr().err) == "check: params.yaml train.init: no such file (got 'models/old.pt')"


def test_an_absent_gpu_is_refused_by_the_check(tmp_path, monkeypatch, capsys):
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    write_params(tmp_path, lambda params: params.update(device="cuda"))
    assert run("check", tmp_path, monkeypatch) == 1
    assert "params.yaml device: 'cuda' asked for, but torch sees no CUDA GPU" in capsys.readouterr().err


def test_the_check_writes_the_same_bytes_for_any_valid_params(tmp_path, monkeypatch, capsys):
    outputs = []
    for change in (lambda params: None, lambda params: params.update(num_gestures=30),
                   section("plot", "dpi", 300), section("data", "source", "url")):
        write_params(tmp_path, change)
        assert run("check", tmp_path, monkeypatch) == 0
        outputs.append((tmp_path / "data" / "params_checked.json").read_bytes())
    assert len(set(outputs)) == 1
    assert "check: params.yaml is valid" in capsys.readouterr().out


def test_the_check_runs_first_in_dvc_yaml_on_the_whole_params_file():
    stages = yaml.safe_load((PROJECT_ROOT / "dvc.yaml").read_text())["stages"]

    def paths(entries):
        return {entry if isinstance(entry, str) else next(iter(entry)) for entry in entries or []}

    producer = {out: name for name, stage in stages.items() for out in paths(stage.get("outs"))}
    check = stages["check"]
    assert check["params"] == [{"params.yaml": None}]  # every key, whichever stage reads it

    def made_by(dep):  # the stage whose output is dep or a directory holding it
        return next((stage for out, stage in producer.items() if dep == out or dep.startswith(f"{out}/")), None)

    def upstream(name, seen=()):
        direct = {made_by(dep) for dep in paths(stages[name].get("deps"))} - {None}
        return direct.union(*(upstream(parent, (*seen, name)) for parent in direct - set(seen)))

    assert not {made_by(dep) for dep in paths(check["deps"])} - {None}, "the check must wait for no stage"
    for name in set(stages) - {"check"}:
        assert "check" in upstream(name), f"dvc.yaml {name}: could run (and remove its outputs) before the check"

