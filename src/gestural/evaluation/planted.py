"""The planted ground truth that the recovery metrics score against.

:mod:`gestural.synthetic.ground_truth` owns the ``ground_truth.npz`` file format; this module reads
the events corpus's planted kernels and events through it and builds the planted
factorization of the held-out utterances (:class:`PlantedTruth`) in the model's units.

The planted kernels are stored in z-scored units; the normalize stage maps each channel
with ``(z - low) / (high - low)``, so a kernel, being an increment on top of a posture, maps
as ``kernel[:, c, :] / (high[c] - low[c])`` (the offset ``low`` cancels).

:class:`EvaluationError`, the evaluate stage's error for a bad input, is defined here, the
lowest of the evaluate stage's modules, so that both this module and
:mod:`gestural.evaluation.held_out` raise it without importing each other.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from gestural.synthetic.ground_truth import PLANTED_EVENTS, read_arrays

__all__ = [
    "EvaluationError",
    "PlantedTruth",
    "planted_kernels_normalized",
    "planted_truth",
]


class EvaluationError(RuntimeError):
    """An input of the evaluate stage is missing or does not fit the others (names the file)."""


@dataclass
class PlantedTruth:
    """The planted factorization of the held-out utterances, in the model's units.

    Attributes
    ----------
    kernels : ndarray (P, C, L)
        Planted gesture kernels in normalized units.
    scores : list of ndarray (P, T_i)
        Spikes of each event's amplitude at its onset, one array per held-out utterance.
    onsets : list of list of ndarray
        ``onsets[i][p]``: onset frames of planted gesture p in held-out utterance i.
    """

    kernels: np.ndarray
    scores: list[np.ndarray]
    onsets: list[list[np.ndarray]]


def planted_kernels_normalized(kernels_zscored: np.ndarray, stats: dict) -> np.ndarray:
    """Map planted kernels from z-scored units into the normalized [0, 1] space.

    Parameters
    ----------
    kernels_zscored : ndarray (P, C, L)
    stats : dict
        The normalize stage's ``stats.json``, with per-channel ``low`` and ``high``.

    Returns
    -------
    ndarray (P, C, L), float64: ``kernels[:, c, :] / (high[c] - low[c])``.
    """
    kernels = np.asarray(kernels_zscored, dtype=np.float64)
    low = np.asarray(stats["low"], dtype=np.float64)
    high = np.asarray(stats["high"], dtype=np.float64)
    if kernels.ndim != 3 or kernels.shape[1] != low.shape[0]:
        raise ValueError(f"planted kernels have shape {kernels.shape}; expected (P, {low.shape[0]}, L)")
    span = high - low
    if np.any(span <= 0):
        raise ValueError(f"stats.json: high must exceed low on every channel (high - low = {span.tolist()})")
    return kernels / span[None, :, None]


def planted_truth(truth_path: str | Path, test_ids: Sequence[str], lengths: Sequence[int],
                  stats: dict) -> PlantedTruth:
    """Read ``ground_truth.npz`` and build the planted factorization of the held-out utterances.

    Parameters
    ----------
    truth_path : path
        Written by :func:`gestural.synthetic.generator.write_corpus`.
    test_ids : sequence of str
        Held-out utterance ids, in the order the scores are wanted.
    lengths : sequence of int
        Their frame counts.
    stats : dict
        ``stats.json`` of the normalize stage (``low``, ``high``).

    Returns
    -------
    PlantedTruth

    Raises
    ------
    EvaluationError
        The file is unreadable, lacks an array, or does not describe a held-out utterance.
    """
    truth_path = Path(truth_path)
    try:
        arrays = read_arrays(truth_path, PLANTED_EVENTS)
    except ValueError as error:
        raise EvaluationError(f"{error} (run `dvc repro download`)") from None
    try:
        kernels = planted_kernels_normalized(arrays["kernels_zscored"], stats)
    except ValueError as error:
        raise EvaluationError(f"{truth_path}: {error}") from None
    num_planted = kernels.shape[0]
    position = {str(u): i for i, u in enumerate(arrays["utterance_ids"])}
    event_utterance = arrays["event_utterance"].astype(np.int64)
    gesture = arrays["event_gesture"].astype(np.int64)
    onset = arrays["event_onset"].astype(np.int64)
    amplitude = arrays["event_amplitude"].astype(np.float64)
    if np.any((gesture < 0) | (gesture >= num_planted)):
        raise EvaluationError(f"{truth_path}: event_gesture outside 0..{num_planted - 1}")

    scores, onsets = [], []
    for utterance_id, frames in zip(test_ids, lengths):
        if utterance_id not in position:
            raise EvaluationError(
                f"{truth_path} has no utterance {utterance_id!r} of the held-out split: the ground truth is "
                "not that of this corpus (run `dvc repro normalize` after `dvc repro download`)")
        events = (event_utterance == position[utterance_id]) & (onset >= 0) & (onset < frames)
        h = np.zeros((num_planted, int(frames)))
        np.add.at(h, (gesture[events], onset[events]), amplitude[events])
        scores.append(h)
        onsets.append([np.sort(onset[events & (gesture == p)]) for p in range(num_planted)])
    return PlantedTruth(kernels=kernels, scores=scores, onsets=onsets)
