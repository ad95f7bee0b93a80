"""Training losses, all computed over real frames only (padding is masked out)."""

from __future__ import annotations

import torch

from gestural.core.metrics import hoyer_from_norms
from gestural.core.units import CHANNELS_PER_SENSOR


def reconstruction_loss(x: torch.Tensor, x_hat: torch.Tensor, mask: torch.Tensor, kind: str = "mse") -> torch.Tensor:
    """Mean L1 or squared error per real frame and channel.

    ``x``, ``x_hat``: (B, C, T); ``mask``: (B, T), true on real frames.
    """
    mask = mask[:, None, :].to(x.dtype)
    error = (x_hat - x) * mask
    per_element = error.abs() if kind == "l1" else error.square()
    return per_element.sum() / (mask.sum() * x.shape[1]).clamp_min(1.0)


def score_hoyer(scores: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Differentiable Hoyer sparsity of H across gestures and across time.

    Returns the mean over real frames of the Hoyer sparsity across gestures (silent frames
    score 0, not 1, see ``metrics.hoyer``), each gesture's Hoyer sparsity across time (K,)
    over the batch's real frames, and which gestures are active in the batch (K,): the
    penalties average over those only, so that switching a gesture off is neither counted as
    sparsity nor a way out of the penalty.
    """
    real = mask.to(scores.dtype)
    h = scores * real[:, None, :]
    per_frame = hoyer_from_norms(h.sum(1), _safe_norm(h, 1), scores.shape[1])
    across_gestures = (per_frame * real).sum() / real.sum().clamp_min(1.0)
    mass = h.sum((0, 2))
    across_time = hoyer_from_norms(mass, _safe_norm(h, (0, 2)), real.sum())
    return across_gestures, across_time, mass > 0


def hoyer_shortfall(sparsity: torch.Tensor, target: float, active: torch.Tensor | None = None) -> torch.Tensor:
    """Mean of ``max(0, target - sparsity)^2`` (over the ``active`` entries when given): a
    score at least as sparse as the target costs nothing, so a target below the data's
    natural sparsity never pushes scores to be denser."""
    shortfall = (target - sparsity).clamp_min(0.0).square()
    if active is None:
        return shortfall.mean()
    weight = active.to(shortfall.dtype)
    return (shortfall * weight).sum() / weight.sum().clamp_min(1.0)


def background_score_count(scores: torch.Tensor, mask: torch.Tensor, threshold: float, reach: int) -> torch.Tensor:
    """Soft count of the weak background activity of each gesture, per real frame.

    A frame of gesture k is *background* when no frame within ``reach`` frames of it (same
    utterance) has a score above ``threshold * peak_k``, ``peak_k`` being the gesture's
    largest score in the batch; peak and background are constants for the gradient. There
    each score counts ``min(1, H[k, t] / (threshold * peak_k))``: weak activity between a
    gesture's activations is pushed to exactly zero, while the activations themselves, with
    their rising and falling edges, are left alone (penalties on every frame, Hoyer or L1,
    also zeroed the edges, where planted gestures are still active).
    """
    real = mask.to(scores.dtype)
    h = scores * real[:, None, :]
    level = threshold * h.detach().amax((0, 2)).clamp_min(1e-6)[None, :, None]  # a peak < 1e-6 (data units): silent
    strong = (h.detach() > level).to(h.dtype)
    near = torch.nn.functional.max_pool1d(strong, 2 * reach + 1, stride=1, padding=reach) > 0
    background = (~near & mask[:, None, :]).to(h.dtype)
    return ((h / level).clamp_max(1.0) * background).sum() / real.sum().clamp_min(1.0)


def _safe_norm(h: torch.Tensor, dim) -> torch.Tensor:
    """L2 norm along ``dim`` that is exactly 0 for a zero vector and has a finite gradient."""
    squares = h.square().sum(dim)
    nonzero = squares > 0
    return torch.where(nonzero, torch.where(nonzero, squares, torch.ones_like(squares)).sqrt(),
                       torch.zeros_like(squares))


def l1_scores(scores: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean score mass per real frame (summed over gestures)."""
    return scores.sum() / mask.sum().clamp_min(1.0)


def score_total_variation(scores: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean over real frames of ``sum_k |H[k, t] - H[k, t-1]|`` (pairs of real frames only).

    A smoothness prior: it favours scores that rise, hold and fall like gestural activations
    over trains of spikes, while a single isolated spike costs only twice its height.
    """
    real = mask.to(scores.dtype)
    both = real[:, 1:] * real[:, :-1]
    steps = (scores[..., 1:] - scores[..., :-1]).abs() * both[:, None, :]
    return steps.sum() / real.sum().clamp_min(1.0)


def score_group_norm(scores: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Group sparsity over gestures: ``sum_k ||H_k||_2`` over the batch's real frames, per
    sqrt(real frame). It switches whole gestures off, so duplicates of one gesture compete
    for its activity instead of sharing it."""
    real = mask.to(scores.dtype)
    h = scores * real[:, None, :]
    per_gesture = h.square().sum((0, 2)).clamp_min(1e-12).sqrt()
    return per_gesture.sum() / real.sum().clamp_min(1.0).sqrt()


def kernel_sensor_norm(kernels: torch.Tensor, channels_per_sensor: int = CHANNELS_PER_SENSOR) -> torch.Tensor:
    """Group sparsity of the kernels over sensors: each kernel's sum of per-sensor norms
    (its x and y channels over all lags), averaged over gestures.

    For unit-norm kernels it is 1 where a gesture moves one sensor and sqrt(sensors) where it
    moves all alike, so it favours gestures that move few articulators: where two gestures
    always co-occur (lip rounding with a back vowel) each keeps to its own sensors.
    """
    count, channels, length = kernels.shape
    per_sensor = _safe_norm(kernels.reshape(count, channels // channels_per_sensor, channels_per_sensor * length), -1)
    return per_sensor.sum(-1).mean()
