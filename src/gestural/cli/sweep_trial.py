"""One trial of ``gestural sweep``, as it runs on a Ray worker.

A trial is a DVC experiment made from nothing but the git remote and the DVC remote, so that
it can run on any machine of a cluster: clone the repository at the sweep's commit into a
temporary directory, ``dvc exp run --pull -n <name> -S ...`` there (the data come from the DVC
remote, or the stages make them), then ``dvc exp push`` the experiment (its git ref and cached
outputs) back to the git remote and the DVC remote. The clone is removed afterwards; what
each step printed comes back as the trial's log.

Standard library only: a worker imports this module to run a trial and should not pay for
torch. The environment of the worker (this Python, with dvc and the project's dependencies)
runs the stages; the clone's own ``src/`` comes first on their ``PYTHONPATH``, so the code of
the sweep's commit is what runs even where another version of the package is installed.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["TrialSpec", "TrialResult", "run_trial", "LOG_LIMIT"]

LOG_LIMIT = 200_000  # characters of a trial's log that come back (its end)
POLL_S = 0.2  # how often a step is checked for its end (and the trial for a cancel)


@dataclass(frozen=True)
class TrialSpec:
    """What a worker needs to run one trial.

    Attributes
    ----------
    name : str
        The experiment's name (``dvc exp run -n``).
    overrides : tuple of str
        ``key=value`` settings (one ``dvc exp run -S`` each).
    git_url : str
        Where the worker clones from and pushes to (reachable from every node).
    commit : str
        The sweep's commit (on ``git_url``).
    targets : tuple of str
        Stages to reproduce (none: the whole pipeline).
    dvc_remote : str or None
        The DVC remote to pull from and push to (None: the repository's default).
    force : bool
        Replace an experiment of the same name on the git remote.
    identity : tuple of (str, str) or None
        ``user.name`` and ``user.email`` for the clone's experiment commits.
    workdir : str or None
        Where the clone is made (None: the worker's temporary directory).
    """

    name: str
    overrides: tuple[str, ...]
    git_url: str
    commit: str
    targets: tuple[str, ...] = ()
    dvc_remote: str | None = None
    force: bool = False
    identity: tuple[str, str] | None = None
    workdir: str | None = None


@dataclass
class TrialResult:
    """How a trial ended: ``failed_step`` is None when its experiment was pushed."""

    name: str
    failed_step: str | None
    seconds: float
    log: str
    host: str = field(default_factory=socket.gethostname)
    node: str = ""  # the Ray node that ran it (set by the driver's task wrapper)

    @property
    def ok(self) -> bool:
        return self.failed_step is None


def trial_steps(spec: TrialSpec) -> list[tuple[str, list[str]]]:
    """The trial's commands, in order, as (step name, argv); the clone is the working directory."""
    dvc = [sys.executable, "-m", "dvc"]
    steps = [("clone", ["git", "clone", "--quiet", "--no-checkout", spec.git_url, "."]),
             ("checkout", ["git", "checkout", "--quiet", "--detach", spec.commit])]
    if spec.identity:
        steps += [("git config", ["git", "config", "user.name", spec.identity[0]]),
                  ("git config", ["git", "config", "user.email", spec.identity[1]])]
    if spec.dvc_remote:
        # config.local (git-ignored): `dvc exp run --pull` has no remote flag, it uses the default
        steps.append(("dvc remote", [*dvc, "remote", "default", "--local", spec.dvc_remote]))
    overrides = [arg for setting in spec.overrides for arg in ("-S", setting)]
    steps.append(("dvc exp run", [*dvc, "exp", "run", "--pull", "--name", spec.name, *overrides, *spec.targets]))
    force = ["--force"] if spec.force else []
    steps.append(("dvc exp push", [*dvc, "exp", "push", *force, "origin", spec.name]))
    return steps


def _environment(clone: Path) -> dict:
    """The worker's environment for the steps: this Python's bin/ first (the stages call
    ``python``), the clone's src/ first on the path, and no git prompt to hang on."""
    env = dict(os.environ, GIT_TERMINAL_PROMPT="0")
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(clone / "src"), env.get("PYTHONPATH")]))
    return env


def _run_step(argv: list[str], cwd: Path, env: dict, log) -> int:
    """Run one step in its own process group; if the trial is cancelled (Ray raises
    KeyboardInterrupt in the task) or fails here, the whole group goes, stages included,
    rather than a `dvc exp run` orphaned and still pushing after the sweep said it stopped."""
    process = subprocess.Popen(argv, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=log,
                               stderr=subprocess.STDOUT, start_new_session=True)
    try:
        # Polled, not a blocking wait: Ray's cancel sets Python's interrupt flag, which a
        # thread blocked in waitpid() would only see when the step ends on its own.
        while process.poll() is None:
            time.sleep(POLL_S)
        return process.returncode
    except BaseException:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
        raise


def _tail(path: Path, limit: int = LOG_LIMIT) -> str:
    text = path.read_text(errors="replace") if path.exists() else ""
    return text if len(text) <= limit else "[...]\n" + text[-limit:]


def run_trial(spec: TrialSpec) -> TrialResult:
    """Run one trial in a fresh clone; never raises for a failed step (the result says which)."""
    start = time.monotonic()
    workdir = Path(tempfile.mkdtemp(prefix=f"gestural-{spec.name[:40]}-", dir=spec.workdir))
    clone, log_path = workdir / "repo", workdir / "trial.log"
    clone.mkdir()
    failed = None
    try:
        env = _environment(clone)
        with open(log_path, "a") as log:
            for step, argv in trial_steps(spec):
                log.write(f"$ {' '.join(argv)}\n")
                log.flush()
                began = time.monotonic()
                try:
                    code = _run_step(argv, clone, env, log)
                except OSError as error:  # e.g. git missing on this node
                    log.write(f"{error}\n")
                    code = None
                log.write(f"# {step}: exit status {code}, {time.monotonic() - began:.1f} s\n")
                if code != 0:
                    failed = step if code is None else f"{step} (exit status {code})"
                    break
        return TrialResult(spec.name, failed, time.monotonic() - start, _tail(log_path))
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
