"""What a training run leaves behind, apart from its checkpoint.

While it trains: the TensorBoard run (``runs/<run name>``: hparams, per-epoch scalars and
figures), named by :func:`default_run_name`. When it has finished
(:func:`write_training_outputs`): model.pt, gestures.npy, the metrics, the timing and the
learning curve, one :class:`EpochRecord` per row. The learning curve is written by
:func:`write_learning_curve` and read back, by every reader, with :func:`read_learning_curve`.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from gestural.core.files import write_json, write_text
from gestural.model.file import save_model
from gestural.model.gestures_file import GESTURES_FILE, write_gestures
from gestural.model.network import GesturalAutoEncoder

if TYPE_CHECKING:  # annotations only: the plot stage reads the learning curve without depending on these
    from gestural.data.batches import UtteranceStore
    from gestural.training.config import TrainConfig

# The scalars TensorBoard's HParams tab compares runs by (logged every epoch).
HPARAM_METRICS = ("hparam/test_reconstruction", "hparam/gestures_in_use")
# A run has converged when its held-out loss fell by less than CONVERGED_CHANGE (relative)
# over its last CONVERGENCE_EPOCHS epochs.
CONVERGENCE_EPOCHS = 5
CONVERGED_CHANGE = 0.01


class TrainOutputError(ValueError):
    """An output of the train stage is missing or malformed (names the file)."""


@dataclass
class EpochRecord:
    """One row of the learning curve (plots/train/learning_curve.csv, :func:`write_learning_curve`)."""

    epoch: int
    train_loss: float
    train_reconstruction: float
    test_reconstruction: float
    sparsity_penalty: float
    kl: float
    hoyer_across_gestures: float
    hoyer_across_time: float
    active_scores: float
    gestures_in_use: float
    lr: float
    seconds: float


@dataclass
class TrainResult:
    model: GesturalAutoEncoder
    history: list[EpochRecord]
    seconds: float
    frames_per_second: float
    resumed_from_epoch: int
    device: str
    train_frames: int
    score_scale: list[float] | None = None  # each gesture's largest training score (model.pt)


# TensorBoard tag -> EpochRecord field, logged every epoch (hparam/*: HPARAM_METRICS).
EPOCH_SCALARS = (
    ("loss/train_total", "train_loss"), ("loss/train_reconstruction", "train_reconstruction"),
    ("loss/test_reconstruction", "test_reconstruction"), ("loss/sparsity_penalty", "sparsity_penalty"),
    ("loss/kl", "kl"), ("sparsity/hoyer_across_gestures", "hoyer_across_gestures"),
    ("sparsity/hoyer_across_time", "hoyer_across_time"), ("sparsity/active_scores", "active_scores"),
    ("sparsity/gestures_in_use", "gestures_in_use"), ("lr", "lr"),
    ("hparam/test_reconstruction", "test_reconstruction"), ("hparam/gestures_in_use", "gestures_in_use"),
)


# (utterance, reconstruction, kernels, scores) -> {TensorBoard tag: figure}
FigureMaker = Callable[[np.ndarray, np.ndarray, np.ndarray, np.ndarray], dict]


class TensorBoardRun:
    """The TensorBoard log of one run: its hparams at the start, scalars every epoch, and a
    reconstruction and the gestures every ``figure_every`` epochs and at the last.

    Parameters
    ----------
    log_dir : path
        The run directory, ``runs/<run name>``.
    config : TrainConfig
    extra_hparams : dict
        More hparams (the data params), logged beside the training config.
    start_epoch : int
        Epochs already done (a resumed run): what an interrupted run logged after them is
        dropped, so that the curves do not fork.
    figures : callable or None
        ``figures(x, reconstruction, kernels, scores)`` -> {tag: matplotlib figure}, given a
        held-out utterance (12, T), its reconstruction (12, T), the kernels (K, 12, L) and its
        scores (K, T); None: scalars only.
    """

    def __init__(self, log_dir: str | Path, config: TrainConfig, extra_hparams: dict, start_epoch: int,
                 figures: FigureMaker | None = None):
        from torch.utils.tensorboard import SummaryWriter

        self.config = config
        self.figures = figures
        self.writer = SummaryWriter(log_dir=str(log_dir), purge_step=start_epoch + 1)
        self._log_hparams(extra_hparams)

    def log_epoch(self, record: EpochRecord, model: GesturalAutoEncoder, test_store: UtteranceStore) -> None:
        writer = self.writer
        step = record.epoch
        for tag, field in EPOCH_SCALARS:
            writer.add_scalar(tag, getattr(record, field), step)
        if self.figures is not None and (step % self.config.figure_every == 0 or step == self.config.epochs):
            _, x, mask = next(iter(test_store.batches(1)))
            with torch.no_grad():
                model.eval()
                out = model(x, mask)
                model.train()
            drawn = self.figures(x[0].cpu().numpy(), out.reconstruction[0].cpu().numpy(),
                                 model.decoder.gesture_kernels.detach().cpu().numpy(), out.scores[0].cpu().numpy())
            for tag, figure in drawn.items():
                writer.add_figure(tag, figure, step)

    def close(self) -> None:
        self.writer.close()

    def _log_hparams(self, extra_hparams: dict) -> None:
        """Declare the run's hparams at its start (with the data params it was given), so that
        TensorBoard's HParams tab lists a run while it trains; the declared metrics are the
        ``hparam/*`` scalars logged every epoch."""
        from torch.utils.tensorboard.summary import hparams

        values = {**dataclasses.asdict(self.config), **extra_hparams}
        values = {k: (v if isinstance(v, (int, float, str, bool)) else str(v)) for k, v in values.items()}
        experiment, start, end = hparams(values, {name: 0.0 for name in HPARAM_METRICS})
        file_writer = self.writer._get_file_writer()
        for summary in (experiment, start, end):
            file_writer.add_summary(summary)


def default_run_name(config: TrainConfig) -> str:
    """TensorBoard run name: the DVC experiment's name when run by ``dvc exp run``."""
    if config.run_name:
        return config.run_name
    experiment = os.environ.get("DVC_EXP_NAME")
    if experiment:
        return experiment
    return f"{config.model}-K{config.num_gestures}-w{config.win_size}-{time.strftime('%Y%m%d-%H%M%S')}"


def held_out_loss_change(history: Sequence[EpochRecord], epochs: int = CONVERGENCE_EPOCHS) -> float | None:
    """How much the held-out loss still fell over the last ``epochs`` epochs, relative to its
    last value: (before - last) / last; None for a run of ``epochs`` epochs or fewer.

    A report, not a stopping rule: the schedule decays the learning rate to its floor by the
    last epoch, so a run still falling by more than CONVERGED_CHANGE there would fit better
    with more steps (a large corpus needs more than a small one).
    """
    if len(history) <= epochs:
        return None
    before, last = history[-1 - epochs].test_reconstruction, history[-1].test_reconstruction
    return (before - last) / last if last > 0 else 0.0


def write_training_outputs(result: TrainResult, config: TrainConfig, normalization: dict, model_dir: Path,
                           metrics_path: Path, curve_path: Path, timing_path: Path) -> None:
    """model.pt, gestures.npy (float32, K x 12 x (win_size + response_frames - 1 or win_size)), metrics, timing, curve.

    The metrics file keeps the figures of merit only, so that ``dvc metrics diff`` and
    ``dvc exp show`` compare results; time and speed, which differ on every run, go to
    ``timing_path``.
    """
    model_dir = Path(model_dir)
    save_model(model_dir / "model.pt", result.model, dataclasses.asdict(config), normalization, result.score_scale)
    # What each gesture does in the data: its kernel, convolved with its response if it has one.
    kernels = result.model.decoder.effective_kernels.detach().cpu().numpy()
    write_gestures(model_dir / GESTURES_FILE, kernels)
    last = result.history[-1]
    metrics = {  # the figures of merit; the whole curve is in curve_path
        "test_reconstruction": last.test_reconstruction,
        "gestures_in_use": last.gestures_in_use,
    }
    change = held_out_loss_change(result.history)
    if change is not None:  # a run too short to tell has no such figure (no null in the metrics)
        metrics[f"held_out_loss_change_last_{CONVERGENCE_EPOCHS}_epochs"] = change
    write_json(metrics_path, metrics)
    write_json(timing_path, {
        "epochs": len(result.history),
        "steps": len(result.history) * config.steps_per_epoch,
        # Over the whole training, the epochs before a resume included.
        "seconds": result.seconds,
        "frames_per_second": result.frames_per_second,
        "resumed_from_epoch": result.resumed_from_epoch,
        "train_frames": result.train_frames,
        "device": result.device,
    })
    write_learning_curve(curve_path, result.history)


def write_learning_curve(path: str | os.PathLike, history: Sequence[EpochRecord]) -> None:
    """Write the learning curve as CSV, atomically: a header of the :class:`EpochRecord` fields,
    then one row per epoch (floats with 6 significant digits)."""
    buffer = io.StringIO()
    columns = [f.name for f in dataclasses.fields(EpochRecord)]
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    for row in history:
        writer.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in dataclasses.asdict(row).items()})
    write_text(path, buffer.getvalue())


def read_learning_curve(path: str | os.PathLike) -> list[dict]:
    """Rows of ``learning_curve.csv`` as dicts of strings, one per epoch.

    Only ``epoch`` is required, so that a curve with fewer columns (an older run, a
    hand-made file) still reads.

    Raises
    ------
    TrainOutputError
        The file is missing or has no ``epoch`` column.
    """
    path = Path(path)
    if not path.is_file():
        raise TrainOutputError(f"{path}: no such file (run `dvc repro train`)")
    with open(path, newline="") as handle:
        rows = list(csv.DictReader(handle))
    if rows and "epoch" not in rows[0]:
        raise TrainOutputError(f"{path}: no 'epoch' column (header {list(rows[0])})")
    return rows
