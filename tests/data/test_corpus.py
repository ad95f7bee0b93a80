"""nema2npy: pairing, NaN policies, bad files and speaker selection (gestural.corpus)."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import src_env

from gestural.core.params import DataParams
from gestural.data import corpus, ema
from gestural.data.archive import safe_extract
from gestural.data.corpus import CorpusError, build_npy, data_metrics, fill_nan_runs
from gestural.data.dataset import read_index

BASE = DataParams(
    source="synthetic", url=None, sha256=None, archive=None, speakers=None, test_fraction=0.2, seed=0,
    nan_policy="interpolate", max_nan_run=20, skip_bad_files=False, percentiles=(0.0, 100.0),
)


def params(**changes) -> DataParams:
    return dataclasses.replace(BASE, **changes)


def load_out(out):
    return np.load(out / "frames.npy"), read_index(out / "index.csv"), json.loads((out / "report.json").read_text())


def test_synthetic_corpus_drop_counts_match_the_generator(synthetic_archive, tmp_path):
    archive, _truth, summary, config = synthetic_archive
    safe_extract(archive, tmp_path / "extracted")
    report = build_npy(tmp_path / "extracted", tmp_path / "npy", params())
    frames, rows, on_disk = load_out(tmp_path / "npy")

    ema_files = summary["utterances"] - summary["wav_without_ema"]
    metrics = data_metrics(report)
    assert on_disk == report
    assert report["ema_files"] == ema_files
    assert metrics["dropped_by_reason"]["no_wav"] == summary["ema_without_wav"]
    assert metrics["dropped_by_reason"]["nan_run_too_long"] == summary["long_nan_runs"]
    assert metrics["utterances_kept"] == ema_files - summary["ema_without_wav"] - summary["long_nan_runs"]
    assert len(report["interpolated"]) == summary["short_nan_runs"]
    assert sum(len(ids) for ids in report["wav_without_ema"].values()) == summary["wav_without_ema"]
    assert metrics["frames"] == frames.shape[0] == sum(r["frames"] for r in rows)
    assert metrics["hours"] == pytest.approx(frames.shape[0] / 200 / 3600, abs=1e-4)
    assert metrics["speakers"] == len(config.speakers)
    assert frames.dtype == np.float32 and frames.shape[1] == 12 and np.isfinite(frames).all()


def test_pairing_drops_ema_without_wav_and_ignores_wav_without_ema(corpus_builder, tmp_path):
    b = corpus_builder
    first = b.add("spk", "spk_001")
    b.add("spk", "spk_002", wav=False)
    third = b.add("spk", "spk_003", lab=False)
    b.add_wav_only("spk", "spk_004")
    report = build_npy(b.root, tmp_path / "npy", params())
    frames, rows, _ = load_out(tmp_path / "npy")

    assert [r["utterance_id"] for r in rows] == ["spk_001", "spk_003"]
    assert report["dropped"] == [
        {"utterance_id": "spk_002", "speaker": "spk", "reason": "no_wav", "detail": "no wav/spk_002.wav"}
    ]
    assert report["wav_without_ema"] == {"spk": ["spk_004"]}
    assert rows[0] == {"utterance_id": "spk_001", "speaker": "spk", "start": 0, "frames": 50,
                       "ema": "emadata/cin_us_spk/nema/spk_001.ema", "wav": "emadata/cin_us_spk/wav/spk_001.wav",
                       "lab": "emadata/cin_us_spk/lab/spk_001.lab"}
    assert rows[1]["start"] == 50 and rows[1]["lab"] == ""
    # First 12 of the 14 columns, at nema's 6 decimals.
    np.testing.assert_allclose(frames[:50], first[:, :12], atol=1e-6)
    np.testing.assert_allclose(frames[50:], third[:, :12], atol=1e-6)


def test_est_track_files_are_read_like_nema(corpus_builder, tmp_path):
    values = corpus_builder.add("spk", "spk_001", est=True)
    build_npy(corpus_builder.root, tmp_path / "npy", params())
    frames, _, _ = load_out(tmp_path / "npy")
    np.testing.assert_array_equal(frames, values[:, :12].astype(np.float32))


def ramp(frames=60):
    """Linear trajectories, so that linear interpolation restores them exactly."""
    return np.outer(np.arange(frames, dtype=np.float64), np.linspace(0.5, 2.0, 14)) / frames


def test_short_nan_runs_are_interpolated_and_edges_held(corpus_builder, tmp_path):
    values = ramp()
    holed = values.copy()
    holed[10:13, 0] = np.nan   # interior, 3 frames
    holed[30:50, 5] = np.nan   # interior, exactly max_nan_run frames
    holed[:4, 7] = np.nan      # at the start: held at the first value
    corpus_builder.add("spk", "spk_001", holed)
    report = build_npy(corpus_builder.root, tmp_path / "npy", params(max_nan_run=20))
    frames, _, _ = load_out(tmp_path / "npy")

    expected = values[:, :12].copy()
    expected[:4, 7] = values[4, 7]
    np.testing.assert_allclose(frames, expected, atol=1e-5)
    assert report["interpolated"] == [
        {"utterance_id": "spk_001", "detail": "27 samples interpolated, longest run 20 frames"}
    ]


def test_run_longer_than_max_nan_run_drops_the_utterance(corpus_builder, tmp_path):
    holed = ramp()
    holed[30:51, 5] = np.nan  # 21 frames
    corpus_builder.add("spk", "spk_001", holed)
    corpus_builder.add("spk", "spk_002")
    report = build_npy(corpus_builder.root, tmp_path / "npy", params(max_nan_run=20))
    (drop,) = report["dropped"]
    assert drop["utterance_id"] == "spk_001" and drop["reason"] == "nan_run_too_long"
    assert "21 missing frames from frame 31 in channel tt_y" in drop["detail"]
    assert report["kept"] == 1


def test_channel_without_any_value_drops_the_utterance():
    values = ramp()[:, :12].astype(np.float32)
    values[:, 3] = np.nan
    filled, reason, detail = fill_nan_runs(values, max_run=1000)
    assert filled is None and reason == "channel_all_nan" and "tb_y" in detail


def test_inf_counts_as_missing():
    values = ramp()[:, :12].astype(np.float32)
    values[5, 2] = np.inf
    filled, reason, _ = fill_nan_runs(values, max_run=3)
    assert reason is None and filled[5, 2] == pytest.approx((values[4, 2] + values[6, 2]) / 2)


def test_drop_policy_drops_any_nan(corpus_builder, tmp_path):
    holed = ramp()
    holed[7, 1] = np.nan
    corpus_builder.add("spk", "spk_001", holed)
    corpus_builder.add("spk", "spk_002")
    report = build_npy(corpus_builder.root, tmp_path / "npy", params(nan_policy="drop"))
    assert [(d["utterance_id"], d["reason"]) for d in report["dropped"]] == [("spk_001", "nan")]


def test_error_policy_names_the_file_and_frame(corpus_builder, tmp_path):
    corpus_builder.add("spk", "spk_001")
    holed = ramp()
    holed[7, 1] = np.nan
    corpus_builder.add("spk", "spk_002", holed)
    with pytest.raises(CorpusError, match=r"spk_002\.ema, frame 8: missing sample .* channel td_y"):
        build_npy(corpus_builder.root, tmp_path / "npy", params(nan_policy="error"))
    assert not (tmp_path / "npy").exists()


def write_malformed(builder, utt_id="spk_002"):
    builder.add("spk", utt_id)
    path = builder.speaker_dir("spk") / "nema" / f"{utt_id}.ema"
    lines = path.read_text().splitlines()
    lines[2] = lines[2].replace(lines[2].split()[3], "abc", 1)
    path.write_text("\n".join(lines) + "\n")
    return path


def test_malformed_file_stops_with_file_and_line(corpus_builder, tmp_path):
    corpus_builder.add("spk", "spk_001")
    path = write_malformed(corpus_builder)
    with pytest.raises(ema.EmaFormatError) as caught:
        build_npy(corpus_builder.root, tmp_path / "npy", params())
    assert caught.value.path == str(path) and caught.value.line == 3
    assert "'abc' is not a number" in str(caught.value)
    assert not (tmp_path / "npy").exists()


def test_skip_bad_files_lists_each_skip(corpus_builder, tmp_path):
    corpus_builder.add("spk", "spk_001")
    path = write_malformed(corpus_builder)
    wav = corpus_builder.speaker_dir("spk") / "wav" / "spk_003.wav"
    corpus_builder.add("spk", "spk_003")
    wav.write_bytes(b"RIFF junk")
    report = build_npy(corpus_builder.root, tmp_path / "npy", params(skip_bad_files=True))
    _, rows, _ = load_out(tmp_path / "npy")

    assert [r["utterance_id"] for r in rows] == ["spk_001"]
    skipped = {s["path"]: s for s in report["skipped_bad_files"]}
    assert set(skipped) == {str(path), str(wav)}
    assert skipped[str(path)]["utterance_id"] == "spk_002" and "line 3" in skipped[str(path)]["error"]
    assert "not a readable WAV" in skipped[str(wav)]["error"]
    assert data_metrics(report)["dropped_by_reason"]["bad_file"] == 2


def test_wav_length_mismatch_is_recorded_not_dropped(corpus_builder, tmp_path):
    corpus_builder.add("spk", "spk_001", corpus_builder.values(100), wav_frames=100 + 10)  # 50 ms: within
    corpus_builder.add("spk", "spk_002", corpus_builder.values(100), wav_frames=100 + 40)  # 200 ms: beyond
    report = build_npy(corpus_builder.root, tmp_path / "npy", params())
    assert report["kept"] == 2
    assert report["wav_length_mismatch"] == [{"utterance_id": "spk_002", "ema_seconds": 0.5, "wav_seconds": 0.7}]
    assert data_metrics(report)["wav_length_mismatches"] == 1


def test_speaker_selection_and_unknown_speaker(corpus_builder, tmp_path):
    for speaker in ("aaa", "bbb", "ccc"):
        corpus_builder.add(speaker, f"{speaker}_001")
    report = build_npy(corpus_builder.root, tmp_path / "npy", params(speakers=("ccc", "aaa")))
    assert report["speakers"] == ["ccc", "aaa"]
    with pytest.raises(CorpusError, match=r"data.speakers: no speaker\(s\) \['zzz'\] .*available: aaa, bbb, ccc"):
        build_npy(corpus_builder.root, tmp_path / "npy2", params(speakers=("aaa", "zzz")))


def test_directory_without_speakers_is_explained(tmp_path):
    (tmp_path / "extracted" / "something").mkdir(parents=True)
    with pytest.raises(CorpusError, match=r"no speaker directories emadata/cin_us_\*/ .*something"):
        build_npy(tmp_path / "extracted", tmp_path / "npy", params())


def test_speaker_metadata_is_carried_to_speakers_json(corpus_builder, tmp_path):
    corpus_builder.add("mngu0", "mngu0_s1_0001")
    corpus_builder.add("msak0", "msak0_001")
    stats = corpus_builder.write_stats("mngu0")
    corpus_builder.write_prompts("mngu0", ["mngu0_s1_0001", "mngu0_s1_0007"], suffix=".test")
    build_npy(corpus_builder.root, tmp_path / "npy", params())
    meta = json.loads((tmp_path / "npy" / "speakers.json").read_text())
    assert meta["mngu0"]["official_test"] == ["mngu0_s1_0001", "mngu0_s1_0007"]
    assert meta["mngu0"]["ema_stats"]["mean"] == stats[:12, 0].tolist()
    assert meta["msak0"] == {"dir": "emadata/cin_us_msak0", "ema_stats": None, "official_test": None}


def test_process_pool_gives_the_same_output_and_errors(corpus_builder, tmp_path, monkeypatch):
    for i in range(12):
        corpus_builder.add("spk", f"spk_{i:03d}", corpus_builder.values(30 + i))
    serial = build_npy(corpus_builder.root, tmp_path / "serial", params(), workers=1)
    monkeypatch.setattr(corpus, "POOL_MIN_UTTERANCES", 0)
    pooled = build_npy(corpus_builder.root, tmp_path / "pooled", params(), workers=2)
    assert serial == pooled
    assert (tmp_path / "serial" / "frames.npy").read_bytes() == (tmp_path / "pooled" / "frames.npy").read_bytes()
    assert (tmp_path / "serial" / "index.csv").read_text() == (tmp_path / "pooled" / "index.csv").read_text()

    path = write_malformed(corpus_builder, "spk_005")
    with pytest.raises(ema.EmaFormatError, match=str(path)):
        build_npy(corpus_builder.root, tmp_path / "failed", params(), workers=2)
    assert not (tmp_path / "failed").exists()


def test_rerun_replaces_the_output(corpus_builder, tmp_path):
    corpus_builder.add("spk", "spk_001")
    corpus_builder.add("spk", "spk_002")
    build_npy(corpus_builder.root, tmp_path / "npy", params())
    report = build_npy(corpus_builder.root, tmp_path / "npy", params(speakers=("spk",), nan_policy="drop"))
    assert json.loads((tmp_path / "npy" / "report.json").read_text()) == report
    assert sorted(p.name for p in tmp_path.iterdir()) == ["extracted", "npy"]  # no temporary left


# --------------------------------------------------------------------------
# Pool workers (gestural.worker_pool): they die with the stage and leave Ctrl-C to it
# --------------------------------------------------------------------------

POOL_SCRIPT = """
import os, signal, sys, time
from gestural.core.worker_pool import pool_map

# A shell that runs the tests in the background starts its children with SIGINT ignored; the
# stage at a terminal gets Python's KeyboardInterrupt, which is what this script stands for.
signal.signal(signal.SIGINT, signal.default_int_handler)
from gestural.core.stage import run_stage

def slow(seconds):
    os.write(1, f"{os.getpid()}\\n".encode())  # one write: lines of two workers do not interleave
    time.sleep(seconds)
    return {}

# About 30 s of work in chunks of 2 s: still running at the signal under load, quick to stop.
work = pool_map(slow, [0.15] * 400, 2, min_tasks=0, desc="reading EMA", unit="utt")
sys.exit(run_stage("nema2npy", lambda: [None for _ in work] and 0))
"""


def start_pool(tmp_path):
    """The stage's process pool (2 workers) in a new process group; returns (process, worker pids)."""
    script = tmp_path / "pool.py"
    script.write_text(POOL_SCRIPT)
    env = src_env()
    process = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True, env=env, start_new_session=True)
    workers = set()
    while len(workers) < 2:
        line = process.stdout.readline()
        assert line, process.communicate()[1]
        workers.add(int(line))
    return process, workers


def gone(pid: int) -> bool:
    """Ended (a zombie awaiting its reaper counts as ended)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] in "ZX"
    except FileNotFoundError:
        return True


def wait_until_gone(pids, timeout=5.0) -> set:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and not all(gone(p) for p in pids):
        time.sleep(0.05)
    return {p for p in pids if not gone(p)}


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
def test_pool_workers_die_when_the_stage_is_killed(tmp_path):
    process, workers = start_pool(tmp_path)
    process.kill()  # kill -9: no chance to shut the pool down
    process.wait()
    survivors = wait_until_gone(workers)
    for pid in survivors:  # do not leave them behind if the test fails
        os.kill(pid, signal.SIGKILL)
    assert not survivors, f"orphaned pool workers {survivors}"


@pytest.mark.slow
def test_ctrl_c_stops_the_pool_with_one_line(tmp_path):
    process, workers = start_pool(tmp_path)
    os.killpg(process.pid, signal.SIGINT)  # what Ctrl-C does: the whole foreground group
    _, stderr = process.communicate(timeout=30)
    assert process.returncode == 130
    assert stderr.strip().splitlines()[-1] == "nema2npy: interrupted" and "Traceback" not in stderr
    assert not wait_until_gone(workers)
