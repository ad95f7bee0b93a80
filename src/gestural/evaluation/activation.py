"""How well score traces predict known gesture activity: pooled-frame ROC-AUC.

A planted gesture is *active* on the frames of its activation intervals (the synthetic
corpora save them in ``ground_truth.npz``). A learned gesture k acts on the frames its
kernel covers: a score at frame t shapes frames t .. t + L - 1, so its *activity* is the
causal box sum of the score over the kernel length (:func:`gesture_activity`). For each
planted gesture the question is then a ranking one, free of any threshold: does the trace
rank active frames above inactive ones? ROC-AUC answers it (0.5 = chance, 1 = perfect).

The same measure scores the raw normalized channels (best channel and sign), which is the
floor a factorization has to beat to say more about gestures than the sensors themselves.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy.stats import rankdata

__all__ = ["gesture_activity", "roc_auc_matrix", "best_match_auc", "activation_metrics", "raw_channel_floor"]


def gesture_activity(scores: np.ndarray, win_size: int) -> np.ndarray:
    """Causal box sum of each score row over ``win_size`` frames: (K, T) -> (K, T).

    ``activity[k, t] = sum_{tau < win_size} scores[k, t - tau]``: how much of gesture k's
    kernel is being played out at frame t.
    """
    scores = np.asarray(scores, dtype=np.float64)
    if scores.ndim != 2:
        raise ValueError(f"scores: expected (K, T), got shape {scores.shape}")
    if win_size < 1:
        raise ValueError(f"win_size: must be >= 1 (got {win_size})")
    padded = np.concatenate([np.zeros((scores.shape[0], 1)), np.cumsum(scores, axis=1)], axis=1)
    stop = np.arange(1, scores.shape[1] + 1)
    return padded[:, stop] - padded[:, np.maximum(stop - win_size, 0)]


def _delayed(active: np.ndarray, lag: int) -> np.ndarray:
    """``active`` (P, T) delayed by ``lag`` frames (advanced if negative), False where shifted in."""
    if lag == 0:
        return active
    out = np.zeros_like(active)
    if lag > 0:
        out[:, lag:] = active[:, :-lag] if lag < active.shape[1] else False
    else:
        out[:, :lag] = active[:, -lag:] if -lag < active.shape[1] else False
    return out


def roc_auc_matrix(activations: Sequence[np.ndarray], traces: Sequence[np.ndarray],
                   max_lag: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """ROC-AUC of every trace row against every activation row, frames pooled over utterances.

    Parameters
    ----------
    activations : sequence of bool arrays (P, T_i)
        Known activity of P gestures in each utterance.
    traces : sequence of arrays (R, T_i)
        Scores (higher = more active) of R candidates, same utterances and lengths.
    max_lag : int
        Lag tolerance: each pair is scored with the trace delayed by every lag in
        ``-max_lag .. max_lag`` frames relative to the activation (within each utterance), and
        the best lag is kept, as the lag-tolerant kernel cosine does. Movement lags the
        activation that drives it, by an amount that depends on the articulator.

    Returns
    -------
    auc : ndarray (P, R)
        The Mann-Whitney estimate of P(trace on an active frame > trace on an inactive one),
        ties counted half, at the best lag. NaN for a gesture never or always active.
    lag : ndarray (P, R) int
        That lag (positive: the trace follows the activation).
    """
    if len(activations) != len(traces) or not activations:
        raise ValueError(f"need as many activation arrays as trace arrays, at least one "
                         f"(got {len(activations)} and {len(traces)})")
    for i, (a, t) in enumerate(zip(activations, traces)):
        if np.ndim(a) != 2 or np.ndim(t) != 2 or np.shape(a)[1] != np.shape(t)[1]:
            raise ValueError(f"utterance {i}: activations {np.shape(a)} and traces {np.shape(t)} "
                             "must be (P, T) and (R, T) with the same T")
    if int(max_lag) != max_lag or max_lag < 0:
        raise ValueError(f"max_lag: must be a non-negative integer (got {max_lag!r})")
    pooled = np.concatenate([np.asarray(t, dtype=np.float64) for t in traces], axis=1)  # (R, N)
    if not np.all(np.isfinite(pooled)):
        raise ValueError("traces: hold NaN or infinite values")
    ranks = rankdata(pooled, axis=1).T  # (N, R); ties get their average rank
    activations = [np.asarray(a, dtype=bool) for a in activations]
    best = np.full((activations[0].shape[0], pooled.shape[0]), -np.inf)
    best_lag = np.zeros(best.shape, dtype=np.int64)
    # Ranks are computed once; each lag only moves the activations (a matrix product).
    for lag in sorted(range(-int(max_lag), int(max_lag) + 1), key=abs):
        active = np.concatenate([_delayed(a, lag) for a in activations], axis=1)  # (P, N)
        positives = active.sum(axis=1).astype(np.float64)
        negatives = active.shape[1] - positives
        rank_sums = active.astype(np.float64) @ ranks  # (P, R)
        with np.errstate(invalid="ignore", divide="ignore"):
            auc = (rank_sums - positives[:, None] * (positives[:, None] + 1) / 2) / (positives * negatives)[:, None]
        auc[(positives == 0) | (negatives == 0)] = np.nan
        better = auc > best  # strict: among ties the smallest |lag| (tried first) stays
        best[better], best_lag[better] = auc[better], lag
    best[np.isneginf(best)] = np.nan
    return best, best_lag


def best_match_auc(auc: np.ndarray) -> dict:
    """Each planted gesture's best trace (row of ``auc``, (P, R)) and its AUC, and their mean."""
    auc = np.asarray(auc, dtype=np.float64)
    scored = auc
    defined = ~np.all(np.isnan(scored), axis=1)
    best = np.full(auc.shape[0], -1, dtype=np.int64)
    best_auc = np.full(auc.shape[0], np.nan)
    if np.any(defined):
        best[defined] = np.nanargmax(scored[defined], axis=1)
        best_auc[defined] = scored[defined, best[defined]]
    return {
        "mean_auc": float(np.mean(best_auc[defined])) if np.any(defined) else None,
        "per_gesture_auc": [None if np.isnan(v) else float(v) for v in best_auc],
        "best_trace": [int(b) if b >= 0 else None for b in best],
    }


def activation_metrics(activations: Sequence[np.ndarray], scores: Sequence[np.ndarray], win_size: int) -> dict:
    """A factorization's gesture activity against the planted activations.

    Each learned score row is turned into its activity over the kernel length, and each
    planted gesture is matched to the row that ranks its active frames best, at lag 0
    (``activation_auc``) and with the trace allowed to lag or lead by up to win_size frames
    (``activation_auc_lagged``, with each gesture's ``activation_lag``).
    """
    traces = [gesture_activity(s, win_size) for s in scores]
    return _summary(activations, traces, win_size, either_sign=False)


def raw_channel_floor(activations: Sequence[np.ndarray], utterances: Sequence[np.ndarray], max_lag: int) -> dict:
    """The same measure for the raw normalized channels (best channel and sign, same lag
    tolerance): the floor a factorization has to beat."""
    return _summary(activations, utterances, max_lag, either_sign=True)


def _summary(activations, traces, max_lag: int, *, either_sign: bool) -> dict:
    strict, _ = roc_auc_matrix(activations, traces)
    tolerant, lags = roc_auc_matrix(activations, traces, max_lag)
    if either_sign:  # a channel may go down when the gesture is on: score it flipped too
        flipped, flipped_lags = roc_auc_matrix(activations, [-np.asarray(t, dtype=np.float64) for t in traces],
                                               max_lag)
        lags = np.where(flipped > tolerant, flipped_lags, lags)
        tolerant = np.fmax(tolerant, flipped)
        strict = np.fmax(strict, 1.0 - strict)
    best = best_match_auc(strict)
    lagged = best_match_auc(tolerant)
    rows = [r if r is not None else -1 for r in lagged["best_trace"]]
    return {"activation_auc": best["mean_auc"],
            "activation_auc_per_gesture": best["per_gesture_auc"],
            "activation_best_row": best["best_trace"],
            "activation_auc_lagged": lagged["mean_auc"],
            "activation_lag": [int(lags[p, r]) if r >= 0 else None for p, r in enumerate(rows)]}
