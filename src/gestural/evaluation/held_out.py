"""Held-out evaluation of the trained auto-encoder against classical convolutive NMF.

Both methods factorize held-out utterances at full length (the network all of them in padded,
masked batches, never random crops: :mod:`gestural.evaluation.factorizations`; the classical
one at most ``evaluate.baseline.max_test_utterances``: :mod:`gestural.evaluation.classical`), scored alike:

* reconstruction: L1, RMSE (normalized units), variance explained, Pearson r per channel;
* sparsity of the scores: Hoyer across gestures and across time, fraction of gestures used;
* with ground truth (the synthetic corpus's ``ground_truth.npz``), recovery of the planted
  gestures (:mod:`gestural.evaluation.planted`, :mod:`gestural.evaluation.planted_recovery`): seqNMF similarity of
  the factor reconstructions, lag-tolerant kernel cosine after Hungarian matching, and F1 of
  planted onsets against peaks of the matched learned scores.

This module runs the stage: its parameters and the scoring of each factorization. Its files
(metrics/eval.json, the per-channel correlation CSV, ``evaluation/``) are written and read by
:mod:`gestural.evaluation.files`.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from gestural.core import units
from gestural.core.devices import resolve_device
from gestural.core.files import json_safe
from gestural.core.metrics import reconstruction_metrics, score_sparsity
from gestural.core.params import ParamsError, Section
from gestural.data.batches import UtteranceStore
from gestural.data.dataset import CorpusFileError, NormalizedCorpus
from gestural.evaluation.activation import activation_metrics, raw_channel_floor
from gestural.evaluation.classical import BaselineParams, classical_factorization, fit_classical, held_out_part
from gestural.evaluation.factorizations import HeldOutFactorization, neural_factorization, store_utterances
from gestural.evaluation.files import EvaluationResult
from gestural.evaluation.planted import EvaluationError, PlantedTruth, planted_truth
from gestural.evaluation.planted_recovery import recovery_metrics
from gestural.evaluation.recovery import distinct_gestures
from gestural.evaluation.score_match import SCORE_KEYS, exported_intervals, gestural_score_metrics, planted_intervals
from gestural.evaluation.segmentation import Segmentation
from gestural.model.file import ModelFileError, load_model
from gestural.model.network import GesturalAutoEncoder
from gestural.synthetic.ground_truth import has_planted_kernels, load_activations

__all__ = [
    "EvaluateParams",
    "evaluate_factorization",
    "evaluate_model",
    "example_indices",
    "run_evaluation",
]

logger = logging.getLogger(__name__)

# Every metric of one method in metrics/eval.json, so that a missing one is a bug, not a
# silently absent column in `dvc metrics show`.
METRIC_KEYS = (
    "l1", "rmse", "variance_explained", "correlation_mean", "correlation_per_channel",
    "hoyer_across_gestures", "hoyer_across_time", "gestures_in_use", "num_gestures_in_use", "distinct_gestures",
    "seqnmf_similarity", "kernel_cosine", "onset_f1", "onset_precision", "onset_recall",
    "activation_auc", "activation_auc_lagged", "elbo_per_frame", "fit_seconds", "inference_seconds", *SCORE_KEYS,
)
# Metrics where higher is better, compared in ``neural_beats_classical``.
COMPARED = ("variance_explained", "activation_auc", "seqnmf_similarity", "kernel_cosine")


@dataclass(frozen=True)
class EvaluateParams:
    """What the evaluate stage reads from params.yaml (``device``, ``seed`` and ``evaluate:``).

    Attributes
    ----------
    device : str
        auto | cpu | cuda | cuda:<i> (both methods run there).
    seed : int
        Seed of the classical fit (initialization, training subset).
    batch_size : int
        Held-out utterances per padded batch of the network.
    onset_tolerance : int
        A peak within this many frames of a planted onset counts as a hit.
    score_tolerance : int
        An exported interval boundary within this many frames of a planted one counts as a hit.
    onset_relative_height : float
        Peaks of a learned score trace lower than this fraction of its maximum over the
        test set are ignored.
    examples : int
        Held-out utterances of median length saved for the plots.
    baseline : BaselineParams
    """

    device: str
    seed: int
    batch_size: int
    onset_tolerance: int
    score_tolerance: int
    onset_relative_height: float
    examples: int
    baseline: BaselineParams

    @classmethod
    def from_params(cls, params: dict) -> EvaluateParams:
        """Validate the top-level ``device``/``seed`` and the ``evaluate:`` section.

        Raises
        ------
        ParamsError
            Naming the first invalid key, e.g. ``params.yaml evaluate.batch_size: must be >= 1``.
        """
        top = Section.top_level(params)
        device = top.device("device")  # the same check as the train stage's
        seed = top.bounded_integer("seed", 0)
        section = Section(params, "evaluate")
        baseline = section.get("baseline")
        if not isinstance(baseline, dict):
            raise section.error("baseline", "must be a mapping (max_iter: ..., lambda_xortho: ...)")
        result = cls(
            device=device,
            seed=seed,
            batch_size=section.integer("batch_size", minimum=1),
            onset_tolerance=section.integer("onset_tolerance", minimum=0),
            score_tolerance=section.integer("score_tolerance", minimum=0),
            onset_relative_height=section.number("onset_relative_height", low=0.0, high=1.0, open_high=True),
            examples=section.integer("examples", minimum=0),
            baseline=BaselineParams.from_section(baseline),
        )
        section.check_unknown()
        return result


def evaluate_factorization(utterances: Sequence[np.ndarray], factorized: HeldOutFactorization,
                           truth: PlantedTruth | None = None, *, channels: Sequence[str] = units.CHANNELS,
                           onset_tolerance: int = 2, onset_relative_height: float = 0.1, score_tolerance: int = 5,
                           device="cpu", activations: Sequence[np.ndarray] | None = None) -> tuple[dict, dict | None]:
    """Score one method's factorization of the held-out utterances.

    Parameters
    ----------
    utterances : sequence of ndarray (C, T_i)
        The data, unclipped.
    factorized : HeldOutFactorization
    truth : PlantedTruth, optional
        Planted kernels and onsets (events corpus); without them the recovery metrics are None.
    activations : sequence of bool ndarray (P, T_i), optional
        Planted gesture activity (both synthetic corpora); without it ``activation_auc`` is None.
    channels : sequence of str
        Names for the per-channel correlations.
    onset_tolerance, onset_relative_height, score_tolerance
        See :class:`EvaluateParams`.
    device : str or torch.device
        Where the seqNMF similarity is computed.

    Returns
    -------
    metrics : dict
        Every key of ``METRIC_KEYS`` (flat numbers, plus ``correlation_per_channel``:
        channel name -> r), and ``factorized.extra``.
    matching : dict or None
        See :func:`gestural.evaluation.planted_recovery.recovery_metrics`; None without ground truth.
    """
    # Pooled over the real frames of all utterances: concatenating them is exact for every
    # metric here (none looks across frames).
    x = torch.from_numpy(np.concatenate([np.asarray(u, dtype=np.float32) for u in utterances], axis=1))
    x_hat = torch.from_numpy(np.concatenate(factorized.reconstructions, axis=1))
    h = torch.from_numpy(np.concatenate(factorized.scores, axis=1))
    fit = reconstruction_metrics(x, x_hat)
    if len(channels) != len(fit["correlation_per_channel"]):
        raise ValueError(f"{len(channels)} channel names for {len(fit['correlation_per_channel'])} channels")
    sparsity = score_sparsity(h, kernels=factorized.gesture_kernels)
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
        "distinct_gestures": distinct_gestures(factorized.gesture_kernels, sparsity["in_use"])["distinct_gestures"],
        "seqnmf_similarity": None, "kernel_cosine": None,
        "onset_f1": None, "onset_precision": None, "onset_recall": None,
        "activation_auc": None,
        "activation_auc_lagged": None,
        "elbo_per_frame": None,
        "fit_seconds": factorized.fit_seconds,
        "inference_seconds": factorized.inference_seconds,
    }
    metrics.update(dict.fromkeys(SCORE_KEYS))
    if activations is not None:
        frames = factorized.activity_frames or factorized.gesture_kernels.shape[-1]
        metrics.update(activation_metrics(activations, factorized.scores, frames))
        segmentation = factorized.segmentation or Segmentation(frames)
        factorized.intervals = [exported_intervals(scores, segmentation) for scores in factorized.scores]
        score_metrics, factorized.score_pairs = gestural_score_metrics(
            activations, factorized.intervals, factorized.scores, tolerance=score_tolerance)
        metrics.update(score_metrics)
    matching = None
    if truth is not None:
        recovery, matching = recovery_metrics(truth, factorized.gesture_kernels, factorized.scores,
                                              in_use=sparsity["in_use"], onset_tolerance=onset_tolerance,
                                              onset_relative_height=onset_relative_height, device=device)
        metrics.update(recovery)
    metrics.update(factorized.extra)
    return metrics, matching


def evaluate_model(model: GesturalAutoEncoder, store: UtteranceStore, truth: PlantedTruth | None = None, *,
                   batch_size: int = 64, channels: Sequence[str] = units.CHANNELS, onset_tolerance: int = 2,
                   onset_relative_height: float = 0.1, score_tolerance: int = 5,
                   activations: Sequence[np.ndarray] | None = None,
                   segmentation: Segmentation | None = None) -> tuple[dict, dict | None, HeldOutFactorization]:
    """Evaluate the network on the utterances of ``store`` (full length, masked batches).

    Returns
    -------
    (metrics, matching, factorized): see :func:`evaluate_factorization`; ``factorized`` holds
    the per-utterance scores and reconstructions in the store's order.
    """
    factorized = neural_factorization(model, store, batch_size)
    factorized.segmentation = segmentation or Segmentation.of_model(model)
    metrics, matching = evaluate_factorization(store_utterances(store), factorized, truth, channels=channels,
                                               onset_tolerance=onset_tolerance,
                                               onset_relative_height=onset_relative_height, device=store.device,
                                               score_tolerance=score_tolerance,
                                               activations=activations)
    return metrics, matching, factorized


def example_indices(lengths: Sequence[int], ids: Sequence[str], count: int = 3) -> list[int]:
    """``count`` utterances around the median length (ties broken by id), in length order."""
    count = min(count, len(lengths))
    order = sorted(range(len(lengths)), key=lambda i: (lengths[i], ids[i]))
    first = max(0, min(len(order) - count, (len(order) - count + 1) // 2))
    return order[first:first + count]


# ------------------------------------------------------------------------ the stage


def _train_seconds(path: Path | None) -> float:
    """``seconds`` of the train stage's timing file, NaN if the file or the key is absent."""
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
        loaded = load_model(model_path, device)
    except ModelFileError as error:
        raise EvaluationError(f"{error}; run `dvc repro train`") from None
    try:
        corpus = NormalizedCorpus.load(data_dir)
    except CorpusFileError as error:
        raise EvaluationError(f"{error} (run `dvc repro normalize`)") from None
    trained_on = loaded.normalization
    for key in ("low", "high"):
        if key in trained_on and key in corpus.stats and not np.allclose(trained_on[key], corpus.stats[key]):
            raise EvaluationError(f"{model_path} was trained on data normalized with other '{key}' values than "
                                  f"{data_dir / 'stats.json'}: run `dvc repro train`")
    return loaded, corpus


def run_evaluation(params: EvaluateParams, *, model_path: str | Path, data_dir: str | Path,
                   truth_path: str | Path | None, train_metrics_path: str | Path | None,
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
        ``ground_truth.npz``; recovery metrics are computed only if the file exists (none when None).
    train_metrics_path : path or None
        The train stage's timing file (``reports/timing/train.json``); its ``seconds`` is the
        network's fit time (NaN when None or absent).
    progress : bool
        Log a line per phase (INFO), and the classical fit's cost.

    Returns
    -------
    EvaluationResult

    Raises
    ------
    EvaluationError
        A missing or inconsistent input, naming the file and the stage that makes it.
    """
    def say(message: str) -> None:
        if progress:  # the stage shows INFO as "evaluate: <message>" (gestural.stage.run_stage)
            logger.info(message)

    model_path, data_dir = Path(model_path), Path(data_dir)
    try:
        device = resolve_device(params.device)
    except RuntimeError as error:  # a GPU asked for by name that torch cannot see
        raise ParamsError(str(error)) from None
    loaded, corpus = _load_inputs(model_path, data_dir, device)
    model = loaded.model
    channels = list(corpus.stats.get("channels") or units.CHANNELS)
    test_ids = corpus.ids("test")
    test_utterances = [np.ascontiguousarray(u, dtype=np.float32) for u in corpus.utterances("test")]
    train_utterances = corpus.utterances("train")
    if not test_utterances:
        raise EvaluationError(f"{data_dir / 'index.csv'}: no held-out (test) utterances to evaluate on")
    lengths = [u.shape[1] for u in test_utterances]
    say(f"{len(test_utterances)} held-out utterances ({sum(lengths)} frames) on {device}")

    truth, activations, names = None, None, []
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
    scoring = dict(channels=channels, onset_tolerance=params.onset_tolerance, score_tolerance=params.score_tolerance,
                   onset_relative_height=params.onset_relative_height, activations=activations)
    classical_scoring = dict(scoring, device=device)
    floor = raw_channel_floor(activations, test_utterances, model.config.win_size) if activations is not None else None

    say("neural: factorizing held-out utterances")
    store = UtteranceStore(test_utterances, device)
    neural_metrics, neural_matching, neural = evaluate_model(
        model, store, truth, batch_size=params.batch_size,
        segmentation=Segmentation.of_model(model, loaded.score_scale), **scoring)
    neural_metrics["fit_seconds"] = _train_seconds(train_metrics_path)
    neural_in_use = score_sparsity(np.concatenate(neural.scores, axis=1), kernels=neural.gesture_kernels)["in_use"]
    say(f"neural: variance explained {neural_metrics['variance_explained']:.4f} "
        f"({neural_metrics['inference_seconds']:.2f} s)")

    config = model.config
    base = params.baseline
    say(f"classical: fitting ConvNMF (K={config.num_gestures}, L={config.win_size}, "
        f"up to {base.max_iter} iterations)")
    cnmf, fit_seconds, fit_frames, classical_scale = fit_classical(
        train_utterances, config.num_gestures, config.win_size, base, seed=params.seed, device=device, verbose=progress)
    chosen = example_indices(lengths, test_ids, params.examples)
    subset, held, held_truth, held_activations = held_out_part(
        test_utterances, base.max_test_utterances, params.seed, keep=chosen, truth=truth, activations=activations)
    at = {i: n for n, i in enumerate(subset)}  # held-out index -> position in the classical results
    say(f"classical: fitted on {fit_frames} frames in {fit_seconds:.1f} s; transforming {len(held)} of "
        f"{len(lengths)} held-out utterances")
    classical = classical_factorization(cnmf, held, base.transform_iter, fit_seconds)
    classical.extra.update(fit_frames=fit_frames, transform_utterances=len(held),
                           transform_frames=int(sum(u.shape[1] for u in held)))
    classical.segmentation = Segmentation.of_kernels(classical.gesture_kernels, classical_scale)  # impulses
    classical_metrics, classical_matching = evaluate_factorization(
        held, classical, held_truth, **dict(classical_scoring, activations=held_activations))
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

    examples: dict = {"ids": np.array([test_ids[i] for i in chosen], dtype=str)}
    for n, i in enumerate(chosen):
        examples[f"x_{n}"] = test_utterances[i]
        examples[f"neural_reconstruction_{n}"] = neural.reconstructions[i]
        examples[f"neural_scores_{n}"] = neural.scores[i]
        examples[f"classical_reconstruction_{n}"] = np.asarray(classical.reconstructions[at[i]], dtype=np.float32)
        examples[f"classical_scores_{n}"] = np.asarray(classical.scores[at[i]], dtype=np.float32)
        if truth is not None:
            examples[f"planted_scores_{n}"] = truth.scores[i].astype(np.float32)

    gestural_scores = None if activations is None else json_safe({
        "planted_names": names,
        "pairs": {"neural": neural.score_pairs, "classical": classical.score_pairs},
        "examples": [{"id": test_ids[i], "frames": lengths[i], "planted": planted_intervals(activations[i]),
                      "neural": neural.intervals[i], "classical": classical.intervals[at[i]]} for i in chosen],
    })
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
                            test_ids=list(test_ids), neural_scores=neural.scores, neural_in_use=neural_in_use,
                            win_size=config.win_size, gestural_scores=gestural_scores,
                            neural_segmentation=neural.segmentation)
