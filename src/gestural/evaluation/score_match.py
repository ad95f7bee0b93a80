"""The exported gestural score against the planted one: what a phonetician opening the TextGrid
would see, scored.

The input is the very segmentation the export writes (events.csv, the TextGrid tiers: a list
of (gesture, onset, offset) intervals per utterance), and the planted activation intervals of
a synthetic corpus. Learned gestures are matched one-to-one to planted ones by the Hungarian
assignment on frame IoU pooled over every held-out frame (a learned gesture with no exported
interval is never matched). Then:

* ``score_iou``: the matched pairs' IoU, averaged over the planted gestures (one left without
  a learned partner counts 0);
* ``score_onset_f1`` / ``score_offset_f1``: exported interval boundaries of matched gestures
  against the planted ones of their partner, one-to-one within ``tolerance`` frames, pooled
  (precision over the matched gestures' intervals, recall over every planted interval);
* ``score_on_per_frame``: exported gestures on per frame (mean), beside ``planted_on_per_frame``;
* ``score_intervals_per_utterance`` and ``score_interval_ms``, beside the planted ones;
* ``score_oracle_iou``: the same matched IoU when each learned score row is cut at the
  threshold that the truth says is best for it: what the scores allow at best, so that a
  poor segmentation and poor scores can be told apart.

Each matched pair also gets its *precision* (share of the learned gesture's exported frames
inside its partner's planted intervals) and *recall* (share of the partner's frames it
covers): a low precision with a high recall is a learned gesture that also fires for other
planted gestures (two planted gestures merged, or one in a context), a low recall one that
covers its partner in some contexts only.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy.optimize import linear_sum_assignment

from gestural.core.units import FRAME_RATE
from gestural.evaluation.segmentation import Segmentation

# Every key :func:`gestural_score_metrics` returns (None in eval.json without ground truth).
SCORE_KEYS = ("score_iou", "score_onset_f1", "score_offset_f1", "score_on_per_frame", "planted_on_per_frame",
              "score_intervals_per_utterance", "planted_intervals_per_utterance", "score_interval_ms",
              "planted_interval_ms", "score_oracle_iou", "score_gestures_with_intervals")
# Thresholds tried per score row for the oracle ceiling: quantiles of its positive values.
ORACLE_LEVELS = 48


def interval_mask(intervals: Sequence[tuple[int, int, int]], num_gestures: int, frames: int) -> np.ndarray:
    """(gesture, onset, offset) intervals as a bool (num_gestures, frames) mask."""
    mask = np.zeros((num_gestures, frames), dtype=bool)
    for gesture, onset, offset in intervals:
        mask[gesture, max(0, onset):min(frames, offset)] = True
    return mask


def mask_runs(row: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Onsets and offsets (exclusive) of the True runs of a bool row."""
    edges = np.diff(np.concatenate([[0], row.astype(np.int8), [0]]))
    return np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)


def iou_matrix(planted: Sequence[np.ndarray], exported: Sequence[np.ndarray]) -> np.ndarray:
    """Frame IoU of every planted row (P) with every exported row (K), pooled over utterances."""
    p_rows, k_rows = planted[0].shape[0], exported[0].shape[0]
    intersection = np.zeros((p_rows, k_rows))
    p_count, k_count = np.zeros(p_rows), np.zeros(k_rows)
    for truth, found in zip(planted, exported):
        truth, found = truth.astype(np.float64), found.astype(np.float64)
        intersection += truth @ found.T
        p_count += truth.sum(axis=1)
        k_count += found.sum(axis=1)
    union = p_count[:, None] + k_count[None, :] - intersection
    return np.divide(intersection, union, out=np.zeros_like(intersection), where=union > 0)


def match(iou: np.ndarray, candidates: np.ndarray) -> list[tuple[int, int]]:
    """One-to-one (planted, learned) pairs maximizing the summed IoU, learned rows restricted to
    ``candidates`` (bool, K); pairs with IoU 0 are dropped."""
    columns = np.flatnonzero(candidates)
    if not columns.size or not iou.shape[0]:
        return []
    rows, chosen = linear_sum_assignment(iou[:, columns], maximize=True)
    return [(int(p), int(columns[c])) for p, c in zip(rows, chosen) if iou[p, columns[c]] > 0]


def boundary_f1(planted: Sequence[np.ndarray], exported: Sequence[np.ndarray], pairs: Sequence[tuple[int, int]],
                tolerance: int, boundary: int) -> float:
    """F1 of exported onsets (``boundary`` 0) or offsets (1) of matched gestures against planted
    ones, matched one-to-one within ``tolerance`` frames; recall counts every planted interval."""
    hits = found_count = 0
    truth_count = sum(int(mask_runs(row)[0].size) for truth in planted for row in truth)
    for p, k in pairs:
        for truth, found in zip(planted, exported):
            true_times = mask_runs(truth[p])[boundary]
            found_times = mask_runs(found[k])[boundary]
            found_count += found_times.size
            if true_times.size and found_times.size:
                distance = np.abs(true_times[:, None] - found_times[None, :]).astype(np.float64)
                distance[distance > tolerance] = 1e9
                rows, columns = linear_sum_assignment(distance)
                hits += int((distance[rows, columns] <= tolerance).sum())
    precision = hits / found_count if found_count else 0.0
    recall = hits / truth_count if truth_count else 0.0
    return 2 * precision * recall / (precision + recall) if precision + recall else 0.0


def _interval_stats(masks: Sequence[np.ndarray]) -> tuple[float, float, float]:
    """(gestures on per frame, intervals per utterance, mean interval in ms) of bool masks."""
    frames = sum(mask.shape[1] for mask in masks)
    on = sum(int(mask.sum()) for mask in masks)
    lengths = [offset - onset for mask in masks for row in mask for onset, offset in zip(*mask_runs(row))]
    return (on / frames if frames else 0.0, len(lengths) / len(masks) if masks else 0.0,
            1000.0 * float(np.mean(lengths)) / FRAME_RATE if lengths else 0.0)


def oracle_iou(planted: Sequence[np.ndarray], scores: Sequence[np.ndarray]) -> float:
    """The matched IoU when each score row is thresholded where the truth says it is best.

    Each learned row's best IoU with each planted row over :data:`ORACLE_LEVELS` thresholds,
    then the Hungarian matching of those bests, averaged over the planted gestures.
    """
    flat_truth = np.concatenate([t.astype(np.float64) for t in planted], axis=1)  # (P, N)
    flat_scores = np.concatenate([np.asarray(s, dtype=np.float64) for s in scores], axis=1)  # (K, N)
    truth_count = flat_truth.sum(axis=1)
    best = np.zeros((flat_truth.shape[0], flat_scores.shape[0]))
    for k, row in enumerate(flat_scores):
        positive = row[row > 0]
        if not positive.size:
            continue
        levels = np.unique(np.quantile(positive, np.linspace(0.0, 0.98, ORACLE_LEVELS)))
        above = (row[None, :] >= levels[:, None]).astype(np.float64)  # (levels, N)
        intersection = above @ flat_truth.T  # (levels, P)
        union = above.sum(axis=1)[:, None] + truth_count[None, :] - intersection
        iou = np.divide(intersection, union, out=np.zeros_like(intersection), where=union > 0)
        best[:, k] = iou.max(axis=0)
    pairs = match(best, np.ones(best.shape[1], dtype=bool))
    return float(sum(best[p, k] for p, k in pairs) / best.shape[0]) if best.shape[0] else 0.0


def gestural_score_metrics(planted: Sequence[np.ndarray], intervals: Sequence[Sequence[tuple[int, int, int]]],
                           scores: Sequence[np.ndarray], *, tolerance: int) -> tuple[dict, list[tuple[int, int]]]:
    """Score the exported intervals of each held-out utterance against the planted activations.

    Parameters
    ----------
    planted : sequence of bool arrays (P, T_i)
        Planted activations (``ground_truth.load_activations``).
    intervals : sequence (per utterance) of (gesture, onset, offset) frame intervals
        The exported segmentation of each utterance (what events.csv and the TextGrid hold).
    scores : sequence of arrays (K, T_i)
        The scores the intervals were cut from (for the oracle ceiling only).
    tolerance : int
        Frames within which a boundary is a hit (5: 25 ms).

    Returns
    -------
    metrics : dict
        The module docstring's figures.
    pairs : list of (planted, learned, IoU, precision, recall)
    """
    if len(planted) != len(intervals) or len(planted) != len(scores):
        raise ValueError(f"{len(planted)} planted, {len(intervals)} exported, {len(scores)} score utterances")
    num_gestures = scores[0].shape[0]
    exported = [interval_mask(found, num_gestures, truth.shape[1]) for truth, found in zip(planted, intervals)]
    iou = iou_matrix(planted, exported)
    with_intervals = np.any([mask.any(axis=1) for mask in exported], axis=0)  # (K,)
    pairs = match(iou, with_intervals)
    on, per_utterance, length_ms = _interval_stats(exported)
    planted_on, planted_per_utterance, planted_ms = _interval_stats(list(planted))
    metrics = {
        "score_iou": float(sum(iou[p, k] for p, k in pairs) / iou.shape[0]) if iou.shape[0] else 0.0,
        "score_onset_f1": boundary_f1(planted, exported, pairs, tolerance, 0),
        "score_offset_f1": boundary_f1(planted, exported, pairs, tolerance, 1),
        "score_on_per_frame": on,
        "planted_on_per_frame": planted_on,
        "score_intervals_per_utterance": per_utterance,
        "planted_intervals_per_utterance": planted_per_utterance,
        "score_interval_ms": length_ms,
        "planted_interval_ms": planted_ms,
        "score_oracle_iou": oracle_iou(planted, scores),
        "score_gestures_with_intervals": int(with_intervals.sum()),
    }
    return metrics, [(p, k, float(iou[p, k]), *pair_shares(planted, exported, p, k)) for p, k in pairs]


def pair_shares(planted: Sequence[np.ndarray], exported: Sequence[np.ndarray], p: int, k: int) -> tuple[float, float]:
    """(precision, recall) of learned gesture ``k``'s exported frames against planted gesture ``p``'s."""
    both = sum(int((truth[p] & found[k]).sum()) for truth, found in zip(planted, exported))
    found_count = sum(int(found[k].sum()) for found in exported)
    truth_count = sum(int(truth[p].sum()) for truth in planted)
    return both / found_count if found_count else 0.0, both / truth_count if truth_count else 0.0


def exported_intervals(scores: np.ndarray, segmentation: Segmentation) -> list[tuple[int, int, int]]:
    """The (gesture, onset, offset) intervals the export writes for one utterance's scores."""
    return [(event.gesture, event.onset, event.offset) for event in segmentation.events(scores)]


def planted_intervals(activations: np.ndarray) -> list[tuple[int, int, int]]:
    """(gesture, onset, offset) runs of a bool (P, T) activation mask."""
    return [(p, int(onset), int(offset)) for p, row in enumerate(activations) for onset, offset in zip(*mask_runs(row))]


def merged_activations(activations: np.ndarray, groups: Sequence[Sequence[int]]) -> np.ndarray:
    """A bool (P, T) activation mask with each group of planted gestures merged into one
    (row ``i`` is on where any gesture of ``groups[i]`` is)."""
    return np.stack([np.any(activations[list(group)], axis=0) for group in groups])


def merged_planted_intervals(activations: np.ndarray, groups: Sequence[Sequence[int]]) -> list[tuple[int, int, int]]:
    """The planted score with each group of planted gestures merged into one gesture (its index
    in ``groups``): the export of a model that cannot tell those gestures apart but is otherwise
    perfect, whose score against the planted one bounds what such a model can reach."""
    return planted_intervals(merged_activations(activations, groups))
