"""The train stage under hard inputs: every expected failure is one line on stderr and exit
status 1 (130 for Ctrl-C), never a traceback, never a stale or half-written model."""

from __future__ import annotations

import dataclasses
import os

import numpy as np
import pytest
import torch
import yaml
from conftest import load_stage, project_params, the_one_line, train_config

from gestural.core.files import save_npy, write_json
from gestural.core.stage import run_stage
from gestural.data.dataset import INDEX_COLUMNS, write_index
from gestural.model.file import save_model

CHANNELS = 12


def make_project(root, change=lambda params: None, frames=(120, 90, 100, 80)):
    """A normalized corpus of a few utterances and a params.yaml for a tiny, quick training."""
    rng = np.random.default_rng(0)
    data = [(0.5 + 0.2 * np.sin(np.arange(n) / 7.0 + rng.uniform(0, 6, (CHANNELS, 1)))).astype(np.float32)
            for n in frames]
    normalized = root / "data" / "normalized"
    save_npy(normalized / "frames.npy", np.concatenate(data, axis=1).T)
    starts = np.cumsum([0, *frames[:-1]])
    splits = ["train"] * (len(frames) - 1) + ["test"]
    rows = [dict(utterance_id=f"u{i}", speaker="s", start=int(s), frames=n, ema="", wav="", lab="", split=sp)
            for i, (s, n, sp) in enumerate(zip(starts, frames, splits))]
    write_index(normalized / "index.csv", rows, INDEX_COLUMNS + ("split",))
    write_json(normalized / "stats.json", {"channels": [f"c{i}" for i in range(CHANNELS)],
                                          "low": [0.0] * CHANNELS, "high": [1.0] * CHANNELS})
    params = project_params()
    params.update(num_gestures=4, win_size=6, segment_len=60, batch_size=2, epochs=2, device="cpu")
    params["train"].update(hidden=8, threads=1, steps_per_epoch=2, init="random", figure_every=1000)
    change(params)
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


def train_stage():
    return load_stage("train")


def run_train(root, monkeypatch):
    monkeypatch.chdir(root)
    monkeypatch.setenv("DVC_ROOT", str(root))
    return run_stage("train", train_stage().main)


def top(key, value):
    return lambda p: p.update({key: value})


def train_key(key, value):
    return lambda p: p["train"].update({key: value})


def no_cuda(change):
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    return change


@pytest.mark.parametrize("change, message", [
    (top("device", "cuda"), "params.yaml device: 'cuda' asked for, but torch sees no CUDA GPU"),
    (top("device", 0), "params.yaml device: must be auto, cpu, cuda or cuda:<index>"),
    (top("device", "cuda:abc"), "params.yaml device: must be auto, cpu, cuda or cuda:<index>"),
    (top("num_gestures", True), "params.yaml num_gestures: must be an integer"),
    (top("num_gestures", 100000), "params.yaml num_gestures: must be an integer >= 1 and <= 4096"),
    (top("seed", -1), "params.yaml seed: must be an integer >= 0"),
    (top("num_gesturez", 40), "params.yaml: unknown key 'num_gesturez' (did you mean 'num_gestures'?)"),
    (train_key("lr", "abc"), "params.yaml train.lr: must be a finite number > 0"),
    (train_key("lr", float("inf")), "params.yaml train.lr: must be a finite number > 0"),
    (train_key("hidden", 1.5), "params.yaml train.hidden: must be an integer"),
    (train_key("threads", 1.5), "params.yaml train.threads: must be an integer"),
    (train_key("run_name", 123), "params.yaml train.run_name: must be null or a name"),
    (train_key("eval_batch_size", 1.5), "params.yaml train.eval_batch_size: must be an integer"),
    (train_key("init", "missing/model.pt"), "params.yaml train.init: "),
    (lambda p: p["train"].pop("lr"), "params.yaml train: missing key(s) ['lr']"),
    (top("win_size", 200), "params.yaml win_size: must be <= segment_len"),
])
def test_a_bad_param_is_one_line_and_no_model(tmp_path, monkeypatch, capsys, change, message):
    if "cuda'" in message:
        no_cuda(change)
    make_project(tmp_path, change)
    assert run_train(tmp_path, monkeypatch) == 1
    assert message in the_one_line(capsys.readouterr().err)
    assert not (tmp_path / "models" / "model.pt").exists()


def test_data_shorter_than_a_kernel_is_one_line(tmp_path, monkeypatch, capsys):
    make_project(tmp_path, top("win_size", 50), frames=(20, 30, 25, 40))
    assert run_train(tmp_path, monkeypatch) == 1
    assert "every training utterance is shorter than win_size" in capsys.readouterr().err


def test_a_model_of_another_shape_to_continue_from_is_one_line(tmp_path, monkeypatch, capsys):
    other = tmp_path / "other.pt"
    config = train_config(num_gestures=5, win_size=6, hidden=8)
    from gestural.model.network import GesturalAutoEncoder

    save_model(other, GesturalAutoEncoder(config.model_config()), dataclasses.asdict(config), {})
    make_project(tmp_path, train_key("init", str(other)))
    assert run_train(tmp_path, monkeypatch) == 1
    err = capsys.readouterr().err
    assert "params.yaml train.init: " in err and "num_gestures=5" in err


@pytest.mark.slow
def test_an_unwritable_models_directory_is_one_line(tmp_path, monkeypatch, capsys):
    if os.geteuid() == 0:
        # root writes anywhere: make "models" a file instead, which nobody can write into
        (tmp_path / "models").write_text("not a directory")
    else:
        (tmp_path / "models").mkdir()
        (tmp_path / "models").chmod(0o500)
    make_project(tmp_path)
    assert run_train(tmp_path, monkeypatch) == 1
    assert "models" in the_one_line(capsys.readouterr().err)


def test_a_full_disk_is_one_line(tmp_path, monkeypatch, capsys):
    make_project(tmp_path)

    def full(*args, **kwargs):
        raise OSError(28, "No space left on device", "models/model.pt")

    monkeypatch.setattr("pathlib.Path.write_bytes", full)
    assert run_train(tmp_path, monkeypatch) == 1
    assert capsys.readouterr().err.strip() == "train: disk full while writing models/model.pt"
    assert not (tmp_path / "models" / "model.pt").exists()


@pytest.mark.slow
def test_ctrl_c_exits_quietly_with_the_checkpoint_intact_and_a_rerun_resumes(tmp_path, monkeypatch, capsys, caplog):
    make_project(tmp_path, top("epochs", 3))
    from gestural.training import trainer as training

    original = training.Trainer._save_checkpoint

    def save_then_interrupt(self, epoch):
        original(self, epoch)
        if epoch == 2:
            raise KeyboardInterrupt

    monkeypatch.setattr(training.Trainer, "_save_checkpoint", save_then_interrupt)
    assert run_train(tmp_path, monkeypatch) == 130
    assert capsys.readouterr().err.strip().endswith("train: interrupted")
    assert (tmp_path / "checkpoints" / "train.pt").is_file()
    monkeypatch.setattr(training.Trainer, "_save_checkpoint", original)
    assert run_train(tmp_path, monkeypatch) == 0
    assert "resuming from checkpoints/train.pt after epoch 2" in caplog.text
    # A finished run leaves no checkpoint behind (it is no DVC output).
    assert not (tmp_path / "checkpoints" / "train.pt").exists()
    assert (tmp_path / "models" / "model.pt").is_file()


@pytest.mark.slow
def test_an_edit_to_the_code_starts_fresh(tmp_path, monkeypatch, caplog):
    make_project(tmp_path, top("epochs", 3))
    from gestural.training import checkpoint
    from gestural.training import trainer as training

    original = training.Trainer._save_checkpoint

    def save_then_interrupt(self, epoch):
        original(self, epoch)
        raise KeyboardInterrupt

    monkeypatch.setattr(training.Trainer, "_save_checkpoint", save_then_interrupt)
    assert run_train(tmp_path, monkeypatch) == 130
    monkeypatch.setattr(training.Trainer, "_save_checkpoint", original)
    monkeypatch.setattr(checkpoint, "code_version", lambda: "edited")
    caplog.clear()
    assert run_train(tmp_path, monkeypatch) == 0
    assert "written for other settings, data or code; starting fresh" in caplog.text
    assert "resuming" not in caplog.text
