"""Gestural scores in the formats speech scientists work with: Praat TextGrids, CSV tables.

This module owns these file formats (writers and readers):

- ``scores.npz``: ``scores`` (K, T) float32, ``times_s`` (T,) float64 -- the time of each
  frame's start, ``t / frame_rate`` -- and ``frame_rate`` (frames per second, 200 for EMA);
- ``<utterance>.TextGrid`` (Praat's long text format): an interval tier ``phones`` from the
  Festival lab file when there is one, then one interval tier per gesture in use, named
  ``g<k>`` (k = row of ``scores``), whose intervals are the gesture's events labelled
  ``g<k> <amplitude>``;
- ``events.csv``: ``utterance, gesture, onset_s, offset_s, amplitude, phone`` -- one row per
  event, ``phone`` the label under the onset (empty without a lab file);
- ``gesture_kernels.csv``: ``gesture, channel, frame, time_ms, value_normalized, speaker,
  value_mm`` -- every kernel sample, in mm per speaker where ``ema.stats`` allows.

Events (the intervals of a gesture's tier) are cut by :mod:`gestural.evaluation.segmentation`.
"""

from __future__ import annotations

import csv
import logging
import math
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from gestural.core.files import atomic_path
from gestural.core.units import CHANNELS, FRAME_RATE
from gestural.data.dataset import CorpusFileError, read_stats
from gestural.data.ema import EmaFormatError, read_lab
from gestural.evaluation.segmentation import GestureEvent, Segmentation
from gestural.model.gestures_file import GesturesFileError, read_gestures

logger = logging.getLogger(__name__)

__all__ = [
    "EVENT_COLUMNS", "KERNEL_COLUMNS", "PHONE_TIER", "ExportError",
    "phone_segments", "phone_at", "event_rows", "gesture_tier_name",
    "build_textgrid", "write_textgrid", "read_textgrid", "write_events", "read_events",
    "write_scores", "read_scores", "kernel_rows", "write_kernel_table", "read_kernel_table",
    "export_kernel_table", "row_phones", "write_csv_rows", "read_csv_rows",
]

EVENT_COLUMNS: tuple[str, ...] = ("utterance", "gesture", "onset_s", "offset_s", "amplitude", "phone")
KERNEL_COLUMNS: tuple[str, ...] = ("gesture", "channel", "frame", "time_ms", "value_normalized", "speaker",
                                   "value_mm")
PHONE_TIER = "phones"


class ExportError(ValueError):
    """An input of an export cannot be used (the message names the file and the problem)."""


def phone_segments(phones: Sequence[tuple[float, str]] | None) -> list[tuple[float, float, str]]:
    """(start, end, label) from Festival (end_time, label) pairs; empty or backward segments dropped."""
    segments, start = [], 0.0
    for end, label in phones or ():
        end = float(end)
        if end > start:
            segments.append((start, end, str(label)))
            start = end
    return segments


def phone_at(segments: Sequence[tuple[float, float, str]], time_s: float) -> str:
    """The label of the segment holding ``time_s`` (start inclusive), or "" outside them all."""
    for start, end, label in segments:
        if start <= time_s < end:
            return label
    return ""


def event_rows(utterance_id: str, events: Sequence[GestureEvent], phones=None, *,
               frame_rate: float = FRAME_RATE) -> list[dict]:
    """Rows of ``events.csv`` for one utterance (times in seconds, phone under the onset)."""
    segments = phone_segments(phones)
    return [{"utterance": utterance_id, "gesture": e.gesture, "onset_s": e.onset / frame_rate,
             "offset_s": e.offset / frame_rate, "amplitude": e.amplitude,
             "phone": phone_at(segments, e.onset / frame_rate)} for e in events]


# ---------------------------------------------------------------------------- TextGrid


def gesture_tier_name(gesture: int) -> str:
    return f"g{int(gesture)}"


def build_textgrid(events: Sequence[GestureEvent], frames: int, *, phones=None,
                   gestures: Sequence[int] | None = None, frame_rate: float = FRAME_RATE):
    """A praatio Textgrid: the phone tier (when ``phones``), then one tier per gesture.

    One interval tier per gesture rather than a point tier of onsets: each tier then reads
    like a row of a gestural score (a box from onset to the end of the kernel's span, as in
    Articulatory Phonology's score diagrams), the onset is the box's left edge so a point tier
    would repeat it, and Praat can measure, select and play each interval. A gesture's events
    never overlap (the segmentation merges touching runs), as an interval tier requires.

    Parameters
    ----------
    events : sequence of GestureEvent
    frames : int
        Utterance length in frames (the grid spans ``frames / frame_rate`` s, or the lab's end).
    phones : list of (end_time, label), optional
    gestures : sequence of int, optional
        Tiers to write, in this order (e.g. most used first); default the gestures of
        ``events`` by index. A listed gesture without events gets an empty tier.
    frame_rate : float
    """
    from praatio import textgrid

    segments = phone_segments(phones)
    end = max(frames / frame_rate, segments[-1][1] if segments else 0.0)
    if not end > 0:
        raise ValueError("an empty utterance has no TextGrid")
    grid = textgrid.Textgrid(0.0, end)
    if phones is not None:
        grid.addTier(textgrid.IntervalTier(PHONE_TIER, segments, 0.0, end))
    order = sorted({e.gesture for e in events}) if gestures is None else [int(g) for g in gestures]
    for k in order:
        intervals = [(e.onset / frame_rate, min(e.offset / frame_rate, end),
                      f"{gesture_tier_name(k)} {e.amplitude:.3g}")
                     for e in events if e.gesture == k]
        grid.addTier(textgrid.IntervalTier(gesture_tier_name(k), intervals, 0.0, end))
    return grid


def write_textgrid(path: str | os.PathLike, grid) -> None:
    """Save ``grid`` in Praat's long text format (UTF-8), atomically.

    Gaps between intervals are filled with empty intervals, as Praat expects every interval
    tier to cover the whole grid.
    """
    with atomic_path(path) as tmp:
        grid.save(os.fspath(tmp), format="long_textgrid", includeBlankSpaces=True, reportingMode="error")


def read_textgrid(path: str | os.PathLike):
    """A TextGrid file as a praatio Textgrid (empty intervals left out)."""
    from praatio import textgrid

    return textgrid.openTextgrid(os.fspath(path), includeEmptyIntervals=False)


# --------------------------------------------------------------------------- CSV tables


def write_csv_rows(path: str | os.PathLike, columns: Sequence[str], rows: Sequence[dict]) -> None:
    """Write dict rows as CSV with a header, atomically (floats to 6 significant digits, NaN/None empty)."""
    with atomic_path(path) as tmp:
        with open(tmp, "w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(columns), lineterminator="\n")
            writer.writeheader()
            writer.writerows({key: _cell(row.get(key)) for key in columns} for row in rows)


def _cell(value) -> str:
    if value is None:
        return ""
    if isinstance(value, (float, np.floating)):
        return "" if not math.isfinite(value) else f"{float(value):.6g}"
    return str(value)


def read_csv_rows(path: str | os.PathLike, columns: Sequence[str]) -> list[dict]:
    """Rows of a CSV as dicts of strings; ExportError when a column is missing."""
    path = Path(path)
    with open(path, newline="") as handle:
        reader = csv.DictReader(handle)
        missing = [c for c in columns if c not in (reader.fieldnames or [])]
        if missing:
            raise ExportError(f"{path}: missing columns {missing} (header {reader.fieldnames})")
        return list(reader)


def _number(path, line: int, row: dict, key: str, kind=float):
    cell = row[key]
    if kind is float and cell == "":
        return math.nan
    try:
        return kind(cell)
    except ValueError:
        raise ExportError(f"{path}: line {line}, {key}: {cell!r} is not a number") from None


def write_events(path: str | os.PathLike, rows: Sequence[dict]) -> None:
    """Write ``events.csv`` (rows as :func:`event_rows` makes them), atomically."""
    write_csv_rows(path, EVENT_COLUMNS, rows)


def read_events(path: str | os.PathLike) -> list[dict]:
    """Rows of an ``events.csv``: gesture an int, times and amplitude floats."""
    rows = read_csv_rows(path, EVENT_COLUMNS)
    for line, row in enumerate(rows, 2):
        row["gesture"] = _number(path, line, row, "gesture", int)
        for key in ("onset_s", "offset_s", "amplitude"):
            row[key] = _number(path, line, row, key)
    return rows


# ------------------------------------------------------------------------------ scores


def write_scores(path: str | os.PathLike, scores, *, frame_rate: float = FRAME_RATE) -> None:
    """Write ``scores.npz``: scores (K, T) float32, times_s (T,), frame_rate; atomically."""
    scores = np.asarray(scores, dtype=np.float32)
    times = np.arange(scores.shape[-1], dtype=np.float64) / float(frame_rate)
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as handle:  # a handle: np.savez would append ".npz" to the temporary name
            np.savez(handle, scores=scores, times_s=times, frame_rate=np.float64(frame_rate))


def read_scores(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray, float]:
    """(scores (K, T), times_s (T,), frame_rate) from a ``scores.npz``."""
    try:
        with np.load(path, allow_pickle=False) as archive:
            return archive["scores"], archive["times_s"], float(archive["frame_rate"])
    except (KeyError, ValueError) as error:
        raise ExportError(f"{path}: not a scores.npz ({error})") from None


# ---------------------------------------------------------------------- kernels in mm


def kernel_rows(kernels, stats: dict | None = None, *, frame_rate: float = FRAME_RATE) -> list[dict]:
    """Every kernel sample, in normalized units and, per speaker with ``ema.stats``, in mm.

    ``value_mm`` is the displacement the kernel adds at a score of 1: the conversion of
    :func:`gestural.data.scaling.to_corpus_units` without its offsets (which a displacement does not
    have). Without ``stats['ema_stats']`` the rows carry an empty speaker and ``value_mm``.
    """
    from gestural.data.scaling import to_corpus_units

    kernels = np.asarray(kernels, dtype=np.float64)
    if kernels.ndim != 3 or kernels.shape[1] != len(CHANNELS):
        raise ValueError(f"kernels: expected (K, {len(CHANNELS)}, L), got shape {kernels.shape}")
    stats = stats or {}
    speakers = list(stats.get("ema_stats") or {})
    in_mm = {}
    channels_first = kernels.transpose(1, 0, 2)  # (12, K, L), as to_corpus_units wants
    for speaker in speakers:
        moved, unit = to_corpus_units(channels_first, stats, speaker)
        rest, _ = to_corpus_units(np.zeros_like(channels_first), stats, speaker)
        if unit.startswith("mm"):
            in_mm[speaker] = (moved - rest).transpose(1, 0, 2)
    rows = []
    for k, c, t in np.ndindex(kernels.shape):
        base = {"gesture": k, "channel": CHANNELS[c], "frame": t, "time_ms": 1000.0 * t / frame_rate,
                "value_normalized": kernels[k, c, t]}
        if not in_mm:
            rows.append({**base, "speaker": "", "value_mm": None})
        for speaker, values in in_mm.items():
            rows.append({**base, "speaker": speaker, "value_mm": values[k, c, t]})
    return rows


def write_kernel_table(path: str | os.PathLike, kernels, stats: dict | None = None) -> None:
    """Write ``gesture_kernels.csv`` (see :func:`kernel_rows`), atomically."""
    write_csv_rows(path, KERNEL_COLUMNS, kernel_rows(kernels, stats))


def read_kernel_table(path: str | os.PathLike) -> list[dict]:
    """Rows of a ``gesture_kernels.csv``: gesture and frame ints, values floats (NaN when empty)."""
    rows = read_csv_rows(path, KERNEL_COLUMNS)
    for line, row in enumerate(rows, 2):
        for key in ("gesture", "frame"):
            row[key] = _number(path, line, row, key, int)
        for key in ("time_ms", "value_normalized", "value_mm"):
            row[key] = _number(path, line, row, key)
    return rows


def export_kernel_table(path: str | os.PathLike, gestures_path: str | os.PathLike,
                        stats_path: str | os.PathLike) -> int:
    """The plot stage's kernel table: ``models/gestures.npy`` with ``data/normalized/stats.json``.

    Returns the number of rows written. Raises ExportError naming a missing or bad input.
    """
    gestures_path, stats_path = Path(gestures_path), Path(stats_path)
    try:
        kernels = read_gestures(gestures_path)
    except GesturesFileError as error:
        raise ExportError(f"{error} (run `dvc repro train`)") from None
    try:
        stats = read_stats(stats_path)
    except CorpusFileError as error:
        raise ExportError(str(error)) from None
    try:
        rows = kernel_rows(kernels, stats)
    except (ValueError, KeyError, TypeError) as error:
        raise ExportError(f"{gestures_path} / {stats_path}: {error}") from None
    write_csv_rows(path, KERNEL_COLUMNS, rows)
    return len(rows)


def write_annotations(directory: str | os.PathLike, utterance_id: str, scores, segmentation: Segmentation, *,
                      phones=None, gestures: Sequence[int] | None = None) -> list[GestureEvent]:
    """Write ``<directory>/<utterance_id>.TextGrid`` and ``<directory>/events.csv`` for one
    utterance's (K, T) scores (the directory must exist); returns the events. The one writer
    of both files, for ``gestural factorize`` and the evaluate stage's examples; the events are
    ``segmentation``'s, the very intervals the evaluate stage scores."""
    directory = Path(directory)
    events = segmentation.events(scores, gestures=gestures)
    write_events(directory / "events.csv", event_rows(utterance_id, events, phones))
    frames = np.shape(scores)[1]
    on = {event.gesture for event in events}  # a gesture never on in this utterance gets no tier
    tiers = None if gestures is None else [int(g) for g in gestures if int(g) in on]
    write_textgrid(directory / f"{utterance_id}.TextGrid", build_textgrid(events, frames, phones=phones,
                                                                         gestures=tiers))
    return events


# ------------------------------------------------------------------- corpus phone labels


def row_phones(row: dict | None, extracted: str | os.PathLike) -> list[tuple[float, str]] | None:
    """The phone segmentation of an ``index.csv`` row (its ``lab`` is relative to
    ``data/extracted``), or None -- with a logged warning when the file is unreadable."""
    if not row or not row.get("lab"):
        return None
    path = Path(extracted) / row["lab"]
    try:
        return read_lab(path)
    except (OSError, EmaFormatError) as error:
        logger.warning("phone labels unavailable (%s)", error)
        return None


def annotate_examples(out_dir: str | os.PathLike, example_ids: Sequence[str], test_ids: Sequence[str],
                      scores: Sequence[np.ndarray], segmentation: Segmentation, *, normalized: str | os.PathLike,
                      extracted: str | os.PathLike) -> list[Path]:
    """The evaluate stage's example utterances as Praat would read them: for each, a directory
    ``<out_dir>/<id>/`` with ``<id>.TextGrid`` and ``events.csv`` (phones from its lab file)."""
    from gestural.core.files import atomic_dir
    from gestural.data.dataset import NormalizedCorpus

    rows = {row["utterance_id"]: row for row in NormalizedCorpus.load(normalized, mmap=True).rows("test")}
    position = {utterance: i for i, utterance in enumerate(test_ids)}
    written = []
    for utterance_id in example_ids:
        utterance_id = str(utterance_id)
        with atomic_dir(Path(out_dir) / utterance_id) as tmp:
            write_annotations(tmp, utterance_id, scores[position[utterance_id]], segmentation,
                              phones=row_phones(rows.get(utterance_id), extracted))
        written.append(Path(out_dir) / utterance_id)
    return written
