"""Held-out evaluation of the trained auto-encoder against classical convolutive NMF.

Both methods factorise every test utterance at full length (padded batches with masks for
the network, never random crops) and are scored alike:

* reconstruction: L1, RMSE (normalised units), variance explained, Pearson r per channel;
* sparsity of the scores: Hoyer across gestures and across time, fraction of gestures used;
* with ground truth (the synthetic corpus's ``ground_truth.npz``), recovery of the planted
  gestures: seqNMF similarity of the factor reconstructions, lag-tolerant kernel cosine after
  Hungarian matching, and F1 of planted onsets against peaks of the matched learned scores.

The planted kernels are stored in z-scored units; the normalize stage maps each channel
with ``(z - low) / (high - low)``, so a kernel, being an increment on top of a posture, maps
as ``kernel[:, c, :] / (high[c] - low[c])`` (the offset ``low`` cancels).

The classical baseline (:class:`gestural.cnmf.ConvNMF`) has the model's number of gestures
and window, is fitted on the training utterances, and finds held-out scores with its kernels
and baseline fixed.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from . import ema
from .activation import activation_metrics, raw_channel_floor
from .ground_truth import PLANTED_EVENTS, has_planted_kernels, load_activations, read_arrays
from .batches import UtteranceStore
from .cnmf import ConvNMF
from .dataset import CorpusFileError, NormalizedCorpus
from .io import atomic_dir, json_safe, write_json, write_text
from .metrics import convolve_scores, reconstruction_metrics, score_sparsity
from .recovery import distinct_gestures, kernel_recovery, onset_f1, seqnmf_similarity
from .model import GesturalAutoEncoder
from .params import ParamsError, Section
from .devices import resolve_device, synchronize
from .model_io import ModelFileError, load_model

__all__ = [
    "BaselineParams",
    "EvaluateParams",
    "PlantedTruth",
    "Factorised",
    "EvaluationError",
    "planted_kernels_normalised",
    "planted_truth",
    "neural_factorisation",
    "fit_classical",
    "classical_factorisation",
    "recovery_metrics",
    "evaluate_factorisation",
    "evaluate_model",
    "example_indices",
    "run_evaluation",
    "write_outputs",
]

# Every metric of one method in metrics/eval.json, so that a missing one is a bug, not a
# silently absent column in `dvc metrics show`.
METRIC_KEYS = (
    "l1", "rmse", "variance_explained", "correlation_mean", "correlation_per_channel",
    "hoyer_across_gestures", "hoyer_across_time", "gestures_in_use", "num_gestures_in_use", "distinct_gestures",
    "seqnmf_similarity", "kernel_cosine", "onset_f1", "onset_precision", "onset_recall",
    "activation_auc", "activation_auc_lagged", "elbo_per_frame", "fit_seconds", "inference_seconds",
)
# What metrics/eval.json keeps of each method: the figures of merit, so that `dvc metrics diff`
# and `dvc exp show` compare results. Everything (per-channel r, timings, per-gesture AUCs)
# is in evaluation/details.json.
SUMMARY_KEYS = ("variance_explained", "activation_auc", "seqnmf_similarity", "kernel_cosine", "onset_f1",
                "hoyer_across_time", "gestures_in_use", "distinct_gestures", "elbo_per_frame")
CLASSICAL_SUMMARY_KEYS = ("variance_explained", "activation_auc", "kernel_cosine")
TIMING_KEYS = ("fit_seconds", "inference_seconds")
# Metrics where higher is better, compared in ``neural_beats_classical``.
COMPARED = ("variance_explained", "activation_auc", "seqnmf_similarity", "kernel_cosine")


class EvaluationError(RuntimeError):
    """An input of the evaluate stage is missing or does not fit the others (names the file)."""


# ------------------------------------------------------------------------ parameters


@dataclass(frozen=True)
class BaselineParams:
    """``evaluate.baseline:`` of params.yaml: the classical ConvNMF's settings.

    Attributes
    ----------
    max_iter : int
        Multiplicative-update iterations of the fit (at most).
    transform_iter : int
        Score-update iterations for the held-out utterances (kernels fixed), at most.
    tol, transform_tol : float
        Stop the fit / the transform once the cost falls by at most this fraction of the
        data's variance per iteration, averaged over 10 iterations (0: run all iterations;
        see :class:`gestural.cnmf.ConvNMF`).
    lambda_l1_scores, lambda_l1_kernels, lambda_xortho : float
        Penalties (see :class:`gestural.cnmf.ConvNMF`; lambda_xortho is scaled by the
        number of gesture pairs and lags, so one value suits any K and L).
    max_train_frames : int or None
        Fit on a seeded random subset of whole training utterances of about this many
        frames (None: all), to bound the fit's time on a large corpus.
    """

    max_iter: int = 500
    transform_iter: int = 300
    tol: float = 1e-4
    transform_tol: float = 1e-4
    lambda_l1_scores: float = 0.0
    lambda_l1_kernels: float = 0.0
    lambda_xortho: float = 0.1
    max_train_frames: int | None = 15000

    @classmethod
    def from_section(cls, values: dict) -> "BaselineParams":
        section = Section({"evaluate.baseline": values}, "evaluate.baseline")
        max_train_frames = section.get("max_train_frames")
        if max_train_frames is not None:
            max_train_frames = section.integer("max_train_frames", minimum=1)
        result = cls(
            max_iter=section.integer("max_iter", minimum=1),
            transform_iter=section.integer("transform_iter", minimum=1),
            tol=section.number("tol", low=0.0, high=1.0),
            transform_tol=section.number("transform_tol", low=0.0, high=1.0),
            lambda_l1_scores=section.number("lambda_l1_scores", low=0.0, high=math.inf),
            lambda_l1_kernels=section.number("lambda_l1_kernels", low=0.0, high=math.inf),
            lambda_xortho=section.number("lambda_xortho", low=0.0, high=math.inf),
            max_train_frames=max_train_frames,
        )
        section.check_unknown()
        return result


@dataclass(frozen=True)
class EvaluateParams:
    """What the evaluate stage reads from params.yaml (``device``, ``seed`` and ``evaluate:``).

    Attributes
    ----------
    device : str
        auto | cpu | cuda | cuda:<i> (both methods run there).
    seed : int
        Seed of the classical fit (initialisation, training subset).
    batch_size : int
        Held-out utterances per padded batch of the network.
    onset_tolerance : int
        A peak within this many frames of a planted onset counts as a hit.
    onset_relative_height : float
        Peaks of a learned score trace lower than this fraction of its maximum over the
        test set are ignored.
    examples : int
        Held-out utterances of median length saved for the plots.
    baseline : BaselineParams
    """

    device: str = "auto"
    seed: int = 0
    batch_size: int = 64
    onset_tolerance: int = 2
    onset_relative_height: float = 0.1
    examples: int = 3
    baseline: BaselineParams = field(default_factory=BaselineParams)

    @classmethod
    def from_params(cls, params: dict) -> "EvaluateParams":
        """Validate the top-level ``device``/``seed`` and the ``evaluate:`` section.

        Raises
        ------
        ParamsError
            Naming the first invalid key, e.g. ``params.yaml evaluate.batch_size: must be >= 1``.
        """
        device = params.get("device", "auto")
        if not isinstance(device, str) or not (device in ("auto", "cpu") or device.startswith("cuda")):
            raise ParamsError(f"params.yaml device: must be auto, cpu, cuda or cuda:<index> (got {device!r})")
        seed = params.get("seed", 0)
        if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
            raise ParamsError(f"params.yaml seed: must be an integer >= 0 (got {seed!r})")
        section = Section(params, "evaluate")
        baseline = section.get("baseline")
        if not isinstance(baseline, dict):
            raise section.error("baseline", "must be a mapping (max_iter: ..., lambda_xortho: ...)")
        result = cls(
            device=device,
            seed=seed,
            batch_size=section.integer("batch_size", minimum=1),
            onset_tolerance=section.integer("onset_tolerance", minimum=0),
            onset_relative_height=section.number("onset_relative_height", low=0.0, high=1.0, open_high=True),
            examples=section.integer("examples", minimum=0),
            baseline=BaselineParams.from_section(baseline),
        )
        section.check_unknown()
        return result


# ----------------------------------------------------------------------- ground truth


@dataclass
class PlantedTruth:
    """The planted factorisation of the held-out utterances, in the model's units.

    Attributes
    ----------
    kernels : ndarray (P, C, L)
        Planted gesture kernels in normalised units.
    scores : list of ndarray (P, T_i)
        Spikes of each event's amplitude at its onset, one array per held-out utterance.
    onsets : list of list of ndarray
        ``onsets[i][p]``: onset frames of planted gesture p in held-out utterance i.
    """

    kernels: np.ndarray
    scores: list[np.ndarray]
    onsets: list[list[np.ndarray]]


def planted_kernels_normalised(kernels_zscored: np.ndarray, stats: dict) -> np.ndarray:
    """Map planted kernels from z-scored units into the normalised [0, 1] space.

    Parameters
    ----------
    kernels_zscored : ndarray (P, C, L)
    stats : dict
        The normalize stage's ``stats.json``, with per-channel ``low`` and ``high``.

    Returns
    -------
    ndarray (P, C, L), float64: ``kernels[:, c, :] / (high[c] - low[c])``.
    """
    kernels = np.asarray(kernels_zscored, dtype=np.float64)
    low = np.asarray(stats["low"], dtype=np.float64)
    high = np.asarray(stats["high"], dtype=np.float64)
    if kernels.ndim != 3 or kernels.shape[1] != low.shape[0]:
        raise ValueError(f"planted kernels have shape {kernels.shape}; expected (P, {low.shape[0]}, L)")
    span = high - low
    if np.any(span <= 0):
        raise ValueError(f"stats.json: high must exceed low on every channel (high - low = {span.tolist()})")
    return kernels / span[None, :, None]


def planted_truth(truth_path: str | Path, test_ids: Sequence[str], lengths: Sequence[int],
                  stats: dict) -> PlantedTruth:
    """Read ``ground_truth.npz`` and build the planted factorisation of the held-out utterances.

    Parameters
    ----------
    truth_path : path
        Written by :func:`gestural.synthetic.write_corpus`.
    test_ids : sequence of str
        Held-out utterance ids, in the order the scores are wanted.
    lengths : sequence of int
        Their frame counts.
    stats : dict
        ``stats.json`` of the normalize stage (``low``, ``high``).

    Returns
    -------
    PlantedTruth

    Raises
    ------
    EvaluationError
        The file is unreadable, lacks an array, or does not describe a held-out utterance.
    """
    truth_path = Path(truth_path)
    try:
        arrays = read_arrays(truth_path, PLANTED_EVENTS)
    except ValueError as error:
        raise EvaluationError(f"{error} (run `dvc repro download`)") from None
    try:
        kernels = planted_kernels_normalised(arrays["kernels_zscored"], stats)
    except ValueError as error:
        raise EvaluationError(f"{truth_path}: {error}") from None
    num_planted = kernels.shape[0]
    position = {str(u): i for i, u in enumerate(arrays["utterance_ids"])}
    event_utterance = arrays["event_utterance"].astype(np.int64)
    gesture = arrays["event_gesture"].astype(np.int64)
    onset = arrays["event_onset"].astype(np.int64)
    amplitude = arrays["event_amplitude"].astype(np.float64)
    if np.any((gesture < 0) | (gesture >= num_planted)):
        raise EvaluationError(f"{truth_path}: event_gesture outside 0..{num_planted - 1}")

    scores, onsets = [], []
    for utterance_id, frames in zip(test_ids, lengths):
        if utterance_id not in position:
            raise EvaluationError(
                f"{truth_path} has no utterance {utterance_id!r} of the held-out split: the ground truth is "
                "not that of this corpus (run `dvc repro normalize` after `dvc repro download`)")
        events = (event_utterance == position[utterance_id]) & (onset >= 0) & (onset < frames)
        h = np.zeros((num_planted, int(frames)))
        np.add.at(h, (gesture[events], onset[events]), amplitude[events])
        scores.append(h)
        onsets.append([np.sort(onset[events & (gesture == p)]) for p in range(num_planted)])
    return PlantedTruth(kernels=kernels, scores=scores, onsets=onsets)


# ------------------------------------------------------------------- factorisations


@dataclass
class Factorised:
    """One method's factorisation of the held-out utterances.

    Attributes
    ----------
    gesture_kernels : ndarray (K, C, L)
    baseline : ndarray (C,)
    scores : list of ndarray (K, T_i)
    reconstructions : list of ndarray (C, T_i)
    fit_seconds : float
        Training time (NaN when unknown).
    inference_seconds : float
        Time to factorise all held-out utterances.
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


def store_utterances(store: UtteranceStore) -> list[np.ndarray]:
    """The utterances held by ``store``, in its order, as (C, T_i) float32 numpy arrays."""
    values = store.values.cpu().numpy()
    return [values[:, o:o + n].copy() for o, n in zip(store.offsets.tolist(), store.lengths.tolist())]


@torch.no_grad()
def neural_factorisation(model: GesturalAutoEncoder, store: UtteranceStore, batch_size: int = 64) -> Factorised:
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
    return Factorised(
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


def _training_subset(utterances: Sequence[np.ndarray], max_frames: int | None, seed: int) -> list[np.ndarray]:
    """Whole utterances in a seeded random order until ``max_frames`` is reached (at least one)."""
    if max_frames is None or sum(u.shape[1] for u in utterances) <= max_frames:
        return list(utterances)
    order = np.random.default_rng(seed).permutation(len(utterances))
    chosen, total = [], 0
    for i in order:
        if chosen and total + utterances[i].shape[1] > max_frames:
            continue  # a shorter one may still fit
        chosen.append(utterances[i])
        total += utterances[i].shape[1]
    return chosen


def _non_negative(utterances: Sequence[np.ndarray]) -> list[np.ndarray]:
    # NMF needs X >= 0; held-out frames can fall a little below the training minimum when
    # normalize's low percentile is above 0. Clipped for the classical method only; every
    # metric is computed against the unclipped data.
    return [np.clip(np.asarray(u, dtype=np.float32), 0.0, None) for u in utterances]


def fit_classical(train_utterances: Sequence[np.ndarray], num_gestures: int, win_size: int,
                  params: BaselineParams | None = None, *, seed: int = 0, device="cpu",
                  verbose: bool = False) -> tuple[ConvNMF, float, int]:
    """Fit the classical ConvNMF on (a subset of) the training utterances.

    Parameters
    ----------
    train_utterances : sequence of ndarray (C, T_i)
    num_gestures, win_size : int
        The same as the network's.
    params : BaselineParams, optional
    seed : int
    device : str or torch.device
    verbose : bool
        Log the cost every 10 iterations (INFO).

    Returns
    -------
    (fitted ConvNMF, fit seconds, frames fitted on); the ConvNMF's ``n_iter_``,
    ``converged_`` and ``cost_history_`` say how the fit went, and its transform settings
    are ``params.transform_iter`` / ``transform_tol``.
    """
    params = params or BaselineParams()
    subset = _non_negative(_training_subset(train_utterances, params.max_train_frames, seed))
    cnmf = ConvNMF(num_gestures, win_size, max_iter=params.max_iter, tol=params.tol,
                   transform_max_iter=params.transform_iter, transform_tol=params.transform_tol,
                   lambda_l1_scores=params.lambda_l1_scores, lambda_l1_kernels=params.lambda_l1_kernels,
                   lambda_xortho=params.lambda_xortho, seed=seed, device=device, verbose=verbose)
    started = time.perf_counter()
    cnmf.fit(subset)
    seconds = time.perf_counter() - started
    return cnmf, seconds, int(sum(u.shape[1] for u in subset))


def classical_factorisation(cnmf: ConvNMF, utterances: Sequence[np.ndarray], transform_iter: int | None = None,
                            fit_seconds: float = math.nan) -> Factorised:
    """Held-out scores with the fitted kernels and baseline fixed, and their reconstructions.

    ``transform_iter`` (default: the ConvNMF's ``transform_max_iter``) caps the score updates.
    ``extra`` holds how the fit and the transform went: ``fit_iterations``, ``fit_converged``,
    ``fit_cost_history`` (the cost after each iteration, a list) and the same three for the
    transform (``transform_*``).
    """
    started = time.perf_counter()
    scores = cnmf.transform(_non_negative(utterances), max_iter=transform_iter)
    seconds = time.perf_counter() - started
    kernels = torch.as_tensor(cnmf.gesture_kernels_)
    baseline = torch.as_tensor(cnmf.baseline_)
    reconstructions = [convolve_scores(torch.as_tensor(h), kernels, baseline).float().numpy() for h in scores]
    return Factorised(gesture_kernels=cnmf.gesture_kernels_, baseline=cnmf.baseline_, scores=scores,
                      reconstructions=reconstructions, fit_seconds=fit_seconds, inference_seconds=seconds,
                      extra={"fit_iterations": cnmf.n_iter_, "fit_converged": cnmf.converged_,
                             "fit_cost_history": [float(c) for c in cnmf.cost_history_],
                             "transform_iterations": cnmf.transform_n_iter_,
                             "transform_converged": cnmf.transform_converged_,
                             "transform_cost_history": [float(c) for c in cnmf.transform_cost_history_]})


# -------------------------------------------------------------------------- metrics


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
    """How well a factorisation recovers the planted one.

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
        See :class:`EvaluateParams`.
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


def evaluate_factorisation(utterances: Sequence[np.ndarray], factorised: Factorised,
                           truth: PlantedTruth | None = None, *, channels: Sequence[str] = ema.CHANNELS,
                           onset_tolerance: int = 2, onset_relative_height: float = 0.1,
                           device="cpu", activations: Sequence[np.ndarray] | None = None) -> tuple[dict, dict | None]:
    """Score one method's factorisation of the held-out utterances.

    Parameters
    ----------
    utterances : sequence of ndarray (C, T_i)
        The data, unclipped.
    factorised : Factorised
    truth : PlantedTruth, optional
        Planted kernels and onsets (events corpus); without them the recovery metrics are None.
    activations : sequence of bool ndarray (P, T_i), optional
        Planted gesture activity (both synthetic corpora); without it ``activation_auc`` is None.
    channels : sequence of str
        Names for the per-channel correlations.
    onset_tolerance, onset_relative_height
        See :class:`EvaluateParams`.
    device : str or torch.device
        Where the seqNMF similarity is computed.

    Returns
    -------
    metrics : dict
        Every key of ``METRIC_KEYS`` (flat numbers, plus ``correlation_per_channel``:
        channel name -> r), and ``factorised.extra``.
    matching : dict or None
        See :func:`recovery_metrics`; None without ground truth.
    """
    # Pooled over the real frames of all utterances: concatenating them is exact for every
    # metric here (none looks across frames).
    x = torch.from_numpy(np.concatenate([np.asarray(u, dtype=np.float32) for u in utterances], axis=1))
    x_hat = torch.from_numpy(np.concatenate(factorised.reconstructions, axis=1))
    h = torch.from_numpy(np.concatenate(factorised.scores, axis=1))
    fit = reconstruction_metrics(x, x_hat)
    if len(channels) != len(fit["correlation_per_channel"]):
        raise ValueError(f"{len(channels)} channel names for {len(fit['correlation_per_channel'])} channels")
    sparsity = score_sparsity(h, kernels=factorised.gesture_kernels)
    metrics = {
        "l1": fit["l1"],
        "rmse": fit["rmse"],
        "variance_explained": fit["variance_explained"],
        "correlation_mean": fit["correlation_mean"],
        "correlation_per_channel": dict(zip(channels, fit["correlation_per_channel"])),
        "hoyer_across_gestures": sparsity["hoyer_across_gestures"],
        "hoyer_across_time": sparsity["hoyer_across_time"],
        "gestures_in_use": sparsity["gestures_in_use"],
        "num_gestures_in_use": sparsity["num_gestures_in_use"],
        "distinct_gestures": distinct_gestures(factorised.gesture_kernels, sparsity["in_use"])["distinct_gestures"],
        "seqnmf_similarity": None, "kernel_cosine": None,
        "onset_f1": None, "onset_precision": None, "onset_recall": None,
        "activation_auc": None,
        "activation_auc_lagged": None,
        "elbo_per_frame": None,
        "fit_seconds": factorised.fit_seconds,
        "inference_seconds": factorised.inference_seconds,
    }
    if activations is not None:
        frames = factorised.activity_frames or factorised.gesture_kernels.shape[-1]
        metrics.update(activation_metrics(activations, factorised.scores, frames))
    matching = None
    if truth is not None:
        recovery, matching = recovery_metrics(truth, factorised.gesture_kernels, factorised.scores,
                                              in_use=sparsity["in_use"], onset_tolerance=onset_tolerance,
                                              onset_relative_height=onset_relative_height, device=device)
        metrics.update(recovery)
    metrics.update(factorised.extra)
    return metrics, matching


def evaluate_model(model: GesturalAutoEncoder, store: UtteranceStore, truth: PlantedTruth | None = None, *,
                   batch_size: int = 64, channels: Sequence[str] = ema.CHANNELS, onset_tolerance: int = 2,
                   onset_relative_height: float = 0.1,
                   activations: Sequence[np.ndarray] | None = None) -> tuple[dict, dict | None, Factorised]:
    """Evaluate the network on the utterances of ``store`` (full length, masked batches).

    Returns
    -------
    (metrics, matching, factorised): see :func:`evaluate_factorisation`; ``factorised`` holds
    the per-utterance scores and reconstructions in the store's order.
    """
    factorised = neural_factorisation(model, store, batch_size)
    metrics, matching = evaluate_factorisation(store_utterances(store), factorised, truth, channels=channels,
                                               onset_tolerance=onset_tolerance,
                                               onset_relative_height=onset_relative_height, device=store.device,
                                               activations=activations)
    return metrics, matching, factorised


def example_indices(lengths: Sequence[int], ids: Sequence[str], count: int = 3) -> list[int]:
    """``count`` utterances around the median length (ties broken by id), in length order."""
    count = min(count, len(lengths))
    order = sorted(range(len(lengths)), key=lambda i: (lengths[i], ids[i]))
    first = max(0, min(len(order) - count, (len(order) - count + 1) // 2))
    return order[first:first + count]


# ------------------------------------------------------------------------ the stage


@dataclass
class EvaluationResult:
    """Everything the evaluate stage writes."""

    metrics: dict  # metrics/eval.json
    channels: list[str]
    classical_kernels: np.ndarray
    classical_baseline: np.ndarray
    examples: dict  # arrays of evaluation/examples.npz
    matching: dict  # evaluation/matching.json
    planted_kernels: np.ndarray | None
    test_ids: list[str] = field(default_factory=list)  # held-out utterances, in the scores' order
    neural_scores: list[np.ndarray] = field(default_factory=list)  # (K, T_i) per held-out utterance
    win_size: int = 0  # the network's kernel length


def _train_seconds(path: Path | None) -> float:
    """``seconds`` of metrics/train.json, NaN if the file or the key is absent."""
    if path is None or not Path(path).is_file():
        return math.nan
    try:
        seconds = json.loads(Path(path).read_text()).get("seconds")
    except (ValueError, OSError, AttributeError):
        return math.nan
    return float(seconds) if isinstance(seconds, (int, float)) and not isinstance(seconds, bool) else math.nan


def _load_inputs(model_path: Path, data_dir: Path, device: torch.device):
    if not model_path.is_file():
        raise EvaluationError(f"{model_path} not found: run `dvc repro train` first")
    if not (data_dir / "frames.npy").is_file():
        raise EvaluationError(f"{data_dir / 'frames.npy'} not found: run `dvc repro normalize` first")
    try:
        model, payload = load_model(model_path, device)
    except ModelFileError as error:
        raise EvaluationError(f"{error}; run `dvc repro train`") from None
    try:
        corpus = NormalizedCorpus.load(data_dir)
    except CorpusFileError as error:
        raise EvaluationError(f"{error} (run `dvc repro normalize`)") from None
    trained_on = payload.get("normalization") or {}
    for key in ("low", "high"):
        if key in trained_on and key in corpus.stats and not np.allclose(trained_on[key], corpus.stats[key]):
            raise EvaluationError(f"{model_path} was trained on data normalised with other '{key}' values than "
                                  f"{data_dir / 'stats.json'}: run `dvc repro train`")
    return model, corpus


def run_evaluation(params: EvaluateParams, *, model_path: str | Path = "models/model.pt",
                   data_dir: str | Path = "data/normalized", truth_path: str | Path | None = "data/raw/ground_truth.npz",
                   train_metrics_path: str | Path | None = "metrics/train.json",
                   progress: bool = True) -> EvaluationResult:
    """Evaluate the trained network and the classical baseline on the held-out split.

    Parameters
    ----------
    params : EvaluateParams
    model_path : path
        ``model.pt`` of the train stage.
    data_dir : path
        Output of the normalize stage.
    truth_path : path or None
        ``ground_truth.npz``; recovery metrics are computed only if the file exists.
    train_metrics_path : path or None
        ``metrics/train.json``; its ``seconds`` is the network's fit time.
    progress : bool
        Print a line per phase (and the classical fit's cost).

    Returns
    -------
    EvaluationResult

    Raises
    ------
    EvaluationError
        A missing or inconsistent input, naming the file and the stage that makes it.
    """
    def say(message: str) -> None:
        if progress:
            print(f"evaluate: {message}", flush=True)

    model_path, data_dir = Path(model_path), Path(data_dir)
    try:
        device = resolve_device(params.device)
    except RuntimeError as error:  # a GPU asked for by name that torch cannot see
        raise ParamsError(str(error)) from None
    model, corpus = _load_inputs(model_path, data_dir, device)
    channels = list(corpus.stats.get("channels") or ema.CHANNELS)
    test_ids = corpus.ids("test")
    test_utterances = [np.ascontiguousarray(u, dtype=np.float32) for u in corpus.utterances("test")]
    train_utterances = corpus.utterances("train")
    if not test_utterances:
        raise EvaluationError(f"{data_dir / 'index.csv'}: no held-out (test) utterances to evaluate on")
    lengths = [u.shape[1] for u in test_utterances]
    say(f"{len(test_utterances)} held-out utterances ({sum(lengths)} frames) on {device}")

    truth, activations = None, None
    if truth_path is not None and Path(truth_path).is_file():
        try:
            names, activations = load_activations(truth_path, test_ids, lengths)
        except ValueError as error:
            raise EvaluationError(f"{error} (run `dvc repro download`)") from None
        say(f"ground truth: activations of {len(names)} planted gestures from {truth_path}")
        if has_planted_kernels(truth_path):  # the events corpus: kernels and onsets too
            truth = planted_truth(truth_path, test_ids, lengths, corpus.stats)
    else:
        say(f"no ground truth ({truth_path} absent): recovery metrics skipped")
    scoring = dict(channels=channels, onset_tolerance=params.onset_tolerance,
                   onset_relative_height=params.onset_relative_height, activations=activations)
    classical_scoring = dict(scoring, device=device)
    floor = raw_channel_floor(activations, test_utterances, model.config.win_size) if activations is not None else None

    say("neural: factorising held-out utterances")
    store = UtteranceStore(test_utterances, device)
    neural_metrics, neural_matching, neural = evaluate_model(model, store, truth, batch_size=params.batch_size,
                                                             **scoring)
    neural_metrics["fit_seconds"] = _train_seconds(train_metrics_path)
    say(f"neural: variance explained {neural_metrics['variance_explained']:.4f} "
        f"({neural_metrics['inference_seconds']:.2f} s)")

    config = model.config
    base = params.baseline
    say(f"classical: fitting ConvNMF (K={config.num_gestures}, L={config.win_size}, "
        f"up to {base.max_iter} iterations)")
    cnmf, fit_seconds, fit_frames = fit_classical(train_utterances, config.num_gestures, config.win_size, base,
                                                  seed=params.seed, device=device, verbose=progress)
    say(f"classical: fitted on {fit_frames} frames in {fit_seconds:.1f} s; transforming held-out utterances")
    classical = classical_factorisation(cnmf, test_utterances, base.transform_iter, fit_seconds)
    classical.extra["fit_frames"] = fit_frames
    classical_metrics, classical_matching = evaluate_factorisation(test_utterances, classical, truth, **classical_scoring)
    say(f"classical: variance explained {classical_metrics['variance_explained']:.4f} "
        f"({classical_metrics['inference_seconds']:.2f} s)")

    def beats(key: str):
        a, b = neural_metrics.get(key), classical_metrics.get(key)
        if a is None or b is None or not (math.isfinite(a) and math.isfinite(b)):
            return None
        return bool(a > b)

    metrics = json_safe({
        "neural": neural_metrics,
        "classical": classical_metrics,
        "raw_channels": floor,
        "ground_truth": activations is not None,
        "test_utterances": len(test_utterances),
        "test_frames": int(sum(lengths)),
        "neural_beats_classical": {key: beats(key) for key in COMPARED},
    })

    chosen = example_indices(lengths, test_ids, params.examples)
    examples: dict = {"ids": np.array([test_ids[i] for i in chosen], dtype=str)}
    for n, i in enumerate(chosen):
        examples[f"x_{n}"] = test_utterances[i]
        examples[f"neural_reconstruction_{n}"] = neural.reconstructions[i]
        examples[f"neural_scores_{n}"] = neural.scores[i]
        examples[f"classical_reconstruction_{n}"] = np.asarray(classical.reconstructions[i], dtype=np.float32)
        examples[f"classical_scores_{n}"] = np.asarray(classical.scores[i], dtype=np.float32)
        if truth is not None:
            examples[f"planted_scores_{n}"] = truth.scores[i].astype(np.float32)

    matching = json_safe({
        "ground_truth": truth is not None,
        "planted_kernels": truth.kernels.tolist() if truth is not None else None,
        "neural": neural_matching,
        "classical": classical_matching,
    })
    return EvaluationResult(metrics=metrics, channels=channels,
                            classical_kernels=np.asarray(classical.gesture_kernels, dtype=np.float32),
                            classical_baseline=np.asarray(classical.baseline, dtype=np.float32),
                            examples=examples, matching=matching,
                            planted_kernels=None if truth is None else truth.kernels.astype(np.float32),
                            test_ids=list(test_ids), neural_scores=neural.scores, win_size=config.win_size)


def write_outputs(result: EvaluationResult, *, metrics_path: str | Path = "metrics/eval.json",
                  plot_path: str | Path = "plots/eval/per_channel_correlation.csv",
                  out_dir: str | Path = "evaluation", timing_path: str | Path | None = None) -> None:
    """Write eval.json, the per-channel correlation CSV and the ``evaluation/`` directory, each atomically.

    Timings (fit and inference seconds), which differ on every run, go to ``timing_path`` only,
    so that the outputs of a rerun are byte-identical; ``evaluation/details.json`` has every
    other metric.

    ``evaluation/`` holds ``classical.npz`` (gesture_kernels (K, C, L), baseline (C,)),
    ``examples.npz`` (ids; x_i, {neural,classical}_reconstruction_i, {neural,classical}_scores_i,
    planted_scores_i with ground truth), ``matching.json`` and, with ground truth,
    ``planted.npz`` (kernels (P, C, L) in normalised units).
    """
    timing = {method: {key: result.metrics[method].get(key) for key in TIMING_KEYS} for method in ("neural", "classical")}
    details = {key: value for key, value in result.metrics.items()}
    for method in ("neural", "classical"):
        details[method] = {k: v for k, v in result.metrics[method].items() if k not in TIMING_KEYS}
    with atomic_dir(out_dir) as tmp:
        np.savez(tmp / "classical.npz", gesture_kernels=result.classical_kernels, baseline=result.classical_baseline)
        np.savez(tmp / "examples.npz", **result.examples)
        (tmp / "matching.json").write_text(json.dumps(result.matching, indent=2) + "\n")
        (tmp / "details.json").write_text(json.dumps(details, indent=2) + "\n")
        if result.planted_kernels is not None:
            np.savez(tmp / "planted.npz", kernels=result.planted_kernels)

    def cell(value) -> str:
        return "" if value is None else f"{value:.6f}"

    neural = result.metrics["neural"]["correlation_per_channel"]
    classical = result.metrics["classical"]["correlation_per_channel"]
    rows = ["channel,neural,classical"] + [f"{c},{cell(neural[c])},{cell(classical[c])}" for c in result.channels]
    write_text(plot_path, "\n".join(rows) + "\n")
    write_json(metrics_path, summary_metrics(result.metrics))
    if timing_path is not None:
        write_json(timing_path, timing)


def summary_metrics(metrics: dict) -> dict:
    """The figures of merit of the full metrics: what metrics/eval.json holds (``SUMMARY_KEYS``
    of the network, ``CLASSICAL_SUMMARY_KEYS`` of the baseline, the raw-channel floor), about a
    dozen columns in `dvc exp show`."""
    floor = metrics.get("raw_channels")
    return {
        "neural": {key: metrics["neural"].get(key) for key in SUMMARY_KEYS},
        "classical": {key: metrics["classical"].get(key) for key in CLASSICAL_SUMMARY_KEYS},
        "raw_channels": {"activation_auc": floor["activation_auc"] if floor else None},
    }
