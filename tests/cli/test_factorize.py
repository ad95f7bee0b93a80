"""`gestural factorize`: the saved normalization is applied, every output is written, bad files are reported."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from conftest import PROJECT_ROOT, model_config, train_config

from gestural.cli import main as cli
from gestural.cli.factorize import FIGURE_FILES, OUTPUT_FILES, FactorizeError, FileFactorizer, find_lab
from gestural.core import units
from gestural.data import ema, est_track
from gestural.evaluation import export
from gestural.model.file import save_model
from gestural.model.network import GesturalAutoEncoder

LOW = np.linspace(-3.0, -2.0, 12)
HIGH = np.linspace(2.0, 4.0, 12)
FRAMES = 60


@pytest.fixture(scope="module")
def model_path(tmp_path_factory):
    torch.manual_seed(0)
    model = GesturalAutoEncoder(model_config(num_gestures=3, win_size=4, hidden=8, peak_window=5,
                                                    kernels="nonnegative", response_frames=0))
    normalization = {"channels": list(units.CHANNELS), "low": LOW.tolist(), "high": HIGH.tolist(),
                     "percentiles": [0.0, 100.0]}
    path = tmp_path_factory.mktemp("model") / "model.pt"
    save_model(path, model, dataclasses.asdict(train_config(num_gestures=3, win_size=4, hidden=8)), normalization)
    return path


def z_values(frames: int = FRAMES, columns: int = 14, seed: int = 0) -> np.ndarray:
    """Smooth z-scored-looking trajectories (frames, columns); columns beyond 12 are ignored."""
    rng = np.random.default_rng(seed)
    t = np.arange(frames)[:, None] / 200.0
    return np.sin(2 * np.pi * rng.uniform(1, 4, columns) * t + rng.uniform(0, 6, columns)) * 1.5


def corpus_file(root, utt_id: str, values: np.ndarray, *, est: bool = False, lab: bool = True):
    """``root/nema/<id>.ema`` (+ ``root/lab/<id>.lab``), laid out as in the corpus."""
    path = root / "nema" / f"{utt_id}.ema"
    (est_track.write_est_track if est else ema.write_nema)(path, values)
    if lab:
        ema.write_lab(root / "lab" / f"{utt_id}.lab", [(0.1, "sil"), (values.shape[0] / 200.0, "a")])
    return path


def run(capsys, *argv) -> tuple[int, str, str]:
    code = cli.main(["factorize", *map(str, argv)])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize("est", [False, True], ids=["nema", "est"])
def test_factorize_one_file_writes_every_output(tmp_path, model_path, capsys, est):
    values = z_values()
    path = corpus_file(tmp_path, "utt_001", values, est=est)
    code, out, err = run(capsys, "--model", model_path, "--ema", path, "--out", tmp_path / "out", "--dpi", 40)
    assert code == 0, err
    directory = tmp_path / "out" / "utt_001"
    assert sorted(p.name for p in directory.iterdir()) == sorted(OUTPUT_FILES + FIGURE_FILES + ("utt_001.TextGrid",))
    assert "utt_001" in out and "Traceback" not in err

    scores, times, frame_rate = export.read_scores(directory / "scores.npz")
    assert frame_rate == 200.0 and times.shape == (FRAMES,) and times[1] == pytest.approx(0.005)
    reconstruction = np.load(directory / "reconstruction.npy")
    assert scores.shape == (3, FRAMES) and scores.dtype == np.float32 and (scores >= 0).all()
    assert reconstruction.shape == (12, FRAMES) and reconstruction.dtype == np.float32

    # The model saw the data scaled with the saved low/high, and its outputs were saved as is.
    factorizer = FileFactorizer.load(model_path, "cpu")
    x = np.clip((values[:, :12] - LOW) / (HIGH - LOW), 0, 1).T
    expected_scores, expected_reconstruction = factorizer(x.astype(np.float32))
    np.testing.assert_allclose(scores, expected_scores, atol=1e-6)
    np.testing.assert_allclose(reconstruction, expected_reconstruction, atol=1e-6)

    metrics = json.loads((directory / "metrics.json").read_text())
    assert metrics["frames"] == FRAMES and metrics["num_gestures"] == 3
    assert metrics["lab"].endswith(os.path.join("lab", "utt_001.lab"))
    rmse = np.sqrt(np.mean((x - reconstruction) ** 2))
    assert metrics["reconstruction"]["rmse"] == pytest.approx(rmse, rel=1e-4)
    assert set(metrics["reconstruction"]["correlation_per_channel"]) == set(units.CHANNELS)
    assert metrics["sparsity"]["num_gestures_in_use"] == len(metrics["gestures_in_use"])
    assert not [p for p in (tmp_path / "out").iterdir() if p.name.startswith(".")]  # no temp dirs left


def test_prepare_interpolates_short_gaps_and_refuses_long_ones(model_path, tmp_path):
    factorizer = FileFactorizer.load(model_path, "cpu", max_nan_run=3)
    values = z_values()[:, :12].astype(np.float32)
    values[10:12, 4] = np.nan
    x, notes = factorizer.prepare(values, "a.ema")
    assert np.isfinite(x).all() and "2 samples interpolated" in notes["missing"]
    expected = (np.interp(10, [9, 12], values[[9, 12], 4]) - LOW[4]) / (HIGH[4] - LOW[4])
    assert x[4, 10] == pytest.approx(expected, rel=1e-5)
    values[20:30, 0] = np.nan
    with pytest.raises(FactorizeError, match=r"a\.ema: missing samples .*10 missing frames"):
        factorizer.prepare(values, "a.ema")


def test_values_outside_the_training_range_are_clipped_and_counted(model_path):
    factorizer = FileFactorizer.load(model_path, "cpu")
    values = np.zeros((10, 12), dtype=np.float32)
    values[:5, 0] = 100.0
    x, notes = factorizer.prepare(values)
    assert x[0, :5].tolist() == [1.0] * 5 and x.min() >= 0
    assert notes["clipped_fraction"] == pytest.approx(5 / 120)


def test_long_nan_run_is_a_clear_error(tmp_path, model_path, capsys):
    values = z_values()
    values[5:45, 2] = np.nan
    path = corpus_file(tmp_path, "gappy", values)
    code, _, err = run(capsys, "--model", model_path, "--ema", path, "--out", tmp_path / "out", "--no-figures")
    assert code == 2
    assert "gappy.ema" in err and "40 missing frames" in err and "Traceback" not in err
    assert not (tmp_path / "out" / "gappy").exists()


def test_directory_processes_the_good_files_and_reports_the_bad_one(tmp_path, model_path, capsys):
    for n in range(2):
        corpus_file(tmp_path, f"good_{n}", z_values(seed=n), lab=False)
    bad = tmp_path / "nema" / "bad.ema"
    bad.write_text("1 2 3\n4 5 x\n")
    (tmp_path / "nema" / "notes.txt").write_text("not an ema file")
    code, out, err = run(capsys, "--model", model_path, "--ema", tmp_path / "nema", "--out", tmp_path / "out",
                         "--no-figures", "--quiet")
    assert code == 1
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["good_0", "good_1"]
    assert "factorized 2 of 3 files" in out
    failed = [line for line in out.splitlines() if "FAILED" in line]
    assert len(failed) == 1 and "bad.ema, line 2" in failed[0] and "'x' is not a number" in failed[0]
    assert "bad.ema" in err and "Traceback" not in err
    assert sum("ok" in line.split()[:1] for line in out.splitlines()) == 2


def test_single_malformed_file_exits_2_naming_the_file(tmp_path, model_path, capsys):
    bad = tmp_path / "broken.ema"
    bad.write_bytes(b"EST_File Track\nDataType binary\nNumFrames 10\n")
    code, out, err = run(capsys, "--model", model_path, "--ema", bad, "--out", tmp_path / "out")
    assert code == 2
    assert str(bad) in err and "EST_Header_End" in err and "Traceback" not in err
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


@pytest.mark.parametrize("argv, message", [
    (["--model", "{tmp}/missing.pt", "--ema", "{ema}"], "missing.pt: model file not found"),
    (["--model", "{model}", "--ema", "{tmp}/nothing"], "nothing: no such file or directory"),
    (["--model", "{model}", "--ema", "{ema}", "--device", "tpu"], "--device must be"),
    (["--model", "{model}", "--ema", "{tmp}/nema", "--lab", "{tmp}/lab/u.lab"], "--lab needs"),
])
def test_usage_errors_exit_2(tmp_path, model_path, capsys, argv, message):
    ema_path = corpus_file(tmp_path, "u", z_values())
    argv = [a.format(tmp=tmp_path, ema=ema_path, model=model_path) for a in argv]
    code, _, err = run(capsys, *argv, "--out", tmp_path / "out")
    assert code == 2 and message in err and "Traceback" not in err


def test_a_file_that_is_not_a_model_is_refused(tmp_path, capsys):
    fake = tmp_path / "model.pt"
    fake.write_text("hello")
    ema_path = corpus_file(tmp_path, "u", z_values())
    code, _, err = run(capsys, "--model", fake, "--ema", ema_path, "--out", tmp_path / "out")
    assert code == 2 and "model.pt" in err and "Traceback" not in err


def test_rerun_replaces_the_output_whole(tmp_path, model_path, capsys):
    path = corpus_file(tmp_path, "u", z_values())
    stale = tmp_path / "out" / "u" / "stale.txt"
    stale.parent.mkdir(parents=True)
    stale.write_text("old")
    code, _, _ = run(capsys, "--model", model_path, "--ema", path, "--out", tmp_path / "out", "--no-figures")
    assert code == 0
    assert sorted(p.name for p in (tmp_path / "out" / "u").iterdir()) == sorted(OUTPUT_FILES + ("u.TextGrid",))


def test_find_lab_looks_beside_the_nema_directory(tmp_path):
    path = corpus_file(tmp_path, "u", z_values())
    assert find_lab(path) == tmp_path / "lab" / "u.lab"
    alone = tmp_path / "elsewhere" / "v.ema"
    alone.parent.mkdir()
    alone.write_text("0 " * 12)
    assert find_lab(alone) is None


@pytest.mark.slow
def test_python_dash_m_runs_the_command_line(tmp_path, model_path):
    path = corpus_file(tmp_path, "u", z_values())
    result = subprocess.run([sys.executable, "-m", "gestural", "factorize", "--model", str(model_path), "--ema",
                             str(path), "--out", str(tmp_path / "out"), "--no-figures", "--device", "cpu"],
                            capture_output=True, text=True, cwd=PROJECT_ROOT, timeout=120)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "out" / "u" / "scores.npz").is_file()


def test_textgrid_and_events_describe_the_same_events_with_the_phones(tmp_path, model_path, capsys):
    path = corpus_file(tmp_path, "u", z_values(frames=200))
    code, _, err = run(capsys, "--model", model_path, "--ema", path, "--out", tmp_path / "out", "--no-figures")
    assert code == 0, err
    directory = tmp_path / "out" / "u"
    metrics = json.loads((directory / "metrics.json").read_text())
    in_use = metrics["gestures_in_use"]
    assert in_use, "the test model should use some gesture"
    events = export.read_events(directory / "events.csv")
    assert len(events) == metrics["events"] > 0
    grid = export.read_textgrid(directory / "u.TextGrid")
    # Phones first (from ../lab/u.lab: "sil" to 0.1 s, then "a"), then the gestures in use, most used first.
    assert grid.tierNames == ("phones", *(f"g{k}" for k in in_use))
    assert [e.label for e in grid.getTier("phones").entries] == ["sil", "a"]
    assert grid.maxTimestamp == pytest.approx(1.0)
    from_grid = sorted((int(tier[1:]), round(e.start, 6), round(e.end, 6))
                       for tier in grid.tierNames[1:] for e in grid.getTier(tier).entries)
    from_csv = sorted((r["gesture"], round(r["onset_s"], 6), round(r["offset_s"], 6)) for r in events)
    assert from_grid == from_csv
    assert all(r["phone"] == ("sil" if r["onset_s"] < 0.1 else "a") for r in events)
    # An event covers at least one kernel length (4 frames = 20 ms) unless the utterance ends.
    assert all(r["offset_s"] - r["onset_s"] >= 0.02 - 1e-9 or r["offset_s"] == pytest.approx(1.0) for r in events)


@pytest.mark.slow
def test_a_fifo_is_refused_with_one_line_instead_of_blocking(tmp_path, model_path):
    fifo = tmp_path / "live.ema"
    os.mkfifo(fifo)
    # In a subprocess with a timeout: a regression would block forever on open().
    result = subprocess.run([sys.executable, "-m", "gestural", "factorize", "--model", str(model_path), "--ema",
                             str(fifo), "--out", str(tmp_path / "out"), "--device", "cpu"],
                            capture_output=True, text=True, cwd=PROJECT_ROOT, timeout=60)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [f"gestural factorize: error: {fifo}: is a named pipe (FIFO), "
                                                  "not a regular EMA file"]
    assert not (tmp_path / "out").exists()


def test_factorize_file_refuses_a_fifo_and_a_device(tmp_path, model_path):
    from gestural.cli.factorize import factorize_file

    factorizer = FileFactorizer.load(model_path, "cpu")
    fifo = tmp_path / "pipe.ema"
    os.mkfifo(fifo)
    with pytest.raises(FactorizeError, match="named pipe"):
        factorize_file(factorizer, fifo, tmp_path / "out", figures=False)
    with pytest.raises(FactorizeError, match="character device"):
        factorize_file(factorizer, "/dev/zero", tmp_path / "out", figures=False)
