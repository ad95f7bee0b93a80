"""The classical convolutive NMF baseline as the evaluate stage uses it.

:class:`gestural.classical.cnmf.ConvNMF` with the model's number of gestures and window is fitted on
(a seeded subset of) the training utterances (:func:`fit_classical`), and finds held-out
scores with its kernels and baseline fixed (:func:`classical_factorization`), on (a seeded
subset of, :func:`held_out_subset`) the held-out utterances. Its settings are
``evaluate.baseline:`` of params.yaml (:class:`BaselineParams`).
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from gestural.classical.cnmf import ConvNMF
from gestural.core.metrics import convolve_scores
from gestural.core.params import Section
from gestural.evaluation.factorizations import HeldOutFactorization
from gestural.evaluation.planted import PlantedTruth

__all__ = [
    "BaselineParams",
    "classical_factorization",
    "fit_classical",
    "held_out_part",
    "held_out_subset",
]


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
        see :class:`gestural.classical.cnmf.ConvNMF`).
    lambda_l1_scores, lambda_l1_kernels, lambda_xortho : float
        Penalties (see :class:`gestural.classical.cnmf.ConvNMF`; lambda_xortho is scaled by the
        number of gesture pairs and lags, so one value suits any K and L).
    max_train_frames : int or None
        Fit on a seeded random subset of whole training utterances of about this many
        frames (None: all), to bound the fit's time on a large corpus.
    max_test_utterances : int or None
        Transform and score at most this many held-out utterances, a seeded random subset
        (None: all), to bound the transform's time on a large corpus.
    """

    max_iter: int
    transform_iter: int
    tol: float
    transform_tol: float
    lambda_l1_scores: float
    lambda_l1_kernels: float
    lambda_xortho: float
    max_train_frames: int | None
    max_test_utterances: int | None

    @classmethod
    def from_section(cls, values: dict) -> BaselineParams:
        section = Section({"evaluate.baseline": values}, "evaluate.baseline")
        max_train_frames, max_test_utterances = (
            None if section.get(key) is None else section.integer(key, minimum=1)
            for key in ("max_train_frames", "max_test_utterances"))
        result = cls(
            max_iter=section.integer("max_iter", minimum=1),
            transform_iter=section.integer("transform_iter", minimum=1),
            tol=section.number("tol", low=0.0, high=1.0),
            transform_tol=section.number("transform_tol", low=0.0, high=1.0),
            lambda_l1_scores=section.number("lambda_l1_scores", low=0.0, high=math.inf),
            lambda_l1_kernels=section.number("lambda_l1_kernels", low=0.0, high=math.inf),
            lambda_xortho=section.number("lambda_xortho", low=0.0, high=math.inf),
            max_train_frames=max_train_frames,
            max_test_utterances=max_test_utterances,
        )
        section.check_unknown()
        return result


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


def held_out_subset(count: int, max_utterances: int | None, seed: int, keep: Sequence[int] = ()) -> list[int]:
    """Which of ``count`` held-out utterances the classical baseline transforms, in index order.

    All of them when ``max_utterances`` is None or not below ``count`` (the default corpus:
    the results do not change); else ``keep`` (the stage's examples, whose classical
    factorizations are saved) and the first others of a seeded permutation, ``max_utterances``
    in all (``keep`` beyond that is kept whole). A fixed number of utterances, not of frames:
    the metrics' sample size is what it bounds.
    """
    if max_utterances is None or count <= max_utterances:
        return list(range(count))
    kept = set(keep)
    others = [int(i) for i in np.random.default_rng(seed).permutation(count) if i not in kept]
    return sorted(kept | set(others[:max(0, max_utterances - len(kept))]))


def held_out_part(utterances: Sequence[np.ndarray], max_utterances: int | None, seed: int, *,
                  keep: Sequence[int] = (), truth: PlantedTruth | None = None,
                  activations: Sequence[np.ndarray] | None = None):
    """The held-out utterances the classical baseline transforms (:func:`held_out_subset`).

    Returns their indices, and their utterances, planted truth and planted activations (None
    stays None), each in index order.
    """
    indices = held_out_subset(len(utterances), max_utterances, seed, keep)

    def take(values):
        return [values[i] for i in indices]

    part_truth = None if truth is None else PlantedTruth(truth.kernels, take(truth.scores), take(truth.onsets))
    return indices, take(utterances), part_truth, None if activations is None else take(activations)


def _non_negative(utterances: Sequence[np.ndarray]) -> list[np.ndarray]:
    # NMF needs X >= 0; held-out frames can fall a little below the training minimum when
    # normalize's low percentile is above 0. Clipped for the classical method only; every
    # metric is computed against the unclipped data.
    return [np.clip(np.asarray(u, dtype=np.float32), 0.0, None) for u in utterances]


def fit_classical(train_utterances: Sequence[np.ndarray], num_gestures: int, win_size: int,
                  params: BaselineParams, *, seed: int = 0, device="cpu",
                  verbose: bool = False) -> tuple[ConvNMF, float, int, np.ndarray]:
    """Fit the classical ConvNMF on (a subset of) the training utterances.

    Parameters
    ----------
    train_utterances : sequence of ndarray (C, T_i)
    num_gestures, win_size : int
        The same as the network's.
    params : BaselineParams
        params.yaml's ``evaluate.baseline``.
    seed : int
    device : str or torch.device
    verbose : bool
        Log the cost every 10 iterations (INFO).

    Returns
    -------
    (fitted ConvNMF, fit seconds, frames fitted on, each gesture's largest score on them: the
    scale the export's segmentation cuts at); the ConvNMF's ``n_iter_``,
    ``converged_`` and ``cost_history_`` say how the fit went, and its transform settings
    are ``params.transform_iter`` / ``transform_tol``.
    """
    subset = _non_negative(_training_subset(train_utterances, params.max_train_frames, seed))
    cnmf = ConvNMF(num_gestures, win_size, max_iter=params.max_iter, tol=params.tol,
                   transform_max_iter=params.transform_iter, transform_tol=params.transform_tol,
                   lambda_l1_scores=params.lambda_l1_scores, lambda_l1_kernels=params.lambda_l1_kernels,
                   lambda_xortho=params.lambda_xortho, seed=seed, device=device, verbose=verbose)
    started = time.perf_counter()
    fitted = cnmf.fit_transform(subset)
    seconds = time.perf_counter() - started
    scale = np.max([scores.max(axis=1) for scores in fitted], axis=0)
    return cnmf, seconds, int(sum(u.shape[1] for u in subset)), scale


def classical_factorization(cnmf: ConvNMF, utterances: Sequence[np.ndarray], transform_iter: int | None = None,
                            fit_seconds: float = math.nan) -> HeldOutFactorization:
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
    return HeldOutFactorization(gesture_kernels=cnmf.gesture_kernels_, baseline=cnmf.baseline_, scores=scores,
                      reconstructions=reconstructions, fit_seconds=fit_seconds, inference_seconds=seconds,
                      extra={"fit_iterations": cnmf.n_iter_, "fit_converged": cnmf.converged_,
                             "fit_cost_history": [float(c) for c in cnmf.cost_history_],
                             "transform_iterations": cnmf.transform_n_iter_,
                             "transform_converged": cnmf.transform_converged_,
                             "transform_cost_history": [float(c) for c in cnmf.transform_cost_history_]})
