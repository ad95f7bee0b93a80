"""Recovery of planted gestures: lag-tolerant kernel matching, duplicates, seqNMF's factor
similarity and onset F1. Conventions as in :mod:`gestural.core.metrics`."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from scipy.optimize import linear_sum_assignment
from scipy.signal import find_peaks

from gestural.core.metrics import batched, check_kernels, factor_reconstructions, frame_mask, to_tensor

# Kernels this similar (lag-tolerant cosine) are one gesture twice.
DUPLICATE_COSINE = 0.9

__all__ = [
    "distinct_gestures",
    "kernel_recovery",
    "lag_tolerant_cosine",
    "onset_f1",
    "seqnmf_similarity",
]


# ------------------------------------------------------------------ kernel recovery


def _lag_cosine_matrix(a: torch.Tensor, b: torch.Tensor, max_lag: int | None):
    """Best lag-tolerant cosine and its lag for every pair: a (P, C, L1), b (K, C, L2).

    Lag d means ``b`` is ``a`` delayed by d frames: cos_d = sum_t a[:, t] . b[:, t + d] /
    (||a|| ||b||), both seen as signals that are zero outside their window, so the norms are
    the full ones and a small overlap cannot fake a high cosine.
    """
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"kernels have {a.shape[1]} and {b.shape[1]} channels")
    if max_lag is not None and (int(max_lag) != max_lag or max_lag < 0):
        raise ValueError(f"max_lag: must be a non-negative integer or None (got {max_lag!r})")
    len_a, len_b = a.shape[-1], b.shape[-1]
    # conv1d is a cross-correlation: out[k, p, j] = sum_{c,t} a[p, c, t] b[k, c, t + j - (L1-1)]
    corr = F.conv1d(b, a, padding=len_a - 1).permute(1, 0, 2)  # (P, K, L1 + L2 - 1)
    lags = torch.arange(-(len_a - 1), len_b, dtype=torch.float64)
    if max_lag is not None:
        keep = lags.abs() <= max_lag
        if not keep.any():  # only possible if no overlap at all is allowed; lag 0 is always in
            keep = lags == 0
        corr, lags = corr[..., keep], lags[keep]
    norms = a.flatten(1).norm(dim=1)[:, None] * b.flatten(1).norm(dim=1)[None, :]
    cos = torch.where(norms[..., None] > 0, corr / norms.clamp_min(1e-300)[..., None], torch.zeros_like(corr))
    best = cos.amax(dim=-1)
    # Among (near-)ties prefer the smallest shift, so identical kernels report lag 0.
    tied = cos >= best[..., None] - 1e-12
    pick = torch.where(tied, lags.abs(), torch.full_like(lags, math.inf)).argmin(dim=-1)
    return best, lags[pick].to(torch.int64)


def _kernel_array(kernels, name: str) -> torch.Tensor:
    tensor = to_tensor(kernels).detach().to(device="cpu", dtype=torch.float64)
    if tensor.dim() == 2:
        tensor = tensor[None]
    check_kernels(tensor, name)
    return tensor


def lag_tolerant_cosine(a, b, max_lag: int | None = None) -> float:
    """Cosine similarity of two kernels, maximized over integer time shifts.

    Parameters
    ----------
    a, b : array or tensor, (C, L1) and (C, L2)
        Kernels; their lengths may differ.
    max_lag : int, optional
        Largest |shift| considered; default all shifts with any overlap,
        ``-(L1 - 1) .. L2 - 1``.

    Returns
    -------
    float
        ``max_d sum_t <a[:, t], b[:, t + d]> / (||a|| ||b||)`` with zero fill outside the
        kernels; 0 if either kernel is all zero.
    """
    best, _ = _lag_cosine_matrix(_kernel_array(a, "a"), _kernel_array(b, "b"), max_lag)
    return float(best[0, 0])


def kernel_recovery(planted, learned, max_lag: int | None = None) -> dict:
    """Match learned gesture kernels to planted ones (Hungarian on lag-tolerant cosines).

    Parameters
    ----------
    planted : array or tensor, (P, C, L1)
    learned : array or tensor, (K, C, L2)
        K may be larger (spare gestures) or smaller (some planted ones go unmatched) than P.
    max_lag : int, optional
        See :func:`lag_tolerant_cosine`.

    Returns
    -------
    dict with
        ``matched_cosine_mean``: sum of the matched cosines / P (an unmatched planted
        gesture counts 0);
        ``per_gesture``: list of P matched cosines (0 where unmatched);
        ``assignment``: list of (planted, learned, lag) for the matched pairs, lag being how
        many frames the learned kernel is delayed relative to the planted one;
        ``cosine_matrix``: P x K nested list of lag-tolerant cosines.
    """
    planted = _kernel_array(planted, "planted")
    learned = _kernel_array(learned, "learned")
    cos, lags = _lag_cosine_matrix(planted, learned, max_lag)
    cos_np, lags_np = cos.numpy(), lags.numpy()
    rows, cols = linear_sum_assignment(cos_np, maximize=True)
    per_gesture = np.zeros(planted.shape[0])
    per_gesture[rows] = cos_np[rows, cols]
    return {
        "matched_cosine_mean": float(per_gesture.sum() / planted.shape[0]),
        "per_gesture": [float(v) for v in per_gesture],
        "assignment": [(int(p), int(k), int(lags_np[p, k])) for p, k in zip(rows, cols)],
        "cosine_matrix": cos_np.tolist(),
    }


def distinct_gestures(kernels, in_use, threshold: float = DUPLICATE_COSINE) -> dict:
    """How many different gestures the kernels in use are, up to a shift in time.

    Two kernels whose lag-tolerant cosine is at least ``threshold`` are duplicates (the same
    movement, possibly delayed); duplicates are grouped transitively (single linkage) and each
    group counts once.

    Parameters
    ----------
    kernels : array or tensor, (K, C, L)
    in_use : sequence of bool, (K,)
        Which kernels the scores use (see :func:`score_sparsity`).
    threshold : float
        Cosine above which two kernels are the same gesture.

    Returns
    -------
    dict with ``distinct_gestures`` (the number of groups) and ``groups`` (lists of kernel
    indices, largest group first).
    """
    kernels = _kernel_array(kernels, "kernels")
    used = [k for k, flag in enumerate(in_use) if flag]
    if not used:
        return {"distinct_gestures": 0, "groups": []}
    cos, _ = _lag_cosine_matrix(kernels[used], kernels[used], None)
    from scipy.sparse.csgraph import connected_components

    count, labels = connected_components((cos.numpy() >= threshold).astype(np.int8), directed=False)
    groups = [[used[i] for i in np.flatnonzero(labels == g)] for g in range(count)]
    groups.sort(key=lambda g: (-len(g), g[0]))
    return {"distinct_gestures": int(count), "groups": groups}


# --------------------------------------------------------------- seqNMF similarity


def _utterance_scores(scores, mask, name: str):
    """Scores as a list of (K, T_i) tensors and a list of (T_i,) bool masks (or None)."""
    if isinstance(scores, (list, tuple)):
        if mask is not None:
            raise ValueError(f"{name}: give either a list of utterances or a padded batch with a mask, not both")
        items = [to_tensor(s) for s in scores]
        for i, s in enumerate(items):
            if s.dim() != 2:
                raise ValueError(f"{name}[{i}]: expected a 2-D (K, T) array, got shape {tuple(s.shape)}")
        return items, [None] * len(items)
    tensor, _ = batched(scores, name)
    if mask is None:
        return list(tensor), [None] * tensor.shape[0]
    return list(tensor), list(frame_mask(mask, tensor.shape[0], tensor.shape[-1], tensor.device))


def _factor_window(scores: torch.Tensor, kernels: torch.Tensor, start: int, stop: int) -> torch.Tensor:
    """Factor reconstructions (K, C, stop - start) of frames [start, stop) of one utterance."""
    first = max(0, start - kernels.shape[-1] + 1)  # earliest score that reaches frame `start`
    return factor_reconstructions(scores[:, first:stop], kernels)[..., start - first:]


def seqnmf_similarity(planted_kernels, planted_scores, learned_kernels, learned_scores, mask=None,
                      chunk_frames: int = 4096) -> dict:
    """seqNMF similarity of two factorizations of the same data (Mackevicius et al. 2019).

    Each factor's own reconstruction ``W_k * H_k`` over all the data (real frames of every
    utterance, concatenated) is flattened; the cosine between every planted and every
    learned factor reconstruction forms a P x K matrix; then greedily the largest remaining
    entry is picked and its row and column removed, until one side runs out. The score is the
    sum of the picked cosines / P, so 1 means every planted factor is reproduced by its own
    learned factor, and splitting a planted factor over two learned ones costs.

    The P x K Gram matrix is accumulated utterance by utterance and ``chunk_frames`` frames at
    a time, so at most (P + K) x C x chunk_frames values exist at once.

    Parameters
    ----------
    planted_kernels : (P, C, L1)
    planted_scores : (P, T), (B, P, T) or a list of (P, T_i)
    learned_kernels : (K, C, L2)
    learned_scores : same layout as ``planted_scores`` with K rows
    mask : (T,) or (B, T), optional
        1 = real frame (only with array scores).
    chunk_frames : int
        Frames per chunk.

    Returns
    -------
    dict with ``score``, ``matches`` (list of (planted, learned, cosine) in picking order)
    and ``cosine_matrix`` (P x K nested list).
    """
    if chunk_frames < 1:
        raise ValueError(f"chunk_frames: must be >= 1 (got {chunk_frames})")
    p_items, masks = _utterance_scores(planted_scores, mask, "planted_scores")
    l_items, _ = _utterance_scores(learned_scores, mask, "learned_scores")
    if len(p_items) != len(l_items):
        raise ValueError(f"planted_scores has {len(p_items)} utterances but learned_scores has {len(l_items)}")
    if not p_items:
        raise ValueError("no utterances to compare")
    device = p_items[0].device
    p_kernels = to_tensor(planted_kernels, device).to(torch.float64)
    l_kernels = to_tensor(learned_kernels, device).to(torch.float64)
    check_kernels(p_kernels, "planted_kernels")
    check_kernels(l_kernels, "learned_kernels")
    if p_kernels.shape[1] != l_kernels.shape[1]:
        raise ValueError(f"planted kernels have {p_kernels.shape[1]} channels, learned {l_kernels.shape[1]}")
    num_p, num_l = p_kernels.shape[0], l_kernels.shape[0]

    gram = torch.zeros(num_p, num_l, dtype=torch.float64, device=device)
    p_sq = torch.zeros(num_p, dtype=torch.float64, device=device)
    l_sq = torch.zeros(num_l, dtype=torch.float64, device=device)
    for i, (hp, hl, m) in enumerate(zip(p_items, l_items, masks)):
        hp = hp.to(device=device, dtype=torch.float64)
        hl = hl.to(device=device, dtype=torch.float64)
        if hp.shape[0] != num_p or hl.shape[0] != num_l:
            raise ValueError(f"utterance {i}: scores have {hp.shape[0]} / {hl.shape[0]} rows, "
                             f"kernels {num_p} / {num_l}")
        if hp.shape[-1] != hl.shape[-1]:
            raise ValueError(f"utterance {i}: planted scores have {hp.shape[-1]} frames, learned {hl.shape[-1]}")
        frames = hp.shape[-1]
        for start in range(0, frames, chunk_frames):
            stop = min(frames, start + chunk_frames)
            rp = _factor_window(hp, p_kernels, start, stop)
            rl = _factor_window(hl, l_kernels, start, stop)
            if m is not None:
                keep = m[start:stop].to(device)[None, None, :]
                rp = torch.where(keep, rp, rp.new_zeros(()))
                rl = torch.where(keep, rl, rl.new_zeros(()))
            rp, rl = rp.reshape(num_p, -1), rl.reshape(num_l, -1)
            gram += rp @ rl.T
            p_sq += (rp**2).sum(dim=1)
            l_sq += (rl**2).sum(dim=1)

    norms = torch.sqrt(p_sq)[:, None] * torch.sqrt(l_sq)[None, :]
    cos = torch.where(norms > 0, gram / norms.clamp_min(1e-300), torch.zeros_like(gram)).cpu().numpy()
    remaining = cos.copy()
    matches = []
    for _ in range(min(num_p, num_l)):
        p, k = np.unravel_index(np.argmax(remaining), remaining.shape)
        matches.append((int(p), int(k), float(cos[p, k])))
        remaining[p, :] = -np.inf
        remaining[:, k] = -np.inf
    return {
        "score": float(sum(c for _, _, c in matches) / num_p),
        "matches": matches,
        "cosine_matrix": cos.tolist(),
    }


# ------------------------------------------------------------------------ onsets


def onset_f1(planted_onsets: Sequence[int], learned_scores, tolerance: int = 2, *, lag: int = 0,
             relative_height: float = 0.1, min_distance: int = 1) -> dict:
    """Precision, recall and F1 of peaks in a learned score trace against planted onsets.

    Parameters
    ----------
    planted_onsets : sequence of int
        Onset frames of one planted gesture.
    learned_scores : array or tensor, (T,)
        The score trace H[j] of the learned gesture matched to it.
    tolerance : int
        A peak matches an onset if ``|peak + lag - onset| <= tolerance``; each peak and each
        onset is used at most once (a maximum one-to-one matching).
    lag : int
        Delay of the learned kernel relative to the planted one (the lag reported by
        :func:`kernel_recovery`): a kernel delayed by ``lag`` frames is switched on ``lag``
        frames earlier to give the same movement, so peaks are shifted by ``+lag``.
    relative_height : float
        Peaks lower than this fraction of the trace's maximum are ignored.
    min_distance : int
        Minimum distance in frames between peaks (``scipy.signal.find_peaks``).

    Returns
    -------
    dict with ``precision``, ``recall``, ``f1``, ``num_onsets``, ``num_peaks``,
    ``num_matched``. With no onsets and no peaks all three scores are 1; otherwise a zero
    denominator gives 0.
    """
    if tolerance < 0:
        raise ValueError(f"tolerance: must be >= 0 (got {tolerance})")
    if min_distance < 1:
        raise ValueError(f"min_distance: must be >= 1 (got {min_distance})")
    trace = to_tensor(learned_scores).detach().to("cpu", torch.float64).numpy()
    if trace.ndim != 1:
        raise ValueError(f"learned_scores: expected a 1-D (T,) trace, got shape {trace.shape}")
    onsets = np.sort(np.asarray(planted_onsets, dtype=np.int64).reshape(-1))

    peak_max = float(trace.max()) if trace.size else 0.0
    if peak_max > 0:
        # Pad with a zero on each side so a spike on the first or last frame is a peak too.
        padded = np.concatenate([[0.0], trace, [0.0]])
        peaks, _ = find_peaks(padded, height=relative_height * peak_max, distance=min_distance)
        peaks = peaks - 1 + lag
    else:
        peaks = np.zeros(0, dtype=np.int64)

    # Onsets and peaks are points on a line and a match is an interval of fixed width, so the
    # greedy sweep (each onset takes the earliest free peak in reach) is a maximum matching.
    matched, j = 0, 0
    for onset in onsets:
        while j < len(peaks) and peaks[j] < onset - tolerance:
            j += 1
        if j < len(peaks) and peaks[j] <= onset + tolerance:
            matched += 1
            j += 1
    num_onsets, num_peaks = len(onsets), len(peaks)
    if num_onsets == 0 and num_peaks == 0:
        precision = recall = f1 = 1.0
    else:
        precision = matched / num_peaks if num_peaks else 0.0
        recall = matched / num_onsets if num_onsets else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0
    return {
        "precision": precision,
        "recall": recall,
        "f1": f1,
        "num_onsets": num_onsets,
        "num_peaks": num_peaks,
        "num_matched": matched,
    }
