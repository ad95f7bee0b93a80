"""The benchmark suite (bench/): its parts, and a smoke test that bench/run.py runs stand-alone
and reports every section."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from gestural.training.config import TrainConfig

PROJECT_ROOT = Path(__file__).resolve().parents[1]
if str(PROJECT_ROOT) not in sys.path:  # bench/ is a package of scripts beside src/, not installed
    sys.path.insert(0, str(PROJECT_ROOT))

from bench import quality, result_files, table  # noqa: E402
from bench.quality import LARGE_BATCH_WARMUP_FRACTION  # noqa: E402


def test_default_output_path_is_per_device_type_and_corpus():
    results = PROJECT_ROOT / "bench" / "results"
    assert result_files.default_out("cpu", quick=False) == results / "cpu.json"
    assert result_files.default_out("cuda", quick=False) == results / "cuda.json"
    # The corpus kind params.yaml does not use gets its own file.
    assert result_files.default_out("cpu", quick=False, corpus="events") == results / "cpu-events.json"
    # A smoke run must not overwrite a full run's numbers.
    assert result_files.default_out("cpu", quick=True) == results / "cpu-quick.json"
    assert result_files.default_out("cpu", quick=True, corpus="events") == results / "cpu-events-quick.json"


def test_same_frames_uses_the_fixed_steps_per_epoch():
    params = yaml.safe_load((PROJECT_ROOT / "params.yaml").read_text())
    base = dataclasses.replace(TrainConfig.from_params(params), steps_per_epoch=40)
    reference = 30 * 40 * 16
    assert quality.epochs_for_same_frames(base, 16, reference) == (30, 40)
    # 300 steps, 7.5 epochs of 40: 8 epochs of 37, never more frames than batch 16's.
    assert quality.epochs_for_same_frames(base, 64, reference) == (8, 37)
    # Less than one 40-step epoch: one shorter epoch, not a whole one (2.1x the frames).
    assert quality.epochs_for_same_frames(base, 1024, reference) == (1, 18)
    assert quality.epochs_for_same_frames(base, 64, 2 * 40 * 16) == (1, 20)


def test_time_to_quality_is_when_held_out_variance_explained_reaches_99_percent_of_its_final_value():
    from types import SimpleNamespace

    import numpy as np
    test = [np.array([[0.0, 2.0, 0.0, 2.0]]), np.array([[0.0, 2.0]])]  # variance 1 about the mean 1
    mse = [0.5, 0.2, 0.104, 0.1, 0.1]  # variance explained 0.5, 0.8, 0.896, 0.9, 0.9
    history = [SimpleNamespace(test_reconstruction=m, seconds=2.0) for m in mse]
    assert quality.time_to_quality(history, test) == 6.0  # epoch 3: 0.896 >= 0.99 x 0.9
    assert quality.time_to_quality(history[:2], test) == 4.0
    assert quality.time_to_quality([SimpleNamespace(test_reconstruction=2.0, seconds=1.0)], test) is None


def test_the_committed_full_runs_are_readable_by_the_table(tmp_path):
    committed = result_files.full_runs()
    assert committed and not any(path.stem.endswith("-quick") for path in committed)
    results = {path.stem: json.loads(path.read_text()) for path in committed}
    lines = table.markdown(results).splitlines()[2:]
    assert len(lines) == len(committed) and all("not measured" not in line for line in lines)
    # A rewrite goes through the package's atomic write: the same JSON, nothing left beside it.
    out = tmp_path / "results" / "cpu.json"
    text = result_files.write_result(results[committed[0].stem], out)
    assert json.loads(out.read_text()) == json.loads(text) == results[committed[0].stem]
    assert [path.name for path in out.parent.iterdir()] == ["cpu.json"]


def test_targets_read_the_default_fast_row_and_the_real_size_data_stages():
    from bench.timing import default_fast_row

    base = TrainConfig.from_params(yaml.safe_load((PROJECT_ROOT / "params.yaml").read_text()))
    row = {"path": "fast", "batch_size": 16, "num_gestures": base.num_gestures, "precision": base.precision,
           "compile": base.compile, "real_frames_per_s": 300_000.0}
    rows = [dict(row, path="plain"), dict(row, num_gestures=300), row, dict(row, batch_size=64)]
    assert default_fast_row(rows, base) is row
    stages = {"nema2npy_plus_normalize_seconds": 12.0}
    met = result_files.targets("cpu", row, stages, real_data=True)
    assert met["training_default_config_frames_per_s"]["met"] is True
    assert met["nema2npy_plus_normalize_real_size_seconds"] == {"target": "< 30 s on the real-size corpus",
                                                                "measured": 12.0, "met": True}
    gpu = result_files.targets("cuda", row, stages, real_data=False)
    assert gpu["training_default_config_frames_per_s"]["met"] is None
    assert gpu["nema2npy_plus_normalize_real_size_seconds"]["measured"] is None


@pytest.mark.slow
def test_quick_benchmark_reports_every_section(tmp_path):
    params = yaml.safe_load((PROJECT_ROOT / "params.yaml").read_text())
    out = tmp_path / "bench.json"
    # The corpus kind params.yaml does not use (--corpus); the committed results use both.
    other_kind = "events" if params["synthetic"]["kind"] == "articulatory" else "articulatory"
    # No PYTHONPATH and another working directory: the script must find src/ by itself.
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    completed = subprocess.run(
        [sys.executable, str(PROJECT_ROOT / "bench" / "run.py"), "--quick", "--data-size", "small",
         "--device", "cpu", "--seconds", "0.1", "--set", "hidden=32", "--corpus", other_kind, "--out", str(out)],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    result = json.loads(completed.stdout)  # stdout is exactly one JSON object
    assert json.loads(out.read_text()) == result

    assert {"machine", "settings", "corpus", "data_stages", "cpu_threads", "training", "evaluation",
            "classical_baseline", "quality", "suggested_batch_size", "targets", "total_seconds"} <= set(result)
    machine = result["machine"]
    assert machine["device_type"] == "cpu" and machine["torch"] == __import__("torch").__version__
    assert len(machine["load_average_at_start"]) == 3

    # The default config is params.yaml's (hidden overridden).
    default = result["settings"]["default_config"]
    K, L, R = params["num_gestures"], params["win_size"], params["train"]["response_frames"]
    assert (default["num_gestures"], default["win_size"], default["response_frames"]) == (K, L, R)
    assert default["steps_per_epoch"] == params["train"]["steps_per_epoch"]
    assert default["kernels"] == params["train"]["kernels"]
    hidden = default["hidden"]
    assert hidden == 32 and result["settings"]["overrides"] == ["hidden=32"]

    rows = result["training"]["rows"]
    paths = {(row["path"], row["batch_size"], row["num_gestures"], row["precision"]) for row in rows}
    assert {("plain", 16, K, "fp32"), ("fast", 16, K, "fp32"), ("fast", 64, K, "fp32"),
            ("fast", 16, 300, "fp32"), ("fast", 16, K, "bf16")} <= paths

    # Encoder convs + response filter (K x R per frame) + decoder, 3 x forward, 2 FLOPs per multiply-add.
    def train_step_flops(k):
        return 6 * (13 * hidden * (2 * L + 1) + hidden * hidden * 5 + hidden * k + k * R + k * 12 * L)

    assert result["training"]["flops_per_frame_default"]["train_step"] == train_step_flops(K)
    for row in rows:
        assert row["frames_per_s"] > 0 and row["steps"] >= 2
        assert row["flops_per_frame"] == train_step_flops(row["num_gestures"])
        assert row["achieved_flops"] == row["frames_per_s"] * row["flops_per_frame"]
        assert row["peak_flops"] is None  # unknown for CPUs

    assert result["evaluation"][0]["frames"] == result["corpus"]["frames_test"]
    assert result["data_stages"]["nema2npy_plus_normalize_seconds"] > 0
    assert result["classical_baseline"]["iterations"] >= 1

    # The corpus asked for; the articulatory kind plants activations but no kernels.
    corpus = result["corpus"]
    assert corpus["kind"] == other_kind
    assert corpus["planted_gestures"] >= 1
    planted_kernels = corpus["planted_kernels"]
    assert planted_kernels == (corpus["kind"] == "events")

    quality = result["quality"]
    assert [(row["batch_size"], row["optimizer"]) for row in quality["rows"]] == [(16, "adamw"), (64, "adamw"),
                                                                                   (64, "muon")]
    first, second, muon = quality["rows"]
    assert second["lr"] == first["lr"] * 2  # sqrt(64 / 16)
    assert (muon["lr"], muon["muon_lr"]) == (second["lr"], params["train"]["muon_lr"])
    # The response rates travel as far in a quarter of the steps: linear scaling.
    assert first["response_lr"] == params["train"]["lr"]
    assert second["response_lr"] == muon["response_lr"] == params["train"]["lr"] * 4
    assert first["warmup_fraction"] == params["train"]["warmup_fraction"]
    assert second["warmup_fraction"] == muon["warmup_fraction"] == LARGE_BATCH_WARMUP_FRACTION
    assert muon["steps"] == second["steps"]
    # Same crops for both: batch 16 for 2 epochs of the fixed steps, batch 64 a quarter of the steps.
    steps_per_epoch = params["train"]["steps_per_epoch"]
    assert (first["epochs"], first["steps_per_epoch"]) == (2, steps_per_epoch)
    assert first["steps"] * 16 == second["steps"] * 64 == quality["reference_crops"]
    assert first["crop_frames_trained"] == second["crop_frames_trained"]
    recovery = ("seqnmf_similarity", "kernel_cosine", "onset_f1")
    for row in quality["rows"] + [quality["classical_reference"]]:
        assert isinstance(row["variance_explained"], float)
        assert 0.0 <= row["activation_auc"] <= 1.0
        assert 0.0 <= row["activation_auc_lagged"] <= 1.0
        for key in recovery:
            assert (key in row) == planted_kernels
            if planted_kernels:
                assert isinstance(row[key], float)
    suggested = result["suggested_batch_size"]
    assert suggested["batch_size"] in (16, 64) and suggested["optimizer"] in ("adamw", "muon")
    assert "activation_auc" in suggested["tolerances"]
    assert ("kernel_cosine" in suggested["tolerances"]) == planted_kernels

    assert result["targets"]["training_default_config_frames_per_s"]["met"] in (True, False)
    assert result["targets"]["nema2npy_plus_normalize_real_size_seconds"]["met"] is None  # small corpus


def test_the_readme_table_is_built_from_the_results_and_marks_missing_devices():
    result = {
        "machine": {"device_type": "cpu", "device": "Some CPU (2 cores)", "torch": "2.13.0"},
        "corpus": {"kind": "articulatory"},
        "settings": {"default_config": {"num_gestures": 20}},
        "training": {"rows": [
            {"path": "fast", "batch_size": 16, "num_gestures": 20, "precision": "fp32", "compile": False,
             "frames_per_s": 110_000.0},
            {"path": "fast", "batch_size": 16, "num_gestures": 20, "precision": "bf16", "compile": False,
             "frames_per_s": 220_000.0},
            {"path": "fast", "batch_size": 16, "num_gestures": 300, "precision": "bf16", "compile": False,
             "frames_per_s": 990_000.0},  # another K: not the defaults' speed
        ]},
        "quality": {"rows": [{"batch_size": 16, "precision": "fp32", "time_to_quality_seconds": 41.2,
                              "fit_seconds": 70.0, "variance_explained": 0.95, "activation_auc": 0.872},
                             {"batch_size": 256, "optimizer": "adamw", "precision": "fp32",
                              "time_to_quality_seconds": 30.0, "fit_seconds": 40.0, "variance_explained": 0.9,
                              "activation_auc": 0.8},
                             {"batch_size": 256, "optimizer": "muon", "precision": "fp32",
                              "time_to_quality_seconds": 20.4, "fit_seconds": 41.0, "variance_explained": 0.941,
                              "activation_auc": 0.878}]},
        "evaluation": [{"frames_per_s": 300_000.0}],
        "data_stages": {"nema2npy_plus_normalize_seconds": 5.61},
    }
    # The same bench on the events corpus, which plants kernels and onsets.
    events = json.loads(json.dumps(result))
    events["corpus"]["kind"] = "events"
    for row, (cosine, f1) in zip(events["quality"]["rows"], [(0.95, 0.974), (0.5, 0.1), (0.969, 0.994)]):
        row.update(kernel_cosine=cosine, onset_f1=f1)
    text = table.markdown({"cpu": result, "cpu-events": events, "cuda": None})
    cpu, cpu_events, cuda = text.splitlines()[2:]
    assert cpu.split(" | ")[1:] == ["0.110 M frames/s", "0.220 M frames/s (batch 16, K=20, bf16)", "41 s of 70 s",
                                    "0.950 / 0.872", "batch 256: 0.941 / 0.878, 20 s of 41 s", "0.300 M frames/s",
                                    "5.6 s |"]
    assert cpu.startswith("| Some CPU (2 cores), torch 2.13.0 (articulatory) |")
    assert cpu_events.split(" | ")[4:6] == ["0.950 / 0.872 (0.950 / 0.974)",
                                            "batch 256: 0.941 / 0.878 (0.969 / 0.994), 20 s of 41 s"]
    assert cuda.startswith("| cuda | not measured |")


def test_the_table_script_prints_a_row_per_committed_run_and_skips_the_pipeline_bench():
    assert any(path.stem.startswith("pipeline-") for path in (PROJECT_ROOT / "bench" / "results").glob("*.json"))
    done = subprocess.run([sys.executable, str(PROJECT_ROOT / "bench" / "table.py")], capture_output=True, text=True,
                          timeout=60, cwd=PROJECT_ROOT)
    assert done.returncode == 0, done.stderr
    rows = done.stdout.splitlines()[2:]
    assert len(rows) == len(result_files.full_runs()) + ("cuda" not in {p.stem for p in result_files.full_runs()})
    assert any("(articulatory)" in row for row in rows) and any("(events)" in row for row in rows)
