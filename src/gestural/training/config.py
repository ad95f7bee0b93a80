"""The train stage's settings: :class:`TrainConfig`, read from params.yaml and validated.

TrainConfig gathers the top-level keys (``segment_len``, ``num_gestures``, ...) and the
``train:`` section. Its checks go through :class:`gestural.core.params.Section`, like every other
section's, so a wrong value stops the run naming the key, e.g.
``params.yaml train.lr: must be a finite number > 0.0 (got inf)``.
"""

from __future__ import annotations

import dataclasses
import math
import re
from dataclasses import dataclass

from gestural.core.params import ParamsError, Section
from gestural.core.units import NUM_CHANNELS
from gestural.model.network import KERNEL_KINDS, ModelConfig
from gestural.model.optimizers import OPTIMIZERS

# The top-level keys of params.yaml that the train stage reads (the rest is under ``train:``).
TOP_LEVEL = ("segment_len", "win_size", "num_gestures", "sparse", "batch_size", "model", "loss",
             "epochs", "seed", "device")
# fp32: IEEE single precision everywhere (on CUDA, TF32 is switched off, cuDNN's default-on
# TF32 convolutions included); tf32: fp32 tensors, TF32 matmuls and convolutions on CUDA
# (no effect on the CPU); bf16: the forward pass under bfloat16 autocast, the loss, weights,
# gradients and optimizer state in fp32 (runs on the CPU too, but is usually slower there).
PRECISIONS = ("fp32", "tf32", "bf16")
# Sizes past these are typos (num_gestures: 100000 would ask for gigabytes of scores per batch).
MAX_GESTURES, MAX_WIN_SIZE, MAX_SEGMENT_LEN = 4096, 1000, 100_000
_RUN_NAME = re.compile(r"[A-Za-z0-9._-]+")
# Knobs that change how a run is watched or scheduled, never its result: they are left out
# of the checkpoint fingerprint (and are not stage params in dvc.yaml).
RUN_ONLY = ("run_name", "figure_every", "eval_batch_size", "threads")
# Knobs that change where or how fast a run goes and its numbers only at rounding level: stage
# params (a result is reproduced only with them), but no setting that model selection compares.
EXECUTION_ONLY = ("device", "compile")


@dataclass
class TrainConfig:
    """Everything the train stage reads from params.yaml (top-level keys and ``train:``).

    No field has a default: params.yaml is where the defaults live (``from_params``).
    """

    segment_len: int
    win_size: int
    num_gestures: int
    sparse: bool
    batch_size: int
    model: str
    loss: str
    epochs: int
    seed: int
    device: str
    steps_per_epoch: int
    optimizer: str
    lr: float
    muon_lr: float
    response_lr: float | None
    weight_decay: float
    warmup_fraction: float
    grad_clip: float
    hidden: int
    peak_window: int
    init: str
    l1_weight: float
    kernels: str
    response_frames: int
    release_response: bool
    smoothness_weight: float
    group_weight: float
    kernel_sensor_weight: float
    background_weight: float
    background_threshold: float
    background_reach: int
    hoyer_gestures_weight: float
    hoyer_gestures_target: float
    hoyer_time_weight: float
    hoyer_time_target: float
    beta: float
    kl_warmup_fraction: float
    sparse_warmup_fraction: float
    free_bits: float
    prior_mean: float
    prior_std: float
    movement_noise: float
    figure_every: int
    eval_batch_size: int
    threads: int
    precision: str
    compile: bool
    run_name: str | None

    @classmethod
    def from_params(cls, params: dict) -> TrainConfig:
        """The top-level keys and the ``train:`` section; every key must be there (params.yaml
        is where the defaults live) and no other."""
        missing = [key for key in TOP_LEVEL if key not in params]
        if missing:
            raise ParamsError(f"params.yaml: missing key(s) {missing}")
        section = params.get("train")
        if not isinstance(section, dict):
            raise ParamsError(f"params.yaml train: must be a mapping of training settings (got {section!r})")
        known = {f.name for f in dataclasses.fields(cls)} - set(TOP_LEVEL)
        unknown = sorted(set(section) - known)
        if unknown:
            raise ParamsError(f"params.yaml train: unknown key(s) {unknown}; known: {sorted(known)}")
        absent = sorted(known - set(section))
        if absent:
            raise ParamsError(f"params.yaml train: missing key(s) {absent}")
        config = cls(**{key: params[key] for key in TOP_LEVEL}, **section)
        config.validate()
        return config

    def validate(self) -> None:
        """Refuse impossible settings before any work, naming the param (types included:
        YAML's ``true`` is no integer, ``1.5`` no count, ``.inf`` no learning rate).

        A method rather than part of :meth:`from_params` because the bench and the tests
        build a TrainConfig directly; the values are checked as params.yaml would hold them.

        Raises
        ------
        ParamsError
            Naming the first invalid key, e.g. ``params.yaml num_gestures: must be an integer
            >= 1 and <= 4096 (got 100000)`` or ``params.yaml train.beta: ...``.
        """
        values = {field.name: getattr(self, field.name) for field in dataclasses.fields(self)}
        top = Section.top_level({key: values.pop(key) for key in TOP_LEVEL})
        train = Section({"train": values}, "train")

        top.bounded_integer("num_gestures", 1, MAX_GESTURES)
        top.bounded_integer("win_size", 1, MAX_WIN_SIZE)
        top.bounded_integer("segment_len", 1, MAX_SEGMENT_LEN)
        if self.win_size > self.segment_len:
            raise top.error("win_size", f"must be <= segment_len ({self.segment_len})")
        top.bounded_integer("batch_size", 1, 65536)
        top.bounded_integer("epochs", 1)
        train.bounded_integer("steps_per_epoch", 1)
        top.bounded_integer("seed", 0, 2**63 - 1)
        top.boolean("sparse")
        top.choice("model", ("ae", "vae"), separator=", ")
        top.choice("loss", ("mse", "l1"), separator=", ")
        top.device("device")
        train.choice("optimizer", OPTIMIZERS, separator=", ")
        train.finite_number("lr", 0.0, open_low=True)
        train.finite_number("muon_lr", 0.0, open_low=True)
        if self.response_lr is not None:
            train.finite_number("response_lr", 0.0, open_low=True)
        for name in ("weight_decay", "grad_clip", "l1_weight", "smoothness_weight", "group_weight",
                     "kernel_sensor_weight", "background_weight", "hoyer_gestures_weight", "hoyer_time_weight", "beta"):
            train.finite_number(name, 0.0)
        train.finite_number("warmup_fraction", 0.0)
        train.finite_number("kl_warmup_fraction", 0.0, 1.0)
        train.finite_number("sparse_warmup_fraction", 0.0, 1.0)
        train.finite_number("background_threshold", 0.0, 1.0, open_low=True)
        train.bounded_integer("background_reach", 0)
        train.finite_number("free_bits", 0.0)
        if self.warmup_fraction >= 1:
            raise train.error("warmup_fraction", "must be < 1")
        for name in ("hoyer_gestures_target", "hoyer_time_target"):
            train.finite_number(name, 0.0, 1.0)
        train.finite_number("prior_mean", -math.inf)
        train.finite_number("prior_std", 0.0, open_low=True)
        train.finite_number("movement_noise", 0.0, open_low=True)
        if not isinstance(self.init, str) or not (self.init in ("random", "kmeans") or self.init.endswith(".pt")):
            raise train.error("init", "must be random, kmeans or the path of a trained model.pt")
        train.bounded_integer("hidden", 1, 8192)
        train.bounded_integer("peak_window", 0)
        train.bounded_integer("response_frames", 0, 1000)
        train.bounded_integer("figure_every", 1)
        train.bounded_integer("eval_batch_size", 1)
        train.bounded_integer("threads", 0, 1024)
        train.choice("precision", PRECISIONS, separator=", ")
        train.choice("kernels", KERNEL_KINDS, separator=", ")
        train.boolean("compile")
        train.boolean("release_response")
        if self.run_name is not None and not (isinstance(self.run_name, str) and _RUN_NAME.fullmatch(self.run_name)):
            raise train.error("run_name", "must be null or a name of letters, digits, '.', '_' and '-'")

    def model_config(self) -> ModelConfig:
        return ModelConfig(num_gestures=self.num_gestures, win_size=self.win_size, num_channels=NUM_CHANNELS,
                           hidden=self.hidden,
                           model=self.model, peak_window=self.peak_window, prior_mean=self.prior_mean,
                           prior_std=self.prior_std, movement_noise=self.movement_noise,
                           kernels=self.kernels, response_frames=self.response_frames,
                           release_response=self.release_response)

    def settings_fingerprint(self) -> dict:
        """The settings that change the result (run-only knobs left out)."""
        return {k: v for k, v in dataclasses.asdict(self).items() if k not in RUN_ONLY}
