"""Training: configuration, the loop, checkpoints, TensorBoard, and the trained outputs.

The loop reads in one sitting: sample crops on the device, forward, loss, backward, clip,
step, project W and b back to >= 0, schedule the learning rate; at the end of each epoch
score the held-out utterances at full length, log, and checkpoint. A checkpoint holds
everything needed to continue bit-for-bit (model, optimiser, scheduler, epoch, history and
every RNG state) plus a fingerprint of the settings: a killed run resumes from it, and a run
with changed settings starts fresh.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import math
import os
import random
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from . import losses
from .batches import CropSampler, UtteranceStore
from .initialize import kmeans_kernels, load_pretrained_, resting_posture
from .io import atomic_path
from .metrics import score_sparsity
from .model import Factorisation, GesturalAutoEncoder, ModelConfig

_TOP_LEVEL = ("segment_len", "win_size", "num_gestures", "sparse", "batch_size", "model", "loss",
              "epochs", "seed", "device")
# fp32: IEEE single precision everywhere (on CUDA, TF32 is switched off, cuDNN's default-on
# TF32 convolutions included); tf32: fp32 tensors, TF32 matmuls and convolutions on CUDA
# (no effect on the CPU); bf16: the forward pass under bfloat16 autocast, the loss, weights,
# gradients and optimiser state in fp32 (runs on the CPU too, but is usually slower there).
PRECISIONS = ("fp32", "tf32", "bf16")


@dataclass
class TrainConfig:
    """Everything the train stage reads from params.yaml (top-level keys and ``train:``)."""

    segment_len: int = 500
    win_size: int = 10
    num_gestures: int = 100
    sparse: bool = False
    batch_size: int = 16
    model: str = "ae"
    loss: str = "mse"
    epochs: int = 50
    seed: int = 0
    device: str = "auto"
    lr: float = 5e-3
    weight_decay: float = 1e-4
    warmup_fraction: float = 0.05
    grad_clip: float = 1.0
    hidden: int = 128
    peak_window: int = 5
    init: str = "kmeans"
    l1_weight: float = 0.03
    hoyer_gestures_weight: float = 0.1
    hoyer_gestures_target: float = 0.9
    hoyer_time_weight: float = 0.1
    hoyer_time_target: float = 0.95
    beta: float = 1e-4
    prior_mean: float = -1.0
    prior_std: float = 1.0
    figure_every: int = 10
    eval_batch_size: int = 64
    threads: int = 0
    precision: str = "fp32"
    compile: bool = False
    run_name: str | None = None

    @classmethod
    def from_params(cls, params: dict) -> "TrainConfig":
        values = {key: params[key] for key in _TOP_LEVEL if key in params}
        section = params.get("train") or {}
        known = {f.name for f in dataclasses.fields(cls)} - set(_TOP_LEVEL)
        unknown = sorted(set(section) - known)
        if unknown:
            raise ValueError(f"params.yaml train: unknown key(s) {unknown}; known: {sorted(known)}")
        values.update(section)
        config = cls(**values)
        config.validate()
        return config

    def validate(self) -> None:
        """Refuse impossible settings before any work, naming the param."""

        def need(ok: bool, name: str, what: str) -> None:
            if not ok:
                where = name if name in _TOP_LEVEL else f"train.{name}"
                raise ValueError(f"params.yaml {where}: {what} (got {getattr(self, name)!r})")

        need(isinstance(self.num_gestures, int) and self.num_gestures >= 1, "num_gestures", "must be an integer >= 1")
        need(isinstance(self.win_size, int) and self.win_size >= 1, "win_size", "must be an integer >= 1")
        need(isinstance(self.segment_len, int) and self.segment_len >= 1, "segment_len", "must be an integer >= 1")
        need(self.win_size <= self.segment_len, "win_size", f"must be <= segment_len ({self.segment_len})")
        need(isinstance(self.batch_size, int) and self.batch_size >= 1, "batch_size", "must be an integer >= 1")
        need(isinstance(self.epochs, int) and self.epochs >= 1, "epochs", "must be an integer >= 1")
        need(isinstance(self.sparse, bool), "sparse", "must be true or false")
        need(self.model in ("ae", "vae"), "model", "must be 'ae' or 'vae'")
        need(self.loss in ("l1", "mse"), "loss", "must be 'l1' or 'mse'")
        need(self.device == "auto" or self.device == "cpu" or self.device.startswith("cuda"),
             "device", "must be auto, cpu, cuda or cuda:<index>")
        need(self.lr > 0, "lr", "must be > 0")
        for name in ("weight_decay", "grad_clip", "l1_weight", "hoyer_gestures_weight", "hoyer_time_weight",
                     "beta", "warmup_fraction"):
            need(getattr(self, name) >= 0, name, "must be >= 0")
        need(self.warmup_fraction < 1, "warmup_fraction", "must be < 1")
        for name in ("hoyer_gestures_target", "hoyer_time_target"):
            need(0 <= getattr(self, name) <= 1, name, "must be in [0, 1]")
        need(self.init in ("random", "kmeans") or str(self.init).endswith(".pt"), "init",
             "must be random, kmeans or the path of a trained model.pt")
        need(self.hidden >= 1, "hidden", "must be >= 1")
        need(self.peak_window >= 0, "peak_window", "must be >= 0")
        need(self.prior_std > 0, "prior_std", "must be > 0")
        need(self.figure_every >= 1, "figure_every", "must be >= 1")
        need(self.eval_batch_size >= 1, "eval_batch_size", "must be >= 1")
        need(self.threads >= 0, "threads", "must be >= 0 (0 = all cores)")
        need(self.precision in PRECISIONS, "precision", "must be fp32, tf32 or bf16")
        need(isinstance(self.compile, bool), "compile", "must be true or false")

    def model_config(self) -> ModelConfig:
        return ModelConfig(num_gestures=self.num_gestures, win_size=self.win_size, hidden=self.hidden,
                           model=self.model, peak_window=self.peak_window, prior_mean=self.prior_mean,
                           prior_std=self.prior_std)

    def fingerprint(self) -> str:
        """Hash of the settings that change the result (not the run name or figure rate)."""
        relevant = {k: v for k, v in dataclasses.asdict(self).items() if k not in ("run_name", "figure_every")}
        return hashlib.sha256(json.dumps(relevant, sort_keys=True).encode()).hexdigest()[:16]


def resolve_device(name: str) -> torch.device:
    """``auto`` picks the GPU when there is one; an absent GPU asked for by name is an error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"params.yaml device: {name!r} asked for, but torch sees no CUDA GPU; use auto or cpu")
    return device


def synchronize(device: torch.device) -> None:
    """Wait for the GPU's queued work, so that a timer measures it (no-op on the CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@dataclass
class EpochRecord:
    """One row of the learning curve (plots/train/learning_curve.csv)."""

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


def _as_fp32(out: Factorisation) -> Factorisation:
    """The forward pass's outputs in fp32 (they are bf16 under bf16 autocast)."""
    if out.scores.dtype == torch.float32 and out.reconstruction.dtype == torch.float32:
        return out
    return Factorisation(out.reconstruction.float(), out.scores.float(), out.kl.float())


def _rng_state(generator: torch.Generator) -> dict:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state(),
             "sampler": generator.get_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict, generator: torch.Generator) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    generator.set_state(state["sampler"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


class Trainer:
    """Trains a :class:`GesturalAutoEncoder` on normalised utterances.

    Parameters
    ----------
    config : TrainConfig
    train_utterances, test_utterances : lists of arrays (12, T_i) in [0, 1]
    checkpoint_path : path or None
        Where the per-epoch checkpoint lives; an existing one with the same fingerprint is
        resumed.
    log_dir : path or None
        TensorBoard run directory (``runs/<run name>``); None disables logging.
    """

    def __init__(self, config: TrainConfig, train_utterances, test_utterances, *,
                 checkpoint_path: str | Path | None = None, log_dir: str | Path | None = None,
                 progress: bool = True):
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

        self._seed_everything(config.seed)
        self.generator = torch.Generator(device=self.device).manual_seed(config.seed)
        self.train_store = UtteranceStore(train_utterances, self.device)
        self.test_store = UtteranceStore(test_utterances, self.device)
        self.sampler = CropSampler(self.train_store, config.segment_len, self.generator)
        frames_per_step = config.batch_size * config.segment_len
        self.steps_per_epoch = max(1, math.ceil(self.train_store.total_frames / frames_per_step))

        self.model = GesturalAutoEncoder(config.model_config()).to(self.device)
        self._initialise(train_utterances)
        self._compiled_forward = self._compile() if config.compile else None
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
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
        self._resume()

    @staticmethod
    def _seed_everything(seed: int) -> None:
        random.seed(seed)
        np.random.seed(seed)
        torch.manual_seed(seed)

    def _initialise(self, train_utterances) -> None:
        config = self.config
        decoder = self.model.decoder
        decoder.init_baseline_(torch.from_numpy(resting_posture(train_utterances)).to(self.device))
        if config.init == "kmeans":
            kernels = kmeans_kernels(train_utterances, config.num_gestures, config.win_size, config.seed)
            with torch.no_grad():
                decoder.kernels_raw.copy_(torch.from_numpy(kernels))
        elif config.init != "random":
            load_pretrained_(self.model, config.init)

    # ----------------------------------------------------------------- checkpoints

    def _resume(self) -> None:
        path = self.checkpoint_path
        if path is None or not path.exists():
            return
        try:
            state = torch.load(path, map_location=self.device, weights_only=False)
        except Exception as error:  # a checkpoint cut short by a kill: start over
            print(f"checkpoint {path} is unreadable ({error}); starting fresh")
            return
        if state.get("fingerprint") != self.config.fingerprint():
            print(f"checkpoint {path} was written with other settings; starting fresh")
            return
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.history = [EpochRecord(**row) for row in state["history"]]
        self.start_epoch = state["epoch"]
        self.trained_frames, self.train_seconds = state.get("trained_frames", 0), state.get("train_seconds", 0.0)
        _set_rng_state(state["rng"], self.generator)
        print(f"resuming from {path} after epoch {self.start_epoch}")

    def _save_checkpoint(self, epoch: int) -> None:
        if self.checkpoint_path is None:
            return
        state = {
            "fingerprint": self.config.fingerprint(),
            "epoch": epoch,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "history": [dataclasses.asdict(row) for row in self.history],
            "trained_frames": self.trained_frames,
            "train_seconds": self.train_seconds,
            "rng": _rng_state(self.generator),
        }
        with atomic_path(self.checkpoint_path) as tmp:
            torch.save(state, tmp)

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
            return out.reconstruction, out.scores, out.kl

        try:
            return torch.compile(forward)
        except Exception as error:  # e.g. a Python version this torch cannot compile for
            self._compile_failed(error)
            return None

    @staticmethod
    def _compile_failed(error: BaseException) -> None:
        warnings.warn(f"params.yaml train.compile: torch.compile failed ({type(error).__name__}: "
                      f"{str(error).strip()[:300]}); training without compile", RuntimeWarning, stacklevel=3)

    def _forward(self, x: torch.Tensor, mask: torch.Tensor) -> Factorisation:
        """The training forward pass: compiled when ``compile: true`` and it works, else eager."""
        if self._compiled_forward is not None:
            try:
                return Factorisation(*self._compiled_forward(x, mask))
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
        # The L1 weight follows the learning-rate schedule: strong while gestures are being
        # chosen, fading at the end so that it does not shrink the amplitudes it leaves.
        l1_weight = config.l1_weight * self.optimizer.param_groups[0]["lr"] / config.lr
        sparsity = losses.l1_scores(out.scores, mask) * l1_weight
        if config.sparse:
            across_gestures, across_time = losses.score_hoyer(out.scores, mask)
            sparsity = sparsity + config.hoyer_gestures_weight * (config.hoyer_gestures_target - across_gestures).square()
            sparsity = sparsity + config.hoyer_time_weight * (config.hoyer_time_target - across_time).square()
        total = reconstruction + sparsity + config.beta * out.kl
        return total, reconstruction, sparsity, out

    def step(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """One optimisation step on a batch; returns (loss, reconstruction, sparsity, kl), detached."""
        loss, reconstruction, sparsity, out = self._loss(x, mask)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if self.config.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.config.grad_clip)
        self.optimizer.step()
        self.model.decoder.project_()
        self.scheduler.step()
        return torch.stack([loss, reconstruction, sparsity, out.kl]).detach()

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
            across_gestures, across_time = losses.score_hoyer(out.scores, mask)
            hoyer_g += float(across_gestures) * real
            hoyer_t += float(across_time) * real
        self.model.train()
        in_use = score_sparsity(score_mass[:, None], kernels=self.model.decoder.gesture_kernels)["gestures_in_use"]
        return {"test_reconstruction": error_sum / frames, "active_scores": active / total,
                "gestures_in_use": in_use, "hoyer_across_gestures": hoyer_g / frames,
                "hoyer_across_time": hoyer_t / frames}

    # ----------------------------------------------------------------------- loop

    def fit(self) -> TrainResult:
        config = self.config
        writer = self._writer()
        started = time.perf_counter() - self.train_seconds
        self.model.train()
        for epoch in range(self.start_epoch, config.epochs):
            epoch_start = time.perf_counter()
            sums = torch.zeros(4, device=self.device)  # loss, reconstruction, sparsity, kl
            frames_seen = torch.zeros((), dtype=torch.long, device=self.device)
            bar = tqdm(range(self.steps_per_epoch), desc=f"epoch {epoch + 1}/{config.epochs}", leave=False,
                       disable=not self.progress, unit="step")
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
            print(f"epoch {record.epoch:3d}/{config.epochs}  train {record.train_loss:.5f}  "
                  f"held-out {config.loss} {record.test_reconstruction:.5f}  active {record.active_scores:.4f}  "
                  f"in use {record.gestures_in_use:.2f}  {record.seconds:.1f}s", flush=True)
            self._log_epoch(writer, record)
            self.train_seconds = time.perf_counter() - started
            self._save_checkpoint(epoch + 1)
        seconds = self.train_seconds = time.perf_counter() - started
        if writer is not None:
            self._log_hparams(writer)
            writer.close()
        return TrainResult(model=self.model, history=self.history, seconds=seconds,
                           frames_per_second=self.trained_frames / seconds if self.trained_frames else 0.0,
                           resumed_from_epoch=self.start_epoch, device=str(self.device),
                           train_frames=self.train_store.total_frames)

    # ---------------------------------------------------------------- TensorBoard

    def _writer(self):
        if self.log_dir is None:
            return None
        from torch.utils.tensorboard import SummaryWriter

        return SummaryWriter(log_dir=str(self.log_dir), purge_step=self.start_epoch + 1)

    def _log_epoch(self, writer, record: EpochRecord) -> None:
        if writer is None:
            return
        step = record.epoch
        writer.add_scalar("loss/train_total", record.train_loss, step)
        writer.add_scalar("loss/train_reconstruction", record.train_reconstruction, step)
        writer.add_scalar("loss/test_reconstruction", record.test_reconstruction, step)
        writer.add_scalar("loss/sparsity_penalty", record.sparsity_penalty, step)
        writer.add_scalar("loss/kl", record.kl, step)
        writer.add_scalar("sparsity/hoyer_across_gestures", record.hoyer_across_gestures, step)
        writer.add_scalar("sparsity/hoyer_across_time", record.hoyer_across_time, step)
        writer.add_scalar("sparsity/active_scores", record.active_scores, step)
        writer.add_scalar("sparsity/gestures_in_use", record.gestures_in_use, step)
        writer.add_scalar("lr", record.lr, step)
        if step % self.config.figure_every == 0 or step == self.config.epochs:
            from . import plots

            _, x, mask = next(iter(self.test_store.batches(1)))
            with torch.no_grad():
                self.model.eval()
                out = self.model(x, mask)
                self.model.train()
            writer.add_figure("reconstruction", plots.reconstruction_figure(
                x[0].cpu().numpy(), out.reconstruction[0].cpu().numpy()), step)
            writer.add_figure("gestures", plots.gesture_traces_figure(
                self.model.decoder.gesture_kernels.detach().cpu().numpy(), out.scores[0].cpu().numpy()), step)

    def _log_hparams(self, writer) -> None:
        hparams = {k: (v if isinstance(v, (int, float, str, bool)) else str(v))
                   for k, v in dataclasses.asdict(self.config).items()}
        last = self.history[-1]
        writer.add_hparams(hparams, {"hparam/test_reconstruction": last.test_reconstruction,
                                     "hparam/gestures_in_use": last.gestures_in_use}, run_name=".")


def default_run_name(config: TrainConfig) -> str:
    """TensorBoard run name: the DVC experiment's name when run by ``dvc exp run``."""
    if config.run_name:
        return config.run_name
    experiment = os.environ.get("DVC_EXP_NAME")
    if experiment:
        return experiment
    return f"{config.model}-K{config.num_gestures}-w{config.win_size}-{time.strftime('%Y%m%d-%H%M%S')}"


def save_model(path: str | Path, model: GesturalAutoEncoder, config: TrainConfig, normalization: dict) -> None:
    """Write ``model.pt``: weights plus what is needed to use it alone."""
    payload = {
        "format": "gestural-model/1",
        "model_config": dataclasses.asdict(model.config),
        "train_config": dataclasses.asdict(config),
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "normalization": normalization,
    }
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)


def load_model(path: str | Path, device: str | torch.device = "cpu") -> tuple[GesturalAutoEncoder, dict]:
    """Rebuild a trained model from ``model.pt``; returns (model in eval mode, payload)."""
    from .initialize import load_model_file

    payload = load_model_file(path)
    model = GesturalAutoEncoder(ModelConfig(**payload["model_config"]))
    model.load_state_dict(payload["state_dict"])
    return model.to(device).eval(), payload


def write_training_outputs(result: TrainResult, config: TrainConfig, normalization: dict, model_dir: Path,
                           metrics_path: Path, curve_path: Path) -> None:
    """model.pt, gestures.npy (float32, K x 12 x win_size), train metrics and the learning curve."""
    import csv
    import io

    from .io import save_npy, write_json, write_text

    model_dir = Path(model_dir)
    save_model(model_dir / "model.pt", result.model, config, normalization)
    kernels = result.model.decoder.gesture_kernels.detach().cpu().numpy().astype(np.float32)
    save_npy(model_dir / "gestures.npy", kernels)
    last = result.history[-1]
    write_json(metrics_path, {
        "epochs": len(result.history),
        "resumed_from_epoch": result.resumed_from_epoch,
        "train_loss": last.train_loss,
        "train_reconstruction": last.train_reconstruction,
        "test_reconstruction": last.test_reconstruction,
        "sparsity_penalty": last.sparsity_penalty,
        "kl": last.kl,
        "hoyer_across_gestures": last.hoyer_across_gestures,
        "hoyer_across_time": last.hoyer_across_time,
        "active_scores": last.active_scores,
        "gestures_in_use": last.gestures_in_use,
        # Time and speed of this invocation (after a resume: of the epochs it ran).
        "seconds": result.seconds,
        "frames_per_second": result.frames_per_second,
        "train_frames": result.train_frames,
        "device": result.device,
    })
    buffer = io.StringIO()
    columns = [f.name for f in dataclasses.fields(EpochRecord)]
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    for row in result.history:
        writer.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in dataclasses.asdict(row).items()})
    write_text(curve_path, buffer.getvalue())
