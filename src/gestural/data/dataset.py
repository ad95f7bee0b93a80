"""The corpus tables on disk, and fast loading of the normalized corpus.

``data/npy`` and ``data/normalized`` share one layout:

- ``frames.npy``: float32 array (total_frames, 12), every kept utterance's
  frames concatenated in index order;
- ``index.csv``: one row per utterance: ``utterance_id, speaker, start,
  frames, ema, wav, lab`` (paths relative to ``data/extracted``; ``lab`` empty
  when the corpus has none), plus ``split`` (train | test) in ``data/normalized``;
- a JSON side file (``report.json`` / ``stats.json``).

Utterance ``i`` is ``frames[start_i : start_i + frames_i]``.
"""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import numpy as np

from gestural.core.files import UserFileError, atomic_path, check_regular_file, write_json
from gestural.core.units import NUM_CHANNELS

INDEX_COLUMNS: tuple[str, ...] = ("utterance_id", "speaker", "start", "frames", "ema", "wav", "lab")
SPLITS: tuple[str, ...] = ("train", "test")
STATS_FILE = "stats.json"  # data/normalized's side file, written and read here only
_INT_COLUMNS = ("start", "frames")


class CorpusFileError(ValueError):
    """A corpus table is missing or inconsistent (names the file)."""


def write_index(path: str | os.PathLike, rows: list[dict], columns: tuple[str, ...] = INDEX_COLUMNS) -> None:
    """Write utterance rows as CSV with a header, atomically."""
    with atomic_path(path) as tmp:
        with open(tmp, "w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(columns), extrasaction="ignore", lineterminator="\n")
            writer.writeheader()
            writer.writerows(rows)


def read_index(path: str | os.PathLike, required: tuple[str, ...] = INDEX_COLUMNS) -> list[dict]:
    """Read an ``index.csv``; ``start`` and ``frames`` become ints.

    Raises
    ------
    CorpusFileError
        The file is missing, lacks a required column, or has a bad number.
    """
    path = Path(path)
    try:
        handle = open(path, newline="")
    except FileNotFoundError:
        raise CorpusFileError(f"{path}: no such file (run the earlier pipeline stages first)") from None
    with handle:
        reader = csv.DictReader(handle)
        missing = [c for c in required if c not in (reader.fieldnames or [])]
        if missing:
            raise CorpusFileError(f"{path}: missing column(s) {missing} (header {reader.fieldnames})")
        rows = []
        for line, row in enumerate(reader, 2):
            try:
                for column in _INT_COLUMNS:
                    row[column] = int(row[column])
            except (TypeError, ValueError):
                raise CorpusFileError(f"{path}, line {line}: start/frames must be integers, got {row}") from None
            rows.append(row)
    return rows


def load_frames(path: str | os.PathLike, *, mmap: bool = False, made_by: str = "normalize") -> np.ndarray:
    """A corpus's ``frames.npy``: a floating-point (frames, 12) array.

    Parameters
    ----------
    path : path-like
    mmap : bool, default False
        Memory-map it instead of reading it (read-only).
    made_by : str
        The stage that writes it, for the message when it is missing.

    Raises
    ------
    CorpusFileError
        One line naming the file: missing, not a regular file, not a .npy file (or one holding
        Python objects, which is never unpickled), or not a (frames, 12) array of numbers.
    """
    path = Path(path)
    try:
        check_regular_file(path, ".npy file")  # np.load would block on a FIFO
        frames = np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)
    except FileNotFoundError:
        raise CorpusFileError(f"{path}: no such file (run `dvc repro {made_by}` first)") from None
    except UserFileError as error:
        raise CorpusFileError(str(error)) from None
    except (ValueError, EOFError) as error:  # numpy's words for garbage, truncation and object arrays
        detail = (str(error).splitlines() or [type(error).__name__])[0]
        raise CorpusFileError(f"{path}: not a readable .npy file of numbers ({detail})") from None
    if not isinstance(frames, np.ndarray) or not np.issubdtype(frames.dtype, np.floating) \
            or frames.ndim != 2 or frames.shape[1] != NUM_CHANNELS:
        what = f"{frames.dtype} array of shape {frames.shape}" if isinstance(frames, np.ndarray) else type(frames)
        raise CorpusFileError(f"{path}: expected a float array of shape (frames, {NUM_CHANNELS}), got a {what}")
    return frames


def check_layout(directory: Path, frames: np.ndarray, rows: list[dict]) -> None:
    """Make sure ``rows`` tile ``frames`` exactly, in order."""
    if frames.ndim != 2:
        raise CorpusFileError(f"{directory / 'frames.npy'}: expected a 2-D array, got shape {frames.shape}")
    expected = 0
    for line, row in enumerate(rows, 2):
        if row["start"] != expected or row["frames"] < 1:
            raise CorpusFileError(
                f"{directory / 'index.csv'}, line {line}: utterance {row['utterance_id']} starts at "
                f"{row['start']} with {row['frames']} frames; expected start {expected} and frames >= 1"
            )
        expected += row["frames"]
    if expected != frames.shape[0]:
        raise CorpusFileError(
            f"{directory}: index.csv covers {expected} frames but frames.npy has {frames.shape[0]}"
        )


class NormalizedCorpus:
    """The output of the ``normalize`` stage, in memory.

    Attributes
    ----------
    frames : ndarray of shape (total_frames, 12), float32
        All utterances, scaled to [0, 1] per channel.
    index : list of dict
        One row per utterance (``utterance_id, speaker, start, frames, ema, wav,
        lab, split``), in the order of ``frames``.
    stats : dict
        Contents of ``stats.json`` (channel names, low/high, split counts, ...).
    """

    def __init__(self, frames: np.ndarray, index: list[dict], stats: dict):
        self.frames = frames
        self.index = index
        self.stats = stats

    @classmethod
    def load(cls, directory: str | os.PathLike = "data/normalized", *, mmap: bool = False) -> NormalizedCorpus:
        """Load ``frames.npy``, ``index.csv`` and ``stats.json`` from ``directory``.

        Parameters
        ----------
        directory : path-like, default "data/normalized"
        mmap : bool, default False
            Memory-map the frames instead of reading them (read-only).

        Raises
        ------
        CorpusFileError
            A file is missing or the files disagree.
        """
        directory = Path(directory)
        frames = load_frames(directory / "frames.npy", mmap=mmap)
        rows = read_index(directory / "index.csv", INDEX_COLUMNS + ("split",))
        bad = [row["utterance_id"] for row in rows if row["split"] not in SPLITS]
        if bad:
            raise CorpusFileError(f"{directory / 'index.csv'}: split must be train or test (utterances {bad[:5]})")
        check_layout(directory, frames, rows)
        return cls(frames, rows, read_stats(directory / STATS_FILE))

    def rows(self, split: str | None = None) -> list[dict]:
        """Index rows of one split (``"train"``, ``"test"``), or all for None."""
        if split is None:
            return list(self.index)
        if split not in SPLITS:
            raise ValueError(f"split must be 'train', 'test' or None, got {split!r}")
        return [row for row in self.index if row["split"] == split]

    def ids(self, split: str | None = None) -> list[str]:
        """Utterance ids of one split (or all), in index order."""
        return [row["utterance_id"] for row in self.rows(split)]

    def utterances(self, split: str | None = None) -> list[np.ndarray]:
        """Utterances of one split (or all) as channels-first views, each (12, frames).

        The arrays are views into :attr:`frames` (transposed, not contiguous):
        copy one before changing it.
        """
        return [self.frames[row["start"]:row["start"] + row["frames"]].T for row in self.rows(split)]

    @property
    def channels(self) -> list[str]:
        """Channel names, in column order."""
        return list(self.stats["channels"])


def write_stats(path: str | os.PathLike, stats: dict) -> None:
    """Write the normalize stage's ``stats.json``, atomically."""
    write_json(path, stats)


def read_stats(path: str | os.PathLike) -> dict:
    """The normalize stage's ``stats.json`` (channel names, per-channel low/high, split counts, ...).

    Raises CorpusFileError, one line naming the file: missing, not JSON, or not a JSON object.
    """
    path = Path(path)
    try:
        stats = json.loads(path.read_text())
    except FileNotFoundError:
        raise CorpusFileError(f"{path}: no such file (run `dvc repro normalize`)") from None
    except (OSError, UnicodeDecodeError, ValueError) as error:
        raise CorpusFileError(f"{path}: not readable JSON ({error})") from None
    if not isinstance(stats, dict):
        raise CorpusFileError(f"{path}: expected a JSON object, got {type(stats).__name__}")
    return stats
