"""The evaluate stage's files on disk: written here, and read back here by every reader.

What :func:`write_outputs` writes, each atomically:

- ``metrics/eval.json``: the figures of merit (:func:`summary_metrics`);
- ``plots/eval/per_channel_correlation.csv``: ``channel, neural, classical``, one row per
  channel, Pearson r with 6 decimals (empty where r is undefined);
- the ``evaluation/`` directory:

  - ``classical.npz``: ``gesture_kernels`` (K, C, L) and ``baseline`` (C,) of the classical fit;
  - ``examples.npz``: ``ids`` and, for example ``i``, ``x_i``,
    ``{neural,classical}_reconstruction_i``, ``{neural,classical}_scores_i`` and, with ground
    truth, ``planted_scores_i``;
  - ``matching.json``: the planted-to-learned matching of both methods;
  - ``details.json``: every metric but the timings;
  - ``planted.npz`` (with ground truth only): ``kernels`` (P, C, L) in normalized units;

- the timing file (``reports/timing/evaluate.json``), when given.

The readers raise :class:`EvaluationFileError`, one line naming the file.
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from gestural.core.files import atomic_dir, write_json, write_text
from gestural.core.units import CHANNELS

__all__ = [
    "CLASSICAL_FILE",
    "DETAILS_FILE",
    "EXAMPLES_FILE",
    "MATCHING_FILE",
    "PLANTED_FILE",
    "GESTURAL_SCORES_FILE",
    "read_gestural_scores",
    "EvaluationFileError",
    "EvaluationResult",
    "read_channel_correlation",
    "read_classical",
    "read_examples",
    "read_matching",
    "read_planted",
    "summary_metrics",
    "EvalSummary",
    "parse_eval_summary",
    "read_eval_summary",
    "write_outputs",
]

# The files of the evaluation/ directory.
CLASSICAL_FILE = "classical.npz"
EXAMPLES_FILE = "examples.npz"
MATCHING_FILE = "matching.json"
DETAILS_FILE = "details.json"
PLANTED_FILE = "planted.npz"
GESTURAL_SCORES_FILE = "gestural_scores.json"

# What metrics/eval.json keeps of each method: the figures of merit, so that `dvc metrics diff`
# and `dvc exp show` compare results. Everything (per-channel r, timings, per-gesture AUCs)
# is in evaluation/details.json.
SUMMARY_KEYS = ("variance_explained", "activation_auc", "seqnmf_similarity", "kernel_cosine", "onset_f1",
                "hoyer_across_time", "gestures_in_use", "distinct_gestures", "elbo_per_frame",
                "score_iou", "score_onset_f1", "score_on_per_frame")
CLASSICAL_SUMMARY_KEYS = ("variance_explained", "activation_auc", "kernel_cosine", "score_iou", "score_onset_f1")
# Differ on every run: kept out of the DVC outputs, so that a rerun's are byte-identical.
TIMING_KEYS = ("fit_seconds", "inference_seconds")
# Per-example arrays of examples.npz (``<name>_<i>``) that read_examples returns.
_EXAMPLE_ARRAYS = ("x", "neural_reconstruction", "neural_scores", "classical_reconstruction", "classical_scores")


class EvaluationFileError(ValueError):
    """An output of the evaluate stage is missing or malformed (names the file)."""


@dataclass
class EvaluationResult:
    """Everything the evaluate stage writes, in memory."""

    metrics: dict  # every metric: metrics/eval.json's summary, details.json, the timings
    channels: list[str]
    classical_kernels: np.ndarray
    classical_baseline: np.ndarray
    examples: dict  # arrays of evaluation/examples.npz
    matching: dict  # evaluation/matching.json
    planted_kernels: np.ndarray | None
    test_ids: list[str] = field(default_factory=list)  # held-out utterances, in the scores' order
    neural_scores: list[np.ndarray] = field(default_factory=list)  # (K, T_i) per held-out utterance
    neural_in_use: list[bool] = field(default_factory=list)  # K flags: the gestures num_gestures_in_use counts
    win_size: int = 0  # the network's kernel length
    gestural_scores: dict | None = None  # evaluation/gestural_scores.json (ground truth only)
    neural_segmentation: object = None  # the network's Segmentation: the example TextGrids' intervals


# ----------------------------------------------------------------------------- writers


def write_outputs(result: EvaluationResult, *, metrics_path: str | os.PathLike, plot_path: str | os.PathLike,
                  out_dir: str | os.PathLike, timing_path: str | os.PathLike | None = None) -> None:
    """Write eval.json, the per-channel correlation CSV and the ``evaluation/`` directory, each atomically.

    Timings (fit and inference seconds), which differ on every run, go to ``timing_path`` only,
    so that the outputs of a rerun are byte-identical; ``evaluation/details.json`` has every
    other metric. The module docstring lists the files.

    Parameters
    ----------
    result : EvaluationResult
    metrics_path : path-like
        ``metrics/eval.json``.
    plot_path : path-like
        ``plots/eval/per_channel_correlation.csv``.
    out_dir : path-like
        ``evaluation/`` (replaced as a whole).
    timing_path : path-like, optional
        ``reports/timing/evaluate.json``; no timing file when None.
    """
    timing = {method: {key: result.metrics[method].get(key) for key in TIMING_KEYS}
              for method in ("neural", "classical")}
    details = {key: value for key, value in result.metrics.items()}
    for method in ("neural", "classical"):
        details[method] = {k: v for k, v in result.metrics[method].items() if k not in TIMING_KEYS}
    with atomic_dir(out_dir) as tmp:
        np.savez(tmp / CLASSICAL_FILE, gesture_kernels=result.classical_kernels, baseline=result.classical_baseline)
        np.savez(tmp / EXAMPLES_FILE, **result.examples)
        (tmp / MATCHING_FILE).write_text(json.dumps(result.matching, indent=2) + "\n")
        (tmp / DETAILS_FILE).write_text(json.dumps(details, indent=2) + "\n")
        if result.planted_kernels is not None:
            np.savez(tmp / PLANTED_FILE, kernels=result.planted_kernels)
        if result.gestural_scores is not None:
            (tmp / GESTURAL_SCORES_FILE).write_text(json.dumps(result.gestural_scores, indent=1) + "\n")

    def cell(value) -> str:
        return "" if value is None else f"{value:.6f}"

    neural = result.metrics["neural"]["correlation_per_channel"]
    classical = result.metrics["classical"]["correlation_per_channel"]
    rows = ["channel,neural,classical"] + [f"{c},{cell(neural[c])},{cell(classical[c])}" for c in result.channels]
    write_text(plot_path, "\n".join(rows) + "\n")
    write_json(metrics_path, summary_metrics(result.metrics))
    if timing_path is not None:
        write_json(timing_path, timing)


def summary_metrics(metrics: dict) -> dict:
    """The figures of merit of the full metrics: what metrics/eval.json holds (``SUMMARY_KEYS``
    of the network, ``CLASSICAL_SUMMARY_KEYS`` of the baseline, the raw-channel floor), about a
    dozen columns in `dvc exp show`."""
    floor = metrics.get("raw_channels")
    return {
        "neural": {key: metrics["neural"].get(key) for key in SUMMARY_KEYS},
        "classical": {key: metrics["classical"].get(key) for key in CLASSICAL_SUMMARY_KEYS},
        "raw_channels": {"activation_auc": floor["activation_auc"] if floor else None},
    }


# ----------------------------------------------------------------------------- readers


@dataclass(frozen=True)
class EvalSummary:
    """``metrics/eval.json`` as its readers use it: each method's figures of merit, numbers only
    (a metric the corpus cannot give, such as kernel cosine without planted kernels, is absent).
    """

    neural: dict[str, float]
    classical: dict[str, float]
    raw_channel_auc: float | None


def parse_eval_summary(data, source: str) -> EvalSummary:
    """An :class:`EvalSummary` from ``metrics/eval.json``'s content (read by this module, or by
    DVC for ``dvc exp show``); ``source`` names it in the error.

    Raises
    ------
    EvaluationFileError
        No ``neural`` section: not written by the evaluate stage.
    """
    def numbers(section, keys) -> dict[str, float]:
        section = section if isinstance(section, Mapping) else {}
        return {key: float(section[key]) for key in keys
                if isinstance(section.get(key), (int, float)) and not isinstance(section.get(key), bool)}

    if not isinstance(data, Mapping) or not isinstance(data.get("neural"), Mapping):
        raise EvaluationFileError(f"{source}: no neural metrics (not written by the evaluate stage)")
    floor = numbers(data.get("raw_channels"), ("activation_auc",))
    return EvalSummary(numbers(data["neural"], SUMMARY_KEYS), numbers(data.get("classical"), CLASSICAL_SUMMARY_KEYS),
                       floor.get("activation_auc"))


def read_eval_summary(path: str | os.PathLike = "metrics/eval.json") -> EvalSummary:
    """Read ``metrics/eval.json`` (:func:`parse_eval_summary`), with a one-line error naming it."""
    path = _need(Path(path))
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise EvaluationFileError(f"{path}: not readable JSON ({error})") from None
    return parse_eval_summary(data, str(path))




def _need(path: Path) -> Path:
    if not path.is_file():
        raise EvaluationFileError(f"{path}: no such file (run `dvc repro evaluate`)")
    return path


def _read_npz(path: Path) -> dict:
    _need(path)  # before the try: a missing file is not "unreadable"
    try:
        with np.load(path, allow_pickle=False) as archive:
            return {key: archive[key] for key in archive.files}
    except (ValueError, OSError) as error:
        raise EvaluationFileError(f"{path}: not a readable .npz file ({error})") from None


def read_channel_correlation(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray | None]:
    """Per-channel r of both methods from ``per_channel_correlation.csv``, in :data:`~gestural.units.CHANNELS` order.

    Missing cells (undefined r) and missing channels become NaN; ``classical`` is None
    when the file has no such column.

    Raises
    ------
    EvaluationFileError
        The file is missing, lacks the ``channel`` or ``neural`` column, or has a cell that is
        not a number.
    """
    path = _need(Path(path))
    with open(path, newline="") as handle:
        reader = csv.DictReader(handle)
        header = reader.fieldnames or []
        if "channel" not in header or "neural" not in header:
            raise EvaluationFileError(f"{path}: expected columns channel, neural[, classical], got {header}")
        table = {row["channel"]: row for row in reader}

    def column(name: str) -> np.ndarray:
        values = np.full(len(CHANNELS), np.nan)
        for c, channel in enumerate(CHANNELS):
            cell = (table.get(channel) or {}).get(name) or ""
            try:
                values[c] = float(cell) if cell.strip() else np.nan
            except ValueError:
                raise EvaluationFileError(
                    f"{path}: channel {channel}, column {name}: {cell!r} is not a number") from None
        return values

    return column("neural"), (column("classical") if "classical" in header else None)


def read_examples(path: str | os.PathLike) -> list[dict]:
    """The example utterances of ``examples.npz``: one dict per example.

    Each dict has ``id``, ``x``, ``neural_reconstruction``, ``neural_scores``,
    ``classical_reconstruction``, ``classical_scores`` (absent arrays are left out).

    Raises
    ------
    EvaluationFileError
        The file is missing or unreadable, or an example has no ``x_i``.
    """
    path = Path(path)
    arrays = _read_npz(path)
    ids = [str(i) for i in np.atleast_1d(arrays.get("ids", np.array([], dtype=str)))]
    examples = []
    for n, utterance_id in enumerate(ids):
        example = {"id": utterance_id}
        for key in _EXAMPLE_ARRAYS:
            if f"{key}_{n}" in arrays:
                example[key] = arrays[f"{key}_{n}"]
        if "x" not in example:
            raise EvaluationFileError(f"{path}: example {n} ({utterance_id}) has no x_{n}")
        examples.append(example)
    return examples


def read_matching(path: str | os.PathLike) -> dict:
    """``matching.json``: ``ground_truth``, ``planted_kernels`` and the matching of each method.

    Raises
    ------
    EvaluationFileError
        The file is missing, not JSON, or not a JSON object.
    """
    path = _need(Path(path))
    try:
        matching = json.loads(path.read_text())
    except ValueError as error:
        raise EvaluationFileError(f"{path}: not valid JSON ({error})") from None
    if not isinstance(matching, dict):
        raise EvaluationFileError(f"{path}: expected a JSON object")
    return matching


def read_classical(path: str | os.PathLike) -> dict:
    """The arrays of ``classical.npz`` (``gesture_kernels``, ``baseline``) by name.

    Raises
    ------
    EvaluationFileError
        The file is missing or unreadable.
    """
    return _read_npz(Path(path))


def read_planted(path: str | os.PathLike) -> np.ndarray | None:
    """The planted kernels of ``planted.npz``; None when the file is absent (no ground truth)
    or has no ``kernels``.

    Raises
    ------
    EvaluationFileError
        The file is unreadable.
    """
    path = Path(path)
    # Written only with ground truth: absence is a result, not an error.
    return _read_npz(path).get("kernels") if path.is_file() else None


def read_gestural_scores(path: str | os.PathLike) -> dict | None:
    """``gestural_scores.json`` (planted names, the exported-score matching of each method, and
    the example utterances' planted and exported intervals); None when absent (no ground truth).

    Raises
    ------
    EvaluationFileError
        The file is unreadable or not the evaluate stage's.
    """
    path = Path(path)
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as error:
        raise EvaluationFileError(f"{path}: not readable JSON ({error})") from None
    if not isinstance(data, dict) or not {"planted_names", "pairs", "examples"} <= set(data):
        raise EvaluationFileError(f"{path}: not the evaluate stage's gestural scores (planted_names, pairs, examples)")
    return data
