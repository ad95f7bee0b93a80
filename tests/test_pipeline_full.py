"""The whole DVC pipeline on a tiny corpus: dvc repro, experiments, metrics and plots diffs."""

from __future__ import annotations

import dataclasses
import json
import subprocess

import numpy as np
import pytest
import yaml
from conftest import make_pipeline_repo, project_params, run_command, tiny_synthetic_config

from gestural.evaluation.associations import ASSOCIATION_FILE, load_associations

pytestmark = pytest.mark.slow

PARAMS = project_params()
# The effective kernels: win_size frames convolved with a response of response_frames.
KERNEL_FRAMES = PARAMS["win_size"] + max(PARAMS["train"]["response_frames"] - 1, 0)
STAGES = ("check", "download", "extract", "nema2npy", "normalize", "train", "evaluate", "plot")


run = run_command
TRAIN_LOG: dict = {}


def flatten(tree: dict, prefix: str = "") -> dict:
    flat = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


@pytest.fixture(scope="module")
def pipeline_repo(tmp_path_factory):
    """A git + DVC copy of the project with a tiny corpus and a short training, after `dvc repro`."""
    tmp_path = tmp_path_factory.mktemp("pipeline")

    def configure(params):
        params["synthetic"].update(dataclasses.asdict(tiny_synthetic_config(utterances_per_speaker=10)))
        params.update(num_gestures=6, segment_len=200, epochs=3, device="cpu")
        params["train"].update(hidden=8, threads=1, figure_every=1, steps_per_epoch=5)
        params["evaluate"]["baseline"].update(max_iter=5, transform_iter=5)

    repo, env = make_pipeline_repo(tmp_path, configure)
    TRAIN_LOG["text"] = run(["dvc", "repro"], repo, env)
    run(["git", "add", "-A"], repo, env)
    run(["git", "commit", "-q", "-m", "results"], repo, env)
    return repo, env


def test_repro_runs_all_stages_and_a_second_repro_runs_nothing(pipeline_repo):
    repo, env = pipeline_repo
    lock = yaml.safe_load((repo / "dvc.lock").read_text())
    assert set(lock["stages"]) == set(STAGES)
    gestures = np.load(repo / "models/gestures.npy")
    assert gestures.shape == (6, 12, KERNEL_FRAMES) and gestures.dtype == np.float32
    evaluation = json.loads((repo / "metrics/eval.json").read_text())
    assert {"neural", "classical", "raw_channels"} <= set(evaluation)
    assert 0.0 <= evaluation["neural"]["kernel_cosine"] <= 1.0
    assert 0.5 <= evaluation["raw_channels"]["activation_auc"] <= 1.0
    # The gesture-phone table speaks of the gestures the evaluation counts in use.
    associations = load_associations(repo / "evaluation" / ASSOCIATION_FILE)
    details = json.loads((repo / "evaluation/details.json").read_text())
    assert len(associations.gestures) == details["neural"]["num_gestures_in_use"]
    # At most ~30 metric columns in `dvc exp show` (the exported gestural score's figures among them):
    # timings, per-channel values and the rest of the gestural-score figures are elsewhere.
    columns = sum(len(flatten(json.loads((repo / name).read_text())))
                  for name in ("metrics/data.json", "metrics/train.json", "metrics/eval.json"))
    assert columns <= 31, columns
    assert (repo / "reports/timing/train.json").is_file() and (repo / "evaluation/details.json").is_file()
    # The example utterances come with a TextGrid and an events table.
    assert list((repo / "evaluation").rglob("*.TextGrid")) and list((repo / "evaluation").rglob("*events*.csv"))
    # The train log has one line per epoch, not a flood of progress-bar carriage returns.
    assert "\r" not in TRAIN_LOG["text"]
    assert json.loads((repo / "reports/timing/train.json").read_text())["epochs"] == 3
    assert sorted(p.name for p in (repo / "plots/figures").glob("*.png"))
    assert list((repo / "runs").iterdir()), "no TensorBoard run was written"
    assert json.loads(run(["dvc", "status", "--json"], repo, env)) == {}
    assert "Running stage" not in run(["dvc", "repro"], repo, env)


def test_a_fresh_clone_after_dvc_pull_is_up_to_date(pipeline_repo, tmp_path):
    """The checkpoint is no DVC output and every uncached output is in git, so `dvc pull` into
    a new clone gives a clean `dvc status` and `dvc repro` runs nothing. (Before the experiment
    tests, which change the workspace.)"""
    repo, env = pipeline_repo
    remote = tmp_path / "dvc-remote"
    run(["dvc", "remote", "add", "-d", "store", str(remote)], repo, env)
    run(["dvc", "push", "--all-commits"], repo, env)  # the committed outputs, whatever the workspace holds
    clone = tmp_path / "clone"
    run(["git", "clone", "-q", str(repo), str(clone)], tmp_path, env)
    run(["dvc", "remote", "add", "-d", "--local", "store", str(remote)], clone, env)
    run(["dvc", "pull"], clone, env)
    assert not (clone / "checkpoints").exists()
    assert json.loads(run(["dvc", "status", "--json"], clone, env)) == {}
    assert "Running stage" not in run(["dvc", "repro"], clone, env)
    run(["dvc", "remote", "remove", "store"], repo, env)


def outputs(repo) -> dict[str, bytes]:
    """The model, the metrics and the evaluation: what a refused run must leave as they were."""
    files = [repo / "models/model.pt", repo / "models/gestures.npy", *sorted((repo / "metrics").iterdir()),
             *sorted(path for path in (repo / "evaluation").rglob("*") if path.is_file())]
    return {str(path.relative_to(repo)): path.read_bytes() for path in files}


def refused(command: list[str], repo, env) -> str:
    result = subprocess.run(command, cwd=repo, env=env, capture_output=True, text=True)
    assert result.returncode != 0, f"{' '.join(command)} was not refused:\n{result.stdout}\n{result.stderr}"
    return result.stdout + result.stderr


def set_num_gestures_to_zero(repo):
    path = repo / "params.yaml"
    text = path.read_text()
    assert "\nnum_gestures: 6\n" in text
    path.write_text(text.replace("\nnum_gestures: 6\n", "\nnum_gestures: 0\n"))


@pytest.mark.parametrize("how", ["dvc exp run -S", "dvc repro after an edit"])
def test_a_refused_param_leaves_every_output_as_it_was(pipeline_repo, how):
    """DVC removes a stage's outputs before it runs the stage's command: a param only the train
    stage refused used to cost the workspace its model and metrics. The check stage runs first
    and refuses it, before DVC touches anything else."""
    repo, env = pipeline_repo
    before = outputs(repo)
    if how == "dvc exp run -S":
        log = refused(["dvc", "exp", "run", "-S", "num_gestures=0"], repo, env)
    else:
        set_num_gestures_to_zero(repo)
        log = refused(["dvc", "repro"], repo, env)
    assert "params.yaml num_gestures: must be an integer >= 1 and <= 4096 (got 0)" in log
    assert "Traceback" not in log and "Running stage 'download'" not in log and "Running stage 'train'" not in log
    assert outputs(repo) == before
    # Put back, the next repro restores the check's output (from DVC's run cache, or by running
    # it: DVC removed it before the refusal) and runs nothing else.
    run(["git", "checkout", "--", "params.yaml"], repo, env)
    log = run(["dvc", "repro"], repo, env)
    assert not [stage for stage in STAGES if f"Running stage '{stage}'" in log and stage != "check"], log
    assert outputs(repo) == before
    assert json.loads(run(["dvc", "status", "--json"], repo, env)) == {}


def test_experiment_with_another_num_gestures_retrains_and_diffs(pipeline_repo):
    repo, env = pipeline_repo
    out = run(["dvc", "exp", "run", "-S", "num_gestures=4", "--name", "k4"], repo, env)
    assert "Running stage 'train'" in out and "Running stage 'download'" not in out
    assert np.load(repo / "models/gestures.npy").shape == (4, 12, KERNEL_FRAMES)
    shown = json.loads(run(["dvc", "exp", "show", "--json"], repo, env))
    assert "k4" in json.dumps(shown)
    diff = json.loads(run(["dvc", "metrics", "diff", "--json"], repo, env))
    assert "metrics/eval.json" in diff
    run(["dvc", "plots", "diff", "HEAD", "k4", "-o", str(repo.parent / "plots-html")], repo, env)
    assert (repo.parent / "plots-html" / "index.html").is_file()
    # The TensorBoard run is named after the experiment.
    assert (repo / "runs" / "k4").is_dir()


def test_another_data_split_retrains_from_scratch(pipeline_repo):
    """A changed data param must never resume the old training (its checkpoint fingerprint
    covers the data): the model differs."""
    repo, env = pipeline_repo
    before = (repo / "models/model.pt").read_bytes()
    out = run(["dvc", "exp", "run", "-S", "data.seed=1", "--name", "seed1"], repo, env)
    assert "Running stage 'normalize'" in out and "Running stage 'train'" in out
    assert "resuming" not in out
    assert (repo / "models/model.pt").read_bytes() != before
    assert not (repo / "checkpoints" / "train.pt").exists()
