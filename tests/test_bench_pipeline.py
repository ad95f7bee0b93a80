"""bench/pipeline.py: its measurements and figures, and (slow) that it runs end to end on a
tiny corpus in a clone and writes every field."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

PROJECT_ROOT = Path(__file__).resolve().parents[1]
if str(PROJECT_ROOT) not in sys.path:  # bench/ is a package of scripts beside src/, not installed
    sys.path.insert(0, str(PROJECT_ROOT))

from bench import pipeline_figures, result_files  # noqa: E402
from bench.measure import measured_run  # noqa: E402

STEP_KEYS = {"seconds", "returncode", "peak_rss_mib", "peak_tree_rss_mib", "user_seconds", "system_seconds"}


def test_measured_run_sees_a_child_process_memory_not_the_bench_own(tmp_path):
    # A grandchild holding 200 MiB: the launcher's wait reaps it, so the largest process counts it.
    code = "import subprocess, sys; subprocess.run([sys.executable, '-c', 'b = bytearray(200 << 20); b[::4096] = " \
           "b\"x\" * len(b[::4096])'], check=True)"
    measured = measured_run([sys.executable, "-c", code], cwd=tmp_path, env=dict(os.environ), log=tmp_path / "a.log")
    assert set(measured) == STEP_KEYS and measured["returncode"] == 0
    assert 200 <= measured["peak_rss_mib"] < 400
    small = measured_run([sys.executable, "-c", "pass"], cwd=tmp_path, env=dict(os.environ), log=tmp_path / "b.log")
    assert small["peak_rss_mib"] < 100  # not the test process's own (torch is loaded here)
    failing = measured_run([sys.executable, "-c", "raise SystemExit(3)"], cwd=tmp_path, env=dict(os.environ),
                           log=tmp_path / "c.log")
    assert failing["returncode"] == 3


def step(frames: int, seconds: float, peak: float) -> dict:
    return {"frames": frames, "seconds": seconds, "peak_rss_mib": peak, "peak_tree_rss_mib": peak,
            "user_seconds": seconds / 2, "system_seconds": 0.5}


def size(fraction: float, frames: int, stages: dict, factorize: dict | None = None) -> dict:
    result = {"fraction": fraction, "speakers": 8, "utterances_per_speaker": int(551 * fraction),
              "corpus": {"frames": frames}, "stages": stages,
              "repro_seconds": sum(s["seconds"] for s in stages.values())}
    if factorize:
        result["factorize"] = factorize
    return result


def test_scaling_gives_each_stage_exponent_and_the_targets_say_what_missed():
    small = size(0.25, 100, {"nema2npy": step(100, 2.0, 100), "evaluate": step(20, 10.0, 500)}, step(100, 5.0, 300))
    large = size(1.0, 400, {"nema2npy": step(400, 8.0, 200), "evaluate": step(80, 80.0, 5000)}, step(400, 20.0, 600))
    scale = pipeline_figures.scaling([large, small])
    assert scale["nema2npy"]["seconds_exponent"] == pytest.approx(1.0) and scale["nema2npy"]["linear_or_better"]
    assert scale["evaluate"]["seconds_exponent"] == pytest.approx(1.5) and not scale["evaluate"]["linear_or_better"]
    assert scale["evaluate"]["cpu_seconds_exponent"] == pytest.approx(math.log(40.5 / 5.5) / math.log(4))
    assert scale["factorize"]["seconds_per_million_more_frames"] == pytest.approx(15 / 300e-6)
    targets = pipeline_figures.targets([small, large], scale)
    assert targets["repro_seconds"]["met"] is True and targets["repro_seconds"]["measured"] == 88.0
    assert targets["peak_memory_mib"]["met"] is False and targets["peak_memory_mib"]["largest"] == "evaluate (8x551)"
    assert targets["linear_in_frames"] == {"target": "CPU (else wall) seconds ~ frames^e with e <= 1.1",
                                           "not_linear": ["evaluate"], "met": False}
    table = pipeline_figures.markdown_table({"sizes": [small, large], "scaling": scale}).splitlines()
    assert table[0].startswith("| stage | frames (8 x 137) | wall s | CPU s | peak RSS MiB | frames (8 x 551) |")
    assert table[3] == "| evaluate | 20 | 10.0 | 5.5 | 500 | 80 | 80.0 | 40.5 | 5,000 | 1.50 / 1.44 |"
    assert table[-1].startswith("| **dvc repro** | 100 | **12** | 7 | 500 | 400 | **88** | 45 | 5,000 |")
    assert pipeline_figures.scaling([large]) == {}


def test_runs_of_one_size_each_combine_into_one_result_with_their_scaling(tmp_path):
    from bench import pipeline

    sizes = [size(1.0, 400, {"nema2npy": step(400, 8.0, 200)}), size(0.25, 100, {"nema2npy": step(100, 2.0, 100)})]
    paths = []
    for n, one in enumerate(sizes):
        paths.append(tmp_path / f"{n}.json")
        paths[-1].write_text(json.dumps({"commit": "abc", "settings": {"fractions": [one["fraction"]]},
                                         "machine": {"load_average_at_end": [n, n, n]}, "sizes": [one],
                                         "scaling": {}, "targets": {}, "total_seconds": 10.0}))
    combined = pipeline.combine(paths)
    assert [s["fraction"] for s in combined["sizes"]] == [0.25, 1.0] and combined["total_seconds"] == 20.0
    assert combined["scaling"]["nema2npy"]["seconds_exponent"] == pytest.approx(1.0)
    assert combined["targets"]["linear_in_frames"]["met"] is True


def test_pipeline_results_are_not_read_as_bench_run_results(tmp_path):
    for name in ("cpu.json", "cpu-quick.json", "pipeline-cpu.json", "pipeline-cpu-quick.json"):
        (tmp_path / name).write_text("{}")
    assert [p.name for p in result_files.full_runs(tmp_path)] == ["cpu.json"]


@pytest.mark.slow
def test_pipeline_bench_runs_end_to_end_on_a_tiny_corpus(tmp_path):
    out = tmp_path / "pipeline.json"
    done = subprocess.run([sys.executable, str(PROJECT_ROOT / "bench" / "pipeline.py"), "--tiny", "--out", str(out)],
                          capture_output=True, text=True, timeout=900, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(out.read_text())
    assert json.loads(done.stdout) == result
    assert set(result) >= {"commit", "settings", "machine", "sizes", "scaling", "targets", "total_seconds"}
    (tiny,) = result["sizes"]
    stages = list(tiny["stages"])
    assert stages[-3:] == ["train", "evaluate", "plot"] and "download" in stages
    for measured in tiny["stages"].values():
        assert STEP_KEYS | {"frames"} <= set(measured) and measured["seconds"] > 0 and measured["peak_rss_mib"] > 0
    assert tiny["corpus"]["utterances"] > 0 and tiny["corpus"]["test_frames"] > 0
    assert tiny["corpus"]["classical_test_utterances"] == tiny["corpus"]["test_utterances"]
    factorize = tiny["factorize"]
    # Every EMA file, those nema2npy dropped too; the planted 1 s NaN run fails.
    assert factorize["files"] >= tiny["corpus"]["utterances"] and factorize["failed"] >= 1 and factorize["frames"] > 0
    assert result["targets"]["repro_seconds"]["met"] is not None and result["scaling"] == {}
