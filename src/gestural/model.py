"""The convolutive non-negative auto-encoder: encoder -> scores H, decoder holding gestures W.

Reconstruction (a true convolution, forward in time):

    X_hat[c, t] = b[c] + sum_k sum_tau W[k, c, tau] * H[k, t - tau]

so a unit impulse in H[k] at frame t reproduces gesture W[k] from frame t onwards.
``conv_transpose1d`` computes exactly this sum; it is cropped to the input's length.

Non-negativity is by construction: the decoder stores unconstrained tensors and uses their
rectified values; the trainer also projects the stored tensors onto >= 0 after each step so
that no weight sits in the dead region of the ReLU. Each gesture kernel is scaled to unit
Frobenius norm in the forward pass, so the amplitude of a gesture lives in its score: this
removes the W-up/H-down scale ambiguity that would otherwise let any penalty on H be
defeated by growing W.

``model: vae`` makes the encoder output a posterior over non-negative scores. We use a
rectified Gaussian, h = relu(mu + sigma * eps): it puts real probability mass on exactly
zero (a gesture that is off), unlike a log-normal, and its reparameterised sample has a
gradient wherever the gesture is on. The prior is the same family with mu = prior_mean <= 0
and sigma = prior_std, i.e. most of its mass on zero: it favours sparse scores. The KL
between the underlying Gaussians bounds the KL between the rectified ones (data processing
inequality), so beta * KL is a valid (upper-bounding) regulariser. At inference the
posterior mean of the rectified Gaussian, E[relu(N(mu, s^2))] = mu Phi(mu/s) + s phi(mu/s),
is used.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

NUM_CHANNELS = 12


@dataclass
class ModelConfig:
    """Shape and kind of the model (what a saved ``model.pt`` must match)."""

    num_gestures: int = 100
    win_size: int = 10
    num_channels: int = NUM_CHANNELS
    hidden: int = 64
    model: str = "ae"
    peak_window: int = 5
    prior_mean: float = -1.0
    prior_std: float = 1.0

    def validate(self) -> None:
        if self.num_gestures < 1:
            raise ValueError(f"params.yaml num_gestures: must be >= 1 (got {self.num_gestures})")
        if self.win_size < 1:
            raise ValueError(f"params.yaml win_size: must be >= 1 (got {self.win_size})")
        if self.hidden < 1:
            raise ValueError(f"params.yaml train.hidden: must be >= 1 (got {self.hidden})")
        if self.model not in ("ae", "vae"):
            raise ValueError(f"params.yaml model: must be 'ae' or 'vae' (got {self.model!r})")
        if self.peak_window < 0:
            raise ValueError(f"params.yaml train.peak_window: must be >= 0 (got {self.peak_window})")
        if self.prior_std <= 0:
            raise ValueError(f"params.yaml train.prior_std: must be > 0 (got {self.prior_std})")


class ScoreEncoder(nn.Module):
    """Non-causal conv encoder: X (+ mask channel) -> pre-activation score maps.

    The first layer spans 2 * win_size + 1 frames, so every score sees at least win_size
    frames on both sides: the whole gesture that starts at its frame, and what precedes it.
    The mask is an input channel so that zero padding cannot pass for a real posture.
    """

    def __init__(self, config: ModelConfig, outputs_per_gesture: int):
        super().__init__()
        width = 2 * config.win_size + 1
        self.layers = nn.Sequential(
            nn.Conv1d(config.num_channels + 1, config.hidden, width, padding=config.win_size),
            nn.GELU(),
            nn.Conv1d(config.hidden, config.hidden, 5, padding=2),
            nn.GELU(),
            nn.Conv1d(config.hidden, config.num_gestures * outputs_per_gesture, 1),
        )

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        hidden = torch.cat([x * mask, mask], dim=1)
        for layer in self.layers:
            hidden = layer(hidden)
            if isinstance(layer, nn.GELU):
                # Zero the padding again so that a padded batch scores an utterance
                # exactly as it would be scored alone.
                hidden = hidden * mask
        return hidden


class GestureDecoder(nn.Module):
    """Holds the gesture kernels W (K, C, L) and the baseline b (C,), both >= 0."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.kernels_raw = nn.Parameter(torch.empty(config.num_gestures, config.num_channels, config.win_size))
        self.baseline_raw = nn.Parameter(torch.zeros(config.num_channels))
        nn.init.uniform_(self.kernels_raw, 0.0, 1.0)

    @property
    def gesture_kernels(self) -> torch.Tensor:
        """Non-negative kernels, each of unit Frobenius norm: (K, C, L)."""
        kernels = F.relu(self.kernels_raw)
        norms = kernels.flatten(1).norm(dim=1).clamp_min(1e-8)
        return kernels / norms[:, None, None]

    @property
    def baseline(self) -> torch.Tensor:
        return F.relu(self.baseline_raw)

    def forward(self, scores: torch.Tensor) -> torch.Tensor:
        frames = scores.shape[-1]
        signal = F.conv_transpose1d(scores, self.gesture_kernels)[..., :frames]
        return signal + self.baseline[None, :, None]

    @torch.no_grad()
    def init_baseline_(self, baseline: torch.Tensor) -> None:
        """Start the baseline at a resting posture (e.g. a low percentile of the data)."""
        self.baseline_raw.copy_(baseline.clamp_min(0.0))

    @torch.no_grad()
    def project_(self) -> None:
        """Clamp the stored tensors to >= 0 (keeps them out of the ReLU's dead zone)."""
        self.kernels_raw.clamp_(min=0.0)
        self.baseline_raw.clamp_(min=0.0)


@dataclass
class Factorisation:
    """What a forward pass returns."""

    reconstruction: torch.Tensor  # (B, C, T)
    scores: torch.Tensor  # (B, K, T), >= 0, zero on padded frames
    kl: torch.Tensor  # scalar, 0 for the AE


class GesturalAutoEncoder(nn.Module):
    """Encoder -> non-negative scores -> convolutive non-negative decoder."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        config.validate()
        self.config = config
        self.variational = config.model == "vae"
        self.encoder = ScoreEncoder(config, 2 if self.variational else 1)
        self.decoder = GestureDecoder(config)
        # Start the scores tiny, centred on zero: about half of them are active (ReLUs
        # alive) while the decoder output starts at the baseline, not far above the data,
        # which would make the first steps push every score to zero for good.
        last = self.encoder.layers[-1]
        nn.init.normal_(last.weight, std=1e-3)
        nn.init.zeros_(last.bias)
        if self.variational:
            with torch.no_grad():
                last.bias[config.num_gestures:] = -7.0  # tiny initial posterior std, like the AE scores

    def keep_peaks(self, scores: torch.Tensor) -> torch.Tensor:
        """Zero every score that is not the largest within +-peak_window frames of itself.

        A gesture is an event: its score is a spike at the gesture's onset and its shape
        lives in the kernel. Without this, a smooth score convolved with a spiky kernel
        reconstructs just as well and the gestures found are wrong; keeping only local
        maxima in time rules that solution out by construction. Gradients flow through
        the kept peaks. ``peak_window: 0`` turns it off.
        """
        if self.config.peak_window == 0:
            return scores
        width = 2 * self.config.peak_window + 1
        local_max = F.max_pool1d(scores, width, stride=1, padding=self.config.peak_window)
        return scores * (scores >= local_max)

    def encode(self, x: torch.Tensor, mask: torch.Tensor, sample: bool = False):
        """Scores (B, K, T) and KL. ``sample`` draws from the VAE posterior, else its mean."""
        mask = mask[:, None, :].to(x.dtype)
        out = self.encoder(x, mask)
        if not self.variational:
            return self.keep_peaks(F.relu(out) * mask), out.new_zeros(())
        k = self.config.num_gestures
        mu, log_std = out[:, :k], out[:, k:].clamp(-9.0, 2.0)
        std = log_std.exp()
        if sample:
            scores = F.relu(mu + std * torch.randn_like(mu))
        else:
            ratio = mu / std
            normal = torch.distributions.Normal(0.0, 1.0)
            scores = mu * normal.cdf(ratio) + std * normal.log_prob(ratio).exp()
        # KL(N(mu, std) || N(prior_mean, prior_std)) per score, over real frames only.
        p_mu, p_std = self.config.prior_mean, self.config.prior_std
        kl = math.log(p_std) - log_std + (std**2 + (mu - p_mu) ** 2) / (2 * p_std**2) - 0.5
        # Mean per score (gesture x real frame), so that beta does not scale with K.
        kl = (kl * mask).sum() / (mask.sum() * k).clamp_min(1.0)
        return self.keep_peaks(scores * mask), kl

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> Factorisation:
        scores, kl = self.encode(x, mask, sample=self.training)
        return Factorisation(self.decoder(scores), scores, kl)
