"""Split utterances into train/test and scale each channel to [0, 1] (stage ``normalize``).

Split: a speaker whose corpus ships an official test list
(``etc/txt.done.data.test``, mngu0) keeps it: listed ids are test, the rest
train. Every other utterance is test iff a seeded sha256 of its id falls below
``test_fraction``; the hash depends on nothing but (seed, id), so adding or
removing utterances never moves the others.

Scaling: per channel, ``low``/``high`` are the ``data.percentiles`` of the
*train* frames only (the test set must not leak into the model's input range);
``(x - low) / (high - low)`` is then clipped to [0, 1] for every frame.

Absurd samples: with ``percentiles: [0, 100]`` a single glitch of 1e30 would
become ``high`` and squash every other frame of its channel to 0. So first, a
sample further than :data:`ABSURD_Z` robust standard deviations from its
channel's median (see :func:`find_absurd`), or beyond :data:`ABSURD_ABS`, is
treated as missing: linearly interpolated within its utterance, listed in
``stats.json`` and named in one warning. Real articulator positions stay within
a few such deviations; more than :data:`MAX_ABSURD_FRACTION` of a channel
flagged is no glitch (a missing-value code, mixed units), and the stage stops.
NaN or inf (which nema2npy should have dealt with) are refused. Limit: beyond
1 % of a channel, absurd samples under the absolute cap widen the robust scale
and go undetected (and a mix of units cannot be told from a channel at rest
most of the time without knowing the units).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections import Counter
from pathlib import Path

import numpy as np

from gestural.core import units
from gestural.core.files import atomic_dir, save_npy
from gestural.core.params import DataParams
from gestural.data.dataset import (
    INDEX_COLUMNS,
    SPLITS,
    STATS_FILE,
    CorpusFileError,
    check_layout,
    load_frames,
    read_index,
    write_index,
    write_stats,
)

logger = logging.getLogger(__name__)

# A sample this many robust standard deviations from its channel's median is no
# articulator position (movements span a few); 1e30-type glitches are 1e28 away.
ABSURD_Z = 50.0
# Beyond any coordinate in mm (or cm): absurd even where a channel barely moves.
ABSURD_ABS = 1e6
# A larger share of flagged samples is a scale problem in the data, not glitches.
MAX_ABSURD_FRACTION = 0.01
# Train frames (at most about) behind the median and spread of find_absurd.
_STATS_SAMPLES = 200_000
# Absurd samples listed in stats.json and in the warning.
_LIST_IN_STATS = 100
_LIST_IN_WARNING = 3


class NormalizeError(ValueError):
    """The corpus cannot be split or scaled as asked."""


def hash_fraction(seed: int, utterance_id: str) -> float:
    """A number in [0, 1) that depends only on (seed, utterance_id), stable across runs and machines."""
    digest = hashlib.sha256(f"{seed}\x00{utterance_id}".encode()).digest()
    return int.from_bytes(digest[:4], "big") / 2**32


def assign_splits(
    rows: list[dict],
    *,
    seed: int,
    test_fraction: float,
    official_test: dict[str, list[str] | None] | None = None,
) -> list[str]:
    """The split (``"train"`` or ``"test"``) of each utterance row.

    Parameters
    ----------
    rows : list of dict
        Index rows with ``utterance_id`` and ``speaker``.
    seed : int
    test_fraction : float
        In (0, 1); used for speakers without an official test list.
    official_test : dict of speaker -> list of ids or None, optional
        A speaker's official test ids; None (or absent) means "use the hash".

    Returns
    -------
    splits : list of str, one per row
    """
    official = {speaker: set(ids) for speaker, ids in (official_test or {}).items() if ids is not None}
    splits = []
    for row in rows:
        test_ids = official.get(row["speaker"])
        if test_ids is not None:
            test = row["utterance_id"] in test_ids
        else:
            test = hash_fraction(seed, row["utterance_id"]) < test_fraction
        splits.append("test" if test else "train")
    return splits


def channel_ranges(frames: np.ndarray, percentiles: tuple[float, float]) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel low and high percentiles of ``frames`` (frames, channels), as float64."""
    low, high = np.percentile(frames, percentiles, axis=0)
    return low.astype(np.float64), high.astype(np.float64)


def _locate(rows: list[dict], flat_frames: np.ndarray) -> list[tuple[str, int]]:
    """(utterance id, 1-based frame within it) of global frame indices."""
    starts = np.fromiter((row["start"] for row in rows), dtype=np.int64, count=len(rows))
    which = np.searchsorted(starts, flat_frames, side="right") - 1
    return [(rows[u]["utterance_id"], int(f - starts[u]) + 1) for u, f in zip(which, flat_frames)]


def check_finite(frames: np.ndarray, rows: list[dict], path: Path) -> None:
    """Refuse NaN or inf (nema2npy interpolates or drops them), naming the first one.

    Raises
    ------
    NormalizeError
    """
    finite = np.isfinite(frames)
    if finite.all():
        return
    bad = np.argwhere(~finite)
    frame, channel = bad[0]
    (utterance, local), = _locate(rows, np.array([frame]))
    raise NormalizeError(
        f"{path}: {len(bad)} missing sample(s) (NaN or inf), the first in utterance {utterance} channel "
        f"{units.CHANNELS[channel]} frame {local} ({frames[frame, channel]}); nema2npy should have "
        "interpolated or dropped them: rerun `dvc repro -f nema2npy`"
    )


def find_absurd(frames: np.ndarray, train_mask: np.ndarray) -> np.ndarray:
    """Boolean mask (frames, channels) of samples no articulator could produce.

    A sample is absurd beyond :data:`ABSURD_ABS`, or further than :data:`ABSURD_Z`
    robust standard deviations from its channel's median, both measured on the
    train frames. The standard deviation is estimated twice, as 1.4826 x MAD and
    as the 1-99 percentile span / 4.65 (both exact for a normal distribution),
    and the larger is used: a channel at rest most of the time has a MAD of its
    noise level, while its movements set the percentile span. Both resist up to
    1 % of absurd samples. A channel where both are 0 gets only the absolute cap.
    """
    # An evenly spaced subsample estimates a 50-sd threshold just as well, several times faster.
    rows = np.flatnonzero(train_mask)
    rows = rows[:: max(1, len(rows) // _STATS_SAMPLES)]
    train = np.ascontiguousarray(frames[rows].T)  # channel-major: contiguous rows to partition
    channels = frames.shape[1]
    medians, limits = np.zeros(channels), np.full(channels, np.inf)
    for channel, values in enumerate(train):
        sane = np.abs(values) <= ABSURD_ABS
        if not sane.all():
            values = values[sane]
        if values.size == 0:
            continue
        low, median, high = np.percentile(values, [1, 50, 99])
        scale = max(1.4826 * float(np.median(np.abs(values - median))), (high - low) / 4.65)
        medians[channel] = median
        if scale > 0:
            limits[channel] = ABSURD_Z * scale
    deviation = np.abs(frames - medians.astype(frames.dtype))
    return (np.abs(frames) > ABSURD_ABS) | (deviation > limits.astype(frames.dtype))


def repair_absurd(frames: np.ndarray, rows: list[dict], absurd: np.ndarray, path: Path) -> list[dict]:
    """Interpolate the ``absurd`` samples of ``frames`` in place, within their utterance.

    An utterance whose channel has no sane sample takes the channel's median there.

    Returns
    -------
    samples : list of dict
        ``utterance_id``, ``channel``, ``frame`` (1-based in the utterance), ``value``
        of each absurd sample, in frame order.

    Raises
    ------
    NormalizeError
        More than :data:`MAX_ABSURD_FRACTION` of a channel is absurd.
    """
    counts = absurd.sum(axis=0)
    worst = int(counts.argmax())
    if counts[worst] > MAX_ABSURD_FRACTION * len(frames):
        raise NormalizeError(
            f"{path}: {counts[worst]} of {len(frames)} samples of channel {units.CHANNELS[worst]} are absurd "
            f"(beyond {ABSURD_ABS:g}, or more than {ABSURD_Z:g} robust standard deviations from its median): "
            "too many to be glitches; check the EMA files (mixed units? a missing-value code?)"
        )
    flat, channels = np.nonzero(absurd)
    places = _locate(rows, flat)
    samples = [{"utterance_id": utt, "channel": units.CHANNELS[c], "frame": frame,
                "value": float(f"{frames[f, c]:.7g}")}  # float32's digits, not float64 noise
               for (utt, frame), f, c in zip(places, flat, channels)]
    by_id = {row["utterance_id"]: row for row in rows}
    for utterance in dict.fromkeys(utt for utt, _ in places):
        row = by_id[utterance]
        block = slice(row["start"], row["start"] + row["frames"])
        for channel in np.flatnonzero(absurd[block].any(axis=0)):
            bad = absurd[block, channel]
            values = frames[block, channel]
            if bad.all():
                values[:] = np.nanmedian(np.where(absurd[:, channel], np.nan, frames[:, channel]))
                continue
            positions = np.arange(len(values))
            values[bad] = np.interp(positions[bad], positions[~bad], values[~bad])
    if samples:
        listed = ", ".join(f"{s['utterance_id']} {s['channel']} frame {s['frame']} ({s['value']:.3g})"
                           for s in samples[:_LIST_IN_WARNING])
        extra = len(samples) - _LIST_IN_WARNING
        more = f" and {extra} more (see stats.json)" if extra > 0 else ""
        logger.warning("%s: %d absurd sample(s) treated as missing and interpolated: %s%s",
                       path, len(samples), listed, more)
    return samples


def scale_to_unit(frames: np.ndarray, low: np.ndarray, high: np.ndarray) -> np.ndarray:
    """``(frames - low) / (high - low)`` clipped to [0, 1], float32, in a new array.

    A channel with ``high == low`` (constant over the train frames) maps to 0
    rather than dividing by zero.
    """
    span = high - low
    scale = np.where(span > 0, 1.0 / np.where(span > 0, span, 1.0), 0.0).astype(np.float32)
    out = np.subtract(frames, low.astype(np.float32), dtype=np.float32)
    out *= scale
    np.clip(out, 0.0, 1.0, out=out)
    return out


def _frame_mask(rows: list[dict], splits: list[str], split: str) -> np.ndarray:
    lengths = np.fromiter((row["frames"] for row in rows), dtype=np.int64, count=len(rows))
    chosen = np.fromiter((s == split for s in splits), dtype=bool, count=len(rows))
    return np.repeat(chosen, lengths)


def normalize_corpus(npy_dir: str | os.PathLike, out_dir: str | os.PathLike, data: DataParams) -> dict:
    """Split and scale the output of ``nema2npy``; write ``frames.npy``, ``index.csv``, ``stats.json``.

    Parameters
    ----------
    npy_dir : path-like
        ``data/npy`` (frames.npy, index.csv, speakers.json); only read.
    out_dir : path-like
        ``data/normalized``, replaced atomically.
    data : DataParams
        Uses ``seed``, ``test_fraction`` and ``percentiles``.

    Returns
    -------
    stats : dict
        The contents of ``stats.json``.

    Raises
    ------
    NormalizeError
        The train split is empty, ``frames.npy`` holds NaN or inf, or a channel
        has too many absurd samples (see the module notes).
    gestural.dataset.CorpusFileError
        The input tables are missing or inconsistent.
    """
    npy_dir = Path(npy_dir)
    frames = load_frames(npy_dir / "frames.npy", made_by="nema2npy")
    rows = read_index(npy_dir / "index.csv")
    check_layout(npy_dir, frames, rows)
    check_finite(frames, rows, npy_dir / "frames.npy")
    speakers_path = npy_dir / "speakers.json"
    try:
        speakers = json.loads(speakers_path.read_text())
    except FileNotFoundError:
        raise CorpusFileError(f"{speakers_path}: no such file (run `dvc repro nema2npy` first)") from None

    official = {name: meta.get("official_test") for name, meta in speakers.items()}
    splits = assign_splits(rows, seed=data.seed, test_fraction=data.test_fraction, official_test=official)
    train_mask = _frame_mask(rows, splits, "train")
    if not train_mask.any():
        raise NormalizeError(
            f"{npy_dir}: no training utterances among {len(rows)} (official test lists cover every "
            f"utterance, or the corpus is too small for data.test_fraction {data.test_fraction})"
        )
    absurd = repair_absurd(frames, rows, find_absurd(frames, train_mask), npy_dir / "frames.npy")
    low, high = channel_ranges(frames[train_mask], data.percentiles)
    normalized = scale_to_unit(frames, low, high)
    del frames

    counts = {split: {"utterances": splits.count(split), "frames": 0} for split in SPLITS}
    for row, split in zip(rows, splits):
        row["split"] = split
        counts[split]["frames"] += row["frames"]
    per_speaker = {name: dict(Counter(s for row, s in zip(rows, splits) if row["speaker"] == name))
                   for name in speakers}
    stats = {
        "channels": list(units.CHANNELS),
        "low": low.tolist(),
        "high": high.tolist(),
        "percentiles": list(data.percentiles),
        "test_fraction": data.test_fraction,
        "seed": data.seed,
        "counts": counts,
        "per_speaker": {name: {split: per_speaker[name].get(split, 0) for split in SPLITS}
                        for name in speakers},
        "split_method": {name: "official" if official.get(name) is not None else "hash" for name in speakers},
        "ema_stats": {name: meta["ema_stats"] for name, meta in speakers.items() if meta.get("ema_stats")},
        "constant_channels": [units.CHANNELS[c] for c in np.flatnonzero(high <= low)],
        "absurd_samples": {"count": len(absurd), "rule": f"|x| > {ABSURD_ABS:g} or > {ABSURD_Z:g} robust sd "
                           "from the channel median; interpolated", "first": absurd[:_LIST_IN_STATS]},
    }
    with atomic_dir(out_dir) as tmp:
        save_npy(tmp / "frames.npy", normalized)
        write_index(tmp / "index.csv", rows, INDEX_COLUMNS + ("split",))
        write_stats(tmp / STATS_FILE, stats)
    return stats
