"""Recovery of the planted gestures by one factorization: the metrics and the matching.

Scores a factorization against the planted one (:class:`gestural.evaluation.planted.PlantedTruth`) with
the measures of :mod:`gestural.evaluation.recovery`: seqNMF similarity of the factor reconstructions,
lag-tolerant kernel cosine after Hungarian matching, and F1 of planted onsets against peaks
of the matched learned scores, pooled over the held-out utterances.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from gestural.core.metrics import score_sparsity
from gestural.evaluation.planted import PlantedTruth
from gestural.evaluation.recovery import kernel_recovery, onset_f1, seqnmf_similarity

__all__ = ["recovery_metrics"]


def _pooled_onset_f1(onsets: Sequence[np.ndarray], traces: Sequence[np.ndarray], tolerance: int, lag: int,
                     relative_height: float) -> dict:
    """Onset F1 over all utterances at once: traces laid end to end with zero gaps.

    Pooling makes the peak-height threshold relative to the trace's maximum over the whole
    test set (an utterance without the gesture does not have its noise promoted to peaks),
    and the gaps are wide enough that no peak, shifted by ``lag``, reaches another
    utterance's onsets.
    """
    gap = tolerance + abs(lag) + 1
    pieces, shifted, offset = [], [], 0
    for onset, trace in zip(onsets, traces):
        pieces.extend([np.asarray(trace, dtype=np.float64), np.zeros(gap)])
        shifted.append(np.asarray(onset, dtype=np.int64) + offset)
        offset += len(trace) + gap
    return onset_f1(np.concatenate(shifted) if shifted else np.zeros(0, np.int64), np.concatenate(pieces),
                    tolerance, lag=lag, relative_height=relative_height)


def recovery_metrics(truth: PlantedTruth, gesture_kernels, scores: Sequence, *, in_use: Sequence[bool] | None = None,
                     onset_tolerance: int = 2, onset_relative_height: float = 0.1, device="cpu") -> tuple[dict, dict]:
    """How well a factorization recovers the planted one.

    Parameters
    ----------
    truth : PlantedTruth
    gesture_kernels : array (K, C, L)
        Learned kernels.
    scores : list of array (K, T_i)
        Learned scores of the same utterances as ``truth.scores``.
    in_use : sequence of K bool, optional
        The learned gestures in use (``score_sparsity(...)["in_use"]``; computed when None).
        Only these are matched: a kernel that is never switched on is not a learned gesture,
        however well its shape (a k-means start, say) fits a planted one.
    onset_tolerance, onset_relative_height
        See :class:`gestural.evaluation.held_out.EvaluateParams`.
    device : str or torch.device
        Where the seqNMF factor reconstructions are computed.

    Returns
    -------
    metrics : dict
        ``seqnmf_similarity``, ``kernel_cosine`` (mean matched lag-tolerant cosine),
        ``onset_f1``, ``onset_precision``, ``onset_recall`` (means over planted gestures;
        an unmatched planted gesture counts 0).
    matching : dict
        ``kernel_recovery``: list of {planted, learned, lag, cosine}; ``seqnmf``: list of
        {planted, learned, cosine}; ``onsets``: per planted gesture {learned, f1, precision,
        recall, num_onsets, num_peaks, num_matched}.
    """
    kernels = np.asarray(gesture_kernels, dtype=np.float64)
    device = torch.device(device)
    if in_use is None:
        in_use = score_sparsity(np.concatenate([np.asarray(h) for h in scores], axis=1), kernels=kernels)["in_use"]
    used = np.flatnonzero(np.asarray(in_use, dtype=bool))
    if used.size == 0:
        used = np.arange(kernels.shape[0])
    seq = seqnmf_similarity(
        torch.as_tensor(truth.kernels, device=device),
        [torch.as_tensor(h, device=device) for h in truth.scores],
        torch.as_tensor(kernels[used], device=device),
        [torch.as_tensor(np.asarray(h)[used], device=device) for h in scores],
    )
    seq["matches"] = [(p, int(used[k]), c) for p, k, c in seq["matches"]]
    recovery = kernel_recovery(truth.kernels, kernels[used])
    recovery["assignment"] = [(p, int(used[k]), lag) for p, k, lag in recovery["assignment"]]
    num_planted = truth.kernels.shape[0]
    per_gesture = [{"learned": None, "lag": None, "f1": 0.0, "precision": 0.0, "recall": 0.0,
                    "num_onsets": int(sum(len(o[p]) for o in truth.onsets)), "num_peaks": 0, "num_matched": 0}
                   for p in range(num_planted)]
    for planted, learned, lag in recovery["assignment"]:
        result = _pooled_onset_f1([o[planted] for o in truth.onsets], [h[learned] for h in scores],
                                  onset_tolerance, lag, onset_relative_height)
        per_gesture[planted].update(learned=learned, lag=lag, **result)
    metrics = {
        "seqnmf_similarity": seq["score"],
        "kernel_cosine": recovery["matched_cosine_mean"],
        "onset_f1": float(np.mean([g["f1"] for g in per_gesture])),
        "onset_precision": float(np.mean([g["precision"] for g in per_gesture])),
        "onset_recall": float(np.mean([g["recall"] for g in per_gesture])),
    }
    matching = {
        "kernel_recovery": [{"planted": p, "learned": k, "lag": lag, "cosine": recovery["per_gesture"][p]}
                            for p, k, lag in recovery["assignment"]],
        "seqnmf": [{"planted": p, "learned": k, "cosine": c} for p, k, c in seq["matches"]],
        "onsets": [{"planted": p, **g} for p, g in enumerate(per_gesture)],
    }
    return metrics, matching
