"""The multiplicative updates of convolutive NMF (:class:`gestural.classical.cnmf.ConvNMF`), in torch.

One step each for the scores H, the kernels W and the baseline b, the kernel normalization,
the penalized cost and the stopping rule; the model, its penalties and why the updates keep
the cost from rising are described in :mod:`gestural.classical.cnmf`. The tensors span all utterances
laid end to end on one time axis; ``real`` masks out the gaps between them.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

_EPS = 1e-12  # keeps 0/0 at 0 in the updates; far below any value that matters
_WINDOW = 10  # the stopping rule averages the cost's decrease over this many iterations
_MIN_ITER = 2 * _WINDOW  # and never stops before this many


# ------------------------------------------------------------------- convolutions


def _box_filter(signal: torch.Tensor, half_width: int) -> torch.Tensor:
    """Sum of each row of ``signal`` (R, N) over a centred window of 2 * half_width + 1 frames."""
    # Shifted adds: ~20x faster on the CPU than conv1d with one input channel per row.
    frames = signal.shape[1]
    padded = F.pad(signal, (half_width, half_width))
    total = padded[:, :frames].clone()
    for shift in range(1, 2 * half_width + 1):
        total += padded[:, shift:shift + frames]
    return total


def _convolve(scores: torch.Tensor, kernels: torch.Tensor) -> torch.Tensor:
    """(K, N) scores, (K, C, L) kernels -> (C, N): the forward-in-time convolution."""
    return F.conv_transpose1d(scores[None], kernels)[0, :, :scores.shape[1]]


def _correlate(signals: torch.Tensor, kernels: torch.Tensor) -> torch.Tensor:
    """Adjoint of ``_convolve``: (S, C, N) -> (S, K, N), sum_{c,tau} W[k,c,tau] Y[c,t+tau]."""
    return F.conv1d(F.pad(signals, (0, kernels.shape[-1] - 1)), kernels)


def _others(values: torch.Tensor) -> torch.Tensor:
    """Row k of the result is the sum of every *other* row: (1 - I) @ values, along dim 0."""
    return values.sum(dim=0, keepdim=True) - values


# ----------------------------------------------------------------------- updates


@dataclass(frozen=True)
class _Penalties:
    l1_scores: float
    l1_kernels: float
    xortho: float  # already divided by (K - 1)(2L - 1)
    half_width: int  # of seqNMF's box filter: L - 1


def _xortho_term(smoothed_corr, penalties: _Penalties):
    """lambda * (1 - I) (W^T * Y): the x-ortho part of the scores update's denominator.

    Y is :func:`_smoothed_above`. The x-ortho cost is linear in H: this is its gradient,
    and the cost is <H, this>.
    """
    return penalties.xortho * _others(smoothed_corr)


def _update_scores(scores, kernels, data_corr, reconstruction, real, penalties: _Penalties, xortho_term=None):
    """One multiplicative step of H: H * (W^T X) / (W^T X_hat + l1 + x-ortho).

    ``data_corr`` is W^T X and ``xortho_term`` is :func:`_xortho_term` (None without x-ortho),
    both for the current kernels; passed in so that ``transform``, whose kernels are fixed,
    computes them once.
    """
    denominator = _correlate(reconstruction[None] * real, kernels)[0]
    denominator += penalties.l1_scores + _EPS
    if xortho_term is not None:
        denominator += xortho_term
    return (data_corr / denominator).mul_(scores).mul_(real)


def _update_kernels(kernels, scores, data, reconstruction, real, penalties: _Penalties, smoothed_above=None):
    """One multiplicative step of W: W_tau * (X H_tau^T) / (X_hat H_tau^T + l1 + x-ortho).

    H_tau is H delayed by tau frames; one (K, N) x (N, S*C) product per tau.
    ``smoothed_above`` is :func:`_smoothed_above` (None without x-ortho).
    """
    channels, frames = data.shape
    win = kernels.shape[-1]
    signals = [data, reconstruction * real] + ([smoothed_above] if penalties.xortho else [])
    stacked = torch.cat(signals, dim=0).T  # (N, S*C)
    padded = F.pad(scores, (win - 1, 0))
    products = torch.stack([padded[:, win - 1 - tau: win - 1 - tau + frames] @ stacked
                            for tau in range(win)], dim=-1)  # (K, S*C, L)
    numerator = products[:, :channels]
    denominator = products[:, channels:2 * channels] + penalties.l1_kernels
    if penalties.xortho:
        denominator = denominator + penalties.xortho * _others(products[:, 2 * channels:])
    return kernels * numerator / (denominator + _EPS)


def _update_baseline(baseline, data, reconstruction, real):
    """One multiplicative step of b, a factor whose activation is 1 on every real frame."""
    return baseline * (data * real).sum(dim=1) / ((reconstruction * real).sum(dim=1) + _EPS)


def _normalize_kernels(kernels, scores):
    """Unit-norm kernels, the amplitude moved into the scores (X_hat unchanged), so that the
    L1 penalty on H cannot be dodged by growing W."""
    norms = kernels.flatten(1).norm(dim=1)
    norms = torch.where(norms > 0, norms, torch.ones_like(norms))
    return kernels / norms[:, None, None], scores * norms[:, None]


def _smoothed_above(data, baseline, real, half_width: int):
    """Y = S X~ on real frames, X~ = max(X - b, 0) being the part of the data the gestures
    explain: what x-ortho measures each gesture's overlap with.

    Smoothing the data, not W^T X~ (seqNMF smooths both, for W and H), is the same away from
    utterance edges, costs C rows instead of K and keeps the two updates consistent; the
    mask keeps one utterance's data out of its neighbours' penalty.
    """
    return _box_filter((data - baseline[:, None]).clamp_min(0.0) * real, half_width) * real


def _cost(data, reconstruction, real, kernels, scores, penalties: _Penalties, xortho_term=None) -> float:
    """The penalized cost; ``xortho_term`` (:func:`_xortho_term` for these kernels) only with x-ortho."""
    residual = (data - reconstruction) * real
    cost = 0.5 * residual.square().sum(dtype=torch.float64).item()
    if penalties.l1_scores:
        cost += penalties.l1_scores * scores.sum(dtype=torch.float64).item()
    if penalties.l1_kernels:
        cost += penalties.l1_kernels * kernels.sum(dtype=torch.float64).item()
    if xortho_term is not None:
        cost += (scores * xortho_term).sum(dtype=torch.float64).item()
    return cost


def _stopped(history: list[float], tol: float, scale: float) -> bool:
    """True once the cost has fallen by at most ``tol * scale`` per iteration, on average over
    the last ``_WINDOW`` iterations (and at least ``_MIN_ITER`` were run)."""
    if tol <= 0 or len(history) < max(_MIN_ITER, _WINDOW + 1):
        return False
    return (history[-_WINDOW - 1] - history[-1]) / _WINDOW <= tol * scale
