"""Sweeps with DVC's queue, and sharing experiments between clones (git remote + DVC remote).

One tiny pipeline (a few utterances, one epoch) is reproduced up to `evaluate` in a temporary
git + DVC repo; a two-experiment grid is queued with `dvc exp run --queue -S ...`, run by
`dvc queue start`, compared, pushed, and pulled into a second clone. The figures (`plot`) are
left out to keep this quick: the queue runs them as any other stage.
"""

from __future__ import annotations

import json
import re
import sys
import time
from pathlib import Path

import pytest
import yaml
from conftest import make_pipeline_repo, run_command, tiny_pipeline_params

pytestmark = pytest.mark.slow

QUEUE_TIMEOUT_S = 300


run = run_command


def experiments(repo: Path, env: dict) -> dict[str, dict]:
    """name -> the experiment entry of `dvc exp show --json` (executor, revs)."""
    shown = json.loads(run(["dvc", "exp", "show", "--json"], repo, env))
    return {entry["name"]: entry for commit in shown for entry in commit.get("experiments") or []}


@pytest.fixture(scope="module")
def sweep_repo(tmp_path_factory):
    """A git + DVC copy of the project, reproduced once on a tiny corpus, with a git remote
    (a bare repository) and a default DVC remote (a local directory)."""
    tmp_path = tmp_path_factory.mktemp("sweeps")

    def configure(params):
        tiny_pipeline_params(params)
        params["plot"].update(dpi=40, max_gestures=4)

    repo, env = make_pipeline_repo(tmp_path, configure)
    origin, store = tmp_path / "origin.git", tmp_path / "dvc-store"
    run(["git", "init", "-q", "--bare", "-b", "main", str(origin)], tmp_path, env)
    for command in (["dvc", "remote", "add", "-d", "store", str(store)],
                    ["git", "remote", "add", "origin", str(origin)],
                    ["git", "add", "-A"], ["git", "commit", "-q", "-m", "remotes"]):
        run(command, repo, env)
    run(["dvc", "repro", "-q", "evaluate"], repo, env)
    run(["git", "add", "-A"], repo, env)
    run(["git", "commit", "-q", "-m", "results"], repo, env)
    run(["git", "push", "-q", "origin", "main"], repo, env)
    # No `dvc queue stop` at the end: with no worker running it leaves a shutdown message in
    # the queue's broker that stops the *next* worker after its first task (DVC 3.67).
    return repo, env


def wait_for_queue(repo: Path, env: dict, names: list[str], timeout: float = QUEUE_TIMEOUT_S) -> None:
    """Wait until the queued experiments ``names`` have finished (their refs exist and
    `dvc exp show` says success); fail early, with the task's log, when one fails."""
    deadline, next_status = time.monotonic() + timeout, 0.0
    while True:
        refs = run(["git", "for-each-ref", "--format=%(refname)", "refs/exps"], repo, env).split()
        if all(any(ref.endswith(f"/{name}") for ref in refs) for name in names):
            states = {n: ((experiments(repo, env).get(n) or {}).get("executor") or {}).get("state") for n in names}
            if all(state == "success" for state in states.values()):
                return
        now = time.monotonic()
        if now >= next_status:  # dvc queue status costs a second of CPU: not every poll
            status = run(["dvc", "queue", "status"], repo, env)
            for name in names:
                if re.search(rf"\b{re.escape(name)}\b.*\bFailed\b", status):
                    pytest.fail(f"{name} failed:\n" + run(["dvc", "queue", "logs", name], repo, env))
            next_status = now + 10
        assert now < deadline, f"queue still busy after {timeout} s:\n{status}"
        time.sleep(1)


@pytest.fixture(scope="module")
def queued_sweep(sweep_repo):
    """Queue a grid of two experiments (num_gestures=3,5) and run it with `dvc queue start`."""
    repo, env = sweep_repo
    out = run(["dvc", "exp", "run", "--queue", "-S", "num_gestures=3,5", "-S", "seed=1", "--name", "grid",
               "evaluate"], repo, env)
    # Comma-separated values are a grid: one experiment per combination, named grid-1, grid-2.
    assert out.count("Queued experiment") == 2, out
    assert "grid-1" in out and "grid-2" in out
    run(["dvc", "queue", "start", "-j", "1"], repo, env)
    wait_for_queue(repo, env, ["grid-1", "grid-2"])
    return repo, env


def test_queued_grid_runs_every_combination_with_its_own_metrics(queued_sweep):
    repo, env = queued_sweep
    shown = experiments(repo, env)
    gestures = {}
    for name in ("grid-1", "grid-2"):
        data = shown[name]["revs"][0]["data"]
        params = data["params"]["params.yaml"]["data"]
        assert params["seed"] == 1
        gestures[name] = params["num_gestures"]
        neural = data["metrics"]["metrics/eval.json"]["data"]["neural"]
        assert 0.0 <= neural["seqnmf_similarity"] <= 1.0
        assert data["outs"]["models/gestures.npy"]["hash"]
    assert sorted(gestures.values()) == [3, 5]
    # Each experiment's own result, not the baseline's (num_gestures=4).
    lock = yaml.safe_load(run(["git", "show", f"{shown['grid-1']['revs'][0]['rev']}:dvc.lock"], repo, env))
    assert lock["stages"]["train"]["params"]["params.yaml"]["num_gestures"] == gestures["grid-1"]
    assert "num_gestures: 4" in (repo / "params.yaml").read_text()  # the workspace is untouched


def test_tensorboard_runs_of_queued_experiments_are_kept_under_their_names(queued_sweep):
    repo, _ = queued_sweep
    assert (repo / "runs" / "grid-1").is_dir() and (repo / "runs" / "grid-2").is_dir()


def test_compare_reads_the_queued_experiments_and_their_kernels(queued_sweep, tmp_path):
    repo, env = queued_sweep
    out = run([sys.executable, "-m", "gestural", "compare", "--repo", str(repo), "--out", str(tmp_path / "cmp")],
              repo, env)
    report = json.loads((tmp_path / "cmp" / "compare.json").read_text())
    assert report["kernel_errors"] == {}
    assert [s["label"] for s in report["settings"]] == ["num_gestures=3", "num_gestures=5"]
    assert report["chosen"] in ("num_gestures=3", "num_gestures=5") and "chose" in out


def test_push_and_pull_bring_an_experiment_and_its_cached_model_to_another_clone(queued_sweep, tmp_path):
    repo, env = queued_sweep
    run(["dvc", "exp", "push", "origin", "grid-1"], repo, env)
    clone = tmp_path / "clone"
    run(["git", "clone", "-q", str(repo.parent / "origin.git"), str(clone)], tmp_path, env)
    assert "grid-1" not in json.dumps(experiments(clone, env))
    run(["dvc", "exp", "pull", "origin", "grid-1"], clone, env)

    shown = experiments(clone, env)
    assert set(shown) == {"grid-1"}
    rev = shown["grid-1"]["revs"][0]["rev"]
    assert shown["grid-1"]["revs"][0]["data"]["metrics"]["metrics/eval.json"]["data"]["neural"]
    # The cached model came across: the clone's own cache holds the object dvc.lock names,
    # byte for byte the one trained in the first repository.
    lock = yaml.safe_load(run(["git", "show", f"{rev}:dvc.lock"], clone, env))
    md5 = next(o["md5"] for o in lock["stages"]["train"]["outs"] if o["path"] == "models/model.pt")
    cached = clone / ".dvc" / "cache" / "files" / "md5" / md5[:2] / md5[2:]
    assert cached.is_file()
    assert cached.read_bytes() == (repo / ".dvc" / "cache" / "files" / "md5" / md5[:2] / md5[2:]).read_bytes()
    run(["dvc", "exp", "apply", "grid-1"], clone, env)
    assert (clone / "models" / "model.pt").read_bytes() == cached.read_bytes()
