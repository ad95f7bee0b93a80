"""A method's factorization of the held-out utterances, and how the network computes its own.

:class:`HeldOutFactorization` is what each method hands to the scoring
(:func:`gestural.evaluation.held_out.evaluate_factorization`); :func:`neural_factorization` runs the
trained auto-encoder over every utterance at full length (padded batches with masks, never
random crops), and :func:`held_out_elbo` is the VAE's bound on the same utterances. The
classical baseline's factorization is in :mod:`gestural.evaluation.classical`.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import numpy as np
import torch

from gestural.core.devices import synchronize
from gestural.data.batches import UtteranceStore
from gestural.evaluation.segmentation import Segmentation
from gestural.model.network import GesturalAutoEncoder

__all__ = [
    "HeldOutFactorization",
    "held_out_elbo",
    "neural_factorization",
    "store_utterances",
]


@dataclass
class HeldOutFactorization:
    """One method's factorization of the held-out utterances.

    Attributes
    ----------
    gesture_kernels : ndarray (K, C, L)
    baseline : ndarray (C,)
    scores : list of ndarray (K, T_i)
    reconstructions : list of ndarray (C, T_i)
    fit_seconds : float
        Training time (NaN when unknown).
    inference_seconds : float
        Time to factorize all held-out utterances.
    extra : dict
        Method-specific numbers for eval.json (e.g. the classical fit's frames, iterations).
    """

    gesture_kernels: np.ndarray
    baseline: np.ndarray
    scores: list[np.ndarray]
    reconstructions: list[np.ndarray]
    fit_seconds: float = math.nan
    inference_seconds: float = math.nan
    extra: dict = field(default_factory=dict)
    activity_frames: int = 0  # frames a score acts over directly (0: the kernel length)
    segmentation: Segmentation | None = None  # how the export cuts these scores into intervals
    intervals: list = field(default_factory=list)  # exported (gesture, onset, offset) per utterance, when scored
    score_pairs: list = field(default_factory=list)  # (planted, learned) pairs of the exported-score matching


def store_utterances(store: UtteranceStore) -> list[np.ndarray]:
    """The utterances held by ``store``, in its order, as (C, T_i) float32 numpy arrays."""
    values = store.values.cpu().numpy()
    return [values[:, o:o + n].copy() for o, n in zip(store.offsets.tolist(), store.lengths.tolist())]


@torch.no_grad()
def neural_factorization(model: GesturalAutoEncoder, store: UtteranceStore,
                         batch_size: int = 64) -> HeldOutFactorization:
    """Scores and reconstructions of every utterance in ``store``, at full length.

    Utterances go through the model in padded, masked batches (shortest first); results are
    returned in the store's order, trimmed to each utterance's length. ``inference_seconds``
    covers the forward passes and the copies back to the host.
    """
    model.eval()
    device = store.device
    count = len(store)
    scores: list = [None] * count
    reconstructions: list = [None] * count
    lengths = store.lengths.tolist()
    synchronize(device)
    started = time.perf_counter()
    for indices, x, mask in store.batches(batch_size):
        out = model(x, mask)
        batch_scores = out.scores.float().cpu().numpy()
        batch_reconstruction = out.reconstruction.float().cpu().numpy()
        for row, index in enumerate(indices.tolist()):
            frames = lengths[index]
            scores[index] = batch_scores[row, :, :frames]
            reconstructions[index] = batch_reconstruction[row, :, :frames]
    synchronize(device)
    seconds = time.perf_counter() - started
    extra = {"elbo_per_frame": held_out_elbo(model, store, batch_size)} if model.variational else {}
    # The effective kernels (with each gesture's response, if any) are what a score produces
    # in the data: the ones to compare with planted kernels. A score's activity is taken over
    # the kernel's own length (win_size), the span it drives directly.
    return HeldOutFactorization(
        gesture_kernels=model.decoder.effective_kernels.detach().cpu().numpy(),
        baseline=model.decoder.baseline.detach().cpu().numpy(),
        scores=scores, reconstructions=reconstructions, inference_seconds=seconds, extra=extra,
        activity_frames=model.config.win_size,
    )


@torch.no_grad()
def held_out_elbo(model: GesturalAutoEncoder, store: UtteranceStore, batch_size: int = 64, seed: int = 0) -> float:
    """The VAE's evidence lower bound on the held-out utterances, nats per real frame (all
    channels): a one-sample estimate of E_q[log p(x | h)] minus the exact KL, from a fixed seed.
    Higher is better; it bounds the log-likelihood, so it compares models (e.g. num_gestures)."""
    state = torch.get_rng_state()
    torch.manual_seed(seed)
    try:
        total, frames = 0.0, 0
        for _, x, mask in store.batches(batch_size):
            scores, kl, _ = model.encode(x, mask, sample=True)
            nll = model.negative_log_likelihood(x, model.decoder(scores), mask)
            real = int(mask.sum())
            total += -(float(nll) + float(kl.sum())) * real
            frames += real
    finally:
        torch.set_rng_state(state)
    return total / max(frames, 1)
