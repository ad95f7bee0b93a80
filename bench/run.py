#!/usr/bin/env python
"""Speed benchmark of gestural: training, evaluation, data stages, classical baseline, quality.

Runs without DVC and without installing the package (``<repo>/src`` is put on sys.path):

    python bench/run.py                       # the full suite on the default device
    python bench/run.py --quick --data-size small   # under a minute, for a smoke test
    python bench/run.py --device cuda --out bench/h100.json

Needs torch, numpy, scipy, pyyaml and tqdm. Progress goes to stderr; stdout gets exactly
one JSON object, also written to ``--out`` (default ``bench/results/<device type>.json``,
``<device type>-quick.json`` with ``--quick``). What it measures (see bench/README.md):

* training throughput (frames/s of forward + backward + optimizer step, after warm-up
  steps, CUDA synchronized) through a plain per-item numpy path and through the trainer's
  own device-side sampler, at several batch sizes, num_gestures, precisions and compile;
* achieved FLOP/s from an analytic count of the model's convolution FLOPs;
* evaluation frames/s (full-length masked batches of the held-out utterances);
* nema2npy + normalize on a real-size synthetic corpus (or the default one);
* the classical ConvNMF baseline's fit time;
* quality of the compared training configurations (held-out variance explained, activation
  AUC against the planted activations; seqNMF similarity, kernel cosine and onset F1 where
  the corpus plants kernels), all trained on the same number of crops (steps x batch), so
  that a faster configuration that learns worse shows;
* whether the CPU thread count matters.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import logging
import math
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from gestural.core.devices import resolve_device, synchronize  # noqa: E402
from gestural.core.files import json_safe  # noqa: E402
from gestural.core.params import DataParams, load_params  # noqa: E402
from gestural.data.archive import safe_extract  # noqa: E402
from gestural.data.batches import UtteranceStore  # noqa: E402
from gestural.data.corpus import build_npy  # noqa: E402
from gestural.data.dataset import NormalizedCorpus  # noqa: E402
from gestural.data.normalize import normalize_corpus  # noqa: E402
from gestural.evaluation.classical import BaselineParams, classical_factorization, fit_classical  # noqa: E402
from gestural.evaluation.factorizations import neural_factorization  # noqa: E402
from gestural.evaluation.held_out import evaluate_factorization, evaluate_model  # noqa: E402
from gestural.evaluation.planted import planted_truth  # noqa: E402
from gestural.model.network import GesturalAutoEncoder  # noqa: E402
from gestural.synthetic.generator import KINDS as SYNTHETIC_KINDS  # noqa: E402
from gestural.synthetic.generator import SyntheticConfig, synthetic_config, write_corpus  # noqa: E402
from gestural.synthetic.ground_truth import has_planted_kernels, load_activations  # noqa: E402
from gestural.training.config import TrainConfig  # noqa: E402
from gestural.training.trainer import Trainer  # noqa: E402

# Dense peak FLOP/s by precision (vendor datasheets, no structured sparsity). The H200 has
# the H100 SXM's compute. fp32 means the CUDA cores' (non-tensor) fp32 rate.
PEAK_FLOPS = {
    "H100 PCIe": {"fp32": 51e12, "tf32": 378e12, "bf16": 756e12},
    "H100": {"fp32": 67e12, "tf32": 495e12, "bf16": 989e12},
    "H200": {"fp32": 67e12, "tf32": 495e12, "bf16": 989e12},
    "A100": {"fp32": 19.5e12, "tf32": 156e12, "bf16": 312e12},
}

# Learning rate for a batch of B crops: lr_16 * sqrt(B / 16). Square-root scaling suits
# Adam-type optimizers (the update's size does not grow with the gradient's, and the
# gradient noise falls as 1/sqrt(B)); linear scaling, right for SGD, overshoots with AdamW.
# The gestures' response rates are the exception: AdamW moves each by about its learning
# rate per step, and a rate may have to travel far (an impulse on the events corpus), so at
# B / 16 times fewer steps it needs B / 16 times the rate (gestural.optimizers).
LR_RULE = ("lr = lr_default * sqrt(batch_size / 16) (square-root scaling for AdamW); "
           "response_lr = lr_default * batch_size / 16 (linear: as far in fewer steps); "
           "warmup_fraction 0.15 above batch 16")
# Warm-up share of the steps above batch 16. Measured at batch 256 with Muon (150 steps,
# seeds 0-2, both corpora): at the default 0.05 (7 steps) one seed of three lost the events
# corpus's kernels (kernel cosine 0.918, onset F1 0.909); at 0.15 every seed kept them, and
# the three seeds' means came within the tolerances of batch 16's.
LARGE_BATCH_WARMUP_FRACTION = 0.15

# A configuration learns "no worse" than batch 16 when it loses at most this much (keys the
# corpus cannot score, e.g. kernel_cosine without planted kernels, are left out): the large-batch
# issue's "within 0.01 (variance explained) and 0.02 (recovery / AUC)".
QUALITY_TOLERANCE = {"variance_explained": 0.01, "activation_auc": 0.02, "kernel_cosine": 0.02,
                     "seqnmf_similarity": 0.02, "onset_f1": 0.02}
# Recovery metrics that need planted kernels and onsets (the events corpus only).
RECOVERY_KEYS = ("seqnmf_similarity", "kernel_cosine", "onset_f1")


def say(message: str) -> None:
    print(f"bench: {message}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- machine


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cpu_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def load_average() -> list[float] | None:
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except OSError:
        return None


def machine(device: torch.device) -> dict:
    info = {
        "device_type": device.type,
        "device": (torch.cuda.get_device_name(device) if device.type == "cuda"
                   else f"{cpu_name()} ({cpu_cores()} cores)"),
        "cpu": f"{cpu_name()} ({cpu_cores()} cores)",
        "torch": torch.__version__,
        "python": platform.python_version(),
        "threads_default": torch.get_num_threads(),
        "load_average_at_start": load_average(),
    }
    if device.type == "cuda":
        info["cuda"] = torch.version.cuda
        info["gpu_memory_gib"] = round(torch.cuda.get_device_properties(device).total_memory / 2**30, 1)
    return info


def peak_flops(device: torch.device, precision: str) -> float | None:
    """The device's dense peak for ``precision``, or None (CPUs, unknown GPUs)."""
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    for key in ("H100 PCIe", "H200", "H100", "A100"):
        if all(part in name for part in key.split()):
            return PEAK_FLOPS[key][precision]
    return None


def flops_per_frame(config: TrainConfig, channels: int = 12) -> dict:
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


# ---------------------------------------------------------------------------- corpus


def quick_synthetic(params: dict) -> SyntheticConfig:
    """params.yaml's synthetic corpus (its kind included), cut to 2 speakers x 20 utterances
    (training is a fixed number of steps, so more utterances cost little and steady the
    held-out metrics)."""
    return dataclasses.replace(synthetic_config(params), speakers=["fsyn0", "msyn0"], utterances_per_speaker=20,
                               min_seconds=1.0, max_seconds=3.0, missing_wav=1, missing_ema=1, short_nan_runs=1,
                               long_nan_runs=0)


def real_size_synthetic(params: dict) -> SyntheticConfig:
    """params.yaml's synthetic kind at about the size of CMU's corpus: 8 speakers x 551
    utterances of 1-5 s (~2.6 M frames)."""
    config = synthetic_config(params)
    return dataclasses.replace(config, speakers=[f"syn{i}" for i in range(8)], utterances_per_speaker=551,
                               min_seconds=1.0, max_seconds=5.0,
                               articulatory=dataclasses.replace(config.articulatory, seconds=(1.0, 5.0)))


def build_corpus(config: SyntheticConfig, directory: Path, data: DataParams) -> dict:
    """The data stages through the library: write_corpus -> safe_extract -> build_npy -> normalize.

    Returns the seconds of each (generation and extraction are reported, not counted as the
    pipeline's own cost) and the paths.
    """
    seconds = {}
    archive, truth = directory / "emadata.tgz", directory / "ground_truth.npz"
    started = time.perf_counter()
    summary = write_corpus(config, archive, truth)
    seconds["generate"] = time.perf_counter() - started
    started = time.perf_counter()
    safe_extract(archive, directory / "extracted")
    seconds["extract"] = time.perf_counter() - started
    started = time.perf_counter()
    build_npy(directory / "extracted", directory / "npy", data)
    seconds["nema2npy"] = time.perf_counter() - started
    started = time.perf_counter()
    normalize_corpus(directory / "npy", directory / "normalized", data)
    seconds["normalize"] = time.perf_counter() - started
    return {"seconds": seconds, "summary": summary, "truth": truth, "normalized": directory / "normalized"}


def data_stages(built: dict, label: str) -> dict:
    s = built["seconds"]
    return {
        "corpus": label,
        "utterances": built["summary"]["utterances"],
        "frames": built["summary"]["frames"],
        "nema2npy_seconds": s["nema2npy"],
        "normalize_seconds": s["normalize"],
        "nema2npy_plus_normalize_seconds": s["nema2npy"] + s["normalize"],
        "not_counted": {"generate_seconds": s["generate"], "extract_seconds": s["extract"]},
    }


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


def time_training(base: TrainConfig, train, test, *, path: str, seconds: float, warmup_steps: int,
                  peak_device: torch.device, **overrides) -> dict:
    """Frames/s of training steps for ``base`` with ``overrides``, after ``warmup_steps``."""
    config = dataclasses.replace(base, init="random", epochs=1, **overrides)
    trainer = Trainer(config, train, test, progress=False)
    device = trainer.device
    sample = trainer.sampler.sample if path == "fast" else PlainSampler(train, config.segment_len, device).sample
    synchronize(device)
    started = time.perf_counter()
    for _ in range(warmup_steps):
        train_step(trainer, sample)
    synchronize(device)
    warmup = time.perf_counter() - started
    steps, real = 0, torch.zeros((), device=device, dtype=torch.int64)
    started = time.perf_counter()
    while steps < 2 or time.perf_counter() - started < seconds:
        real += train_step(trainer, sample)
        steps += 1
    synchronize(device)
    elapsed = time.perf_counter() - started
    frames = steps * config.batch_size * config.segment_len
    flops = flops_per_frame(config)["train_step"]
    peak = peak_flops(peak_device, config.precision)
    achieved = frames / elapsed * flops
    row = {
        "path": path, "batch_size": config.batch_size, "num_gestures": config.num_gestures,
        "win_size": config.win_size, "segment_len": config.segment_len, "hidden": config.hidden,
        "precision": config.precision, "compile": config.compile, "threads": torch.get_num_threads(),
        "steps": steps, "seconds": elapsed, "warmup_steps": warmup_steps, "warmup_seconds": warmup,
        "frames_per_s": frames / elapsed,  # crop frames, padding included: the work done
        "real_frames_per_s": int(real) / elapsed,  # what metrics/train.json calls frames_per_second
        "flops_per_frame": flops, "achieved_flops": achieved, "peak_flops": peak,
        "fraction_of_peak": achieved / peak if peak else None,
        "load_average_1min": (load_average() or [None])[0],
    }
    say(f"train {path:5s} B={config.batch_size:<5d} K={config.num_gestures:<4d} {config.precision}"
        f"{' compile' if config.compile else ''} threads={row['threads']}: "
        f"{row['frames_per_s'] / 1e6:.3f} M frames/s ({achieved / 1e9:.1f} GFLOP/s)")
    return row


def thread_check(base: TrainConfig, train, test, seconds: float, warmup_steps: int, device) -> dict:
    """Default config, fast path, batch 16 with torch's default threads, 2 threads and 1."""
    default = torch.get_num_threads()
    rows = {}
    for label, threads in (("default", default), ("2", 2), ("1", 1)):
        torch.set_num_threads(threads)
        rows[label] = time_training(base, train, test, path="fast", seconds=seconds, warmup_steps=warmup_steps,
                                    peak_device=device, threads=threads)["frames_per_s"]
    best = max(rows, key=rows.get)
    torch.set_num_threads(default)
    return {"torch_default_threads": default, "frames_per_s": rows, "fastest": best,
            "threads_for_the_rest": default if best == "default" else int(best),
            "note": ("OpenMP threads spin at every op's barrier: when another process holds a core, "
                     "2 threads can be far slower than 1 (see the load average)")}


# ------------------------------------------------------------------------ evaluation


def time_evaluation(model: GesturalAutoEncoder, test, device: torch.device, batch_sizes, precision: str) -> list:
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


# --------------------------------------------------------------------------- quality


def quality_run(base: TrainConfig, train, test, truth, activations, eval_batch: int, *, batch_size: int,
                epochs: int, steps_per_epoch: int, scale_lr: bool = True,
                **overrides) -> tuple[dict, GesturalAutoEncoder]:
    """Train with the pipeline's settings (k-means init) and evaluate on the held-out split.

    ``truth``: the planted kernels and onsets (events corpus) or None; ``activations``: the
    planted gestures' activity per held-out utterance. ``scale_lr``: the learning rates
    follow LR_RULE; False keeps the default ones.
    """
    lr, response_lr, warmup = base.lr, base.response_lr, base.warmup_fraction
    if scale_lr:
        lr = base.lr * math.sqrt(batch_size / 16)
        response_lr = (base.lr if base.response_lr is None else base.response_lr) * batch_size / 16
        warmup = LARGE_BATCH_WARMUP_FRACTION if batch_size > 16 else base.warmup_fraction
    config = dataclasses.replace(base, batch_size=batch_size, lr=lr, response_lr=response_lr,
                                 warmup_fraction=warmup, epochs=epochs, steps_per_epoch=steps_per_epoch, **overrides)
    trainer = Trainer(config, train, test, progress=False)
    steps = epochs * trainer.steps_per_epoch
    result = trainer.fit()
    store = UtteranceStore(test, trainer.device)
    metrics, _, _ = evaluate_model(result.model, store, truth, batch_size=eval_batch, activations=activations)
    row = {
        # From the held-out MSE of each epoch (with loss: l1 the curve holds L1 errors).
        "time_to_quality_seconds": time_to_quality(result.history, test) if config.loss == "mse" else None,
        "batch_size": batch_size, "optimizer": config.optimizer, "lr": lr, "lr_scaling": "sqrt" if scale_lr else "none",
        "muon_lr": config.muon_lr if config.optimizer == "muon" else None,
        "response_lr": config.response_lr, "warmup_fraction": config.warmup_fraction,
        "precision": config.precision, "compile": config.compile, "epochs": epochs,
        "steps_per_epoch": trainer.steps_per_epoch, "steps": steps,
        "crop_frames_trained": steps * batch_size * config.segment_len,
        "fit_seconds": result.seconds, "fit_real_frames_per_s": result.frames_per_second,
        "final_train_loss": result.history[-1].train_loss,
        **{k: metrics[k] for k in ("variance_explained", "activation_auc", "activation_auc_lagged",
                                   "gestures_in_use")},
    }
    if truth is not None:
        row.update({k: metrics[k] for k in RECOVERY_KEYS})
    say(f"quality B={batch_size} {config.optimizer} lr={lr:.4g} {config.precision}: {steps} steps in "
        f"{result.seconds:.1f} s; "
        f"variance explained {row['variance_explained']:.4f}, activation AUC {row['activation_auc']}"
        + (f", kernel cosine {row['kernel_cosine']}" if truth is not None else ""))
    return row, result.model


def time_to_quality(history, test, fraction: float = 0.99) -> float | None:
    """Training seconds until the held-out variance explained first reaches ``fraction`` of its
    final value (per epoch: 1 - held-out MSE / the held-out data's variance about each
    channel's mean, what ``reconstruction_metrics`` calls variance explained)."""
    data = np.concatenate([np.asarray(u, dtype=np.float64) for u in test], axis=1)
    variance = float(np.mean((data - data.mean(axis=1, keepdims=True)) ** 2))
    explained = [1.0 - row.test_reconstruction / variance for row in history]
    if not explained or explained[-1] <= 0:
        return None
    elapsed = np.cumsum([row.seconds for row in history])
    reached = next(i for i, value in enumerate(explained) if value >= fraction * explained[-1])
    return float(elapsed[reached])


def epochs_for_same_frames(base: TrainConfig, batch_size: int, reference_crops: int) -> tuple[int, int]:
    """(epochs, steps per epoch) at ``batch_size`` whose crops (steps x batch) come closest
    to ``reference_crops`` without exceeding them.

    An epoch is ``base.steps_per_epoch`` steps whatever the batch, so equal epochs would give
    a large batch more frames than batch 16; matching the crop count keeps the comparison
    fair, and never exceeding it keeps it strict ("no more frames seen"). The steps are
    spread over as many epochs as ``base.steps_per_epoch`` needs, each a little shorter where
    they do not divide evenly (150 steps: 4 epochs of 37).
    """
    steps = max(1, reference_crops // batch_size)
    epochs = math.ceil(steps / base.steps_per_epoch)
    return epochs, steps // epochs


def suggest_batch_size(throughput: list, quality: list, device: torch.device, num_gestures: int) -> dict:
    """The fastest batch size (and its optimizer) that learns no worse than 16 (within
    QUALITY_TOLERANCE). Speed is the AdamW throughput row's; a Muon step costs a little more
    (its rows' fit_seconds say how much)."""
    speed = {row["batch_size"]: row["frames_per_s"] for row in throughput
             if row["path"] == "fast" and row["precision"] == "fp32" and not row["compile"]
             and row["num_gestures"] == num_gestures}
    rows = [row for row in quality if row["precision"] == "fp32" and not row["compile"]]
    reference = next((row for row in rows if row["batch_size"] == 16), None)
    if reference is None or 16 not in speed:
        return {"batch_size": None, "reason": "no batch-16 reference measured"}
    # Only the metrics this corpus scores (no kernel cosine without planted kernels).
    tolerance = {k: tol for k, tol in QUALITY_TOLERANCE.items() if reference.get(k) is not None}

    def no_worse(row) -> bool:
        return all(row.get(k) is not None and row[k] >= reference[k] - tol for k, tol in tolerance.items())

    good = [row for row in rows if row["batch_size"] in speed and no_worse(row)]
    best = max(good, key=lambda row: (speed[row["batch_size"]], -row["batch_size"]))
    if best["batch_size"] == 16:
        reason = (f"on {device.type} no larger batch is both faster than 16 and no worse in quality "
                  f"(tolerances {tolerance}): keep batch_size 16")
    else:
        reason = (f"batch {best['batch_size']} ({best['optimizer']}, lr {best['lr']:.4g}) trains "
                  f"{speed[best['batch_size']] / speed[16]:.2f}x faster than 16 and is no worse within "
                  f"{tolerance}")
    return {"batch_size": best["batch_size"], "optimizer": best["optimizer"], "lr": best["lr"], "reason": reason,
            "tolerances": tolerance,
            "speed_relative_to_16": {b: speed[b] / speed[16] for b in sorted(speed)}}


# ------------------------------------------------------------------------------ main


def overrides(pairs: list[str]) -> dict:
    """``["hidden=64", "lr=0.003"]`` -> {"hidden": 64, "lr": 0.003} (values parsed as YAML)."""
    import yaml

    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    values = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or key not in fields:
            raise SystemExit(f"bench: --set {pair!r}: expected KEY=VALUE with KEY one of {sorted(fields)}")
        values[key] = yaml.safe_load(value)
    return values


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small everything (under a minute)")
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    parser.add_argument("--seconds", type=float, default=None,
                        help="timed seconds per training configuration (default 3, quick 0.3)")
    parser.add_argument("--data-size", default="real", choices=("real", "small"),
                        help="corpus for the data-stage timing: real-size synthetic (~2.6 M frames) or the "
                             "default synthetic corpus")
    parser.add_argument("--threads", type=int, default=None,
                        help="CPU threads for everything after the thread check (default: the fastest found)")
    parser.add_argument("--skip-quality", action="store_true", help="no quality trainings")
    parser.add_argument("--corpus", default=None, choices=SYNTHETIC_KINDS,
                        help="synthetic corpus kind to measure on (default: params.yaml's synthetic.kind)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a training setting of params.yaml (TrainConfig field, YAML value), "
                             "e.g. --set hidden=64; repeatable")
    parser.add_argument("--out", type=Path, default=None,
                        help="also write the JSON here (default: bench/results/<device type>.json, "
                             "<device type>-<corpus>.json with a --corpus other than params.yaml's, "
                             "-quick before .json with --quick)")
    return parser.parse_args(argv)


def run(args: argparse.Namespace) -> dict:
    device = resolve_device(args.device)
    quick = args.quick
    seconds = args.seconds if args.seconds is not None else (0.3 if quick else 3.0)
    warmup_steps = 1 if quick else 3
    params = load_params(REPO / "params.yaml")
    if args.corpus is not None:
        params["synthetic"]["kind"] = args.corpus
    data = DataParams.from_params(params)
    base = dataclasses.replace(TrainConfig.from_params(params), device=str(device), run_name="bench",
                               **overrides(args.set))
    base.validate()
    result: dict = {"machine": machine(device), "settings": {
        "quick": quick, "overrides": args.set, "seconds_per_config": seconds, "warmup_steps": warmup_steps,
        "data_size": args.data_size,
        "default_config": {k: getattr(base, k) for k in (
            "num_gestures", "win_size", "segment_len", "hidden", "batch_size", "lr", "epochs", "steps_per_epoch",
            "model", "loss", "kernels", "response_frames", "peak_window", "l1_weight", "smoothness_weight")},
    }}
    total_started = time.perf_counter()

    with tempfile.TemporaryDirectory(prefix="gestural-bench-") as tmp:
        tmp = Path(tmp)
        # The default synthetic corpus (what `dvc repro` trains on), through the library.
        synthetic = quick_synthetic(params) if quick else synthetic_config(params)
        say(f"building the {'quick' if quick else 'default'} synthetic corpus ({synthetic.kind})")
        built = build_corpus(synthetic, tmp / "default", data)
        corpus = NormalizedCorpus.load(built["normalized"])
        train = corpus.utterances("train")
        test = [np.ascontiguousarray(u, dtype=np.float32) for u in corpus.utterances("test")]
        test_lengths = [u.shape[1] for u in test]
        # Both corpus kinds plant activations; only the events corpus plants kernels and onsets.
        gesture_names, activations = load_activations(built["truth"], corpus.ids("test"), test_lengths)
        planted_kernels = has_planted_kernels(built["truth"])
        truth = (planted_truth(built["truth"], corpus.ids("test"), test_lengths, corpus.stats)
                 if planted_kernels else None)
        train_frames = sum(u.shape[1] for u in train)
        result["corpus"] = {"kind": synthetic.kind, "planted_gestures": len(gesture_names),
                            "planted_kernels": planted_kernels, "utterances_train": len(train),
                            "utterances_test": len(test), "frames_train": train_frames,
                            "frames_test": sum(test_lengths)}

        if args.data_size == "real":
            say("data stages on a real-size synthetic corpus (generation takes a while, not counted)")
            real = build_corpus(real_size_synthetic(params), tmp / "real", data)
            result["data_stages"] = data_stages(
                real, f"real-size synthetic {synthetic.kind} (8 speakers x 551 utterances, 1-5 s)")
            del real
        else:
            result["data_stages"] = data_stages(built, "quick synthetic" if quick else "default synthetic")

        # --- threads
        if device.type == "cpu":
            checked = thread_check(base, train, test, seconds, warmup_steps, device)
            threads = args.threads or checked["threads_for_the_rest"]
            checked["threads_for_the_rest"] = threads
            result["cpu_threads"] = checked
            torch.set_num_threads(threads)
            base = dataclasses.replace(base, threads=threads)
        else:
            result["cpu_threads"] = {"torch_default_threads": torch.get_num_threads(), "note": "not checked on GPU"}

        # --- training throughput
        def timed(path="fast", **overrides):
            return time_training(base, train, test, path=path, seconds=seconds, warmup_steps=warmup_steps,
                                 peak_device=device, **overrides)

        cuda = device.type == "cuda"
        if cuda:
            batches = (64, 256) if quick else (64, 256, 1024)
        else:
            batches = (16, 64) if quick else (16, 64, 256)
        large = batches[-1]
        rows = [timed("plain", batch_size=16), timed("fast", batch_size=16)]
        rows += [timed(batch_size=b) for b in batches if b != 16]
        rows += [timed(batch_size=16, num_gestures=300), timed(batch_size=large, num_gestures=300)]
        if cuda:
            rows += [timed(batch_size=large, precision="tf32"), timed(batch_size=large, precision="bf16"),
                     timed(batch_size=large, compile=True), timed(batch_size=large, precision="bf16", compile=True)]
        else:
            # bf16 autocast runs on the CPU; it is usually slower there (native bf16 units
            # only on recent CPUs). compile needs a C++ compiler and tens of seconds.
            rows += [timed(batch_size=16, precision="bf16")]
            if not quick:
                rows += [timed(batch_size=64, precision="bf16"), timed(batch_size=16, compile=True)]
        plain, fast = rows[0], rows[1]
        result["training"] = {
            "rows": rows,
            "fast_over_plain_at_batch_16": fast["frames_per_s"] / plain["frames_per_s"],
            "flops_per_frame_default": flops_per_frame(base),
            "note": ("frames_per_s counts crop frames (padding included, the work done); real_frames_per_s "
                     "counts real frames as metrics/train.json does. FLOPs: convolutions only, 3 x forward."),
        }

        # --- evaluation speed
        model = GesturalAutoEncoder(base.model_config()).to(device)
        eval_batches = (64,) if quick else ((64, 512) if cuda else (64, 256))
        evaluation = time_evaluation(model, test, device, eval_batches, "fp32")
        if cuda:
            evaluation += time_evaluation(model, test, device, eval_batches[-1:], "bf16")
        result["evaluation"] = evaluation

        # --- classical baseline fit
        baseline = BaselineParams.from_section(params["evaluate"]["baseline"])
        if quick:
            baseline = dataclasses.replace(baseline, max_iter=5, transform_iter=5)
        say(f"classical ConvNMF fit (K={base.num_gestures}, L={base.win_size}, up to {baseline.max_iter} iterations)")
        cnmf, fit_seconds, fit_frames = fit_classical(train, base.num_gestures, base.win_size, baseline,
                                                      seed=params.get("seed", 0), device=device)
        result["classical_baseline"] = {
            "settings": dataclasses.asdict(baseline), "fit_seconds": fit_seconds, "fit_frames": fit_frames,
            "iterations": cnmf.n_iter_, "frame_iterations_per_s": fit_frames * cnmf.n_iter_ / fit_seconds,
        }
        say(f"classical fit: {fit_frames} frames, {cnmf.n_iter_} iterations in {fit_seconds:.1f} s")

        # --- quality of the compared configurations, same frames each
        if not args.skip_quality:
            # The reference: batch 16 for the default epochs of train.steps_per_epoch steps;
            # every other configuration trains on as many crops (steps x batch).
            reference_epochs = 2 if quick else base.epochs
            reference_crops = reference_epochs * base.steps_per_epoch * 16
            quality_batches = (16, large) if quick else (16, 256, 1024) if cuda else (16, 64, 256)
            eval_batch = int(params["evaluate"]["batch_size"])

            def trained(b, **overrides):
                e, spe = epochs_for_same_frames(base, b, reference_crops)
                return quality_run(base, train, test, truth, activations, eval_batch, batch_size=b, epochs=e,
                                   steps_per_epoch=spe, **overrides)[0]

            quality = [trained(b) for b in quality_batches]
            if not quick:
                # The middle batch at the default lr: is a loss from the batch or from the lr rule?
                quality.append(trained(quality_batches[1], scale_lr=False))
            # Muon (see gestural.optimizers), which learns in few steps: train.muon_lr for the
            # matrices, LR_RULE for the rest (batch 256: 0.01, which learned both corpora best).
            quality += [trained(b, optimizer="muon") for b in quality_batches[1:]]
            # bf16 at the batch it would be used with: the large batch on a GPU, 16 on a CPU.
            if cuda or not quick:
                quality.append(trained(large if cuda else 16, precision="bf16"))
            classical = classical_factorization(cnmf, test, baseline.transform_iter, fit_seconds)
            classical_metrics, _ = evaluate_factorization(test, classical, truth, device=device,
                                                          activations=activations)
            compared = ("variance_explained", "activation_auc", "activation_auc_lagged",
                        *(RECOVERY_KEYS if truth is not None else ()))
            result["quality"] = {
                "lr_rule": LR_RULE,
                "same_frames": (f"every configuration trains on about the crops of batch 16 for {reference_epochs} "
                                f"epochs of {base.steps_per_epoch} steps ({reference_crops} crops)"),
                "reference_crops": reference_crops,
                "rows": quality,
                "classical_reference": {k: classical_metrics[k] for k in compared},
            }
            result["suggested_batch_size"] = suggest_batch_size(rows, quality, device, base.num_gestures)

    default_fast = fast["real_frames_per_s"]
    data_seconds = result["data_stages"]["nema2npy_plus_normalize_seconds"]
    real_data = args.data_size == "real"
    result["targets"] = {
        "training_default_config_frames_per_s": {
            "target": ">= 250000 real frames/s on 2 CPU cores (batch 16, fast path)",
            "measured": default_fast if device.type == "cpu" else None,
            "met": (default_fast >= 250_000) if device.type == "cpu" else None,
        },
        "nema2npy_plus_normalize_real_size_seconds": {
            "target": "< 30 s on the real-size corpus",
            "measured": data_seconds if real_data else None,
            "met": (data_seconds < 30) if real_data else None,
        },
        "dvc_repro_default_seconds": {"target": "< 120 s", "measured": None, "met": None,
                                      "note": "not measured here (needs DVC): time `dvc repro` itself"},
    }
    result["machine"]["load_average_at_end"] = load_average()
    result["total_seconds"] = time.perf_counter() - total_started
    return json_safe(result)


def default_out(device_type: str, quick: bool, corpus: str | None = None) -> Path:
    """Where the JSON goes without --out: one file per device type, and per corpus kind other
    than params.yaml's (``corpus``: None for that one); a quick run gets its own, so that a
    smoke test does not overwrite a full run's numbers."""
    name = device_type + (f"-{corpus}" if corpus else "") + ("-quick" if quick else "")
    return REPO / "bench" / "results" / f"{name}.json"


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        print("bench: --device cuda asked for, but torch sees no CUDA GPU", file=sys.stderr)
        return 2
    # The library logs (the trainer's per-epoch lines among them): show them on stderr.
    logging.basicConfig(level=logging.WARNING, format="bench: %(name)s: %(message)s", stream=sys.stderr)
    logging.getLogger("gestural.training.trainer").setLevel(logging.INFO)
    # Keep stdout for the one JSON object, whatever else writes to it.
    with contextlib.redirect_stdout(sys.stderr):
        result = run(args)
    text = json.dumps(result, indent=2)
    default_kind = load_params(REPO / "params.yaml")["synthetic"]["kind"]
    other_corpus = result["corpus"]["kind"] if result["corpus"]["kind"] != default_kind else None
    out = args.out if args.out is not None else default_out(result["machine"]["device_type"], args.quick,
                                                            other_corpus)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(text + "\n")
    os.replace(tmp, out)
    say(f"wrote {out}")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
