"""The rectified Gaussian of the VAE's scores: relu(N(mu, std^2)), a point mass at zero (a
gesture that is off) plus the Gaussian's positive part; its exact KL divergence."""

from __future__ import annotations

import math

import torch

LOG_SQRT_2PI = 0.5 * math.log(2 * math.pi)


def normal_cdf(z: torch.Tensor) -> torch.Tensor:
    return 0.5 * torch.erfc(-z / math.sqrt(2.0))


def normal_pdf(z: torch.Tensor) -> torch.Tensor:
    return torch.exp(-0.5 * z.square() - LOG_SQRT_2PI)


def rectified_gaussian_kl(mu: torch.Tensor, std: torch.Tensor, prior_mu: torch.Tensor,
                          prior_std: torch.Tensor) -> torch.Tensor:
    """KL(relu(N(mu, std^2)) || relu(N(prior_mu, prior_std^2))), elementwise, exact.

    Both distributions have a point mass at 0 (the Gaussian's mass below 0) and the Gaussian
    density above 0. With a = mu / std, Z = Phi(a) the mass above 0, and the truncated moments
    M1 = phi(a), M2 = Z - a phi(a) of u = (h - mu) / std:

        KL = (1 - Z) log((1 - Z) / P0) + Z log(prior_std / std) - M2 / 2
             + (std^2 M2 + 2 std (mu - prior_mu) M1 + (mu - prior_mu)^2 Z) / (2 prior_std^2)

    with P0 = Phi(-prior_mu / prior_std) the prior's mass at 0.
    """
    a = mu / std
    mass_on = normal_cdf(a)
    mass_off = normal_cdf(-a)
    m1 = normal_pdf(a)
    m2 = mass_on - a * m1
    prior_off = normal_cdf(-prior_mu / prior_std).clamp_min(1e-12)
    diff = mu - prior_mu
    # m log m with a floor inside the log: xlogy's gradient at m = 0 is -inf (times 0: NaN).
    point = mass_off * (mass_off.clamp_min(1e-30).log() - prior_off.log())
    continuous = (mass_on * (prior_std.log() - std.log()) - 0.5 * m2
                  + (std.square() * m2 + 2 * std * diff * m1 + diff.square() * mass_on) / (2 * prior_std.square()))
    return (point + continuous).clamp_min(0.0)  # >= 0 exactly; the clamp absorbs rounding
