"""The ground truth of a synthetic corpus (``data/raw/ground_truth.npz``): one owner of the format.

Both generators (``synthetic.kind: events | articulatory``) save through
:func:`save_ground_truth`; readers take the gesture activations through
:func:`load_activations`. The file always holds

* ``kind`` (0-d str): ``"events"`` or ``"articulatory"``;
* ``gesture_names`` (P,) and ``gesture_phones`` (P,) str: each planted gesture and the
  phone(s) it realises (space-separated, e.g. ``"p b m"``);
* ``utterance_ids`` (U,) str;
* one row per planted gesture occurrence: ``activation_utterance`` and
  ``activation_gesture`` (indices into the two lists above), ``activation_start`` and
  ``activation_stop`` (int64 frames, stop exclusive);

plus what each generator adds (the events corpus's kernels and events, the articulatory
corpus's tract variables and targets).
"""

from __future__ import annotations

import zipfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from gestural.core.files import atomic_path

KINDS = ("events", "articulatory")
_ACTIVATIONS = ("activation_utterance", "activation_gesture", "activation_start", "activation_stop")
_COMMON = ("kind", "gesture_names", "gesture_phones", "utterance_ids", *_ACTIVATIONS)


def save_ground_truth(path: str | Path, *, kind: str, gesture_names: Sequence[str], gesture_phones: Sequence[str],
                      utterance_ids: Sequence[str], activation_utterance, activation_gesture, activation_start,
                      activation_stop, extra: dict[str, np.ndarray] | None = None) -> None:
    """Write the ground truth atomically; ``extra`` holds the generator's own arrays.

    Raises
    ------
    ValueError
        An unknown kind, mismatched lengths, an index out of range, an empty interval, or an
        ``extra`` key that shadows a common array.
    """
    if kind not in KINDS:
        raise ValueError(f"ground truth kind must be one of {' | '.join(KINDS)} (got {kind!r})")
    if len(gesture_names) != len(gesture_phones):
        raise ValueError(f"{len(gesture_names)} gesture names but {len(gesture_phones)} gesture phone lists")
    rows = [np.asarray(a, dtype=np.int64).reshape(-1) for a in
            (activation_utterance, activation_gesture, activation_start, activation_stop)]
    if len({len(a) for a in rows}) != 1:
        raise ValueError(f"activation arrays differ in length: {[len(a) for a in rows]}")
    utterance, gesture, start, stop = rows
    if np.any((utterance < 0) | (utterance >= len(utterance_ids))):
        raise ValueError(f"activation_utterance outside 0..{len(utterance_ids) - 1}")
    if np.any((gesture < 0) | (gesture >= len(gesture_names))):
        raise ValueError(f"activation_gesture outside 0..{len(gesture_names) - 1}")
    if np.any(start >= stop) or np.any(start < 0):
        raise ValueError("every activation needs 0 <= start < stop")
    extra = dict(extra or {})
    clash = sorted(set(extra) & set(_COMMON))
    if clash:
        raise ValueError(f"extra ground-truth arrays {clash} would overwrite common ones")
    arrays = dict(
        kind=np.array(kind),
        gesture_names=np.array(list(gesture_names), dtype=str),
        gesture_phones=np.array(list(gesture_phones), dtype=str),
        utterance_ids=np.array(list(utterance_ids), dtype=str),
        **dict(zip(_ACTIVATIONS, rows)),
        **extra,
    )
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as handle:
            np.savez(handle, **arrays)


# The events corpus's planted kernels and events (kernels in z-scored units).
PLANTED_EVENTS = ("kernels_zscored", "utterance_ids", "event_utterance", "event_gesture", "event_onset",
                  "event_amplitude")


def read_arrays(path: str | Path, names: Sequence[str]) -> dict[str, np.ndarray]:
    """The named arrays of a ground-truth file, or ValueError with one line naming the file."""
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as archive:
            missing = [k for k in names if k not in archive.files]
            if missing:
                raise ValueError(f"{path}: not a ground-truth file, missing array(s) {missing}")
            return {k: archive[k] for k in names}
    except FileNotFoundError:
        raise ValueError(f"{path}: no such file (run `dvc repro download` with data.source: synthetic)") from None
    except (OSError, EOFError, zipfile.BadZipFile) as error:
        raise ValueError(f"{path}: not a readable .npz file ({error})") from None
    except ValueError as error:
        message = str(error)
        raise ValueError(message if message.startswith(str(path)) else f"{path}: not a readable .npz file "
                         f"({message})") from None


def has_planted_kernels(path: str | Path) -> bool:
    """Whether the file holds planted kernels and events (the events corpus)."""
    try:
        with np.load(path, allow_pickle=False) as archive:
            return all(k in archive.files for k in PLANTED_EVENTS)
    except (OSError, EOFError, ValueError, zipfile.BadZipFile) as error:
        raise ValueError(f"{path}: not a readable .npz file ({error})") from None


def load_activations(path: str | Path, utterance_ids: Sequence[str],
                     lengths: Sequence[int]) -> tuple[list[str], list[np.ndarray]]:
    """The planted gestures' activations of the given utterances.

    Parameters
    ----------
    path : path
        A ``ground_truth.npz`` written by :func:`save_ground_truth`.
    utterance_ids, lengths : sequences
        The utterances wanted, in order, and their frame counts (intervals are clipped to them).

    Returns
    -------
    gesture_names : list of str, length P
    activations : list of bool arrays (P, T_i), True where the gesture is active.

    Raises
    ------
    ValueError
        One line naming the file: missing, unreadable, lacking an array, or without one of
        the utterances.
    """
    path = Path(path)
    arrays = read_arrays(path, _COMMON)
    if len(utterance_ids) != len(lengths):
        raise ValueError(f"{len(utterance_ids)} utterance ids but {len(lengths)} lengths")
    names = [str(n) for n in arrays["gesture_names"]]
    position = {str(u): i for i, u in enumerate(arrays["utterance_ids"])}
    utterance, gesture, start, stop = (arrays[k].astype(np.int64) for k in _ACTIVATIONS)
    if np.any((gesture < 0) | (gesture >= len(names))):
        raise ValueError(f"{path}: activation_gesture outside 0..{len(names) - 1}")
    order = np.argsort(utterance, kind="stable")
    bounds = np.searchsorted(utterance[order], np.arange(len(position) + 1))
    activations = []
    for utterance_id, frames in zip(utterance_ids, lengths):
        if str(utterance_id) not in position:
            raise ValueError(f"{path} has no utterance {utterance_id!r}: the ground truth is not that of this corpus")
        u = position[str(utterance_id)]
        rows = order[bounds[u]:bounds[u + 1]]
        active = np.zeros((len(names), int(frames)), dtype=bool)
        for g, a, b in zip(gesture[rows], start[rows], stop[rows]):
            active[g, max(a, 0):max(min(b, int(frames)), 0)] = True
        activations.append(active)
    return names, activations
