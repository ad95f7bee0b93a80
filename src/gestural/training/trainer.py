"""Training: the loop that fits a :class:`GesturalAutoEncoder` to normalized utterances.

The loop reads in one sitting: sample crops on the device, forward, loss, backward, clip,
step, project W and b back to >= 0, schedule the learning rate; at the end of each epoch
score the held-out utterances at full length, log, and checkpoint. The settings live in
:mod:`gestural.training.config`, the checkpoint (resume bit-for-bit, or start fresh when the
settings, data or code changed) in :mod:`gestural.training.checkpoint`, and TensorBoard and the
trained outputs in :mod:`gestural.training.outputs`.
"""

from __future__ import annotations

import contextlib
import logging
import math
import random
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from gestural.core.devices import resolve_device
from gestural.core.metrics import score_sparsity
from gestural.core.params import ParamsError
from gestural.data.batches import CropSampler, UtteranceStore
from gestural.model import losses
from gestural.model.file import ModelFileError, load_weights_
from gestural.model.initialize import kmeans_kernels, resting_posture
from gestural.model.network import ForwardOutput, GesturalAutoEncoder
from gestural.model.optimizers import build_optimizer
from gestural.training.checkpoint import CheckpointMismatch, resume_checkpoint, run_fingerprint, save_checkpoint
from gestural.training.config import TrainConfig
from gestural.training.outputs import EpochRecord, FigureMaker, TensorBoardRun, TrainResult

log = logging.getLogger(__name__)


def _as_fp32(out: ForwardOutput) -> ForwardOutput:
    """The forward pass's outputs in fp32 (they are bf16 under bf16 autocast)."""
    if out.scores.dtype == torch.float32 and out.reconstruction.dtype == torch.float32:
        return out
    return ForwardOutput(out.reconstruction.float(), out.scores.float(), out.kl.float(),
                         None if out.score_std is None else out.score_std.float())


class TrainingDataError(ValueError):
    """The normalized corpus cannot train a model (too short, constant, not finite)."""


def _check_training_data(train_utterances, test_utterances, win_size: int) -> None:
    """Refuse data that cannot train a model, with one line saying why."""
    if not train_utterances:
        raise TrainingDataError("training data: no training utterances")
    if not test_utterances:
        raise TrainingDataError("training data: no held-out utterances (data.test_fraction too small?)")
    longest = max(u.shape[-1] for u in train_utterances)
    if longest < win_size:
        raise TrainingDataError(f"training data: every training utterance is shorter than win_size "
                                f"({longest} < {win_size} frames); lower win_size")
    if not any(np.ptp(u, axis=-1).max() > 0 for u in train_utterances):
        raise TrainingDataError("training data: every channel of every training utterance is constant; "
                                "nothing to learn")
    if not all(np.isfinite(u).all() for u in train_utterances):
        raise TrainingDataError("training data: holds NaN or infinite values (rerun `dvc repro normalize`)")


class Trainer:
    """Trains a :class:`GesturalAutoEncoder` on normalized utterances.

    Parameters
    ----------
    config : TrainConfig
    train_utterances, test_utterances : lists of arrays (12, T_i) in [0, 1]
    checkpoint_path : path or None
        Where the per-epoch checkpoint lives; an existing one with the same fingerprint is
        resumed.
    log_dir : path or None
        TensorBoard run directory (``runs/<run name>``); None disables logging.
    progress : bool
        A progress bar per epoch when stderr is a terminal.
    extra_hparams : dict, optional
        More hparams for TensorBoard (the data params), logged beside the training config.
    figures : callable, optional
        Draws the TensorBoard figures (see :class:`~gestural.training.outputs.TensorBoardRun`);
        the stage passes it in, so that training does not depend on how a figure looks.
    """

    def __init__(self, config: TrainConfig, train_utterances, test_utterances, *,
                 checkpoint_path: str | Path | None = None, log_dir: str | Path | None = None,
                 progress: bool = True, extra_hparams: dict | None = None,
                 figures: FigureMaker | None = None):
        config.validate()
        self.config = config
        self.device = resolve_device(config.device)
        if self.device.type == "cpu" and config.threads:
            torch.set_num_threads(config.threads)
        if self.device.type == "cuda":
            # Process-wide switches: set both ways so that fp32 means IEEE fp32 even after
            # another run in this process asked for tf32.
            torch.backends.cuda.matmul.allow_tf32 = config.precision == "tf32"
            torch.backends.cudnn.allow_tf32 = config.precision == "tf32"
        self.checkpoint_path = Path(checkpoint_path) if checkpoint_path else None
        self.log_dir = Path(log_dir) if log_dir else None
        self.progress = progress
        self.extra_hparams = dict(extra_hparams or {})  # e.g. the data params, for TensorBoard
        self.figures = figures

        _check_training_data(train_utterances, test_utterances, config.win_size)
        self.train_store = UtteranceStore(train_utterances, self.device)
        self.test_store = UtteranceStore(test_utterances, self.device)
        # An epoch is a fixed number of steps, not a pass over the corpus: a small corpus
        # trains as long as a large one.
        self.steps_per_epoch = config.steps_per_epoch
        self.fingerprint = run_fingerprint(config, train_utterances, test_utterances)
        self._train_utterances = train_utterances
        self._build()
        self._resume()

    def _build(self) -> None:
        """Seed, then make the sampler, the initialized model, the optimizer and the schedule."""
        config = self.config
        self._seed_everything(config.seed)
        self.generator = torch.Generator(device=self.device).manual_seed(config.seed)
        self.sampler = CropSampler(self.train_store, config.segment_len, self.generator)
        self.model = GesturalAutoEncoder(config.model_config()).to(self.device)
        self._initialize(self._train_utterances)
        self._compiled_forward = self._compile() if config.compile else None
        self.optimizer = build_optimizer(self.model, config.optimizer, config.lr, config.muon_lr,
                                         config.response_lr, config.weight_decay)
        total = config.epochs * self.steps_per_epoch
        warmup = max(1, int(config.warmup_fraction * total))
        self.scheduler = torch.optim.lr_scheduler.SequentialLR(
            self.optimizer,
            [torch.optim.lr_scheduler.LinearLR(self.optimizer, 0.1, 1.0, total_iters=warmup),
             torch.optim.lr_scheduler.CosineAnnealingLR(self.optimizer, max(1, total - warmup),
                                                        eta_min=config.lr * 0.02)],
            milestones=[warmup],
        )
        self.history: list[EpochRecord] = []
        self.start_epoch = 0
        # Totals over every invocation, so that a resumed run reports its whole training.
        self.trained_frames, self.train_seconds = 0, 0.0

    @staticmethod
    def _seed_everything(seed: int) -> None:
        random.seed(seed)
        np.random.seed(seed)
        torch.manual_seed(seed)

    def _initialize(self, train_utterances) -> None:
        config = self.config
        decoder = self.model.decoder
        # Non-negative kernels add movement on top of a low posture; signed ones move either
        # way from a typical one.
        signed = config.kernels == "signed"
        posture = resting_posture(train_utterances, 50.0 if signed else 5.0)
        decoder.init_baseline_(torch.from_numpy(posture).to(self.device))
        if config.init == "kmeans":
            kernels = kmeans_kernels(train_utterances, config.num_gestures, config.win_size, config.seed, signed)
            with torch.no_grad():
                decoder.kernels_raw.copy_(torch.from_numpy(kernels))
        elif config.init != "random":
            try:
                load_weights_(self.model, config.init)
            except (ModelFileError, OSError) as error:
                raise ParamsError(f"params.yaml train.init: {error}") from None

    # ----------------------------------------------------------------- checkpoints

    def _resume(self) -> None:
        """Continue from the checkpoint if it was written by this very run (same settings,
        data, code and init model); anything else starts fresh and says why."""
        if self.checkpoint_path is None:
            return
        try:
            resumed = resume_checkpoint(self.checkpoint_path, self.fingerprint, self.device, model=self.model,
                                        optimizer=self.optimizer, scheduler=self.scheduler, generator=self.generator)
        except CheckpointMismatch:
            self._build()  # a partly loaded state: start again from the seed
            return
        if resumed is None:
            return
        self.history = resumed.history
        self.start_epoch = resumed.epoch
        self.trained_frames, self.train_seconds = resumed.trained_frames, resumed.train_seconds

    def _save_checkpoint(self, epoch: int) -> None:
        if self.checkpoint_path is None:
            return
        save_checkpoint(self.checkpoint_path, fingerprint=self.fingerprint, epoch=epoch, model=self.model,
                        optimizer=self.optimizer, scheduler=self.scheduler, history=self.history,
                        trained_frames=self.trained_frames, train_seconds=self.train_seconds,
                        generator=self.generator)

    # ------------------------------------------------------------ precision, compile

    def _autocast(self):
        """bfloat16 autocast for ``precision: bf16``, else nothing."""
        if self.config.precision == "bf16":
            return torch.autocast(device_type=self.device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def _compile(self):
        """A compiled training forward pass, or None (with a warning) where torch cannot compile.

        A function around ``self.model`` is compiled, not the module itself, so that the
        model, its state_dict keys and checkpoints are the same with and without compile.
        It returns a tuple (compiled graphs handle tuples everywhere). Compilation is lazy:
        a failure at the first call is handled in :meth:`_forward`.
        """
        model = self.model

        def forward(x: torch.Tensor, mask: torch.Tensor):
            out = model(x, mask)
            return out.reconstruction, out.scores, out.kl, out.score_std

        try:
            return torch.compile(forward)
        except Exception as error:  # e.g. a Python version this torch cannot compile for
            self._compile_failed(error)
            return None

    @staticmethod
    def _compile_failed(error: BaseException) -> None:
        warnings.warn(f"params.yaml train.compile: torch.compile failed ({type(error).__name__}: "
                      f"{str(error).strip()[:300]}); training without compile", RuntimeWarning, stacklevel=3)

    def _forward(self, x: torch.Tensor, mask: torch.Tensor) -> ForwardOutput:
        """The training forward pass: compiled when ``compile: true`` and it works, else eager."""
        if self._compiled_forward is not None:
            try:
                return ForwardOutput(*self._compiled_forward(x, mask))
            except Exception as error:  # no C++ compiler, an unsupported op, ...: fall back
                self._compile_failed(error)
                self._compiled_forward = None
        return self.model(x, mask)

    # ----------------------------------------------------------------------- loss

    def _loss(self, x: torch.Tensor, mask: torch.Tensor):
        config = self.config
        with self._autocast():
            out = _as_fp32(self._forward(x, mask))
        # The loss terms see fp32 outputs (autocast would only change the reductions, whose
        # bf16 results lose digits the L1 and Hoyer terms need).
        reconstruction = losses.reconstruction_loss(x, out.reconstruction, mask, config.loss)
        sparsity = self._score_penalties(out.scores, mask) + self._kernel_penalty()
        if self.model.variational:
            # The negative ELBO per real frame and channel, its KL term annealed in from 0
            # over the first kl_warmup_fraction of the steps (beta = 1: the ELBO itself).
            nll = self.model.negative_log_likelihood(x, out.reconstruction, mask)
            # Free bits: a gesture's KL below free_bits nats per frame costs nothing, so the
            # prior cannot switch gestures off just to save their first nats.
            kl = out.kl.clamp_min(self.config.free_bits).sum()
            total = (nll + self._beta() * kl) / x.shape[1] + sparsity
        else:
            total = reconstruction + sparsity
        return total, reconstruction, sparsity, out

    def _beta(self) -> float:
        return self.config.beta * self._ramp(self.config.kl_warmup_fraction)

    def _ramp(self, fraction: float) -> float:
        """0 -> 1 linearly over the first ``fraction`` of the steps, then 1."""
        warmup = fraction * self.config.epochs * self.steps_per_epoch
        return min(1.0, self.scheduler.last_epoch / warmup) if warmup > 0 else 1.0

    def _score_penalties(self, scores: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """L1 (AE only: the VAE's sparsity is its prior), smoothness, group sparsity and, when
        ``sparse``, the background count and the Hoyer shortfalls."""
        config = self.config
        penalty = scores.new_zeros(())
        if not self.model.variational:
            # The L1 weight follows the learning-rate schedule: strong while gestures are being
            # chosen, fading at the end so that it does not shrink the amplitudes it leaves.
            penalty = (losses.l1_scores(scores, mask) * config.l1_weight
                       * self.optimizer.param_groups[0]["lr"] / config.lr)
        if config.smoothness_weight:
            penalty = penalty + config.smoothness_weight * losses.score_total_variation(scores, mask)
        if config.group_weight:
            penalty = penalty + config.group_weight * losses.score_group_norm(scores, mask)
        if config.sparse:
            # Ramped in like the KL: scale-free penalties have gradients of 1/||H||, which on
            # the small scores of an untrained model drown the reconstruction and switch
            # everything off; once the gestures explain the data they only sharpen them.
            ramp = self._ramp(config.sparse_warmup_fraction)
            if config.background_weight:
                penalty = penalty + ramp * config.background_weight * losses.background_score_count(
                    scores, mask, config.background_threshold, config.background_reach)
            if config.hoyer_gestures_weight or config.hoyer_time_weight:
                across_gestures, across_time, active = losses.score_hoyer(scores, mask)
                penalty = penalty + ramp * config.hoyer_gestures_weight * losses.hoyer_shortfall(
                    across_gestures, config.hoyer_gestures_target)
                # Per gesture in use: each one is sharpened, none is switched off to lift an average.
                penalty = penalty + ramp * config.hoyer_time_weight * losses.hoyer_shortfall(
                    across_time, config.hoyer_time_target, active)
        return penalty

    def _kernel_penalty(self) -> torch.Tensor:
        """Group sparsity of the kernels over sensors (``kernel_sensor_weight``)."""
        if not self.config.kernel_sensor_weight:
            return torch.zeros((), device=self.device)
        return self.config.kernel_sensor_weight * losses.kernel_sensor_norm(self.model.decoder.gesture_kernels)

    def step(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """One optimization step on a batch; returns (loss, reconstruction, sparsity, kl), detached."""
        loss, reconstruction, sparsity, out = self._loss(x, mask)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if self.config.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.config.grad_clip)
        self.optimizer.step()
        self.model.decoder.project_()
        self.scheduler.step()
        return torch.stack([loss, reconstruction, sparsity, out.kl.sum()]).detach()

    @torch.no_grad()
    def evaluate(self) -> dict:
        """Held-out reconstruction loss at full length (masked), and score statistics."""
        self.model.eval()
        error_sum, frames, active, total = 0.0, 0, 0.0, 0
        score_mass = torch.zeros(self.config.num_gestures, device=self.device)
        hoyer_g, hoyer_t = 0.0, 0.0
        for _, x, mask in self.test_store.batches(self.config.eval_batch_size):
            with self._autocast():
                out = _as_fp32(self.model(x, mask))
            real = int(mask.sum())
            error_sum += float(losses.reconstruction_loss(x, out.reconstruction, mask, self.config.loss)) * real
            frames += real
            active += float((out.scores > 0).sum())
            total += real * self.config.num_gestures
            score_mass += out.scores.sum((0, 2))
            across_gestures, across_time, in_batch = losses.score_hoyer(out.scores, mask)
            hoyer_g += float(across_gestures) * real
            hoyer_t += float(across_time[in_batch].mean()) * real if in_batch.any() else 0.0
        self.model.train()
        in_use = score_sparsity(score_mass[:, None], kernels=self.model.decoder.gesture_kernels)["gestures_in_use"]
        return {"test_reconstruction": error_sum / frames, "active_scores": active / total,
                "gestures_in_use": in_use, "hoyer_across_gestures": hoyer_g / frames,
                "hoyer_across_time": hoyer_t / frames}

    # ----------------------------------------------------------------------- loop

    def fit(self) -> TrainResult:
        config = self.config
        # TensorBoard, when asked for: hparams now, scalars and figures after each epoch.
        board = (TensorBoardRun(self.log_dir, config, self.extra_hparams, self.start_epoch, self.figures)
                 if self.log_dir is not None else None)
        started = time.perf_counter() - self.train_seconds
        self.model.train()
        for epoch in range(self.start_epoch, config.epochs):
            epoch_start = time.perf_counter()
            sums = torch.zeros(4, device=self.device)  # loss, reconstruction, sparsity, kl
            frames_seen = torch.zeros((), dtype=torch.long, device=self.device)
            # A bar on a terminal only: in a log (dvc repro, a queue) it would be a flood of
            # carriage returns; the per-epoch line below is the log's progress.
            bar = tqdm(range(self.steps_per_epoch), desc=f"epoch {epoch + 1}/{config.epochs}", leave=False,
                       disable=not (self.progress and sys.stderr.isatty()), unit="step")
            for _ in bar:
                x, mask = self.sampler.sample(config.batch_size)
                sums += self.step(x, mask)
                frames_seen += mask.sum()  # on the device: no host sync per step
            means = (sums / self.steps_per_epoch).tolist()
            self.trained_frames += int(frames_seen)
            if not all(math.isfinite(v) for v in means):
                raise FloatingPointError(f"training diverged at epoch {epoch + 1} (loss {means[0]}); lower train.lr")
            held_out = self.evaluate()
            record = EpochRecord(epoch=epoch + 1, train_loss=means[0], train_reconstruction=means[1],
                                 sparsity_penalty=means[2], kl=means[3], lr=self.optimizer.param_groups[0]["lr"],
                                 seconds=time.perf_counter() - epoch_start, **held_out)
            self.history.append(record)
            log.info(f"epoch {record.epoch:3d}/{config.epochs}  train {record.train_loss:.5f}  "
                     f"held-out {config.loss} {record.test_reconstruction:.5f}  active {record.active_scores:.4f}  "
                     f"in use {record.gestures_in_use:.2f}  {record.seconds:.1f}s")
            if board is not None:
                board.log_epoch(record, self.model, self.test_store)
            self.train_seconds = time.perf_counter() - started
            self._save_checkpoint(epoch + 1)
        seconds = self.train_seconds = time.perf_counter() - started
        if board is not None:
            board.close()
        return TrainResult(model=self.model, history=self.history, seconds=seconds,
                           frames_per_second=self.trained_frames / seconds if self.trained_frames else 0.0,
                           resumed_from_epoch=self.start_epoch, device=str(self.device),
                           train_frames=self.train_store.total_frames, score_scale=self.score_scale())

    @torch.no_grad()
    def score_scale(self) -> list[float]:
        """Each gesture's largest score on the training utterances at full length: the
        reference the export's segmentation cuts at (a share of it)."""
        self.model.eval()
        largest = torch.zeros(self.config.num_gestures, device=self.device)
        for _, x, mask in self.train_store.batches(self.config.eval_batch_size):
            largest = torch.maximum(largest, _as_fp32(self.model(x, mask)).scores.amax(dim=(0, 2)))
        self.model.train()
        return largest.cpu().tolist()
