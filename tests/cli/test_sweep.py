"""`gestural sweep` without Ray or DVC: the grid, the experiment names, the key check, the
remote's experiments, and the one-line errors (the sweep itself: tests/test_ray_sweep.py)."""

from __future__ import annotations

import subprocess
import sys

import pytest
from conftest import dvc_env, raises_in_one_line, run_command, src_env, the_one_line

from gestural.cli import sweep_ray
from gestural.cli.sweep import (
    GitRemote,
    SweepError,
    Trial,
    check_keys,
    experiment_name,
    plan_trials,
    split_values,
)


def test_the_grid_is_every_combination_with_the_seeds_last():
    trials = plan_trials(["num_gestures=8,14", "train.lr=0.01"], seeds=["0", "1"])
    assert trials == [
        Trial("sweep-num_gestures-8-train.lr-0.01-seed-0", ("num_gestures=8", "train.lr=0.01", "seed=0")),
        Trial("sweep-num_gestures-8-train.lr-0.01-seed-1", ("num_gestures=8", "train.lr=0.01", "seed=1")),
        Trial("sweep-num_gestures-14-train.lr-0.01-seed-0", ("num_gestures=14", "train.lr=0.01", "seed=0")),
        Trial("sweep-num_gestures-14-train.lr-0.01-seed-1", ("num_gestures=14", "train.lr=0.01", "seed=1")),
    ]


def test_commas_inside_brackets_or_quotes_do_not_split_a_value():
    assert split_values("a, b,[c,d],'e,f'") == ["a", "b", "[c,d]", "'e,f'"]
    assert [t.overrides for t in plan_trials(["data.speakers=[fsyn0,msyn0],[fsyn0]"])] == [
        ("data.speakers=[fsyn0,msyn0]",), ("data.speakers=[fsyn0]",)]


def test_names_are_valid_git_ref_components_and_stable():
    name = experiment_name("sweep", [("train.init", "models/a model.pt"), ("x", "[1,2]")])
    assert name == "sweep-train.init-models_a_model.pt-x-_1_2_"
    long = experiment_name("sweep", [("key", "v" * 300)])
    assert len(long) <= 100 and long == experiment_name("sweep", [("key", "v" * 300)])
    assert long != experiment_name("sweep", [("key", "v" * 301)])


@pytest.mark.parametrize("settings, seeds, match", [
    ([], [], "nothing to sweep"),
    (["num_gestures"], [], "expected key=value"),
    (["num_gestures=8,"], [], "an empty value"),
    (["num_gestures=8,8"], [], "a value given twice"),
    (["num_gestures=range(8,20,4)"], [], "comma-separated"),
    (["seed=1,2"], ["3"], "seed is set twice"),
    (["x=a/b,a_b"], [], "two settings give the experiment name sweep-x-a_b"),
])
def test_a_grid_that_cannot_run_is_refused_in_one_line(settings, seeds, match):
    with raises_in_one_line(SweepError, match=match):
        plan_trials(settings, seeds)


def test_a_key_that_params_yaml_lacks_is_refused():
    params = {"num_gestures": 20, "train": {"lr": 0.01}}
    check_keys(plan_trials(["num_gestures=8", "train.lr=0.1", "other.yaml:x=1"]), params)
    with raises_in_one_line(SweepError, match="params.yaml has no key 'train.lrr'"):
        check_keys(plan_trials(["train.lrr=0.1"]), params)


def run_cli(args: list[str], code: str = "") -> subprocess.CompletedProcess:
    program = f"import sys\n{code}\nfrom gestural.cli.main import main\nsys.exit(main(sys.argv[1:]))"
    return subprocess.run([sys.executable, "-c", program, *args], env=src_env(), capture_output=True, text=True)


def test_without_ray_the_command_says_how_to_install_it():
    result = run_cli(["sweep", "-S", "num_gestures=8,14"], code="sys.modules['ray'] = None  # not installed")
    assert result.returncode == 2
    assert "pip install 'gestural[sweep]'" in the_one_line(result.stderr)


def test_outside_a_git_repository_the_sweep_says_so_in_one_line(tmp_path):
    result = run_cli(["sweep", "-S", "num_gestures=8", "--dry-run", "--repo", str(tmp_path)])
    assert result.returncode == 2
    assert the_one_line(result.stderr).startswith("gestural sweep: error: git ")


@pytest.fixture
def git_remote(tmp_path):
    """(repo, bare remote, git env): a repository with one commit, not yet pushed."""
    env = dvc_env(tmp_path)
    repo, origin = tmp_path / "repo", tmp_path / "origin.git"
    run_command(["git", "init", "-q", "--bare", "-b", "main", str(origin)], tmp_path, env)
    repo.mkdir()
    commands = (["git", "init", "-q", "-b", "main"], ["git", "config", "user.name", "Test"],
                         ["git", "config", "user.email", "test@example.com"],
                         ["git", "remote", "add", "origin", str(origin)])
    for command in commands:
        run_command(command, repo, env)
    (repo / ".dvc").mkdir()
    (repo / ".dvc" / "config").write_text("[core]\n    remote = store\n['remote \"store\"']\n    url = /somewhere\n")
    (repo / "params.yaml").write_text("num_gestures: 20\n")
    run_command(["git", "add", "-A"], repo, env)
    run_command(["git", "commit", "-q", "-m", "first"], repo, env)
    return repo, origin, env


def test_the_remote_must_hold_the_commit_and_lists_its_experiments(git_remote):
    repo, origin, env = git_remote
    with raises_in_one_line(SweepError, match="is not on .*origin.git: push it first"):
        GitRemote(repo, "origin").check_commit()
    run_command(["git", "push", "-q", "origin", "main"], repo, env)
    commit = run_command(["git", "rev-parse", "HEAD"], repo, env).strip()
    # An experiment of this commit, as `dvc exp push` lays it out, and one of another commit.
    run_command(["git", "update-ref", f"refs/exps/{commit[:2]}/{commit[2:]}/sweep-seed-1", commit], origin, env)
    run_command(["git", "update-ref", f"refs/exps/00/{'0' * 38}/sweep-seed-2", commit], origin, env)
    remote = GitRemote(repo, "origin")
    remote.check_commit()
    assert remote.url == str(origin) and remote.commit == commit
    assert remote.experiments() == {"sweep-seed-1"}
    assert remote.params() == {"num_gestures": 20}
    assert remote.identity() == ("Test", "test@example.com")
    assert remote.check_dvc_remote(None) is None
    assert "nodes' own DVC config" in remote.check_dvc_remote("elsewhere")


def test_a_commit_without_a_dvc_remote_is_refused(git_remote):
    repo, _, env = git_remote
    (repo / ".dvc" / "config").write_text("[core]\n    analytics = false\n")
    run_command(["git", "commit", "-q", "-am", "no remote"], repo, env)
    with raises_in_one_line(SweepError, match="no default DVC remote"):
        GitRemote(repo, "origin").check_dvc_remote(None)


class _FlakyRay:
    """A stand-in for the ray module whose first ``failures`` connections fail as a cold
    cluster's Ray Client server does."""

    def __init__(self, failures: int):
        self.failures, self.calls, self.shutdowns = failures, 0, 0

    def init(self, **kwargs):
        self.calls += 1
        if self.calls <= self.failures:
            raise ConnectionError("Initialization failure from server:\n")

    def shutdown(self):
        self.shutdowns += 1


def test_a_cluster_that_fails_the_first_client_connection_is_tried_again(monkeypatch):
    monkeypatch.setattr(sweep_ray, "CLIENT_RETRY_WAITS_S", (0.0, 0.0))
    monkeypatch.setattr(sweep_ray.signal, "signal", lambda *args: None)
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    flaky = _FlakyRay(failures=2)
    assert sweep_ray.connect(flaky, "ray://127.0.0.1:1") == "the Ray cluster at ray://127.0.0.1:1"
    assert flaky.calls == 3 and flaky.shutdowns == 2
    dead = _FlakyRay(failures=10)
    with pytest.raises(sweep_ray.SweepError, match=r"at ray://127.0.0.1:1: Initialization failure from server:$"):
        sweep_ray.connect(dead, "ray://127.0.0.1:1")
    assert dead.calls == 3
    local = _FlakyRay(failures=1)  # a local instance that cannot start is not retried
    with pytest.raises(sweep_ray.SweepError):
        sweep_ray.connect(local, None)
    assert local.calls == 1
