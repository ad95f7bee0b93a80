"""Speed: training steps (plain and fast path, batch sizes, K, precision, compile, CPU threads),
held-out evaluation, and the classical baseline's fit; FLOPs counted analytically."""

from __future__ import annotations

import contextlib
import dataclasses
import time
from collections.abc import Sequence

import numpy as np
import torch

from bench import say
from bench.machine import load_average, peak_flops
from gestural.classical.cnmf import ConvNMF
from gestural.core.devices import synchronize
from gestural.core.units import NUM_CHANNELS
from gestural.data.batches import UtteranceStore
from gestural.evaluation.classical import BaselineParams, fit_classical
from gestural.evaluation.factorizations import neural_factorization
from gestural.model.network import GesturalAutoEncoder
from gestural.training.config import TrainConfig
from gestural.training.trainer import Trainer


def flops_per_frame(config: TrainConfig, channels: int = NUM_CHANNELS) -> dict:
    """Convolution FLOPs per frame of one training step (forward + backward = 3 x forward).

    Encoder: conv (C+1 -> hidden, 2L+1 taps), conv (hidden -> hidden, 5 taps), 1x1 conv
    (hidden -> K, or 2K for the VAE); decoder: with ``response_frames`` R > 0, each score
    row filtered by its gesture's response (depthwise causal conv, K x R), then the
    transposed conv (K -> C, L taps). One multiply-add = 2 FLOPs. Element-wise work (GELU,
    masks, peak picking, the loss) and the per-step work that does not scale with frames
    (the responses themselves, kernel norms) are not counted: they are small in FLOPs.
    """
    outputs = config.num_gestures * (2 if config.model == "vae" else 1)
    macs = ((channels + 1) * config.hidden * (2 * config.win_size + 1) + config.hidden * config.hidden * 5
            + config.hidden * outputs + config.num_gestures * config.response_frames
            + config.num_gestures * channels * config.win_size)
    return {"forward": 2 * macs, "train_step": 6 * macs}


# -------------------------------------------------------------------------- training


class PlainSampler:
    """What a naive Dataset + default collate does: crop numpy arrays item by item in Python,
    pad, ``torch.stack`` and copy the batch to the device at every step."""

    def __init__(self, utterances, segment_len: int, device: torch.device, seed: int = 0):
        self.utterances = list(utterances)
        self.segment_len = segment_len
        self.device = device
        lengths = np.array([u.shape[1] for u in self.utterances])
        self.positions = np.maximum(lengths - segment_len + 1, 1)
        self.probabilities = self.positions / self.positions.sum()
        self.rng = np.random.default_rng(seed)

    def item(self) -> tuple[torch.Tensor, torch.Tensor]:
        index = self.rng.choice(len(self.utterances), p=self.probabilities)
        start = int(self.rng.integers(self.positions[index]))
        crop = self.utterances[index][:, start:start + self.segment_len]
        x = np.zeros((crop.shape[0], self.segment_len), np.float32)
        x[:, :crop.shape[1]] = crop
        mask = np.zeros(self.segment_len, bool)
        mask[:crop.shape[1]] = True
        return torch.from_numpy(x), torch.from_numpy(mask)

    def sample(self, batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
        items = [self.item() for _ in range(batch_size)]
        x = torch.stack([x for x, _ in items]).to(self.device)
        mask = torch.stack([m for _, m in items]).to(self.device)
        return x, mask


def train_step(trainer: Trainer, sample) -> torch.Tensor:
    """One step exactly as ``Trainer.fit`` takes it; returns the real frames (on device)."""
    x, mask = sample(trainer.config.batch_size)
    trainer.step(x, mask)
    return mask.sum()


@dataclasses.dataclass(frozen=True)
class StepTimer:
    """What every training-speed measurement shares: the configuration the rows start from,
    the corpus, the device, and how long each row is timed after how many warm-up steps."""

    base: TrainConfig
    train: Sequence[np.ndarray]
    test: Sequence[np.ndarray]
    device: torch.device
    seconds: float
    warmup_steps: int

    def row(self, path: str = "fast", **overrides) -> dict:
        """Frames/s of training steps for ``base`` with ``overrides`` through ``path``
        ("plain": :class:`PlainSampler`; "fast": the trainer's own sampler)."""
        config = dataclasses.replace(self.base, init="random", epochs=1, **overrides)
        trainer = Trainer(config, self.train, self.test, progress=False)
        device = trainer.device
        sample = (trainer.sampler.sample if path == "fast"
                  else PlainSampler(self.train, config.segment_len, device).sample)
        synchronize(device)
        started = time.perf_counter()
        for _ in range(self.warmup_steps):
            train_step(trainer, sample)
        synchronize(device)
        warmup = time.perf_counter() - started
        steps, real = 0, torch.zeros((), device=device, dtype=torch.int64)
        started = time.perf_counter()
        while steps < 2 or time.perf_counter() - started < self.seconds:
            real += train_step(trainer, sample)
            steps += 1
        synchronize(device)
        elapsed = time.perf_counter() - started
        return _row(config, path, steps, elapsed, int(real), self.warmup_steps, warmup, self.device)


def _row(config: TrainConfig, path: str, steps: int, elapsed: float, real_frames: int, warmup_steps: int,
         warmup_seconds: float, peak_device: torch.device) -> dict:
    frames = steps * config.batch_size * config.segment_len
    flops = flops_per_frame(config)["train_step"]
    peak = peak_flops(peak_device, config.precision)
    achieved = frames / elapsed * flops
    row = {
        "path": path, "batch_size": config.batch_size, "num_gestures": config.num_gestures,
        "win_size": config.win_size, "segment_len": config.segment_len, "hidden": config.hidden,
        "precision": config.precision, "compile": config.compile, "threads": torch.get_num_threads(),
        "steps": steps, "seconds": elapsed, "warmup_steps": warmup_steps, "warmup_seconds": warmup_seconds,
        "frames_per_s": frames / elapsed,  # crop frames, padding included: the work done
        "real_frames_per_s": real_frames / elapsed,  # what metrics/train.json calls frames_per_second
        "flops_per_frame": flops, "achieved_flops": achieved, "peak_flops": peak,
        "fraction_of_peak": achieved / peak if peak else None,
        "load_average_1min": (load_average() or [None])[0],
    }
    say(f"train {path:5s} B={config.batch_size:<5d} K={config.num_gestures:<4d} {config.precision}"
        f"{' compile' if config.compile else ''} threads={row['threads']}: "
        f"{row['frames_per_s'] / 1e6:.3f} M frames/s ({achieved / 1e9:.1f} GFLOP/s)")
    return row


def thread_check(timer: StepTimer) -> dict:
    """Default config, fast path, batch 16 with torch's default threads, 2 threads and 1."""
    default = torch.get_num_threads()
    rows = {}
    for label, threads in (("default", default), ("2", 2), ("1", 1)):
        torch.set_num_threads(threads)
        rows[label] = timer.row("fast", threads=threads)["frames_per_s"]
    best = max(rows, key=rows.get)
    torch.set_num_threads(default)
    return {"torch_default_threads": default, "frames_per_s": rows, "fastest": best,
            "threads_for_the_rest": default if best == "default" else int(best),
            "note": ("OpenMP threads spin at every op's barrier: when another process holds a core, "
                     "2 threads can be far slower than 1 (see the load average)")}


def choose_threads(timer: StepTimer, threads: int | None) -> tuple[StepTimer, dict]:
    """On a CPU, check the thread counts and keep ``threads`` (None: the fastest) for the rest,
    in torch and in the base config; returns the timer with that config and the ``cpu_threads``
    section."""
    if timer.device.type != "cpu":
        return timer, {"torch_default_threads": torch.get_num_threads(), "note": "not checked on GPU"}
    checked = thread_check(timer)
    threads = threads or checked["threads_for_the_rest"]
    checked["threads_for_the_rest"] = threads
    torch.set_num_threads(threads)
    return dataclasses.replace(timer, base=dataclasses.replace(timer.base, threads=threads)), checked


def batch_sizes(device: torch.device, quick: bool) -> tuple[int, ...]:
    """The batch sizes timed; the last, the largest, is also the K = 300, precision and
    compile rows' (and the quick quality run's)."""
    if device.type == "cuda":
        return (64, 256) if quick else (64, 256, 1024)
    return (16, 64) if quick else (16, 64, 256)


def training_throughput(timer: StepTimer, quick: bool) -> dict:
    """The ``training`` section: plain vs fast path at batch 16, the fast path at each batch
    size, K = 300, and on a GPU tf32 / bf16 / compile at the largest batch (bf16 at batch 16
    on a CPU, where it is usually slower: native bf16 units only on recent CPUs; compile
    needs a C++ compiler and tens of seconds)."""
    row = timer.row
    batches = batch_sizes(timer.device, quick)
    large = batches[-1]
    rows = [row("plain", batch_size=16), row("fast", batch_size=16)]
    rows += [row(batch_size=b) for b in batches if b != 16]
    rows += [row(batch_size=16, num_gestures=300), row(batch_size=large, num_gestures=300)]
    if timer.device.type == "cuda":
        rows += [row(batch_size=large, precision="tf32"), row(batch_size=large, precision="bf16"),
                 row(batch_size=large, compile=True), row(batch_size=large, precision="bf16", compile=True)]
    else:
        rows += [row(batch_size=16, precision="bf16")]
        if not quick:
            rows += [row(batch_size=64, precision="bf16"), row(batch_size=16, compile=True)]
    plain, fast = rows[0], rows[1]
    return {
        "rows": rows,
        "fast_over_plain_at_batch_16": fast["frames_per_s"] / plain["frames_per_s"],
        "flops_per_frame_default": flops_per_frame(timer.base),
        "note": ("frames_per_s counts crop frames (padding included, the work done); real_frames_per_s "
                 "counts real frames as metrics/train.json does. FLOPs: convolutions only, 3 x forward."),
    }


def default_fast_row(rows: list[dict], base: TrainConfig) -> dict | None:
    """The training row at the defaults: fast path, batch 16, the base config's K, precision
    and compile (the second row of :func:`training_throughput`)."""
    return next((row for row in rows if row["path"] == "fast" and row["batch_size"] == 16
                 and row["num_gestures"] == base.num_gestures and row["precision"] == base.precision
                 and row["compile"] == base.compile), None)


# ------------------------------------------------------------------------ evaluation


def time_evaluation(model: GesturalAutoEncoder, test, device: torch.device, batch_sizes, precision: str) -> list:
    """Frames/s of ``neural_factorization`` over ``test`` at full length, after a warm-up pass."""
    store = UtteranceStore(test, device)
    rows = []
    for batch_size in batch_sizes:
        autocast = (torch.autocast(device_type=device.type, dtype=torch.bfloat16) if precision == "bf16"
                    else contextlib.nullcontext())
        with autocast:
            neural_factorization(model, store, batch_size)  # warm-up (cuDNN algorithm choice, caches)
            factorized = neural_factorization(model, store, batch_size)
        row = {"batch_size": batch_size, "precision": precision, "utterances": len(store),
               "frames": store.total_frames, "seconds": factorized.inference_seconds,
               "frames_per_s": store.total_frames / factorized.inference_seconds}
        say(f"evaluate B={batch_size} {precision}: {row['frames_per_s'] / 1e6:.3f} M frames/s")
        rows.append(row)
    return rows


def evaluation_speed(base: TrainConfig, test, device: torch.device, quick: bool) -> list:
    """The ``evaluation`` section: an untrained model of the base config (speed does not
    depend on the weights) at a few batch sizes, and bf16 at the largest on a GPU."""
    cuda = device.type == "cuda"
    model = GesturalAutoEncoder(base.model_config()).to(device)
    batches = (64,) if quick else ((64, 512) if cuda else (64, 256))
    rows = time_evaluation(model, test, device, batches, "fp32")
    if cuda:
        rows += time_evaluation(model, test, device, batches[-1:], "bf16")
    return rows


# ------------------------------------------------------------------ classical baseline


@dataclasses.dataclass(frozen=True)
class ClassicalFit:
    """The classical ConvNMF baseline fitted on the train split, and what the fit cost."""

    cnmf: ConvNMF
    params: BaselineParams
    seconds: float
    frames: int

    def section(self) -> dict:
        """The result's ``classical_baseline`` section."""
        return {"settings": dataclasses.asdict(self.params), "fit_seconds": self.seconds, "fit_frames": self.frames,
                "iterations": self.cnmf.n_iter_,
                "frame_iterations_per_s": self.frames * self.cnmf.n_iter_ / self.seconds}


def classical_fit(params: dict, base: TrainConfig, train, device: torch.device, quick: bool) -> ClassicalFit:
    """Fit ConvNMF with params.yaml's ``evaluate.baseline`` settings (5 iterations with ``quick``)."""
    baseline = BaselineParams.from_section(params["evaluate"]["baseline"])
    if quick:
        baseline = dataclasses.replace(baseline, max_iter=5, transform_iter=5)
    say(f"classical ConvNMF fit (K={base.num_gestures}, L={base.win_size}, up to {baseline.max_iter} iterations)")
    cnmf, seconds, frames, _ = fit_classical(train, base.num_gestures, base.win_size, baseline,
                                          seed=params.get("seed", 0), device=device)
    say(f"classical fit: {frames} frames, {cnmf.n_iter_} iterations in {seconds:.1f} s")
    return ClassicalFit(cnmf, baseline, seconds, frames)
