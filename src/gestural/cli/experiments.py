"""The experiments of a DVC sweep: what ``dvc exp show --json`` lists, and their gesture kernels.

:func:`run_exp_show` (or :func:`read_exp_show` for a saved output) gives the parsed JSON;
:func:`experiments_from_exp_show` keeps the finished experiments as :class:`Experiment`
records (flattened params, the ``neural`` metrics of ``metrics/eval.json``);
:func:`load_kernels` reads each one's ``models/gestures.npy`` from the DVC cache, and
:func:`kernels_from_dir` from saved ``.npy`` files. :mod:`gestural.cli.compare` compares them.

The JSON of ``dvc exp show --json`` (DVC 3.x) that this relies on: a list of commits, each
``{"rev", "name", "data", "error", "experiments"}``; ``experiments`` is null or a list of
``{"name", "executor", "revs"}`` where ``executor`` is null (run in the workspace) or has a
``state`` (``queued``, ``running``, ``success``, ``failed``), and ``revs[0]`` is
``{"rev": <sha>, "name", "data": {"params": {<file>: {"data": {...}}}, "metrics":
{<file>: {"data": {...}}}, ...}, "error"}``. Metrics that are null in the file are absent.
Queued, running and failed experiments carry the *baseline's* metrics (their own are not
there yet), so only finished ones are used.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from gestural.core.files import MIB, UserFileError, read_user_file
from gestural.evaluation.files import EvaluationFileError, parse_eval_summary
from gestural.model.gestures_file import GESTURES_FILE, GesturesFileError, read_gestures

__all__ = [
    "CompareError",
    "Experiment",
    "METRICS_FILE",
    "KERNELS_FILE",
    "run_exp_show",
    "read_exp_show",
    "experiments_from_exp_show",
    "load_kernels",
    "kernels_from_dir",
]

METRICS_FILE = "metrics/eval.json"
KERNELS_FILE = f"models/{GESTURES_FILE}"

FINISHED_STATES = ("success",)
# A sweep of a thousand experiments prints a few MB; the cap stops a mistaken path.
MAX_EXP_SHOW_BYTES = 256 * MIB


class CompareError(RuntimeError):
    """Unusable experiment data (names where it came from and what is wrong)."""


@dataclass
class Experiment:
    """One finished experiment.

    Attributes
    ----------
    name : str
        The experiment's name (``dvc exp show``'s, or the short sha when it has none).
    rev : str
        Its commit sha (a DVC revision: ``dvc.api.open(..., rev=rev)`` reads its outputs).
    params : dict
        Flattened params, ``"train.lr"`` style (``"<file>:<key>"`` for files other than
        params.yaml).
    metrics : dict
        The ``neural`` metrics of ``metrics/eval.json`` (absent ones are missing).
    ground_truth : bool or None
        Whether the evaluation had planted gestures to compare with.
    """

    name: str
    rev: str
    params: dict
    metrics: dict
    ground_truth: bool | None = None

    @property
    def seed(self):
        return self.params.get("seed")


# ------------------------------------------------------------------ dvc exp show


def check_dvc_project(repo: str | os.PathLike) -> None:
    """Make sure ``repo`` is the root of a DVC project (holds a ``.dvc`` directory).

    dvc itself would also run in a subdirectory of a project, or in any directory below one,
    and list *that* project's experiments: "no finished experiment" for a mistyped --repo.

    Raises
    ------
    CompareError
        ``repo`` is missing, not a directory, or not a DVC project's root (naming the project
        above it, if there is one).
    """
    repo = Path(repo)
    if not repo.is_dir():
        raise CompareError(f"{repo}: --repo is not a directory" if repo.exists() else f"{repo}: no such directory")
    if (repo / ".dvc").is_dir():
        return
    above = next((p for p in repo.resolve().parents if (p / ".dvc").is_dir()), None)
    hint = f"; the project holding it is {above}" if above is not None else "; `dvc init` makes one"
    raise CompareError(f"{repo}: not a DVC project (no .dvc directory){hint}")


def run_exp_show(repo: str | os.PathLike = ".", all_commits: bool = False) -> list:
    """Run ``dvc exp show --json`` in ``repo`` and return its parsed output.

    Raises
    ------
    CompareError
        ``repo`` is no DVC project, dvc fails (its message is included) or prints something
        that is not JSON.
    """
    check_dvc_project(repo)
    command = [sys.executable, "-m", "dvc", "exp", "show", "--json"]
    if all_commits:
        command.append("--all-commits")
    try:
        result = subprocess.run(command, cwd=repo, capture_output=True, text=True)
    except OSError as error:
        raise CompareError(f"{repo}: cannot run dvc exp show: {error}") from None
    if result.returncode != 0:
        detail = (result.stderr.strip() or result.stdout.strip()).splitlines()[-3:]
        raise CompareError(f"{repo}: dvc exp show failed: {' '.join(detail)}")
    return _parse_exp_show(result.stdout, f"dvc exp show --json in {repo}")


def read_exp_show(path: str | os.PathLike) -> list:
    """Read a saved ``dvc exp show --json`` output: a regular file of at most
    :data:`MAX_EXP_SHOW_BYTES` (a FIFO or a device is refused, never opened), UTF-8 JSON.

    Raises
    ------
    CompareError
        One line naming the file and the problem.
    """
    path = Path(path)
    try:
        data = read_user_file(path, "dvc exp show --json output", MAX_EXP_SHOW_BYTES)
    except UserFileError as error:
        raise CompareError(str(error)) from None
    except OSError as error:
        raise CompareError(f"{path}: cannot read: {error.strerror or error}") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as error:
        raise CompareError(f"{path}: not JSON (binary or not UTF-8: byte 0x{data[error.start]:02x} "
                           f"at offset {error.start})") from None
    return _parse_exp_show(text, str(path))


def _parse_exp_show(text: str, source: str) -> list:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as error:
        raise CompareError(f"{source}: not JSON (line {error.lineno}: {error.msg})") from None
    except RecursionError:  # the json module recurses once per nesting level
        raise CompareError(f"{source}: JSON nested too deeply to be a dvc exp show output") from None
    if not isinstance(data, list) or not all(isinstance(commit, dict) for commit in data):
        raise CompareError(f"{source}: expected a list of commits as dvc exp show --json writes")
    return data


def _flatten(tree: Mapping, prefix: str = "") -> dict:
    flat = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(_flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat


def _params(data: Mapping, source: str) -> dict:
    params = {}
    try:
        for file, content in (data.get("params") or {}).items():
            prefix = "" if file == "params.yaml" else f"{file}:"
            params.update(_flatten((content or {}).get("data") or {}, prefix))
    except RecursionError:  # JSON just shallow enough to parse, too deep to flatten
        raise CompareError(f"{source}: params nested too deeply to be params.yaml's") from None
    return params


def experiments_from_exp_show(show: Sequence, source: str = "dvc exp show",
                              metrics_file: str = METRICS_FILE) -> tuple[list[Experiment], list[dict]]:
    """The finished experiments of a ``dvc exp show --json`` output.

    Only experiments are taken (not the baseline commits or the workspace), and of those
    only finished ones: queued, running and failed experiments would show the baseline's
    metrics.

    Parameters
    ----------
    show : list
        Parsed ``dvc exp show --json``.
    source : str
        Where it came from, for messages.
    metrics_file : str
        The metrics file whose ``neural`` section is read.

    Returns
    -------
    experiments : list of Experiment
    skipped : list of dict
        ``{"name", "reason"}`` for each experiment left out.
    """
    experiments, skipped, seen = [], [], set()
    for commit in show:
        for entry in commit.get("experiments") or []:
            if not isinstance(entry, Mapping) or not entry.get("revs"):
                raise CompareError(f"{source}: an experiment of commit {commit.get('rev')!r} has no revs")
            head = entry["revs"][0]
            rev = head.get("rev")
            name = entry.get("name") or head.get("name") or (rev or "?")[:7]
            executor = entry.get("executor") or {}
            state = executor.get("state")
            if state is not None and state not in FINISHED_STATES:
                skipped.append({"name": name, "reason": f"{state}"})
                continue
            if head.get("error") or not isinstance(head.get("data"), Mapping):
                message = (head.get("error") or {}).get("msg", "no data")
                skipped.append({"name": name, "reason": f"error: {message}"})
                continue
            if rev in seen:  # the same experiment listed under two commits (--all-commits)
                continue
            seen.add(rev)
            data = head["data"]
            metrics_entry = (data.get("metrics") or {}).get(metrics_file) or {}
            try:
                summary = parse_eval_summary(metrics_entry.get("data"), metrics_file)
            except EvaluationFileError:
                reason = metrics_entry.get("error", {}).get("msg") if metrics_entry.get("error") else None
                skipped.append({"name": name, "reason": f"no {metrics_file} neural metrics"
                                                        + (f" ({reason})" if reason else "")})
                continue
            experiments.append(Experiment(name=name, rev=rev, params=_params(data, source), metrics=summary.neural,
                                          ground_truth=(metrics_entry.get("data") or {}).get("ground_truth")))
    return experiments, skipped


# ------------------------------------------------------------------------ kernels


def load_kernels(revs: Sequence[str], repo: str | os.PathLike = ".",
                 path: str = KERNELS_FILE) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """Read each revision's gesture kernels from the DVC cache (or the default remote).

    ``models/gestures.npy`` is a DVC-cached output, so it is not in the experiment's git
    commit; ``dvc.api.open`` finds it by the hash recorded in that commit's dvc.lock.

    Returns
    -------
    kernels : dict rev -> (K, C, L) array
    errors : dict rev -> why that revision's kernels could not be read
    """
    import dvc.api  # imported here: reading a saved JSON with given kernels needs no dvc

    kernels, errors = {}, {}
    for rev in revs:
        try:
            with dvc.api.open(path, repo=str(repo), rev=rev, mode="rb") as handle:
                data = handle.read()
        except Exception as error:  # dvc raises many types (missing cache, no remote, bad rev)
            first_line = (str(error).splitlines() or [""])[0]
            errors[rev] = (f"{path}@{rev[:7]}: cannot read it ({type(error).__name__}: {first_line}); "
                           f"an experiment from another machine needs `dvc exp pull` without --no-cache")
            continue
        try:
            kernels[rev] = read_gestures(io.BytesIO(data), name=f"{path}@{rev[:7]}")
        except GesturesFileError as error:
            errors[rev] = str(error)
    return kernels, errors


def kernels_from_dir(directory: str | os.PathLike, experiments: Sequence[Experiment]) -> tuple[dict, dict]:
    """Kernels saved as ``<directory>/<name or rev>.npy`` (offline use and tests)."""
    directory = Path(directory)
    kernels, errors = {}, {}
    for exp in experiments:
        candidates = [directory / f"{exp.name}.npy", directory / f"{exp.rev}.npy"]
        found = next((p for p in candidates if p.is_file()), None)
        if found is None:
            errors[exp.rev] = f"{candidates[0]}: no such file"
            continue
        try:
            kernels[exp.rev] = read_gestures(found)
        except GesturesFileError as error:
            errors[exp.rev] = str(error)
    return kernels, errors
