"""The convolutive auto-encoder: encoder -> non-negative gestural scores H, decoder holding the
gestures W and their responses h.

Reconstruction (a true convolution, forward in time), on top of the resting posture b:

    X_hat[c, t] = b[c] + sum_k sum_tau W[k, c, tau] * (h_k * H_k)[t - tau]

where h_k is gesture k's learned critically damped response (``response_frames`` > 0; with 0
the score drives the kernel directly), so a unit impulse in H[k] at frame t reproduces the
gesture's effective kernel from frame t onwards. With ``release_response``, a falling score
lets its movement go through a second, slower response (task dynamics relax to rest more
slowly than they reach a target), so a held gesture's score can fall when the gesture ends
instead of tapering off with its articulators. ``conv_transpose1d`` computes the sum; it is
cropped to the input's length.

Scores are non-negative by construction (a rectification). Kernels are ``signed`` (a gesture
may move a sensor either way; the default) or ``nonnegative`` (movements on top of a low
posture): then the decoder stores unconstrained tensors, uses their rectified values, and the
trainer projects them onto >= 0 after each step so that no weight sits in the dead region of
the ReLU. Each gesture kernel is scaled to unit Frobenius norm in the forward pass, so the
amplitude of a gesture lives in its score: this removes the W-up/H-down scale ambiguity that
would otherwise let any penalty on H be defeated by growing W.

``model: vae`` makes the model a variational auto-encoder with a stated ELBO:

* posterior: a rectified Gaussian per score, h = relu(mu + sigma * eps), which puts real
  probability mass on exactly zero (a gesture that is off) and has a reparameterized
  gradient wherever the gesture is on;
* prior: the same family with a learned location and scale per gesture (empirical Bayes),
  started at ``prior_mean`` <= 0 so that most of its mass is on zero: a sparse prior;
* likelihood: Gaussian, x_c ~ N(x_hat_c, s_c^2 + a_c^2 (x_hat_c - b_c)^2), with a learned
  noise floor s_c and a learned movement share a_c per channel (started at
  ``movement_noise``): the same gesture is made a little larger or smaller from token to
  token, so a sensor varies more the further it moves from rest. Without the second term the
  likelihood pays other gestures to fire weakly and mop up that variability (on the events
  corpus, whose events vary in size per channel, onset F1 fell to 0.81).

The KL between two rectified Gaussians is exact (:func:`rectified_gaussian_kl`): the point
masses at zero plus the truncated Gaussian parts. The negative ELBO per real frame is
``sum_c NLL_c + beta * sum_k KL_k``; ``beta = 1`` is the ELBO itself. At inference the
posterior mean E[relu(N(mu, s^2))] = mu Phi(mu/s) + s phi(mu/s) is used, and its standard
deviation is the score's uncertainty.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from gestural.model.rectified_gaussian import LOG_SQRT_2PI, normal_cdf, normal_pdf, rectified_gaussian_kl

NUM_CHANNELS = 12
KERNEL_KINDS = ("nonnegative", "signed")
DEAD_GRADIENT = 0.1  # gradient slope of a switched-off score in training (see _rectify)


@dataclass
class ModelConfig:
    """Shape and kind of the model (what a saved ``model.pt`` must match).

    No defaults: params.yaml holds them (:meth:`gestural.training.config.TrainConfig.model_config`).
    """

    num_gestures: int
    win_size: int
    num_channels: int
    hidden: int
    model: str
    peak_window: int
    prior_mean: float
    prior_std: float
    movement_noise: float
    kernels: str  # nonnegative | signed: a gesture may move a sensor either way
    response_frames: int  # > 0: scores drive a learned critically damped response this long
    release_response: bool  # a falling score releases through its own (slower) learned response

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
        if self.movement_noise <= 0:
            raise ValueError(f"params.yaml train.movement_noise: must be > 0 (got {self.movement_noise})")
        if self.prior_std <= 0:
            raise ValueError(f"params.yaml train.prior_std: must be > 0 (got {self.prior_std})")
        if self.response_frames < 0:
            raise ValueError(f"params.yaml train.response_frames: must be >= 0 (got {self.response_frames})")
        if not isinstance(self.release_response, bool):
            raise ValueError("params.yaml train.release_response: must be true or false "
                             f"(got {self.release_response!r})")
        if self.kernels not in KERNEL_KINDS:
            raise ValueError(f"params.yaml train.kernels: must be one of {', '.join(KERNEL_KINDS)} "
                             f"(got {self.kernels!r})")


class _RevivableReLU(torch.autograd.Function):
    """relu(z) whose backward pass, below zero, lets through (scaled by DEAD_GRADIENT) only the
    gradient that would raise z.

    The values are exactly relu(z): scores are non-negative and exactly zero where a gesture
    is off. A plain ReLU gives a switched-off gesture no gradient at all: on continuous
    movement most gestures were switched off in the first steps and never came back (4 of 40
    in use). Letting every gradient through below zero instead drove z ever lower and training
    diverged. With only the raising part, a gesture comes back where the reconstruction gains
    more from it than its L1 cost, as a proximal-gradient step would decide.
    """

    @staticmethod
    def forward(ctx, z):
        ctx.save_for_backward(z)
        return z.clamp_min(0.0)

    @staticmethod
    def backward(ctx, grad):
        (z,) = ctx.saved_tensors
        return torch.where(z > 0, grad, DEAD_GRADIENT * grad.clamp(max=0.0))


class MatrixConv1d(nn.Conv1d):
    """``nn.Conv1d`` with its weight stored as a matrix (out, in x width), so that
    ``torch.optim.Muon``, which updates matrices only, can train it (``train.optimizer``).

    Initialized as ``nn.Conv1d`` is; model files holding the (out, in, width) tensor still load.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.weight = nn.Parameter(self.weight.detach().flatten(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._conv_forward(x, self.weight.view(self.out_channels, self.in_channels, *self.kernel_size),
                                  self.bias)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        weight = state_dict.get(prefix + "weight")
        if weight is not None and weight.dim() == 3:
            state_dict[prefix + "weight"] = weight.flatten(1)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)


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
            MatrixConv1d(config.num_channels + 1, config.hidden, width, padding=config.win_size),
            nn.GELU(),
            MatrixConv1d(config.hidden, config.hidden, 5, padding=2),
            nn.GELU(),
            MatrixConv1d(config.hidden, config.num_gestures * outputs_per_gesture, 1),
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
        self.signed = config.kernels == "signed"
        self.response_frames = config.response_frames
        # Response rate per frame, started at 5 Hz (between consonant and vowel stiffness).
        self.log_rate = (nn.Parameter(torch.full((config.num_gestures,), math.log(2 * math.pi * 5.0 / 200.0)))
                         if config.response_frames else None)
        # Release rate, started at 2 Hz: relaxing to rest is slower than reaching a target.
        self.log_release_rate = (
            nn.Parameter(torch.full((config.num_gestures,), math.log(2 * math.pi * 2.0 / 200.0)))
            if config.response_frames and config.release_response else None)
        # Stored as a matrix (K, C x L), as Muon (train.optimizer) needs; ``kernels_raw`` views it.
        self.kernel_shape = (config.num_gestures, config.num_channels, config.win_size)
        self.kernel_matrix = nn.Parameter(torch.empty(config.num_gestures, config.num_channels * config.win_size))
        self.baseline_raw = nn.Parameter(torch.zeros(config.num_channels))
        if self.signed:
            nn.init.normal_(self.kernel_matrix)
        else:
            nn.init.uniform_(self.kernel_matrix, 0.0, 1.0)

    @property
    def kernels_raw(self) -> torch.Tensor:
        """The stored (unrectified, unnormalized) kernels, (K, C, L): a view of ``kernel_matrix``."""
        return self.kernel_matrix.view(self.kernel_shape)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # Model files written before the kernels were stored as a matrix hold kernels_raw (K, C, L).
        old = state_dict.pop(prefix + "kernels_raw", None)
        if old is not None:
            state_dict[prefix + "kernel_matrix"] = old.flatten(1)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    @property
    def gesture_kernels(self) -> torch.Tensor:
        """The kernels, each of unit Frobenius norm, (K, C, L); rectified unless signed."""
        kernels = self.kernels_raw if self.signed else F.relu(self.kernels_raw)
        norms = kernels.flatten(1).norm(dim=1).clamp_min(1e-8)
        return kernels / norms[:, None, None]

    @property
    def baseline(self) -> torch.Tensor:
        return F.relu(self.baseline_raw)

    def _critically_damped(self, log_rate: torch.Tensor) -> torch.Tensor:
        """h(t) = w^2 t exp(-w t) per gesture, (K, R), normalized to sum 1 over its R frames."""
        steps = torch.arange(self.response_frames, device=log_rate.device, dtype=log_rate.dtype) + 0.5
        rate = log_rate.clamp(-5.0, 1.0).exp()[:, None]
        shape = steps[None, :] * torch.exp(-rate * steps[None, :])
        return shape / shape.sum(dim=1, keepdim=True)

    @property
    def responses(self) -> torch.Tensor | None:
        """Each gesture's critically damped impulse response, (K, R), summing to 1, or None.

        In task dynamics an activation drives its tract variable through a critically damped
        second-order system, h(t) = w^2 t exp(-w t); the kernel then maps that movement onto
        the sensors. With it the score can be the activation itself (rising when the gesture
        starts, held while it lasts) rather than a trace that lags the movement. The rate w
        is learned per gesture (a large w makes h an impulse: no dynamics).
        """
        return None if self.log_rate is None else self._critically_damped(self.log_rate)

    @property
    def release_responses(self) -> torch.Tensor | None:
        """The response a falling score releases through, (K, R), or None (it falls as it rose)."""
        return None if self.log_release_rate is None else self._critically_damped(self.log_release_rate)

    @property
    def effective_kernels(self) -> torch.Tensor:
        """What a unit score at one frame produces in the data, (K, C, L + R - 1): each kernel
        convolved with its gesture's impulse response (the kernels themselves without responses)."""
        kernels = self.gesture_kernels
        if self.log_rate is None:
            return kernels
        count, channels, length = kernels.shape
        impulse = torch.zeros(1, count, self.response_frames, dtype=kernels.dtype, device=kernels.device)
        impulse[..., 0] = 1.0
        responses = self.drive(impulse)[0]  # (K, R)
        # Grouped transposed convolution: out[k*C + c, t] = sum_tau responses[k, t - tau] W[k, c, tau].
        full = F.conv_transpose1d(responses[None], kernels, groups=count)
        return full.reshape(count, channels, self.response_frames + length - 1)

    def _causal(self, signal: torch.Tensor, responses: torch.Tensor) -> torch.Tensor:
        """Each row of ``signal`` (B, K, T) convolved, causally, with its gesture's response (K, R)."""
        kernel = responses.flip(-1)[:, None, :]  # conv1d correlates: flip for a causal convolution
        return F.conv1d(F.pad(signal, (responses.shape[-1] - 1, 0)), kernel, groups=signal.shape[1])

    def drive(self, scores: torch.Tensor) -> torch.Tensor:
        """The scores filtered by each gesture's response (causal), or as they are.

        With a release response, each fall of a score by d adds d times the difference of the
        two step responses: the movement it had raised then decays at the release rate, not
        the rise rate. That difference is zero once both have settled, so the sum stays bounded.
        """
        responses = self.responses
        if responses is None:
            return scores
        driven = self._causal(scores, responses)
        release = self.release_responses
        if release is None:
            return driven
        falls = F.pad(scores[..., :-1] - scores[..., 1:], (1, 0)).clamp_min(0.0)
        return driven + self._causal(falls, responses.cumsum(-1) - release.cumsum(-1))

    def forward(self, scores: torch.Tensor) -> torch.Tensor:
        frames = scores.shape[-1]
        signal = F.conv_transpose1d(self.drive(scores), self.gesture_kernels)[..., :frames]
        return signal + self.baseline[None, :, None]

    @torch.no_grad()
    def init_baseline_(self, baseline: torch.Tensor) -> None:
        """Start the baseline at a resting posture (e.g. a low percentile of the data)."""
        self.baseline_raw.copy_(baseline.clamp_min(0.0))

    @torch.no_grad()
    def project_(self) -> None:
        """Clamp the stored tensors to >= 0 (keeps them out of the ReLU's dead zone)."""
        if not self.signed:
            self.kernels_raw.clamp_(min=0.0)
        self.baseline_raw.clamp_(min=0.0)


@dataclass
class ForwardOutput:
    """What a forward pass returns."""

    reconstruction: torch.Tensor  # (B, C, T)
    scores: torch.Tensor  # (B, K, T), >= 0, zero on padded frames
    kl: torch.Tensor  # (K,) nats per real frame for each gesture (VAE); a zero scalar for the AE
    score_std: torch.Tensor | None = None  # (B, K, T) posterior std of the scores (VAE only)


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
            # The prior's location and log scale per gesture, and the likelihood's log noise
            # scale per channel: learned, so that beta = 1 is an honest ELBO.
            self.prior_loc = nn.Parameter(torch.full((config.num_gestures,), float(config.prior_mean)))
            self.prior_log_scale = nn.Parameter(torch.full((config.num_gestures,), math.log(config.prior_std)))
            self.log_noise = nn.Parameter(torch.full((config.num_channels,), math.log(0.01)))
            self.log_movement_noise = nn.Parameter(torch.full((config.num_channels,), math.log(config.movement_noise)))

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

    def _rectify(self, z: torch.Tensor) -> torch.Tensor:
        """relu(z); in training a switched-off score still gets the gradient that would switch
        it on (see :class:`_RevivableReLU`)."""
        if self.training and torch.is_grad_enabled():
            return _RevivableReLU.apply(z)
        return F.relu(z)

    def encode(self, x: torch.Tensor, mask: torch.Tensor, sample: bool = False):
        """Scores (B, K, T), KL and the scores' posterior std (None for the AE and when sampling).

        ``sample`` draws from the VAE posterior, else takes its mean. The KL is given per
        gesture, averaged over real frames (nats per frame); its sum is the ELBO's KL term.
        """
        mask = mask[:, None, :].to(x.dtype)
        out = self.encoder(x, mask)
        if not self.variational:
            return self.keep_peaks(self._rectify(out) * mask), out.new_zeros(()), None
        k = self.config.num_gestures
        mu, log_std = out[:, :k], out[:, k:].clamp(-9.0, 2.0)
        std = log_std.exp()
        a = mu / std
        mass_on, density = normal_cdf(a), normal_pdf(a)
        mean = mu * mass_on + std * density
        spread = None
        if not sample:  # the posterior std is for users of the scores, not for training steps
            second = (mu.square() + std.square()) * mass_on + mu * std * density
            spread = (second - mean.square()).clamp_min(0.0).sqrt() * mask
        scores = self._rectify(mu + std * torch.randn_like(mu)) if sample else mean
        prior_loc = self.prior_loc[None, :, None]
        prior_std = self.prior_log_scale.clamp(-5.0, 3.0).exp()[None, :, None]
        kl = rectified_gaussian_kl(mu, std, prior_loc, prior_std)
        kl = (kl * mask).sum((0, 2)) / mask.sum().clamp_min(1.0)  # (K,): nats per real frame
        return self.keep_peaks(scores * mask), kl, spread

    def negative_log_likelihood(self, x: torch.Tensor, x_hat: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """VAE: Gaussian NLL, summed over channels, mean per real frame; the variance is the noise
        floor plus the movement share of the displacement from the baseline (see the module doc)."""
        floor = (2 * self.log_noise.clamp(-9.0, 2.0)).exp()[None, :, None]
        share = (2 * self.log_movement_noise.clamp(-9.0, 2.0)).exp()[None, :, None]
        variance = floor + share * (x_hat - self.decoder.baseline[None, :, None]).square()
        nll = 0.5 * ((x - x_hat).square() / variance + variance.log()) + LOG_SQRT_2PI
        real = mask[:, None, :].to(x.dtype)
        return (nll * real).sum() / real.sum().clamp_min(1.0)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> ForwardOutput:
        scores, kl, spread = self.encode(x, mask, sample=self.training)
        return ForwardOutput(self.decoder(scores), scores, kl, spread)
