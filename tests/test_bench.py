"""Smoke test of the benchmark script: it runs stand-alone and reports every section."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[1]


def test_quick_benchmark_reports_every_section(tmp_path):
    out = tmp_path / "bench.json"
    # No PYTHONPATH and another working directory: the script must find src/ by itself.
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    completed = subprocess.run(
        [sys.executable, str(PROJECT_ROOT / "bench" / "run.py"), "--quick", "--data-size", "small",
         "--device", "cpu", "--seconds", "0.1", "--set", "hidden=32", "--out", str(out)],
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

    rows = result["training"]["rows"]
    paths = {(row["path"], row["batch_size"], row["num_gestures"], row["precision"]) for row in rows}
    assert {("plain", 16, 100, "fp32"), ("fast", 16, 100, "fp32"), ("fast", 64, 100, "fp32"),
            ("fast", 16, 300, "fp32"), ("fast", 16, 100, "bf16")} <= paths
    for row in rows:
        assert row["frames_per_s"] > 0 and row["steps"] >= 2
        assert row["achieved_flops"] == row["frames_per_s"] * row["flops_per_frame"]
        assert row["peak_flops"] is None  # unknown for CPUs
    # Default model: encoder convs + decoder, 3 x forward, 2 FLOPs per multiply-add.
    hidden = result["settings"]["default_config"]["hidden"]
    assert hidden == 32 and result["settings"]["overrides"] == ["hidden=32"]
    assert result["training"]["flops_per_frame_default"]["train_step"] == 6 * (
        13 * hidden * 21 + hidden * hidden * 5 + hidden * 100 + 100 * 12 * 10)

    assert result["evaluation"][0]["frames"] == result["corpus"]["frames_test"]
    assert result["data_stages"]["nema2npy_plus_normalize_seconds"] > 0
    assert result["classical_baseline"]["iterations"] >= 1

    quality = result["quality"]["rows"]
    assert [row["batch_size"] for row in quality] == [16, 64]
    assert quality[1]["lr"] == quality[0]["lr"] * 2  # sqrt(64 / 16)
    # Same frames for both (within one epoch's rounding).
    assert abs(quality[1]["crop_frames_trained"] / quality[0]["crop_frames_trained"] - 1) < 0.5
    for row in quality:
        for key in ("variance_explained", "seqnmf_similarity", "kernel_cosine"):
            assert isinstance(row[key], float)
    assert result["targets"]["training_default_config_frames_per_s"]["met"] in (True, False)
    assert result["targets"]["nema2npy_plus_normalize_real_size_seconds"]["met"] is None  # small corpus
