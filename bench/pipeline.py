#!/usr/bin/env python
"""The whole pipeline at real size: `dvc repro` stage by stage, and `gestural factorize`.

    python bench/pipeline.py                   # 8 x 138 and 8 x 551 utterances -> bench/results/pipeline-cpu.json
    python bench/pipeline.py --fractions 1     # the full size only
    python bench/pipeline.py --tiny --out /tmp/p.json   # a smoke test (tests/test_bench_pipeline.py)

For each size (a fraction of 8 speakers x 551 utterances of 1-5 s, about CMU's 4,409
utterances and 2.6 M frames) it clones the repository's current commit into a temporary
directory (``--overlay PATH`` copies a working-tree file over the clone's, for uncommitted
work), sets the synthetic corpus's size in the clone's params.yaml, and runs each stage of
dvc.yaml with ``dvc repro -s <stage>`` in a process of its own, recording its wall time and
peak resident memory (bench/measure.py: the largest process, and the largest sum over the
process tree); then ``gestural factorize`` over every EMA file of the extracted corpus (one
run per speaker directory, without figures unless ``--factorize-figures``). With two sizes,
``scaling`` gives each stage's cost exponent in its frames (1: linear), and ``targets`` the
issue's: the whole repro under 10 minutes at the full size, no stage over 4 GiB, each stage
linear or better. Progress goes to stderr; stdout gets the one JSON object, also written to
``--out`` (default ``bench/results/pipeline-<device type>.json``, ``-quick`` before
``.json`` with ``--tiny``). Each stage's output is in ``<clone>/bench-logs/`` (``--keep DIR``
keeps the clones). ``--table FILE`` prints the README's table from a results file;
``--combine FILE...`` merges runs of one size each (run side by side, or one after another)
into one result with their scaling.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # the bench package, which puts <repo>/src (the library) on sys.path too

import yaml  # noqa: E402

from bench import say  # noqa: E402
from bench.machine import load_average  # noqa: E402
from bench.measure import measured_run  # noqa: E402
from bench.pipeline_figures import corpus_frames, markdown_table, scaling, stage_frames, targets  # noqa: E402
from bench.result_files import RESULTS, publish  # noqa: E402

FULL_SPEAKERS = 8
FULL_UTTERANCES = 551  # per speaker: 8 x 551 = 4,408, CMU's 4,409
SECONDS = [1.0, 5.0]  # utterance lengths: CMU's mean is ~2.9 s
# Half held out: a seeded hash splits the utterances, and 16 of them must leave some for evaluate.
TINY = {"speakers": 2, "utterances": 8, "set": ["epochs=1", "train.steps_per_epoch=2", "data.test_fraction=0.5"]}
BIN = Path(sys.executable).parent  # the environment's dvc and gestural


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--fractions", type=float, nargs="+", default=[0.25, 1.0],
                        help="corpus sizes as fractions of the full one, run in this order (default 0.25 1)")
    parser.add_argument("--speakers", type=int, default=FULL_SPEAKERS, help="speakers at every size (default 8)")
    parser.add_argument("--utterances", type=int, default=FULL_UTTERANCES,
                        help="utterances per speaker at fraction 1 (default 551)")
    parser.add_argument("--tiny", action="store_true",
                        help="2 speakers x 8 utterances, 1 epoch of 2 steps, one size (a smoke test)")
    parser.add_argument("--device", default=None, choices=("auto", "cpu", "cuda"),
                        help="params.yaml's device in the clones (default: params.yaml's)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a params.yaml key in the clones (dotted, YAML value), e.g. "
                             "--set evaluate.baseline.max_test_utterances=null; repeatable")
    parser.add_argument("--overlay", action="append", default=[], type=Path, metavar="PATH",
                        help="copy this working-tree file (relative to the repository) over the clone's; repeatable")
    parser.add_argument("--no-factorize", dest="factorize", action="store_false", help="skip gestural factorize")
    parser.add_argument("--factorize-figures", action="store_true", help="let gestural factorize draw its figures")
    parser.add_argument("--keep", type=Path, default=None, metavar="DIR",
                        help="make the clones in DIR and keep them (default: a temporary directory)")
    parser.add_argument("--out", type=Path, default=None,
                        help="also write the JSON here (default bench/results/pipeline-<device type>.json)")
    parser.add_argument("--table", type=Path, default=None, metavar="JSON",
                        help="only print the README's table from this results file")
    parser.add_argument("--combine", type=Path, nargs="+", default=None, metavar="JSON",
                        help="only merge the sizes of these results files (runs of one size each, e.g. made at "
                             "the same time) into one, with its scaling and targets, to --out")
    args = parser.parse_args(argv)
    if args.tiny:
        args.fractions, args.speakers, args.utterances = [1.0], TINY["speakers"], TINY["utterances"]
        args.set = TINY["set"] + args.set
    return args


# ----------------------------------------------------------------- the clone


def git(*args: str, cwd: Path = REPO) -> str:
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, text=True).stdout.strip()


def make_clone(directory: Path, overlays: list[Path]) -> Path:
    """A clone of the current commit in ``directory``, with the overlay files copied in."""
    git("clone", "--quiet", str(REPO), str(directory))
    git("checkout", "--quiet", git("rev-parse", "HEAD"), cwd=directory)
    for path in overlays:
        source = REPO / path
        if not source.is_file():
            raise SystemExit(f"bench: --overlay {path}: not a file of the working tree")
        (directory / path).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, directory / path)
    return directory


def set_key(params: dict, dotted: str, value) -> None:
    *sections, key = dotted.split(".")
    node = params
    for name in sections:
        if not isinstance(node.get(name), dict):
            raise SystemExit(f"bench: --set {dotted}: params.yaml has no section {name!r}")
        node = node[name]
    if key not in node:
        raise SystemExit(f"bench: --set {dotted}: params.yaml has no key {key!r} there")
    node[key] = value


def write_params(clone: Path, speakers: int, utterances: int, device: str | None, pairs: list[str]) -> dict:
    """The clone's params.yaml with the corpus's size (comments are lost: the clone is thrown away)."""
    params = yaml.safe_load((clone / "params.yaml").read_text())
    synthetic = params["synthetic"]
    synthetic["speakers"] = [f"syn{i}" for i in range(speakers)]
    synthetic["utterances_per_speaker"] = utterances
    synthetic["min_seconds"], synthetic["max_seconds"] = SECONDS  # the events corpus's range
    synthetic["articulatory"]["seconds"] = list(SECONDS)
    if device is not None:
        params["device"] = device
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            raise SystemExit(f"bench: --set {pair!r}: expected KEY=VALUE")
        set_key(params, key, yaml.safe_load(value))
    (clone / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    return params


# ------------------------------------------------------------------ running


def environment() -> dict:
    env = dict(os.environ, DVC_NO_ANALYTICS="1", PATH=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}")
    env.pop("PYTHONPATH", None)  # the stages set their own
    return env


def run_step(name: str, command: list[str], clone: Path, accept: tuple[int, ...] = (0,)) -> dict:
    """One measured command in the clone; an exit status not in ``accept`` stops the bench with
    its log's tail."""
    logs = clone / "bench-logs"
    logs.mkdir(exist_ok=True)
    log = logs / f"{name}.log"
    say(f"{clone.name}: {name} ...")
    measured = measured_run(command, cwd=clone, env=environment(), log=log)
    say(f"{clone.name}: {name}: {measured['seconds']:.1f} s, peak {measured['peak_rss_mib']:.0f} MiB "
        f"(tree {measured['peak_tree_rss_mib'] or 0:.0f} MiB)")
    if measured["returncode"] not in accept:
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-30:])
        raise SystemExit(f"bench: {name} failed (exit {measured['returncode']}) in {clone}:\n{tail}")
    return measured


def stage_names(clone: Path) -> list[str]:
    """dvc.yaml's stages in the order written (the pipeline's order)."""
    return list(yaml.safe_load((clone / "dvc.yaml").read_text())["stages"])


def factorize(clone: Path, figures: bool) -> dict:
    """``gestural factorize`` over every speaker's EMA files: one run per directory, summed."""
    directories = sorted((clone / "data" / "extracted").glob("*/cin_us_*/nema"))
    runs = []
    for directory in directories:
        command = [str(BIN / "gestural"), "factorize", "--model", "models/model.pt", "--ema", str(directory),
                   "--out", str(clone / "factorized" / directory.parent.name), "--quiet"]
        # Exit 1: some files failed, as the synthetic corpus's planted blemishes (a 1 s NaN run) must.
        runs.append(run_step(f"factorize-{directory.parent.name}", command + ([] if figures else ["--no-figures"]),
                             clone, accept=(0, 1)))
    files = sum(1 for d in directories for _ in d.glob("*.ema"))
    failed = sum(log.read_text(errors="replace").count("\n  FAILED  ")
                 for log in (clone / "bench-logs").glob("factorize-*.log"))
    # The frames each file had, as factorize wrote them (the files nema2npy dropped included).
    frames = sum(json.loads(p.read_text())["frames"] for p in (clone / "factorized").glob("*/*/metrics.json"))
    return {"files": files, "failed": failed, "frames": frames, "directories": len(directories), "figures": figures,
            "seconds": sum(r["seconds"] for r in runs),
            "peak_rss_mib": max(r["peak_rss_mib"] for r in runs),
            "peak_tree_rss_mib": max(r["peak_tree_rss_mib"] or 0 for r in runs),
            "runs": runs}


def run_size(args: argparse.Namespace, fraction: float, root: Path) -> dict:
    utterances = max(1, round(args.utterances * fraction))
    clone = make_clone(root / f"size-{args.speakers}x{utterances}", args.overlay)
    params = write_params(clone, args.speakers, utterances, args.device, args.set)
    result: dict = {"fraction": fraction, "speakers": args.speakers, "utterances_per_speaker": utterances,
                    "seconds_range": SECONDS, "device": params["device"], "stages": {}}
    for stage in stage_names(clone):
        result["stages"][stage] = run_step(stage, [str(BIN / "dvc"), "repro", "--single-item", stage], clone)
    result["corpus"] = corpus_frames(clone)
    for stage, measured in result["stages"].items():
        measured["frames"] = stage_frames(stage, result["corpus"])
    result["repro_seconds"] = sum(m["seconds"] for m in result["stages"].values())
    if args.factorize:
        result["factorize"] = factorize(clone, args.factorize_figures)
    return result


def device_type(device: str) -> str:
    import torch

    return "cuda" if device == "cuda" or (device == "auto" and torch.cuda.is_available()) else "cpu"


def run(args: argparse.Namespace) -> dict:
    started = time.perf_counter()
    commit = git("rev-parse", "HEAD")
    result: dict = {"commit": commit, "overlays": [str(p) for p in args.overlay], "settings": {
        "fractions": args.fractions, "speakers": args.speakers, "utterances_at_fraction_1": args.utterances,
        "tiny": args.tiny, "set": args.set, "factorize_figures": args.factorize_figures},
        "machine": {"cpu_cores": len(os.sched_getaffinity(0)), "load_average_at_start": load_average()}}
    with contextlib.ExitStack() as stack:
        if args.keep is not None:
            args.keep.mkdir(parents=True, exist_ok=True)
            root = args.keep
        else:
            root = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="gestural-pipeline-")))
        result["sizes"] = [run_size(args, fraction, root) for fraction in args.fractions]
    result["scaling"] = scaling(result["sizes"])
    result["targets"] = targets(result["sizes"], result["scaling"])
    result["machine"]["load_average_at_end"] = load_average()
    result["machine"]["device_type"] = device_type(result["sizes"][0]["device"])
    result["total_seconds"] = time.perf_counter() - started
    return result


def combine(paths: list[Path]) -> dict:
    """One result from several runs' (of the same commit): their sizes, smallest first, and
    the scaling and targets between them."""
    runs = [json.loads(path.read_text()) for path in paths]
    if len({run["commit"] for run in runs}) > 1:
        raise SystemExit("bench: --combine: the results are of different commits")
    result = dict(runs[0], sizes=sorted((s for run in runs for s in run["sizes"]), key=lambda s: s["fraction"]),
                  combined_from=[str(p) for p in paths],
                  total_seconds=sum(run["total_seconds"] for run in runs))
    result["settings"] = dict(result["settings"], fractions=[s["fraction"] for s in result["sizes"]])
    result["machine"] = dict(result["machine"], load_average_at_end=[run["machine"]["load_average_at_end"]
                                                                      for run in runs])
    result["scaling"] = scaling(result["sizes"])
    result["targets"] = targets(result["sizes"], result["scaling"])
    return result


def default_out(device: str, tiny: bool) -> Path:
    return RESULTS / f"pipeline-{device}{'-quick' if tiny else ''}.json"


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.table is not None:
        print(markdown_table(json.loads(args.table.read_text())))
        return 0
    if any(not (0 < f <= 1) or math.isnan(f) for f in args.fractions):
        raise SystemExit("bench: --fractions must be in (0, 1]")
    if args.combine is not None:
        result = combine(args.combine)
    else:
        with contextlib.redirect_stdout(sys.stderr):  # stdout is for the one JSON object
            result = run(args)
    out = args.out if args.out is not None else default_out(result["machine"]["device_type"], args.tiny)
    publish(result, out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
