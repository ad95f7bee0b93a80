"""`gestural sweep` on Ray: a grid of tiny trials, each a DVC experiment made in its own clone
of a local bare git remote, with its data pulled from a local DVC remote, pushed back, then
pulled into another clone; on a local Ray instance and on a two-node Ray cluster started on
the loopback address.

The repository is reproduced once, up to `normalize` (the data every trial pulls); the trials
run `train` and `evaluate` on the local instance (`--target evaluate`: the figures are left
out to keep this quick), `train` only on the cluster.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from conftest import make_pipeline_repo, run_command, tiny_pipeline_params

pytestmark = pytest.mark.slow

run = run_command
SWEEP_TIMEOUT_S = 400
LOCAL_GRID = ["-S", "num_gestures=0,3,5", "--seeds", "1"]  # num_gestures=0: refused by the train stage


def gestural(args: list[str], repo: Path, env: dict, timeout: float = SWEEP_TIMEOUT_S) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "gestural", *args], cwd=repo, env=env, capture_output=True,
                          text=True, timeout=timeout)


def experiment_refs(origin: Path, env: dict) -> list[str]:
    """Names of the experiments that the git remote holds."""
    refs = run(["git", "for-each-ref", "--format=%(refname)", "refs/exps"], origin, env).split()
    return sorted(ref.rsplit("/", 1)[1] for ref in refs)


def experiments(repo: Path, env: dict) -> dict[str, dict]:
    """name -> revs[0]["data"] of each experiment that `dvc exp show --json` lists."""
    shown = json.loads(run(["dvc", "exp", "show", "--json"], repo, env))
    return {entry["name"]: entry["revs"][0]["data"] for commit in shown for entry in commit.get("experiments") or []}


@pytest.fixture(scope="module")
def sweep_repo(tmp_path_factory):
    """A git + DVC copy of the project on a tiny corpus, its data stages reproduced and pushed to
    a DVC remote (a local directory), the commit pushed to a git remote (a bare repository)."""
    tmp_path = tmp_path_factory.mktemp("ray-sweep")

    repo, env = make_pipeline_repo(tmp_path, tiny_pipeline_params)
    env.update(RAY_USAGE_STATS_ENABLED="0")
    env.pop("RAY_ADDRESS", None)
    origin, store = tmp_path / "origin.git", tmp_path / "dvc-store"
    run(["git", "init", "-q", "--bare", "-b", "main", str(origin)], tmp_path, env)
    for command in (["dvc", "remote", "add", "-d", "store", str(store)],
                    ["git", "remote", "add", "origin", str(origin)],
                    ["dvc", "repro", "-q", "normalize"], ["dvc", "push", "-q"],
                    ["git", "add", "-A"], ["git", "commit", "-q", "-m", "data"],
                    ["git", "push", "-q", "origin", "main"]):
        run(command, repo, env)
    return repo, origin, env


@pytest.fixture(scope="module")
def local_sweep(sweep_repo):
    """A sweep of three trials on a local Ray instance, one of which the train stage refuses."""
    repo, origin, env = sweep_repo
    start = time.monotonic()
    result = gestural(["sweep", *LOCAL_GRID, "--target", "evaluate", "--logs", str(repo.parent / "logs")],
                      repo, env)
    print(f"local sweep: {time.monotonic() - start:.0f} s\n{result.stdout}\n{result.stderr}")
    return result


def test_a_failed_trial_is_reported_with_its_log_and_the_others_complete(sweep_repo, local_sweep):
    repo, origin, env = sweep_repo
    assert local_sweep.returncode == 1, local_sweep.stdout + local_sweep.stderr
    out = local_sweep.stdout
    for good in ("sweep-num_gestures-3-seed-1", "sweep-num_gestures-5-seed-1"):
        assert re.search(rf"^  ok +{good} ", out, re.M), out
    failed = re.search(r"^  FAILED +sweep-num_gestures-0-seed-1 at dvc exp run .*$", out, re.M)
    assert failed, out
    # The end of its log, printed: the one-line refusal of the num_gestures check.
    tail = out[failed.end():]
    assert re.search(r"^ +\| .*num_gestures", tail, re.M), tail
    assert "num_gestures" in (repo.parent / "logs" / "sweep-num_gestures-0-seed-1.log").read_text()
    assert "2 of 3 trials pushed" in out and "1 failed" in out
    assert experiment_refs(origin, env) == ["sweep-num_gestures-3-seed-1", "sweep-num_gestures-5-seed-1"]


@pytest.fixture(scope="module")
def pulled_clone(sweep_repo, local_sweep, tmp_path_factory):
    """Another clone of the git remote, with every experiment pulled (and its outputs)."""
    _, origin, env = sweep_repo
    clone = tmp_path_factory.mktemp("elsewhere") / "clone"
    run(["git", "clone", "-q", str(origin), str(clone)], clone.parent, env)
    run(["dvc", "exp", "pull", "origin"], clone, env)
    return clone


def test_every_experiment_arrives_with_its_own_settings_and_metrics(sweep_repo, pulled_clone):
    _, _, env = sweep_repo
    shown = experiments(pulled_clone, env)
    assert sorted(shown) == ["sweep-num_gestures-3-seed-1", "sweep-num_gestures-5-seed-1"]
    for name, data in shown.items():
        params = data["params"]["params.yaml"]["data"]
        assert (params["num_gestures"], params["seed"]) == (int(name.split("-")[2]), 1)
        assert 0.0 <= data["metrics"]["metrics/eval.json"]["data"]["neural"]["seqnmf_similarity"] <= 1.0


def test_compare_chooses_among_the_swept_settings(sweep_repo, pulled_clone, tmp_path):
    _, _, env = sweep_repo
    result = gestural(["compare", "--repo", str(pulled_clone), "--out", str(tmp_path)], pulled_clone, env, 120)
    assert result.returncode == 0, result.stderr
    report = json.loads((tmp_path / "compare.json").read_text())
    assert report["kernel_errors"] == {}  # the kernels came across with `dvc exp pull`
    assert [s["label"] for s in report["settings"]] == ["num_gestures=3", "num_gestures=5"]
    assert report["chosen"] in ("num_gestures=3", "num_gestures=5")


def test_a_rerun_skips_the_trials_whose_experiment_is_on_the_remote(sweep_repo, local_sweep):
    repo, origin, env = sweep_repo
    before = experiment_refs(origin, env)
    result = gestural(["sweep", "-S", "num_gestures=3,5", "--seeds", "1", "--target", "evaluate"], repo, env, 60)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "2 already on" in result.stdout
    assert len(re.findall(r"^  skip +sweep-num_gestures-[35]-seed-1 ", result.stdout, re.M)) == 2
    assert "running" not in result.stdout  # nothing left to run: Ray is not even started
    assert experiment_refs(origin, env) == before


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_for_node(log: Path, node: subprocess.Popen, timeout: float = 60) -> None:
    """Wait until `ray start` says its node has joined (the worker: registered with the head)."""
    deadline = time.monotonic() + timeout
    while "Ray runtime started" not in log.read_text():
        assert node.poll() is None, f"ray start exited:\n{log.read_text()}"
        assert time.monotonic() < deadline, f"no Ray node after {timeout} s:\n{log.read_text()}"
        time.sleep(0.2)


def stop_process_groups(leaders: list[subprocess.Popen], grace: float = 3.0) -> None:
    """SIGTERM each leader's process group, then SIGKILL what is left of them after ``grace``
    seconds (Ray's graceful shutdown of a head can take half a minute)."""
    for leader in leaders:
        os.killpg(leader.pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while any(leader.poll() is None for leader in leaders) and time.monotonic() < deadline:
        time.sleep(0.1)
    for leader in leaders:
        try:  # the group, not only its leader: a raylet or worker that outlived it
            os.killpg(leader.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        leader.wait()


@pytest.fixture
def ray_cluster(sweep_repo):
    """A two-node Ray cluster on the loopback address (a head and a worker node of one CPU
    each); yields its Ray Client address. Each node is a `ray start --block` in its own process
    group, and teardown ends those groups (never `ray stop`, which would end every Ray
    instance on the machine), even when the test failed."""
    _, _, env = sweep_repo
    ray = [str(Path(sys.executable).parent / "ray"), "start", "--block", "--num-cpus=1",
           "--node-ip-address=127.0.0.1", "--disable-usage-stats"]
    port, client_port = free_port(), free_port()
    temp = tempfile.mkdtemp(prefix="ray", dir="/tmp")  # short: Ray's socket paths must fit 107 bytes
    nodes = []
    try:
        for extra in (["--head", f"--port={port}", f"--ray-client-server-port={client_port}",
                       "--include-dashboard=false", f"--temp-dir={temp}"], [f"--address=127.0.0.1:{port}"]):
            log = Path(temp) / f"node{len(nodes)}.log"
            with open(log, "w") as out:
                nodes.append(subprocess.Popen([*ray, *extra], env=env, stdout=out, stderr=subprocess.STDOUT,
                                              start_new_session=True))
            wait_for_node(log, nodes[-1])
        yield f"ray://127.0.0.1:{client_port}"
    finally:
        stop_process_groups(nodes)
        shutil.rmtree(temp, ignore_errors=True)


def test_a_sweep_on_a_two_node_cluster_runs_its_trials_on_both_nodes(sweep_repo, ray_cluster):
    repo, origin, env = sweep_repo
    start = time.monotonic()
    result = gestural(["sweep", "-S", "num_gestures=3", "--seeds", "7,8", "--prefix", "cluster",
                       "--address", ray_cluster, "--target", "train", "--logs", str(repo.parent / "logs")],
                      repo, env)
    print(f"cluster sweep: {time.monotonic() - start:.0f} s\n{result.stdout}\n{result.stderr}")
    assert result.returncode == 0, result.stdout + result.stderr
    nodes = re.findall(r"^  ok +cluster-num_gestures-3-seed-[78] \(\d+ s on node (\w+)\)", result.stdout, re.M)
    assert len(nodes) == 2 and nodes[0] != nodes[1], result.stdout  # one CPU a node: one trial each
    assert {"cluster-num_gestures-3-seed-7", "cluster-num_gestures-3-seed-8"} <= set(experiment_refs(origin, env))
