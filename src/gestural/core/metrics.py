"""How good is a factorization: reconstruction and sparsity (recovery of planted gestures:
:mod:`gestural.evaluation.recovery`).

Conventions shared with the model:

* gesture kernels ``W``: (K, C, L), natural time order;
* scores ``H``: (K, T) for one utterance or (B, K, T) for a padded batch;
* reconstruction, a true convolution forward in time,
  ``X_hat[c, t] = b[c] + sum_k sum_tau W[k, c, tau] * H[k, t - tau]``,
  so a unit impulse at ``H[k, t0]`` reproduces ``W[k]`` from frame ``t0`` onwards;
* ``mask``: (B, T) (or (T,) for one utterance), bool or float, 1 = real frame. Values on
  padded frames never change a metric, whatever they are (even NaN).

Everything that touches utterance-sized arrays is done in torch (on the device of the
input), sums in float64; small things (kernels, matchings, peak lists) in numpy/scipy.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

__all__ = [
    "convolve_scores",
    "factor_reconstructions",
    "hoyer",
    "reconstruction_metrics",
    "score_sparsity",
]


# ----------------------------------------------------------------------------- helpers


def to_tensor(array, device=None) -> torch.Tensor:
    """``array`` as a floating torch tensor (kept on its device unless ``device`` is given)."""
    tensor = array if isinstance(array, torch.Tensor) else torch.as_tensor(np.asarray(array))
    if not tensor.is_floating_point():
        tensor = tensor.to(torch.float64)
    return tensor if device is None else tensor.to(device)


def batched(array, name: str) -> tuple[torch.Tensor, bool]:
    """(C, T) -> (1, C, T); (B, C, T) unchanged. Returns the tensor and whether it was 2-D."""
    tensor = to_tensor(array)
    if tensor.dim() == 2:
        return tensor[None], True
    if tensor.dim() == 3:
        return tensor, False
    raise ValueError(f"{name}: expected a 2-D (C, T) or 3-D (B, C, T) array, got shape {tuple(tensor.shape)}")


def frame_mask(mask, batch: int, frames: int, device) -> torch.Tensor:
    """A (B, T) bool mask: all True when ``mask`` is None, else ``mask != 0``."""
    if mask is None:
        return torch.ones(batch, frames, dtype=torch.bool, device=device)
    mask = torch.as_tensor(mask if isinstance(mask, torch.Tensor) else np.asarray(mask)).to(device)
    if mask.dim() == 1:
        mask = mask[None]
    if tuple(mask.shape) != (batch, frames):
        raise ValueError(f"mask: expected shape ({batch}, {frames}) (batch, frames), got {tuple(mask.shape)}")
    return mask != 0


def check_kernels(kernels: torch.Tensor, name: str = "kernels") -> None:
    if kernels.dim() != 3:
        raise ValueError(f"{name}: expected a 3-D (K, C, L) array, got shape {tuple(kernels.shape)}")


# ------------------------------------------------------------------- reconstruction


def convolve_scores(scores, kernels, baseline=None) -> torch.Tensor:
    """Reconstruct channels from scores: ``sum_k sum_tau W[k, c, tau] H[k, t - tau]``.

    Parameters
    ----------
    scores : array or tensor, (K, T) or (B, K, T)
        Gestural scores H.
    kernels : array or tensor, (K, C, L)
        Gesture kernels W in natural time order.
    baseline : array or tensor, (C,), optional
        Per-channel offset b added to every frame.

    Returns
    -------
    reconstruction : tensor, (C, T) or (B, C, T) (same batching as ``scores``)
        On the device of ``scores``. A unit impulse at ``H[k, t0]`` gives ``W[k]`` at frames
        ``t0 .. t0 + L - 1`` (truncated at the end of the utterance).
    """
    scores, unbatched = batched(scores, "scores")
    kernels = to_tensor(kernels, scores.device)
    check_kernels(kernels)
    if scores.shape[1] != kernels.shape[0]:
        raise ValueError(f"scores have {scores.shape[1]} gestures but kernels have {kernels.shape[0]}")
    dtype = torch.promote_types(scores.dtype, kernels.dtype)
    frames = scores.shape[-1]
    # conv_transpose1d is exactly the forward-in-time convolution; its output is T + L - 1
    # long (the tails of gestures that start near the end), cropped to the utterance.
    out = F.conv_transpose1d(scores.to(dtype), kernels.to(dtype))[..., :frames]
    if baseline is not None:
        out = out + to_tensor(baseline, scores.device).to(dtype)[None, :, None]
    return out[0] if unbatched else out


def factor_reconstructions(scores, kernels) -> torch.Tensor:
    """Each gesture's own reconstruction ``W_k * H_k`` (no baseline).

    Parameters
    ----------
    scores : array or tensor, (K, T) or (B, K, T)
    kernels : array or tensor, (K, C, L)

    Returns
    -------
    reconstructions : tensor, (K, C, T) or (B, K, C, T)
        Summing over K gives :func:`convolve_scores`.
    """
    scores, unbatched = batched(scores, "scores")
    kernels = to_tensor(kernels, scores.device)
    check_kernels(kernels)
    num_gestures, channels, _ = kernels.shape
    if scores.shape[1] != num_gestures:
        raise ValueError(f"scores have {scores.shape[1]} gestures but kernels have {num_gestures}")
    dtype = torch.promote_types(scores.dtype, kernels.dtype)
    batch, _, frames = scores.shape
    # A grouped transposed convolution keeps the K factors apart: group k maps score row k
    # to the C channels of kernel k.
    out = F.conv_transpose1d(scores.to(dtype), kernels.to(dtype), groups=num_gestures)[..., :frames]
    out = out.reshape(batch, num_gestures, channels, frames)
    return out[0] if unbatched else out


def reconstruction_metrics(x, x_hat, mask=None) -> dict:
    """Errors and fit of a reconstruction over the real frames.

    Parameters
    ----------
    x, x_hat : array or tensor, (C, T) or (B, C, T)
        Data and reconstruction.
    mask : array or tensor, (T,) or (B, T), optional
        1 = real frame. Padded frames are ignored entirely.

    Returns
    -------
    dict with
        ``l1``: mean absolute error over real frames and channels;
        ``rmse``: root mean squared error over the same;
        ``variance_explained``: 1 - SSE / SST, SST taken around each channel's mean over the
        real frames (pooled over the batch); NaN if every channel is constant;
        ``correlation_per_channel``: list of C Pearson r between x and x_hat over the pooled
        real frames; NaN for a channel where x or x_hat is constant (r is undefined there);
        ``correlation_mean``: mean of the finite ones (NaN if none);
        ``num_frames``: number of real frames.
    """
    x, _ = batched(x, "x")
    x_hat, _ = batched(x_hat, "x_hat")
    if x.shape != x_hat.shape:
        raise ValueError(f"x has shape {tuple(x.shape)} but x_hat has shape {tuple(x_hat.shape)}")
    x = x.to(torch.float64)
    x_hat = x_hat.to(device=x.device, dtype=torch.float64)
    batch, channels, frames = x.shape
    real = frame_mask(mask, batch, frames, x.device)[:, None, :].expand_as(x)
    num_frames = int(real[:, 0].sum())
    if num_frames == 0:
        raise ValueError("mask: no real frames to evaluate")

    zero = x.new_zeros(())
    # torch.where (not multiplication) so that NaN/inf padding cannot leak into the sums.
    xr = torch.where(real, x, zero)
    yr = torch.where(real, x_hat, zero)
    error = xr - yr
    count = num_frames * channels
    sse = (error**2).sum()
    l1 = error.abs().sum() / count
    rmse = torch.sqrt(sse / count)

    mean_x = xr.sum(dim=(0, 2)) / num_frames  # (C,)
    mean_y = yr.sum(dim=(0, 2)) / num_frames
    dx = torch.where(real, x - mean_x[None, :, None], zero)
    dy = torch.where(real, x_hat - mean_y[None, :, None], zero)
    sst = (dx**2).sum()
    variance_explained = (1.0 - sse / sst).item() if sst > 0 else math.nan

    sxx, syy, sxy = (dx**2).sum(dim=(0, 2)), (dy**2).sum(dim=(0, 2)), (dx * dy).sum(dim=(0, 2))
    # A channel is constant iff its max equals its min over real frames; testing that
    # exactly avoids calling round-off in the variance of a constant a "signal".
    inf = torch.tensor(math.inf, dtype=x.dtype, device=x.device)

    def varies(v):
        return torch.where(real, v, -inf).amax(dim=(0, 2)) > torch.where(real, v, inf).amin(dim=(0, 2))

    defined = varies(x) & varies(x_hat)
    r = torch.where(defined, sxy / torch.sqrt(sxx * syy).clamp_min(1e-300), torch.full_like(sxy, math.nan))
    r = r.clamp(-1.0, 1.0)  # round-off can push |r| a hair above 1
    per_channel = [float(v) for v in r.cpu()]
    finite = [v for v in per_channel if not math.isnan(v)]
    return {
        "l1": l1.item(),
        "rmse": rmse.item(),
        "variance_explained": variance_explained,
        "correlation_per_channel": per_channel,
        "correlation_mean": float(np.mean(finite)) if finite else math.nan,
        "num_frames": num_frames,
    }


# ------------------------------------------------------------------------- sparsity


def hoyer_from_norms(l1: torch.Tensor, l2: torch.Tensor, n) -> torch.Tensor:
    """Hoyer sparsity from L1, L2 norms and length n (tensor or int); 0 for zero vectors."""
    n = torch.as_tensor(n, dtype=l1.dtype, device=l1.device)
    root_n = torch.sqrt(n)
    nonzero = l2 > 0
    ratio = torch.where(nonzero, l1 / torch.where(nonzero, l2, torch.ones_like(l2)), root_n)
    denom = root_n - 1.0
    value = torch.where(denom > 0, (root_n - ratio) / torch.where(denom > 0, denom, torch.ones_like(denom)),
                        nonzero.to(l1.dtype))
    return value.clamp(0.0, 1.0)


def hoyer(v, dim: int = -1) -> torch.Tensor:
    """Hoyer sparsity ``(sqrt(n) - L1/L2) / (sqrt(n) - 1)`` along ``dim``, in [0, 1].

    1 for a one-hot vector, 0 for a constant one. An all-zero vector gets 0, not the NaN of
    0/0 nor the 1 one might argue for: a gesture that is never used (or a frame where no
    gesture is active) must not count as perfectly sparse, else a model could look sparse
    by switching everything off. A length-1 vector is 1 if non-zero (it is one-hot), else 0.

    Parameters
    ----------
    v : array or tensor
    dim : int
        Axis along which each vector lies.

    Returns
    -------
    tensor with ``dim`` removed, on the device of ``v``.
    """
    v = to_tensor(v)
    av = v.abs()
    return hoyer_from_norms(av.sum(dim=dim), torch.sqrt((av**2).sum(dim=dim)), v.shape[dim])


def score_sparsity(scores, mask=None, kernels=None, threshold: float = 1e-3) -> dict:
    """How sparse the scores are, across gestures and across time, and how many gestures work.

    Parameters
    ----------
    scores : array or tensor, (K, T) or (B, K, T)
    mask : array or tensor, (T,) or (B, T), optional
        1 = real frame.
    kernels : array or tensor, (K, C, L), optional
        If given, a gesture's contribution is ``sum_t H[k, t] * ||W_k||_F`` (the L1 mass it
        adds to the reconstruction up to the kernel's shape); else ``sum_t H[k, t]``.
    threshold : float
        A gesture is in use if its contribution exceeds ``threshold`` times the largest one.

    Returns
    -------
    dict with
        ``hoyer_across_gestures``: mean over real frames of the Hoyer sparsity of H[:, t]
        (frames where every gesture is zero count 0; see :func:`hoyer`);
        ``hoyer_across_time``: mean over the gestures in use of the Hoyer sparsity of H[k]
        over the pooled real frames (0 when none is in use): how sparse the scores of the
        gestures a model works with are, whatever the spare ones do (an unused gesture
        would count 1 with a stray spike and 0 when exactly zero);
        ``gestures_in_use``: fraction of the K gestures in use;
        ``num_gestures_in_use``: their number;
        ``in_use``: list of K flags;
        ``contribution``: list of the K contributions.
    """
    scores, _ = batched(scores, "scores")
    scores = scores.to(torch.float64)
    batch, num_gestures, frames = scores.shape
    if threshold < 0:
        raise ValueError(f"threshold: must be >= 0 (got {threshold})")
    real = frame_mask(mask, batch, frames, scores.device)  # (B, T)
    num_frames = int(real.sum())
    if num_frames == 0:
        raise ValueError("mask: no real frames to evaluate")
    h = torch.where(real[:, None, :], scores.abs(), scores.new_zeros(()))

    per_frame = hoyer_from_norms(h.sum(dim=1), torch.sqrt((h**2).sum(dim=1)), num_gestures)  # (B, T)
    across_gestures = (per_frame * real).sum() / num_frames

    l1 = h.sum(dim=(0, 2))  # (K,)
    per_gesture = hoyer_from_norms(l1, torch.sqrt((h**2).sum(dim=(0, 2))), num_frames)

    contribution = l1
    if kernels is not None:
        kernels = to_tensor(kernels, scores.device).to(torch.float64)
        check_kernels(kernels)
        if kernels.shape[0] != num_gestures:
            raise ValueError(f"scores have {num_gestures} gestures but kernels have {kernels.shape[0]}")
        contribution = l1 * kernels.flatten(1).norm(dim=1)
    largest = contribution.max()
    in_use = (contribution > threshold * largest) & (contribution > 0)
    count = int(in_use.sum())
    across_time = per_gesture[in_use].mean() if count else per_gesture.new_zeros(())
    return {
        "hoyer_across_gestures": across_gestures.item(),
        "hoyer_across_time": across_time.item(),
        "gestures_in_use": count / num_gestures,
        "num_gestures_in_use": count,
        "in_use": [bool(v) for v in in_use.cpu()],
        "contribution": [float(v) for v in contribution.cpu()],
    }
