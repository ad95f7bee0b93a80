"""Split utterances into train/test and scale each channel to [0, 1] (stage ``normalize``).

Split: a speaker whose corpus ships an official test list
(``etc/txt.done.data.test``, mngu0) keeps it: listed ids are test, the rest
train. Every other utterance is test iff a seeded sha256 of its id falls below
``test_fraction``; the hash depends on nothing but (seed, id), so adding or
removing utterances never moves the others.

Scaling: per channel, ``low``/``high`` are the ``data.percentiles`` of the
*train* frames only (the test set must not leak into the model's input range);
``(x - low) / (high - low)`` is then clipped to [0, 1] for every frame.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections import Counter
from pathlib import Path

import numpy as np

from gestural import ema
from gestural.dataset import INDEX_COLUMNS, SPLITS, CorpusFileError, check_layout, read_index, write_index
from gestural.io import atomic_dir, save_npy, write_json
from gestural.params import DataParams


class NormalizeError(ValueError):
    """The corpus cannot be split or scaled as asked."""


def hash_fraction(seed: int, utterance_id: str) -> float:
    """A number in [0, 1) that depends only on (seed, utterance_id), stable across runs and machines."""
    digest = hashlib.sha256(f"{seed}\x00{utterance_id}".encode("utf-8")).digest()
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
        The train split is empty.
    gestural.dataset.CorpusFileError
        The input tables are missing or inconsistent.
    """
    npy_dir = Path(npy_dir)
    try:
        frames = np.load(npy_dir / "frames.npy", allow_pickle=False)
    except FileNotFoundError:
        raise CorpusFileError(f"{npy_dir / 'frames.npy'}: no such file (run `dvc repro nema2npy` first)") from None
    rows = read_index(npy_dir / "index.csv")
    check_layout(npy_dir, frames, rows)
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
        "channels": list(ema.CHANNELS),
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
        "constant_channels": [ema.CHANNELS[c] for c in np.flatnonzero(high <= low)],
    }
    with atomic_dir(out_dir) as tmp:
        save_npy(tmp / "frames.npy", normalized)
        write_index(tmp / "index.csv", rows, INDEX_COLUMNS + ("split",))
        write_json(tmp / "stats.json", stats)
    return stats
