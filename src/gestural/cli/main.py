"""The ``gestural`` command line (also ``python -m gestural``).

Subcommands
-----------
factorize
    Factorize EMA files with a trained model (see :mod:`gestural.cli.factorize`).
compare
    Compare DVC experiments across seeds and choose a setting (see :mod:`gestural.cli.compare`).
sweep
    Run a grid of DVC experiments as Ray tasks, locally or on a cluster (see :mod:`gestural.cli.sweep`).

Exit status: 0 on success; 1 when some files of a directory failed (the others are
written, or some trials of a sweep failed); 2 for a usage error, an unusable model, a single
input file that failed, or a sweep that cannot start.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from gestural import __version__

EXIT_OK, EXIT_SOME_FAILED, EXIT_ERROR = 0, 1, 2


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gestural", description="Discover articulatory gestures in EMA kinematics.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    factorize = commands.add_parser(
        "factorize", help="factorize EMA utterances with a trained model",
        description="Factorize one EMA file (nema or EST Track, z-scored as in the corpus) or every *.ema file "
                    "of a directory into gestural scores. Writes <out>/<utterance id>/ with scores.npz (scores "
                    "(K, T), times_s, frame_rate), reconstruction.npy (12, T, normalized units), metrics.json, "
                    "<utterance id>.TextGrid (phones and one tier per gesture in use, for Praat), events.csv "
                    "(one row per gesture event, with the phone under its onset), kinematics.png, gestures.png "
                    "and scores.png.")
    factorize.add_argument("--model", required=True, type=Path, help="trained model (models/model.pt)")
    factorize.add_argument("--ema", required=True, type=Path, help="an EMA file, or a directory of *.ema files")
    factorize.add_argument("--out", required=True, type=Path, help="output directory")
    factorize.add_argument("--lab", type=Path, default=None,
                           help="phone labels (.lab) for a single file; default ../lab/<id>.lab next to it")
    factorize.add_argument("--device", default="auto", help="auto (GPU if any), cpu, cuda or cuda:<i> (default auto)")
    factorize.add_argument("--max-nan-run", type=int, default=20, metavar="FRAMES",
                           help="longest run of missing frames to interpolate (default 20 = 100 ms)")
    factorize.add_argument("--event-height", type=float, default=None, metavar="FRACTION",
                           help="a gesture is on (an interval of its TextGrid tier and events.csv) where its score "
                                "is at least this fraction of its largest on the training utterances (default: the "
                                "evaluate stage's, gestural.evaluation.segmentation.DEFAULT_RELATIVE_HEIGHT)")
    factorize.add_argument("--no-figures", dest="figures", action="store_false", help="skip the PNG figures")
    factorize.add_argument("--dpi", type=int, default=110, help="resolution of the figures (default 110)")
    factorize.add_argument("--max-gestures", type=int, default=16, help="gestures in the gallery (default 16)")
    factorize.add_argument("--quiet", action="store_true", help="no progress bar")
    factorize.add_argument("--workers", type=int, default=None, metavar="N",
                           help="worker processes for a directory (default: the CPUs available; 1: none)")
    factorize.set_defaults(run=_factorize)

    compare = commands.add_parser(
        "compare", help="compare DVC experiments (e.g. a num_gestures sweep) and choose a setting",
        description="Group finished DVC experiments by setting (all params but the seed and run-only knobs), "
                    "summarize held-out fit, recovery, sparsity and the seed-to-seed stability of the learned "
                    "gestures, and choose a setting. Writes <out>/compare.json, compare.md and "
                    "model_selection.png.")
    compare.add_argument("--exp-show-json", type=Path, default=None, metavar="FILE",
                         help="a saved `dvc exp show --json` output (default: run it in --repo)")
    compare.add_argument("--repo", type=Path, default=Path("."),
                         help="the DVC project (default .): where dvc exp show runs and kernels are read")
    compare.add_argument("--out", type=Path, default=Path("reports/compare"), help="output directory "
                         "(default reports/compare)")
    compare.add_argument("--param", default="num_gestures",
                         help="the swept param: x axis, and minimized for parsimony (default num_gestures)")
    compare.add_argument("--all-commits", action="store_true",
                         help="experiments of every commit, not only those based on HEAD")
    compare.add_argument("--ignore", action="append", default=[], metavar="PARAM",
                         help="a further param (or section) that does not define a setting (repeatable)")
    compare.add_argument("--tolerance", type=float, default=0.01,
                         help="settings within this of the best mean recovery compete on parsimony (default 0.01)")
    compare.add_argument("--kernels", type=Path, default=None, metavar="DIR",
                         help="read kernels from DIR/<experiment name>.npy instead of the DVC cache")
    compare.add_argument("--no-stability", dest="stability", action="store_false",
                         help="do not read kernels (no seed-to-seed stability)")
    compare.set_defaults(run=_compare)

    from gestural.cli import sweep  # standard library only: no cost to `gestural --help`

    sweep.add_parser(commands)
    return parser


def _error(message: str) -> None:
    print(f"gestural factorize: error: {message}", file=sys.stderr)


def _summary(result) -> str:
    fit = result.metrics["reconstruction"]
    in_use = len(result.metrics["gestures_in_use"])
    explained = fit["variance_explained"]
    explained = "n/a" if explained is None else f"{explained:.3f}"
    return (f"{result.source} -> {result.out_dir}/ ({result.metrics['frames']} frames, variance explained "
            f"{explained}, {in_use} of {result.metrics['num_gestures']} gestures in use)")


def _factorize(args) -> int:
    # Imported here: `gestural --help` should not wait for torch and matplotlib.
    from tqdm import tqdm

    from gestural.cli.factorize import FactorizeError, FileFactorizer, list_inputs
    from gestural.cli.factorize_many import FactorizeOptions, factorize_files
    from gestural.figures.style import MAX_DPI, MIN_DPI

    if not MIN_DPI <= args.dpi <= MAX_DPI:
        _error(f"--dpi must be in {MIN_DPI}..{MAX_DPI} (got {args.dpi})")
        return EXIT_ERROR
    if args.max_gestures < 1:
        _error(f"--max-gestures must be >= 1 (got {args.max_gestures})")
        return EXIT_ERROR
    from gestural.evaluation.segmentation import DEFAULT_RELATIVE_HEIGHT

    if args.event_height is None:
        args.event_height = DEFAULT_RELATIVE_HEIGHT
    if not 0 < args.event_height <= 1:
        _error(f"--event-height must be in (0, 1] (got {args.event_height})")
        return EXIT_ERROR
    if args.workers is not None and args.workers < 1:
        _error(f"--workers must be >= 1 (got {args.workers})")
        return EXIT_ERROR
    try:
        files = list_inputs(args.ema)
        if args.lab is not None and (args.ema.is_dir() or not args.lab.is_file()):
            raise FactorizeError(f"{args.lab}: --lab needs an existing .lab file and a single --ema file")
        factorizer = FileFactorizer.load(args.model, args.device, args.max_nan_run)
    except FactorizeError as error:
        _error(str(error))
        return EXIT_ERROR

    single = not args.ema.is_dir()
    processed, failed = [], []
    options = FactorizeOptions(out=args.out, lab=args.lab, figures=args.figures, dpi=args.dpi,
                               max_gestures=args.max_gestures, event_height=args.event_height)
    for outcome in factorize_files(factorizer, files, options, workers=1 if single else args.workers,
                                   progress=not (args.quiet or single)):
        for message in outcome.warnings:
            tqdm.write(message, file=sys.stderr)
        if outcome.reason is None:
            processed.append(outcome.result)
            continue
        failed.append((outcome.path, outcome.reason))
        if single:
            _error(outcome.reason)
            return EXIT_ERROR
        tqdm.write(f"error: {outcome.reason}", file=sys.stderr)

    if single:
        print(f"factorized {_summary(processed[0])}")
        return EXIT_OK
    print(f"factorized {len(processed)} of {len(files)} files into {args.out}/")
    for result in processed:
        print(f"  ok      {_summary(result)}")
    for _, reason in failed:
        print(f"  FAILED  {reason}")  # every reason starts with the file's path
    return EXIT_SOME_FAILED if failed else EXIT_OK


def _compare_error(message: str) -> None:
    print(f"gestural compare: error: {message}", file=sys.stderr)


def _compare(args) -> int:
    from gestural.cli.compare import DEFAULT_IGNORED, compare_experiments
    from gestural.cli.compare_report import write_report
    from gestural.cli.experiments import (
        CompareError,
        experiments_from_exp_show,
        kernels_from_dir,
        load_kernels,
        read_exp_show,
        run_exp_show,
    )

    if not args.tolerance >= 0:
        _compare_error("--tolerance must be >= 0")
        return EXIT_ERROR
    try:
        if args.exp_show_json is not None:
            show, source = read_exp_show(args.exp_show_json), str(args.exp_show_json)
        else:
            show, source = run_exp_show(args.repo, all_commits=args.all_commits), f"dvc exp show in {args.repo}"
        experiments, skipped = experiments_from_exp_show(show, source)
        if not args.stability:
            kernels = None
        elif args.kernels is not None:
            kernels = lambda revs: kernels_from_dir(args.kernels, experiments)  # noqa: E731
        else:
            kernels = lambda revs: load_kernels(revs, args.repo)  # noqa: E731
        report = compare_experiments(experiments, kernels, param=args.param,
                                     ignore=DEFAULT_IGNORED + tuple(args.ignore),
                                     tolerance=args.tolerance, skipped=skipped)
        report["source"] = source
        paths = write_report(report, args.out)
    except CompareError as error:
        _compare_error(str(error))
        return EXIT_ERROR
    except OSError as error:  # an output that cannot be written
        _compare_error(f"{error.filename or args.out}: {error.strerror or error}")
        return EXIT_ERROR
    for name in report["skipped"]:
        print(f"skipped {name['name']}: {name['reason']}", file=sys.stderr)
    for message in report["kernel_errors"].values():
        print(f"warning: no stability for {message}", file=sys.stderr)
    runs = sum(len(s["runs"]) for s in report["settings"])
    print(f"compared {runs} experiments in {len(report['settings'])} settings -> "
          f"{paths['json']}, {paths['markdown']}, {paths['figure']}")
    print(report["reason"])
    return EXIT_OK


def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    parser = _parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:  # argparse exits on --help, --version and usage errors
        return int(exit_.code or 0)
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
