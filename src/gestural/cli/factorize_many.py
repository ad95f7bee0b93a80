"""``gestural factorize`` over many files: worker processes and a progress bar.

A corpus of thousands of utterances spends its time per file (reading, scaling, the forward
pass, metrics, the TextGrid and events table, the figures), not in any one step, so the
files are shared out among worker processes (:func:`gestural.core.worker_pool.pool_map`),
each with a copy of the model and one torch thread: the workers are the parallelism, and
more threads than cores would only wait on each other. The outcomes come back in the input
order; a file that fails is an outcome with its reason, not an exception, so the others are
still written. On a GPU the files run one after another in this process (a CUDA context
cannot be shared with forked workers).
"""

from __future__ import annotations

import multiprocessing
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

from gestural.cli.factorize import FactorizeError, FileFactorizer, UtteranceResult, factorize_file
from gestural.core.worker_pool import pool_map
from gestural.data.ema import EmaFormatError

MIN_FILES_FOR_WORKERS = 4  # fewer files run in this process: starting workers costs more


@dataclass(frozen=True)
class FactorizeOptions:
    """The per-file settings of ``gestural factorize`` (see :func:`factorize_file`)."""

    out: Path
    lab: Path | None = None
    figures: bool = True
    dpi: int = 110
    max_gestures: int = 16
    event_height: float = 0.4


@dataclass
class FileOutcome:
    """One file's result, or the reason it failed (one line, starting with its path), and
    the warnings it gave."""

    path: Path
    result: UtteranceResult | None
    reason: str | None
    warnings: list[str] = field(default_factory=list)


# The model each process factorizes with: set in the parent before the workers start, so
# that forked workers inherit it; a worker started afresh (spawn, forkserver) loads it once.
_factorizer: FileFactorizer | None = None
_single_threaded = False


def _worker_factorizer(model: tuple[str, int]) -> FileFactorizer:
    """This process's model; in a worker, torch on one thread (set before any work)."""
    global _factorizer, _single_threaded
    if not _single_threaded and multiprocessing.parent_process() is not None:
        torch.set_num_threads(1)
        _single_threaded = True
    if _factorizer is None:
        model_path, max_nan_run = model
        _factorizer = FileFactorizer.load(model_path, "cpu", max_nan_run)
    return _factorizer


def _factorize_one(task: tuple[Path, FactorizeOptions, tuple[str, int]]) -> FileOutcome:
    path, options, model = task
    warnings: list[str] = []
    try:
        result = factorize_file(_worker_factorizer(model), path, options.out, lab_path=options.lab,
                                figures=options.figures, dpi=options.dpi, max_gestures=options.max_gestures,
                                event_height=options.event_height, warn=warnings.append)
    except (EmaFormatError, FactorizeError) as error:
        reason = str(error)
    except OSError as error:  # unreadable input, or an output that cannot be written
        reason = f"{error.filename or path}: {error.strerror or error}"
    except RuntimeError as error:  # e.g. the GPU runs out of memory on a very long file
        reason = f"{path}: {error}"
    else:
        return FileOutcome(path, result, None, warnings)
    return FileOutcome(path, None, reason, warnings)


def factorize_files(factorizer: FileFactorizer, files: Sequence[Path], options: FactorizeOptions, *,
                    workers: int | None = None, progress: bool = True) -> Iterator[FileOutcome]:
    """Factorize ``files`` into ``options.out``, yielding each outcome in the order of ``files``.

    Parameters
    ----------
    factorizer : FileFactorizer
        The loaded model.
    workers : int or None
        Worker processes (None: the CPUs available; 1: none, all in this process, as on a GPU).
    progress : bool
        Show a progress bar (files, rate, time left) on stderr when it is a terminal.
    """
    global _factorizer
    if factorizer.device.type != "cpu":
        workers = 1
    _factorizer = factorizer
    try:
        model = (factorizer.model_path, factorizer.max_nan_run)
        yield from pool_map(_factorize_one, [(Path(p), options, model) for p in files], workers,
                            min_tasks=MIN_FILES_FOR_WORKERS, desc="factorize", unit="file", progress=progress)
    finally:
        _factorizer = None
