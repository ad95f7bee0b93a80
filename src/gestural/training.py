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
import io
import json
import logging
import math
import os
import random
import re
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from . import losses
from .batches import CropSampler, UtteranceStore
from .devices import DEVICE_CHOICES, is_device_name, resolve_device
from .initialize import kmeans_kernels, resting_posture
from .io import save_torch
from .metrics import score_sparsity
from .params import ParamsError
from .model import KERNEL_KINDS, Factorisation, GesturalAutoEncoder, ModelConfig
from .model_io import ModelFileError, load_weights_, save_model

log = logging.getLogger(__name__)

_TOP_LEVEL = ("segment_len", "win_size", "num_gestures", "sparse", "batch_size", "model", "loss",
              "epochs", "seed", "device")
# fp32: IEEE single precision everywhere (on CUDA, TF32 is switched off, cuDNN's default-on
# TF32 convolutions included); tf32: fp32 tensors, TF32 matmuls and convolutions on CUDA
# (no effect on the CPU); bf16: the forward pass under bfloat16 autocast, the loss, weights,
# gradients and optimiser state in fp32 (runs on the CPU too, but is usually slower there).
PRECISIONS = ("fp32", "tf32", "bf16")
# Sizes past these are typos (num_gestures: 100000 would ask for gigabytes of scores per batch).
MAX_GESTURES, MAX_WIN_SIZE, MAX_SEGMENT_LEN = 4096, 1000, 100_000
_RUN_NAME = re.compile(r"[A-Za-z0-9._-]+")
# Knobs that change how a run is watched or scheduled, never its result: they are left out
# of the checkpoint fingerprint (and are not stage params in dvc.yaml).
HPARAM_METRICS = ("hparam/test_reconstruction", "hparam/gestures_in_use")
RUN_ONLY = ("run_name", "figure_every", "eval_batch_size", "threads")


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
    steps_per_epoch: int = 40
    lr: float = 5e-3
    weight_decay: float = 1e-4
    warmup_fraction: float = 0.05
    grad_clip: float = 1.0
    hidden: int = 128
    peak_window: int = 5
    init: str = "kmeans"
    l1_weight: float = 0.03
    kernels: str = "nonnegative"
    response_frames: int = 0
    smoothness_weight: float = 0.0
    group_weight: float = 0.0
    hoyer_gestures_weight: float = 0.1
    hoyer_gestures_target: float = 0.9
    hoyer_time_weight: float = 0.1
    hoyer_time_target: float = 0.95
    beta: float = 1.0
    kl_warmup_fraction: float = 0.3
    hoyer_warmup_fraction: float = 0.5
    free_bits: float = 0.0
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
        """The top-level keys and the ``train:`` section; every key must be there (params.yaml
        is where the defaults live) and no other."""
        missing = [key for key in _TOP_LEVEL if key not in params]
        if missing:
            raise ParamsError(f"params.yaml: missing key(s) {missing}")
        section = params.get("train")
        if not isinstance(section, dict):
            raise ParamsError(f"params.yaml train: must be a mapping of training settings (got {section!r})")
        known = {f.name for f in dataclasses.fields(cls)} - set(_TOP_LEVEL)
        unknown = sorted(set(section) - known)
        if unknown:
            raise ParamsError(f"params.yaml train: unknown key(s) {unknown}; known: {sorted(known)}")
        absent = sorted(known - set(section))
        if absent:
            raise ParamsError(f"params.yaml train: missing key(s) {absent}")
        config = cls(**{key: params[key] for key in _TOP_LEVEL}, **section)
        config.validate()
        return config

    def validate(self) -> None:
        """Refuse impossible settings before any work, naming the param (types included:
        YAML's ``true`` is no integer, ``1.5`` no count, ``.inf`` no learning rate)."""

        def fail(name: str, what: str) -> None:
            where = name if name in _TOP_LEVEL else f"train.{name}"
            raise ParamsError(f"params.yaml {where}: {what} (got {getattr(self, name)!r})")

        def integer(name: str, low: int, high: int | None = None) -> None:
            value = getattr(self, name)
            if type(value) is not int or value < low or (high is not None and value > high):
                fail(name, f"must be an integer >= {low}" + (f" and <= {high}" if high is not None else ""))

        def number(name: str, low: float, high: float = math.inf, *, open_low: bool = False) -> None:
            value = getattr(self, name)
            ok = (isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
                  and (value > low if open_low else value >= low) and value <= high)
            if not ok:
                bound = f"> {low}" if open_low else f">= {low}"
                fail(name, f"must be a finite number {bound}" + (f" and <= {high}" if high != math.inf else ""))

        def choice(name: str, choices: tuple) -> None:
            if getattr(self, name) not in choices:
                fail(name, "must be one of " + ", ".join(map(str, choices)))

        def boolean(name: str) -> None:
            if not isinstance(getattr(self, name), bool):
                fail(name, "must be true or false")

        integer("num_gestures", 1, MAX_GESTURES)
        integer("win_size", 1, MAX_WIN_SIZE)
        integer("segment_len", 1, MAX_SEGMENT_LEN)
        if self.win_size > self.segment_len:
            fail("win_size", f"must be <= segment_len ({self.segment_len})")
        integer("batch_size", 1, 65536)
        integer("epochs", 1)
        integer("steps_per_epoch", 1)
        integer("seed", 0, 2**63 - 1)
        boolean("sparse")
        choice("model", ("ae", "vae"))
        choice("loss", ("mse", "l1"))
        if not is_device_name(self.device):
            fail("device", f"must be {DEVICE_CHOICES}")
        number("lr", 0.0, open_low=True)
        for name in ("weight_decay", "grad_clip", "l1_weight", "smoothness_weight", "group_weight",
                     "hoyer_gestures_weight", "hoyer_time_weight", "beta"):
            number(name, 0.0)
        number("warmup_fraction", 0.0)
        number("kl_warmup_fraction", 0.0, 1.0)
        number("hoyer_warmup_fraction", 0.0, 1.0)
        number("free_bits", 0.0)
        if self.warmup_fraction >= 1:
            fail("warmup_fraction", "must be < 1")
        for name in ("hoyer_gestures_target", "hoyer_time_target"):
            number(name, 0.0, 1.0)
        number("prior_mean", -math.inf)
        number("prior_std", 0.0, open_low=True)
        if not isinstance(self.init, str) or not (self.init in ("random", "kmeans") or self.init.endswith(".pt")):
            fail("init", "must be random, kmeans or the path of a trained model.pt")
        integer("hidden", 1, 8192)
        integer("peak_window", 0)
        integer("response_frames", 0, 1000)
        integer("figure_every", 1)
        integer("eval_batch_size", 1)
        integer("threads", 0, 1024)
        choice("precision", PRECISIONS)
        choice("kernels", KERNEL_KINDS)
        boolean("compile")
        if self.run_name is not None and not (isinstance(self.run_name, str) and _RUN_NAME.fullmatch(self.run_name)):
            fail("run_name", "must be null or a name of letters, digits, '.', '_' and '-'")

    def model_config(self) -> ModelConfig:
        return ModelConfig(num_gestures=self.num_gestures, win_size=self.win_size, hidden=self.hidden,
                           model=self.model, peak_window=self.peak_window, prior_mean=self.prior_mean,
                           prior_std=self.prior_std, kernels=self.kernels, response_frames=self.response_frames)

    def settings_fingerprint(self) -> dict:
        """The settings that change the result (run-only knobs left out)."""
        return {k: v for k, v in dataclasses.asdict(self).items() if k not in RUN_ONLY}


def _hash_file(path: Path, digest) -> None:
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)


def code_version() -> str:
    """Hash of the package's source: a checkpoint from other code is not resumed."""
    digest = hashlib.sha256()
    for path in sorted(Path(__file__).resolve().parent.glob("*.py")):
        digest.update(path.name.encode())
        _hash_file(path, digest)
    return digest.hexdigest()[:16]


def run_fingerprint(config: TrainConfig, train_utterances, test_utterances) -> str:
    """What a checkpoint must match to be resumed: settings, training data, code, init model."""
    digest = hashlib.sha256(json.dumps(config.settings_fingerprint(), sort_keys=True).encode())
    for split in (train_utterances, test_utterances):
        digest.update(str(len(split)).encode())
        for utterance in split:
            array = np.ascontiguousarray(utterance, dtype=np.float32)
            digest.update(str(array.shape).encode())
            digest.update(array.tobytes())
    digest.update(code_version().encode())
    if config.init not in ("random", "kmeans") and Path(config.init).is_file():
        _hash_file(Path(config.init), digest)
    return digest.hexdigest()[:16]


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
    return Factorisation(out.reconstruction.float(), out.scores.float(), out.kl.float(),
                         None if out.score_std is None else out.score_std.float())


def _rng_state(generator: torch.Generator) -> dict:
    # numpy's state as plain values and a tensor, so that checkpoints load with weights_only.
    name, keys, position, has_gauss, cached = np.random.get_state()
    state = {"python": random.getstate(), "numpy": [name, torch.from_numpy(keys.astype(np.int64)), int(position),
                                                    int(has_gauss), float(cached)],
             "torch": torch.get_rng_state(), "sampler": generator.get_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict, generator: torch.Generator) -> None:
    random.setstate(state["python"])
    name, keys, position, has_gauss, cached = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), position, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    generator.set_state(state["sampler"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


class TrainingDataError(ValueError):
    """The normalised corpus cannot train a model (too short, constant, not finite)."""


def _check_training_data(train_utterances, test_utterances, win_size: int) -> None:
    """Refuse data that cannot train a model, with one line saying why."""
    if not train_utterances:
        raise TrainingDataError("training data: no training utterances")
    if not test_utterances:
        raise TrainingDataError("training data: no held-out utterances (data.test_fraction too small?)")
    longest = max(u.shape[-1] for u in train_utterances)
    if longest < win_size:
        raise TrainingDataError(f"training data: every training utterance is shorter than win_size ({longest} < {win_size} "
                         "frames); lower win_size")
    if not any(np.ptp(u, axis=-1).max() > 0 for u in train_utterances):
        raise TrainingDataError("training data: every channel of every training utterance is constant; nothing to learn")
    if not all(np.isfinite(u).all() for u in train_utterances):
        raise TrainingDataError("training data: holds NaN or infinite values (rerun `dvc repro normalize`)")


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
    progress : bool
        A progress bar per epoch when stderr is a terminal.
    extra_hparams : dict, optional
        More hparams for TensorBoard (the data params), logged beside the training config.
    """

    def __init__(self, config: TrainConfig, train_utterances, test_utterances, *,
                 checkpoint_path: str | Path | None = None, log_dir: str | Path | None = None,
                 progress: bool = True, extra_hparams: dict | None = None):
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
        """Seed, then make the sampler, the initialised model, the optimiser and the schedule."""
        config = self.config
        self._seed_everything(config.seed)
        self.generator = torch.Generator(device=self.device).manual_seed(config.seed)
        self.sampler = CropSampler(self.train_store, config.segment_len, self.generator)
        self.model = GesturalAutoEncoder(config.model_config()).to(self.device)
        self._initialise(self._train_utterances)
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

    @staticmethod
    def _seed_everything(seed: int) -> None:
        random.seed(seed)
        np.random.seed(seed)
        torch.manual_seed(seed)

    def _initialise(self, train_utterances) -> None:
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
        path = self.checkpoint_path
        if path is None or not path.exists():
            return
        try:
            state = torch.load(path, map_location=self.device, weights_only=True)
        except Exception as error:  # cut short by a kill, or not a checkpoint at all
            log.info(f"checkpoint {path} is unreadable ({str(error).splitlines()[0][:200]}); starting fresh")
            return
        if not isinstance(state, dict) or state.get("fingerprint") != self.fingerprint:
            log.info(f"checkpoint {path} was written for other settings, data or code; starting fresh")
            return
        try:
            self.model.load_state_dict(state["model"])
            self.optimizer.load_state_dict(state["optimizer"])
            self.scheduler.load_state_dict(state["scheduler"])
            history = [EpochRecord(**row) for row in state["history"]]
            _set_rng_state(state["rng"], self.generator)
        except (KeyError, TypeError, ValueError, RuntimeError) as error:
            log.info(f"checkpoint {path} does not fit this model ({str(error).splitlines()[0][:200]}); starting fresh")
            self._build()  # a partly loaded state: start again from the seed
            return
        self.history = history
        self.start_epoch = state["epoch"]
        self.trained_frames, self.train_seconds = state.get("trained_frames", 0), state.get("train_seconds", 0.0)
        log.info(f"resuming from {path} after epoch {self.start_epoch}")

    def _save_checkpoint(self, epoch: int) -> None:
        if self.checkpoint_path is None:
            return
        state = {
            "fingerprint": self.fingerprint,
            "epoch": epoch,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "history": [dataclasses.asdict(row) for row in self.history],
            "trained_frames": self.trained_frames,
            "train_seconds": self.train_seconds,
            "rng": _rng_state(self.generator),
        }
        save_torch(self.checkpoint_path, state)

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
        sparsity = self._score_penalties(out.scores, mask)
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
        """L1 (AE only: the VAE's sparsity is its prior), smoothness, group sparsity, Hoyer."""
        config = self.config
        penalty = scores.new_zeros(())
        if not self.model.variational:
            # The L1 weight follows the learning-rate schedule: strong while gestures are being
            # chosen, fading at the end so that it does not shrink the amplitudes it leaves.
            penalty = losses.l1_scores(scores, mask) * config.l1_weight * self.optimizer.param_groups[0]["lr"] / config.lr
        if config.smoothness_weight:
            penalty = penalty + config.smoothness_weight * losses.score_total_variation(scores, mask)
        if config.group_weight:
            penalty = penalty + config.group_weight * losses.score_group_norm(scores, mask)
        if config.sparse:
            # Ramped in like the KL: scale-free penalties have gradients of 1/||H||, which on
            # the small scores of an untrained model drown the reconstruction and switch
            # everything off; once the gestures explain the data they only sharpen them.
            across_gestures, across_time, active = losses.score_hoyer(scores, mask)
            ramp = self._ramp(config.hoyer_warmup_fraction)
            penalty = penalty + ramp * config.hoyer_gestures_weight * losses.hoyer_shortfall(
                across_gestures, config.hoyer_gestures_target)
            # Per gesture in use: each one is sharpened, none is switched off to lift an average.
            penalty = penalty + ramp * config.hoyer_time_weight * losses.hoyer_shortfall(
                across_time, config.hoyer_time_target, active)
        return penalty

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
        writer = self._writer()
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
            self._log_epoch(writer, record)
            self.train_seconds = time.perf_counter() - started
            self._save_checkpoint(epoch + 1)
        seconds = self.train_seconds = time.perf_counter() - started
        if writer is not None:
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

        writer = SummaryWriter(log_dir=str(self.log_dir), purge_step=self.start_epoch + 1)
        self._log_hparams(writer)
        return writer

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
        writer.add_scalar("hparam/test_reconstruction", record.test_reconstruction, step)
        writer.add_scalar("hparam/gestures_in_use", record.gestures_in_use, step)
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
        """Declare the run's hparams at its start (with the data params it was given), so that
        TensorBoard's HParams tab lists a run while it trains; the declared metrics are the
        ``hparam/*`` scalars logged every epoch."""
        from torch.utils.tensorboard.summary import hparams

        values = {**dataclasses.asdict(self.config), **self.extra_hparams}
        values = {k: (v if isinstance(v, (int, float, str, bool)) else str(v)) for k, v in values.items()}
        experiment, start, end = hparams(values, {name: 0.0 for name in HPARAM_METRICS})
        file_writer = writer._get_file_writer()
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


def write_training_outputs(result: TrainResult, config: TrainConfig, normalization: dict, model_dir: Path,
                           metrics_path: Path, curve_path: Path, timing_path: Path) -> None:
    """model.pt, gestures.npy (float32, K x 12 x (win_size + response_frames - 1 or win_size)), metrics, timing, curve.

    The metrics file keeps the figures of merit only, so that ``dvc metrics diff`` and
    ``dvc exp show`` compare results; time and speed, which differ on every run, go to
    ``timing_path``.
    """
    import csv

    from .io import save_npy, write_json, write_text

    model_dir = Path(model_dir)
    save_model(model_dir / "model.pt", result.model, dataclasses.asdict(config), normalization)
    # What each gesture does in the data: its kernel, convolved with its response if it has one.
    kernels = result.model.decoder.effective_kernels.detach().cpu().numpy().astype(np.float32)
    save_npy(model_dir / "gestures.npy", kernels)
    last = result.history[-1]
    write_json(metrics_path, {  # the figures of merit; the whole curve is in curve_path
        "test_reconstruction": last.test_reconstruction,
        "gestures_in_use": last.gestures_in_use,
    })
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
    buffer = io.StringIO()
    columns = [f.name for f in dataclasses.fields(EpochRecord)]
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    for row in result.history:
        writer.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in dataclasses.asdict(row).items()})
    write_text(curve_path, buffer.getvalue())
