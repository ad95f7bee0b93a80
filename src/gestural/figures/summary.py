"""The plot stage's job: read the pipeline's outputs, draw the summary figures, save PNGs.

:func:`make_figures` takes every input path explicitly, so that it can run on hand-made
files; ``stages/plot.py`` only supplies the pipeline's paths and ``params.yaml``'s ``plot:``
section. The set of files written never changes (:data:`FIGURES`): a figure that cannot be
drawn from the inputs (no ground truth, no example utterance) says why instead. The drawing
itself is the figure modules' (:mod:`gestural.figures.kinematics`, :mod:`gestural.figures.scores`,
:mod:`gestural.figures.curves`); the files are read by their owners (:mod:`gestural.training.outputs`
for the learning curve, :mod:`gestural.evaluation.files` for the evaluate stage's files).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from gestural.core.files import atomic_dir
from gestural.data.dataset import STATS_FILE, CorpusFileError, read_index, read_stats
from gestural.data.ema import EmaFormatError, read_ema_stats
from gestural.evaluation.associations import ASSOCIATION_FILE, load_associations
from gestural.evaluation.export import ExportError, row_phones
from gestural.evaluation.files import (
    CLASSICAL_FILE,
    EXAMPLES_FILE,
    GESTURAL_SCORES_FILE,
    MATCHING_FILE,
    PLANTED_FILE,
    EvaluationFileError,
    read_channel_correlation,
    read_classical,
    read_examples,
    read_gestural_scores,
    read_matching,
    read_planted,
)
from gestural.figures.curves import channel_correlation_figure, learning_curves_figure
from gestural.figures.gestural_score import gestural_score_figure
from gestural.figures.kinematics import (
    gesture_paths_figure,
    gesture_traces_figure,
    neural_vs_classical_figure,
    planted_vs_learned_figure,
    reconstruction_figure,
)
from gestural.figures.scores import gesture_phone_association_figure, score_heatmap_figure
from gestural.figures.style import MAX_DPI, MIN_DPI, message_figure, rank_gestures, save_figure
from gestural.model.file import ModelFileError, load_model
from gestural.model.gestures_file import GesturesFileError, read_gestures
from gestural.training.outputs import TrainOutputError, read_learning_curve

logger = logging.getLogger(__name__)

FIGURES: tuple[str, ...] = (
    "learning_curves.png",
    "channel_correlation.png",
    "reconstruction.png",
    "gestures.png",
    "gesture_paths.png",
    "scores.png",
    "planted_vs_learned.png",
    "neural_vs_classical.png",
    "gesture_phone_association.png",
    "gestural_score.png",
)


class FigureInputError(ValueError):
    """An input of the plot stage is missing or malformed (names the file and its stage)."""


@dataclass(frozen=True)
class PlotParams:
    """The ``plot:`` section of params.yaml.

    Attributes
    ----------
    dpi : int
        Resolution of the PNGs.
    max_gestures : int
        Largest number of gestures in the galleries.
    example : int
        Which of the evaluate stage's example utterances to draw (0-based, clamped).
    """

    dpi: int = 110
    max_gestures: int = 16
    example: int = 0

    @classmethod
    def from_params(cls, params: dict) -> PlotParams:
        """Validate the optional ``plot:`` section (defaults when it is absent)."""
        from gestural.core.params import Section

        if "plot" not in (params or {}):
            return cls()
        section = Section(params, "plot")
        values = {}
        if "dpi" in section.values:
            values["dpi"] = section.bounded_integer("dpi", MIN_DPI, MAX_DPI)
        for key, minimum in (("max_gestures", 1), ("example", 0)):
            if key in section.values:
                values[key] = section.integer(key, minimum=minimum)
        section.check_unknown()
        return cls(**values)


@dataclass(frozen=True)
class FigureInputs:
    """Where :func:`make_figures` reads from, every path explicit (``stages/plot.py`` gives the pipeline's).

    Attributes
    ----------
    model : Path
        ``models/model.pt``.
    gestures : Path or None
        ``models/gestures.npy``; the model's kernels are drawn when None or absent.
    learning_curve : Path
        ``plots/train/learning_curve.csv``.
    evaluation : Path
        The evaluate stage's ``evaluation/`` directory.
    correlation : Path
        ``plots/eval/per_channel_correlation.csv``.
    normalized : Path
        ``data/normalized`` (index.csv, stats.json).
    extracted : Path
        ``data/extracted`` (lab files, ``ema.stats``).
    """

    model: Path
    gestures: Path | None
    learning_curve: Path
    evaluation: Path
    correlation: Path
    normalized: Path
    extracted: Path


# ----------------------------------------------------------------------------- readers


def _need(path: Path, stage: str) -> Path:
    if not path.is_file():
        raise FigureInputError(f"{path}: no such file (run `dvc repro {stage}`)")
    return path


def _index_rows(normalized: Path) -> dict[str, dict]:
    try:
        return {row["utterance_id"]: row
                for row in read_index(normalized / "index.csv", ("utterance_id", "speaker", "lab"))}
    except CorpusFileError as error:
        logger.warning("%s; drawing without phone labels", error)
        return {}


def _association_figure(evaluation: Path, max_gestures: int):
    """The evaluate stage's gesture-phone table as a heat map (a note when it is absent)."""
    path = evaluation / ASSOCIATION_FILE
    title = "Gesture-phone association"
    if not path.is_file():
        return message_figure(f"{path} is missing: run `dvc repro evaluate`.", title=title)
    try:
        table = load_associations(path)
    except ExportError as error:
        raise FigureInputError(f"{error}; run `dvc repro evaluate`") from None
    return gesture_phone_association_figure(table.auc, table.gestures, table.phones, table.phone_frames,
                                            max_gestures=max(max_gestures, 60))


def _unit_stats(normalization: dict, speaker: str | None, extracted: Path) -> dict:
    """Normalization stats with the speaker's ``ema.stats``, from stats.json or the corpus."""
    stats = dict(normalization)
    if speaker and speaker not in (stats.get("ema_stats") or {}):
        path = extracted / "emadata" / f"cin_us_{speaker}" / "ema.stats"
        if path.is_file():
            try:
                table = read_ema_stats(path)
                stats["ema_stats"] = {speaker: {"mean": table[:, 0].tolist(), "std": table[:, 1].tolist()}}
            except EmaFormatError as error:
                logger.warning("%s; gesture paths in corpus units", error)
    return stats


def _typical_amplitudes(scores: list[np.ndarray], num_gestures: int) -> np.ndarray:
    """Median non-zero score of each gesture over the examples (what one occurrence looks like)."""
    pooled = np.concatenate(scores, axis=1) if scores else np.zeros((num_gestures, 0))
    nonzero = pooled[pooled > 0]
    fallback = float(np.median(nonzero)) if nonzero.size else 1.0
    amplitudes = np.full(num_gestures, fallback)
    for k in range(num_gestures):
        row = pooled[k][pooled[k] > 0]
        if row.size:
            amplitudes[k] = float(np.median(row))
    return amplitudes


# ------------------------------------------------------------------------------ driver


def _gestural_score_figure(gestural_scores: dict | None, example: dict | None, phones):
    """Planted and exported (TextGrid) gestural score of the example utterance, as boxes."""
    title = "Gestural score: planted vs exported"
    if gestural_scores is None:
        return message_figure("No ground truth: the corpus is not synthetic, so there is no planted gestural "
                              "score to compare with.", title=title)
    chosen = next((e for e in gestural_scores["examples"] if example and e["id"] == example["id"]), None)
    if chosen is None:
        return message_figure("No example utterance to draw (evaluate.examples is 0).", title=title)
    return gestural_score_figure(chosen["planted"], chosen["neural"], gestural_scores["pairs"]["neural"],
                                 gestural_scores["planted_names"], chosen["frames"], phones=phones,
                                 title=f"{title}, held-out utterance {chosen['id']} (auto-encoder)")


def make_figures(out_dir: str | os.PathLike, inputs: FigureInputs, params: PlotParams = PlotParams()) -> list[Path]:
    """Draw every figure of :data:`FIGURES` into ``out_dir`` (replaced atomically).

    Parameters
    ----------
    out_dir : path-like
        ``plots/figures``.
    inputs : FigureInputs
        The trained model (``model.pt``, and ``gestures.npy`` when given), the learning
        curve, the evaluate stage's ``evaluation/`` directory and per-channel correlation
        CSV, and the corpus (``data/normalized`` for index.csv and stats.json,
        ``data/extracted`` for the lab files and ``ema.stats``).
    params : PlotParams

    Returns
    -------
    paths : list of Path
        The files written, in :data:`FIGURES` order.

    Raises
    ------
    FigureInputError
        A required input is missing or malformed.
    """
    try:
        loaded = load_model(_need(Path(inputs.model), "train"))
    except ModelFileError as error:
        raise FigureInputError(f"{error}; run `dvc repro train`") from None
    model = loaded.model
    kernels = model.decoder.effective_kernels.detach().cpu().numpy()
    if inputs.gestures is not None and Path(inputs.gestures).is_file():
        try:
            saved = read_gestures(inputs.gestures)
        except GesturesFileError as error:
            raise FigureInputError(f"{error}; run `dvc repro train`") from None
        if saved.shape != kernels.shape:
            raise FigureInputError(f"{inputs.gestures}: shape {saved.shape} does not match {inputs.model}'s "
                                   f"kernels {kernels.shape}; run `dvc repro train`")
        kernels = saved
    baseline = model.decoder.baseline.detach().cpu().numpy()
    normalization = loaded.normalization
    if not normalization and (Path(inputs.normalized) / STATS_FILE).is_file():
        try:
            normalization = read_stats(Path(inputs.normalized) / STATS_FILE)
        except CorpusFileError as error:
            raise FigureInputError(str(error)) from None
    loss = loaded.settings.get("loss")

    evaluation = Path(inputs.evaluation)
    try:
        curve = read_learning_curve(inputs.learning_curve)
        neural_r, classical_r = read_channel_correlation(inputs.correlation)
        examples = read_examples(evaluation / EXAMPLES_FILE)
        matching = read_matching(evaluation / MATCHING_FILE)
        classical = read_classical(evaluation / CLASSICAL_FILE)
        planted = read_planted(evaluation / PLANTED_FILE)
        gestural_scores = read_gestural_scores(evaluation / GESTURAL_SCORES_FILE)
    except (TrainOutputError, EvaluationFileError) as error:  # one error type, one line, for the stage
        raise FigureInputError(str(error)) from None

    example = examples[min(params.example, len(examples) - 1)] if examples else None
    row = _index_rows(Path(inputs.normalized)).get(example["id"]) if example else None
    phones = row_phones(row, Path(inputs.extracted))
    speaker = row.get("speaker") if row else None
    neural_scores = [e["neural_scores"] for e in examples if "neural_scores" in e]
    usage = np.stack([s.sum(axis=1) for s in neural_scores], axis=1) if neural_scores else None
    order, _ = rank_gestures(kernels, usage)
    no_example = "No example utterance to draw (evaluate.examples is 0 or the held-out split is empty)."

    def draw(name: str):
        if name == "learning_curves.png":
            return learning_curves_figure(curve, loss=loss)
        if name == "channel_correlation.png":
            return channel_correlation_figure(neural_r, classical_r)
        if name == "gestures.png":
            return gesture_traces_figure(kernels, usage, max_gestures=params.max_gestures,
                                         title=None if usage is None else
                                         f"Gesture kernels: the {min(params.max_gestures, len(kernels))} "
                                         f"most used of {len(kernels)} in the example utterances")
        if name == "gesture_paths.png":
            return gesture_paths_figure(
                kernels, baseline, stats=_unit_stats(normalization, speaker, Path(inputs.extracted)),
                order=order, max_gestures=params.max_gestures, speaker=speaker,
                amplitudes=_typical_amplitudes(neural_scores, len(kernels)))
        if name == "planted_vs_learned.png":
            neural_pairs = (matching.get("neural") or {}).get("kernel_recovery")
            if planted is None or neural_pairs is None:
                return message_figure("No ground truth: the corpus is not synthetic, so there are no planted "
                                      "gestures to compare with.", title="Planted vs learned gestures")
            classical_pairs = (matching.get("classical") or {}).get("kernel_recovery")
            return planted_vs_learned_figure(
                planted, kernels, neural_pairs, max_rows=params.max_gestures,
                classical=classical.get("gesture_kernels") if classical_pairs is not None else None,
                classical_assignment=classical_pairs)
        if name == "gesture_phone_association.png":
            return _association_figure(evaluation, params.max_gestures)
        if name == "gestural_score.png":
            return _gestural_score_figure(gestural_scores, example, phones)
        if example is None:
            return message_figure(no_example)
        label = f"held-out utterance {example['id']}"
        if name == "reconstruction.png":
            return reconstruction_figure(example["x"], example["neural_reconstruction"],
                                         title=f"Auto-encoder reconstruction of {label}")
        if name == "scores.png":
            return score_heatmap_figure(example["neural_scores"], phones=phones,
                                        title=f"Gestural score of {label} (auto-encoder)")
        if name == "neural_vs_classical.png":
            return neural_vs_classical_figure(
                example["x"], example["neural_reconstruction"], example["classical_reconstruction"],
                example["neural_scores"], example["classical_scores"], phones=phones,
                title=f"Auto-encoder vs classical convolutive NMF on {label}")
        raise AssertionError(name)

    out_dir = Path(out_dir)
    with atomic_dir(out_dir) as tmp:
        for name in FIGURES:
            try:
                figure = draw(name)
            except KeyError as error:
                raise FigureInputError(f"{evaluation / EXAMPLES_FILE}: missing array {error} for {name}") from None
            save_figure(figure, tmp / name, dpi=params.dpi)
    return [out_dir / name for name in FIGURES]
