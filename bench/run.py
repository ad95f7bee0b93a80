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

The parts live beside this driver: bench/corpus.py (the corpora and the data stages),
bench/timing.py (training, evaluation and baseline speed), bench/quality.py (same-frames
quality and the suggested batch size), bench/machine.py, bench/result_files.py.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import logging
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # the bench package, which puts <repo>/src (the library) on sys.path too

import torch  # noqa: E402

from bench.corpus import benchmark_corpus, data_stage_timing  # noqa: E402
from bench.machine import load_average, machine  # noqa: E402
from bench.quality import quality_section, suggest_batch_size  # noqa: E402
from bench.result_files import default_out, publish, targets  # noqa: E402
from bench.timing import (  # noqa: E402
    StepTimer,
    batch_sizes,
    choose_threads,
    classical_fit,
    default_fast_row,
    evaluation_speed,
    training_throughput,
)
from gestural.core.devices import resolve_device  # noqa: E402
from gestural.core.files import json_safe  # noqa: E402
from gestural.core.params import DataParams, load_params  # noqa: E402
from gestural.synthetic.generator import KINDS as SYNTHETIC_KINDS  # noqa: E402
from gestural.training.config import TrainConfig  # noqa: E402

# params.yaml's training defaults reported under settings.default_config.
DEFAULT_CONFIG_KEYS = ("num_gestures", "win_size", "segment_len", "hidden", "batch_size", "lr", "epochs",
                       "steps_per_epoch", "model", "loss", "kernels", "response_frames", "peak_window", "l1_weight",
                       "smoothness_weight")


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


def bench_params(corpus: str | None) -> dict:
    """params.yaml, with ``--corpus`` as the synthetic kind."""
    params = load_params(REPO / "params.yaml")
    if corpus is not None:
        params["synthetic"]["kind"] = corpus
    return params


def base_config(params: dict, device: torch.device, pairs: list[str]) -> TrainConfig:
    """params.yaml's training settings on ``device`` with the ``--set`` overrides: every row's start."""
    base = dataclasses.replace(TrainConfig.from_params(params), device=str(device), run_name="bench",
                               **overrides(pairs))
    base.validate()
    return base


def run(args: argparse.Namespace) -> dict:
    """Every section of the result, in the order the JSON lists them."""
    device = resolve_device(args.device)
    quick = args.quick
    seconds = args.seconds if args.seconds is not None else (0.3 if quick else 3.0)
    warmup_steps = 1 if quick else 3
    params = bench_params(args.corpus)
    data = DataParams.from_params(params)
    base = base_config(params, device, args.set)
    result: dict = {"machine": machine(device), "settings": {
        "quick": quick, "overrides": args.set, "seconds_per_config": seconds, "warmup_steps": warmup_steps,
        "data_size": args.data_size, "default_config": {k: getattr(base, k) for k in DEFAULT_CONFIG_KEYS},
    }}
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="gestural-bench-") as tmp:
        tmp = Path(tmp)
        corpus = benchmark_corpus(params, data, tmp / "default", quick)
        result["corpus"] = corpus.summary()
        result["data_stages"] = data_stage_timing(args.data_size, params, data, corpus, tmp / "real", quick)
        timer, result["cpu_threads"] = choose_threads(
            StepTimer(base, corpus.train, corpus.test, device, seconds, warmup_steps), args.threads)
        base = timer.base
        result["training"] = training_throughput(timer, quick)
        result["evaluation"] = evaluation_speed(base, corpus.test, device, quick)
        classical = classical_fit(params, base, corpus.train, device, quick)
        result["classical_baseline"] = classical.section()
        if not args.skip_quality:
            result["quality"] = quality_section(base, corpus, device, classical, quick=quick,
                                                large=batch_sizes(device, quick)[-1],
                                                eval_batch=int(params["evaluate"]["batch_size"]))
            result["suggested_batch_size"] = suggest_batch_size(result["training"]["rows"], result["quality"]["rows"],
                                                                device, base.num_gestures)
    result["targets"] = targets(device.type, default_fast_row(result["training"]["rows"], base),
                                result["data_stages"], real_data=args.data_size == "real")
    result["machine"]["load_average_at_end"] = load_average()
    result["total_seconds"] = time.perf_counter() - started
    return json_safe(result)


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
    default_kind = load_params(REPO / "params.yaml")["synthetic"]["kind"]
    other_corpus = result["corpus"]["kind"] if result["corpus"]["kind"] != default_kind else None
    out = args.out if args.out is not None else default_out(result["machine"]["device_type"], args.quick,
                                                            other_corpus)
    publish(result, out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
