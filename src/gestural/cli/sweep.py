"""``gestural sweep``: a grid of ``-S`` overrides (and seeds) run as DVC experiments on Ray.

Each combination is one trial (:mod:`gestural.cli.sweep_trial`): a Ray task that clones the
repository at the current commit from the git remote, runs ``dvc exp run`` with the
combination's settings and pushes the experiment to the git remote (and its outputs to the
DVC remote), so that ``dvc exp pull <remote>``, ``dvc exp show`` and ``gestural compare``
see every result, wherever it ran.

Experiment names are made from the settings (``sweep-num_gestures-14-seed-1``), so a rerun
knows which trials are done: those whose experiment already exists on the git remote for
this commit are skipped. A failed trial is reported with its log and the others go on.

Ray is an optional dependency (``pip install 'gestural[sweep]'``), imported only to run.
"""

from __future__ import annotations

import hashlib
import itertools
import re
import subprocess
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from gestural.cli.sweep_ray import SweepError, check_resources, connect, import_ray, run_on_ray
from gestural.cli.sweep_trial import TrialResult, TrialSpec

__all__ = ["SweepError", "Trial", "parse_axis", "plan_trials", "experiment_name", "GitRemote"]

EXPS_NAMESPACE = "refs/exps"  # DVC 3: refs/exps/<commit[:2]>/<commit[2:]>/<name>
FAILED_LOG_LINES = 25  # of a failed trial's log, printed (the whole log is written to --logs)
MAX_NAME = 100  # longer names end in a hash of the settings instead
# Hydra's sweep functions would make one `dvc exp run` many experiments under one name.
SWEEP_FUNCTIONS = ("range(", "choice(", "glob(", "interval(", "tag(")


@dataclass(frozen=True)
class Trial:
    """One combination of the grid: its experiment name and its ``key=value`` settings."""

    name: str
    overrides: tuple[str, ...]


def split_values(text: str) -> list[str]:
    """``a,b,[c,d]`` -> ``['a', 'b', '[c,d]']``: commas inside brackets or quotes do not split."""
    values, current, depth, quote = [], [], 0, None
    for char in text:
        if quote:
            quote = None if char == quote else quote
        elif char in "'\"":
            quote = char
        elif char in "[{(":
            depth += 1
        elif char in "]})":
            depth -= 1
        elif char == "," and depth == 0:
            values.append("".join(current))
            current = []
            continue
        current.append(char)
    values.append("".join(current))
    return [value.strip() for value in values]


def parse_axis(setting: str) -> tuple[str, list[str]]:
    """``-S key=v1,v2`` -> (key, [v1, v2]), as DVC reads a comma-separated grid."""
    key, sep, values = setting.partition("=")
    key = key.strip()
    if not sep or not key:
        raise SweepError(f"-S {setting!r}: expected key=value[,value...]")
    if any(function in values for function in SWEEP_FUNCTIONS):
        raise SweepError(f"-S {setting!r}: give the values as a comma-separated list (no Hydra sweep functions)")
    parsed = split_values(values)
    if "" in parsed:
        raise SweepError(f"-S {setting!r}: an empty value")
    if len(set(parsed)) != len(parsed):
        raise SweepError(f"-S {setting!r}: a value given twice")
    return key, parsed


def experiment_name(prefix: str, pairs: Sequence[tuple[str, str]]) -> str:
    """``sweep-num_gestures-14-seed-1``: the same settings always give the same name, a valid
    git ref component (anything but letters, digits and ``._+=-`` becomes ``_``)."""
    raw = "-".join([prefix, *(f"{key}-{value}" for key, value in pairs)])
    name = re.sub(r"\.{2,}", ".", re.sub(r"[^A-Za-z0-9._+=-]", "_", raw)).strip(".")
    if name.endswith(".lock") or len(name) > MAX_NAME:
        digest = hashlib.sha1(raw.encode()).hexdigest()[:10]
        name = f"{name[:MAX_NAME - 12].rstrip('.')}-{digest}"
    return name


def plan_trials(settings: Sequence[str], seeds: Sequence[str] = (), prefix: str = "sweep") -> list[Trial]:
    """Every combination of the ``-S`` axes (and the seeds, last), each with its name."""
    axes = [parse_axis(setting) for setting in settings]
    if seeds:
        axes.append(("seed", list(seeds)))
    keys = [key for key, _ in axes]
    repeated = sorted({key for key in keys if keys.count(key) > 1})
    if repeated:
        raise SweepError(f"{repeated[0]} is set twice (-S and --seeds count alike); give its values once")
    if not axes:
        raise SweepError("nothing to sweep: give -S key=value[,value...] and/or --seeds")
    trials = []
    for values in itertools.product(*(values for _, values in axes)):
        pairs = list(zip(keys, values))
        trials.append(Trial(experiment_name(prefix, pairs), tuple(f"{key}={value}" for key, value in pairs)))
    names = [trial.name for trial in trials]
    clash = next((name for name in names if names.count(name) > 1), None)
    if clash:
        raise SweepError(f"two settings give the experiment name {clash}: use values that differ in letters "
                         "or digits")
    return trials


def check_keys(trials: Iterable[Trial], params: dict) -> None:
    """Refuse a key that params.yaml does not have (every trial would fail on it)."""
    for key in {override.partition("=")[0] for trial in trials for override in trial.overrides}:
        if ":" in key or key[:1] in "+~":  # another params file, or Hydra's add/delete
            continue
        node = params
        for part in key.split("."):
            if not isinstance(node, dict) or part not in node:
                raise SweepError(f"params.yaml has no key {key!r}")
            node = node[part]


def _git(repo: Path, *args: str) -> str:
    try:
        result = subprocess.run(["git", *args], cwd=repo, capture_output=True, text=True, stdin=subprocess.DEVNULL)
    except OSError as error:
        raise SweepError(f"git: {error.strerror or error}") from None
    if result.returncode != 0:
        message = (result.stderr.strip().splitlines() or [f"exit status {result.returncode}"])[-1]
        raise SweepError(f"git {' '.join(args[:2])}: {message}")
    return result.stdout


class GitRemote:
    """The repository's git remote, as the workers see it, and the experiments it holds.

    Parameters
    ----------
    repo : Path
        The local repository (the sweep's commit is its HEAD).
    remote : str
        A remote's name or a git URL; a local path is made absolute (workers clone elsewhere).
    """

    def __init__(self, repo: Path, remote: str):
        self.repo = repo
        self.name = remote
        url = _git(repo, "remote", "get-url", remote).strip() if remote in _git(repo, "remote").split() else remote
        local = repo / url
        self.url = str(local.resolve()) if "://" not in url and local.exists() else url
        self.commit = _git(repo, "rev-parse", "HEAD").strip()
        self._refs = self._list_refs()

    def _list_refs(self) -> dict[str, str]:
        lines = _git(self.repo, "ls-remote", self.url).splitlines()
        return {ref: sha for sha, ref in (line.split("\t", 1) for line in lines if "\t" in line)}

    def check_commit(self) -> None:
        """Refuse a commit that the workers could not check out: one no remote branch contains."""
        tips = set(self._refs.values())
        if self.commit in tips:
            return
        for tip in tips:
            known = subprocess.run(["git", "cat-file", "-e", f"{tip}^{{commit}}"], cwd=self.repo,
                                   capture_output=True).returncode == 0
            if known and subprocess.run(["git", "merge-base", "--is-ancestor", self.commit, tip], cwd=self.repo,
                                        capture_output=True).returncode == 0:
                return
        raise SweepError(f"commit {self.commit[:8]} is not on {self.url}: push it first (git push)")

    def experiments(self) -> set[str]:
        """Names of the experiments of this commit that the remote already has."""
        prefix = f"{EXPS_NAMESPACE}/{self.commit[:2]}/{self.commit[2:]}/"
        return {ref[len(prefix):] for ref in self._refs if ref.startswith(prefix)}

    def params(self) -> dict:
        """The commit's params.yaml."""
        import yaml

        try:
            params = yaml.safe_load(_git(self.repo, "show", f"{self.commit}:params.yaml"))
        except yaml.YAMLError as error:
            raise SweepError(f"params.yaml of {self.commit[:8]}: not YAML ({error})") from None
        return params if isinstance(params, dict) else {}

    def check_dvc_remote(self, name: str | None) -> str | None:
        """Refuse a sweep whose results could not be pushed: the workers read the DVC config
        that the commit holds (not .dvc/config.local), so it must name the DVC remote; a remote
        named but not defined there may still be in the nodes' own DVC config: a warning."""
        try:
            config = _git(self.repo, "show", f"{self.commit}:.dvc/config")
        except SweepError:
            config = ""
        section, default, defined = "", None, set()
        for line in config.splitlines():  # configobj: [core] remote = <name>; ['remote "<name>"'] url = ...
            line = line.strip()
            if line.startswith("["):
                section = line
                defined.update(re.findall(r"""^\['?remote "(.+)"'?\]$""", line))
            elif section == "[core]" and re.match(r"remote\s*=", line):
                default = line.partition("=")[2].strip()
        wanted = name or default
        if wanted is None:
            raise SweepError("the commit has no default DVC remote for the trials' data and results: "
                             "dvc remote add -d <name> <url>, commit .dvc/config and push (or --dvc-remote)")
        if wanted not in defined:
            return f"DVC remote {wanted!r} is not in the commit's .dvc/config: the nodes' own DVC config must have it"
        return None

    def identity(self) -> tuple[str, str] | None:
        """This repository's git user, for the workers' experiment commits (None: theirs)."""
        try:
            return _git(self.repo, "config", "user.name").strip(), _git(self.repo, "config", "user.email").strip()
        except SweepError:
            return None

    def has_uncommitted_changes(self) -> bool:
        return bool(_git(self.repo, "status", "--porcelain", "--untracked-files=no").strip())



def add_parser(commands) -> None:
    """The ``sweep`` subcommand of ``gestural`` (``commands``: argparse's subparsers)."""
    sweep = commands.add_parser(
        "sweep", help="run a grid of DVC experiments as Ray tasks, on this machine or a Ray cluster",
        description="Run every combination of the -S values (and --seeds) as a DVC experiment named after its "
                    "settings (e.g. sweep-num_gestures-14-seed-1), each a Ray task in its own clone of the "
                    "repository at the current commit, cloned from the git remote; the data come from the DVC "
                    "remote (or the stages make them), and each experiment is pushed to the git remote with "
                    "dvc exp push. `dvc exp pull <remote>` then brings them all here for dvc exp show and "
                    "gestural compare. Trials whose experiment the git remote already has are skipped. Exit "
                    "status 1 when a trial failed (the others still run), 2 when the sweep cannot start.")
    sweep.add_argument("-S", "--set-param", dest="settings", action="append", default=[], metavar="KEY=V1,V2",
                       help="a params.yaml key and its values, comma-separated (repeatable: a grid)")
    sweep.add_argument("--seeds", type=lambda text: split_values(text), default=[], metavar="S1,S2",
                       help="seeds to run each setting with (the same as -S seed=S1,S2)")
    sweep.add_argument("--address", default=None,
                       help="the Ray cluster: ray://host:port (Ray Client), host:port on a node, or auto "
                            "(default: $RAY_ADDRESS, else a local Ray instance on this machine)")
    sweep.add_argument("--max-concurrent", type=int, default=None, metavar="N",
                       help="trials running at a time (default: as many as the cluster's resources allow)")
    sweep.add_argument("--cpus-per-trial", type=float, default=1.0, metavar="N", help="CPUs per trial (default 1)")
    sweep.add_argument("--gpus-per-trial", type=float, default=0.0, metavar="N",
                       help="GPUs per trial (default 0; with device: auto a trial then uses its GPU)")
    sweep.add_argument("--remote", default="origin",
                       help="the git remote (a name or URL, reachable from every node) that trials clone from and "
                            "push to (default origin)")
    sweep.add_argument("--dvc-remote", default=None, metavar="NAME",
                       help="the DVC remote for the data and results (default: the repository's default remote)")
    sweep.add_argument("--target", dest="targets", action="append", default=[], metavar="STAGE",
                       help="reproduce only up to this stage (repeatable; default the whole pipeline)")
    sweep.add_argument("--prefix", default="sweep", help="experiment names start with this (default sweep)")
    sweep.add_argument("--force", action="store_true", help="rerun trials whose experiment exists, replacing it")
    sweep.add_argument("--repo", type=Path, default=Path("."), help="the repository (default .)")
    sweep.add_argument("--workdir", default=None, metavar="DIR",
                       help="where each node makes the trials' clones (default: its temporary directory)")
    sweep.add_argument("--logs", type=Path, default=Path("reports/sweep"),
                       help="where each trial's log is written, <name>.log (default reports/sweep)")
    sweep.add_argument("--dry-run", action="store_true", help="list the trials and which are done; run nothing")
    sweep.set_defaults(run=command)


def _error(message: str) -> int:
    print(f"gestural sweep: error: {message}", file=sys.stderr)
    return 2


def _report(result: TrialResult, logs: Path) -> None:
    """Print one ended trial; a failed one with the end of its log. The whole log goes to ``logs``."""
    path = logs / f"{result.name}.log"
    try:
        logs.mkdir(parents=True, exist_ok=True)
        path.write_text(result.log)
    except OSError as error:
        path = f"not written ({error.strerror or error})"
    where = f"node {result.node[:8]}" if result.node else result.host
    if result.ok:
        print(f"  ok      {result.name} ({result.seconds:.0f} s on {where})", flush=True)
        return
    print(f"  FAILED  {result.name} at {result.failed_step} ({result.seconds:.0f} s on {where}); log: {path}")
    for line in result.log.rstrip().splitlines()[-FAILED_LOG_LINES:]:
        print(f"          | {line}")
    sys.stdout.flush()


def command(args) -> int:
    """Run ``gestural sweep``; returns the exit status."""
    if args.max_concurrent is not None and args.max_concurrent < 1:
        return _error("--max-concurrent must be >= 1")
    if not (args.cpus_per_trial > 0 and args.gpus_per_trial >= 0):
        return _error("--cpus-per-trial must be > 0 and --gpus-per-trial >= 0")
    try:
        trials = plan_trials(args.settings, args.seeds, args.prefix)
        ray = None if args.dry_run else import_ray()
        remote = GitRemote(args.repo, args.remote)
        remote.check_commit()
        dvc_warning = remote.check_dvc_remote(args.dvc_remote)
        check_keys(trials, remote.params())
    except SweepError as error:
        return _error(str(error))
    done = set() if args.force else remote.experiments()
    todo = [trial for trial in trials if trial.name not in done]
    if dvc_warning:
        print(f"warning: {dvc_warning}", file=sys.stderr)
    if remote.has_uncommitted_changes():
        print(f"warning: uncommitted changes are not part of the sweep: it runs commit {remote.commit[:8]}",
              file=sys.stderr)
    print(f"sweep: {len(trials)} trials of commit {remote.commit[:8]}, {len(trials) - len(todo)} already on "
          f"{remote.url}")
    for trial in trials:
        state = "skip   " if trial.name in done else ("todo   " if args.dry_run else None)
        if state:
            print(f"  {state} {trial.name} ({' '.join(trial.overrides)})")
    if args.dry_run or not todo:
        return 0
    specs = [TrialSpec(trial.name, trial.overrides, remote.url, remote.commit, tuple(args.targets),
                       args.dvc_remote, args.force, remote.identity(), args.workdir) for trial in todo]
    try:
        where = connect(ray, args.address)
        check_resources(ray, args.cpus_per_trial, args.gpus_per_trial)
        print(f"sweep: running {len(todo)} on {where}", flush=True)
        results = run_on_ray(ray, specs, cpus=args.cpus_per_trial, gpus=args.gpus_per_trial,
                             max_concurrent=args.max_concurrent, on_result=lambda r: _report(r, args.logs))
    except SweepError as error:
        return _error(str(error))
    except KeyboardInterrupt:
        print("gestural sweep: interrupted (running trials cancelled)", file=sys.stderr)
        return 130
    finally:
        if ray is not None and ray.is_initialized():
            ray.shutdown()
    failed = [result for result in results if not result.ok]
    print(f"sweep: {len(results) - len(failed)} of {len(results)} trials pushed to {remote.url}"
          + (f", {len(failed)} failed" if failed else "") + f"; `dvc exp pull {remote.name}` brings them here")
    return 1 if failed else 0
