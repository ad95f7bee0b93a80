"""The trainer: recovery of a planted factorization, resume, params checks, outputs."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch
from conftest import min_max_normalized, project_params, train_config

from gestural.core.devices import resolve_device
from gestural.core.params import ParamsError
from gestural.data.batches import UtteranceStore
from gestural.evaluation.held_out import evaluate_model
from gestural.evaluation.recovery import kernel_recovery
from gestural.model.file import load_model
from gestural.synthetic.generator import SyntheticConfig, generate
from gestural.training.config import TrainConfig
from gestural.training.outputs import (
    CONVERGED_CHANGE,
    CONVERGENCE_EPOCHS,
    EpochRecord,
    TrainOutputError,
    held_out_loss_change,
    read_learning_curve,
    write_learning_curve,
    write_training_outputs,
)
from gestural.training.trainer import Trainer, TrainingDataError


@pytest.fixture(scope="module")
def planted_problem():
    """A small planted corpus in normalized units: (train, test, planted kernels)."""
    config = SyntheticConfig(speakers=["s", "t"], utterances_per_speaker=30, snr_db=40.0, jitter=0.0, seed=3)
    kernels, _baseline, utterances = generate(config)
    normalized, low, high = min_max_normalized([u.latent for u in utterances])
    planted = kernels / (high - low)[None, :, None]
    return normalized[:-8], normalized[-8:], planted


def small_config(**overrides) -> TrainConfig:
    # The event-like settings this planted corpus was tuned with (peak picking, non-negative
    # kernels without responses), not params.yaml's articulatory defaults.
    settings = dict(num_gestures=16, win_size=10, segment_len=500, batch_size=16, epochs=80, steps_per_epoch=5,
                    hidden=32, peak_window=5, threads=1, lr=0.005, l1_weight=0.0, beta=1e-4, figure_every=1000,
                    kernels="nonnegative", response_frames=0, smoothness_weight=0.0, hoyer_gestures_weight=0.1,
                    hoyer_time_weight=0.1, hoyer_time_target=0.95)
    settings.update(overrides)
    return train_config(**settings)


@pytest.mark.slow
@pytest.mark.parametrize("model", ["ae", "vae"])
def test_recovers_the_planted_kernels(planted_problem, model):
    train, test, planted = planted_problem
    # This corpus has no amplitude jitter: the VAE's movement share starts low (from 0.05 it
    # grew to 0.12, absorbing misfit of the large movements, and the cosine fell to 0.87).
    config = small_config(model=model, movement_noise=0.01)
    result = Trainer(config, train, test, progress=False).fit()
    learned = result.model.decoder.gesture_kernels.detach().numpy()
    recovery = kernel_recovery(planted, learned)
    assert recovery["matched_cosine_mean"] >= 0.9, recovery["per_gesture"]
    last = result.history[-1]
    # Scores stay alive (the known failure: every score dies and the loss stalls at the baseline).
    assert last.active_scores > 0 and last.gestures_in_use > 0
    assert last.test_reconstruction < 0.2 * result.history[0].test_reconstruction or last.test_reconstruction < 1e-3


@pytest.mark.slow
@pytest.mark.parametrize("optimizer", ["adamw", "muon"])
def test_same_seed_same_result_and_resume_continues_from_the_checkpoint(planted_problem, tmp_path, optimizer):
    train, test, _ = planted_problem
    config = small_config(epochs=4, optimizer=optimizer)
    reference = Trainer(config, train, test, progress=False).fit().model.state_dict()
    again = Trainer(config, train, test, progress=False).fit().model.state_dict()
    for key in reference:
        torch.testing.assert_close(again[key], reference[key], rtol=0, atol=0)

    checkpoint = tmp_path / "train.pt"
    interrupted = Trainer(config, train, test, checkpoint_path=checkpoint, progress=False)
    original_save = interrupted._save_checkpoint

    def save_then_die(epoch):
        original_save(epoch)
        if epoch == 2:
            raise KeyboardInterrupt

    interrupted._save_checkpoint = save_then_die
    with pytest.raises(KeyboardInterrupt):
        interrupted.fit()
    resumed = Trainer(config, train, test, checkpoint_path=checkpoint, progress=False)
    assert resumed.start_epoch == 2
    result = resumed.fit()
    assert [row.epoch for row in result.history] == [1, 2, 3, 4]
    assert result.resumed_from_epoch == 2
    # Speed is reported over the whole training, the epochs before the interruption included.
    frames_per_epoch = resumed.steps_per_epoch * config.batch_size * config.segment_len
    assert 2.5 * frames_per_epoch < resumed.trained_frames <= 4 * frames_per_epoch
    for key in reference:
        torch.testing.assert_close(result.model.state_dict()[key], reference[key], rtol=0, atol=0)

    # A changed setting does not resume from the old checkpoint.
    changed = Trainer(small_config(epochs=4, optimizer=optimizer, lr=0.02), train, test, checkpoint_path=checkpoint,
                      progress=False)
    assert changed.start_epoch == 0


@pytest.mark.slow
def test_a_larger_response_lr_lets_few_large_batch_steps_shorten_the_responses(planted_problem):
    # The planted scores are impulses, so the learned responses should shrink from their 5 Hz
    # start (a time constant of 6.4 frames) towards one frame. At batch 64 for 60 steps AdamW
    # moves a rate about train.lr per step, too little at lr; at 8 x lr (train.response_lr)
    # they get there. Measured: median time constant 4.9 -> 1.2 frames, variance explained
    # 0.47 -> 0.63.
    train, test, _ = planted_problem
    few_steps = dict(threads=2, hidden=32, num_gestures=12, batch_size=64, epochs=12, steps_per_epoch=5,
                     optimizer="muon", lr=0.01)
    fitted = {}
    for response_lr in (None, 0.08):
        result = Trainer(train_config(response_lr=response_lr, **few_steps), train, test, progress=False).fit()
        time_constants = 1 / result.model.decoder.log_rate.detach().exp()
        metrics, _, _ = evaluate_model(result.model, UtteranceStore(test, "cpu"))
        fitted[response_lr] = float(time_constants.median()), metrics["variance_explained"]
    (slow_tau, slow_fit), (fast_tau, fast_fit) = fitted[None], fitted[0.08]
    assert slow_tau > 4.0 and fast_tau < 2.0, fitted
    assert fast_fit >= slow_fit + 0.1, fitted


def test_outputs_are_written_and_the_model_loads_alone(planted_problem, tmp_path):
    train, test, _ = planted_problem
    config = small_config(epochs=2)
    result = Trainer(config, train, test, progress=False).fit()
    normalization = {"low": [0.0] * 12, "high": [1.0] * 12}
    write_training_outputs(result, config, normalization, tmp_path / "models", tmp_path / "train.json",
                           tmp_path / "curve.csv", tmp_path / "timing.json")
    gestures = np.load(tmp_path / "models" / "gestures.npy")
    assert gestures.shape == (16, 12, 10) and gestures.dtype == np.float32 and (gestures >= 0).all()
    loaded = load_model(tmp_path / "models" / "model.pt")
    torch.testing.assert_close(loaded.model.decoder.gesture_kernels, torch.from_numpy(gestures))
    assert loaded.normalization == normalization
    assert loaded.settings["num_gestures"] == config.num_gestures
    metrics = json.loads((tmp_path / "train.json").read_text())
    assert set(metrics) == {"test_reconstruction", "gestures_in_use"}
    timing = json.loads((tmp_path / "timing.json").read_text())
    assert timing["epochs"] == 2 and timing["steps"] == 2 * config.steps_per_epoch
    assert timing["frames_per_second"] > 0 and timing["seconds"] > 0
    # The same weights give the same bytes (torch.save would record a temporary file name).
    first = (tmp_path / "models" / "model.pt").read_bytes()
    write_training_outputs(result, config, normalization, tmp_path / "models", tmp_path / "train.json",
                           tmp_path / "curve.csv", tmp_path / "timing.json")
    assert (tmp_path / "models" / "model.pt").read_bytes() == first
    rows = read_learning_curve(tmp_path / "curve.csv")
    assert [int(r["epoch"]) for r in rows] == [1, 2]


def test_a_run_whose_held_out_loss_still_falls_is_reported_unconverged(planted_problem, tmp_path):
    def history(losses):
        return [EpochRecord(epoch, 0.0, 0.0, loss, 0.0, 0.0, 0.5, 0.5, 0.5, 1.0, 1e-3, 1.0)
                for epoch, loss in enumerate(losses, start=1)]

    falling = history([0.02 * 0.98 ** epoch for epoch in range(8)])
    assert held_out_loss_change(falling) == pytest.approx(0.98 ** -CONVERGENCE_EPOCHS - 1)
    assert held_out_loss_change(falling) > CONVERGED_CHANGE
    assert held_out_loss_change(history([0.02] * 6 + [0.0199, 0.01995])) < CONVERGED_CHANGE
    assert held_out_loss_change(history([0.02] * CONVERGENCE_EPOCHS)) is None  # too short to tell
    # The train stage's metrics carry it, so that dvc exp show / metrics diff compare it.
    train, test, _ = planted_problem
    config = small_config(epochs=1)
    result = dataclasses.replace(Trainer(config, train, test, progress=False).fit(), history=falling)
    write_training_outputs(result, config, {"low": [0.0] * 12, "high": [1.0] * 12}, tmp_path / "models",
                           tmp_path / "train.json", tmp_path / "curve.csv", tmp_path / "timing.json")
    metrics = json.loads((tmp_path / "train.json").read_text())
    assert metrics[f"held_out_loss_change_last_{CONVERGENCE_EPOCHS}_epochs"] == pytest.approx(
        held_out_loss_change(falling))


def test_learning_curve_reads_back_what_was_written(tmp_path):
    history = [EpochRecord(epoch, 0.1234567 * epoch, 1e-7 * epoch, 123456.789, 0.0, float("nan"), 0.5, 0.25,
                           1 / 3, 0.75, 1e-3, 12.0) for epoch in (1, 2)]
    write_learning_curve(tmp_path / "curve.csv", history)
    # 6 significant digits, in a format that DVC's plots and spreadsheets read.
    assert (tmp_path / "curve.csv").read_text() == (
        "epoch,train_loss,train_reconstruction,test_reconstruction,sparsity_penalty,kl,hoyer_across_gestures,"
        "hoyer_across_time,active_scores,gestures_in_use,lr,seconds\n"
        "1,0.123457,1e-07,123457,0,nan,0.5,0.25,0.333333,0.75,0.001,12\n"
        "2,0.246913,2e-07,123457,0,nan,0.5,0.25,0.333333,0.75,0.001,12\n")
    rows = read_learning_curve(tmp_path / "curve.csv")
    assert [r["epoch"] for r in rows] == ["1", "2"] and rows[1]["train_loss"] == "0.246913"
    with pytest.raises(TrainOutputError, match=r"nowhere\.csv: no such file \(run `dvc repro train`\)$"):
        read_learning_curve(tmp_path / "nowhere.csv")
    (tmp_path / "bad.csv").write_text("a,b\n1,2\n")
    with pytest.raises(TrainOutputError, match=r"bad\.csv: no 'epoch' column \(header \['a', 'b'\]\)$"):
        read_learning_curve(tmp_path / "bad.csv")


def test_fine_tuning_refuses_a_model_of_another_shape(planted_problem, tmp_path):
    train, test, _ = planted_problem
    config = small_config(epochs=1)
    result = Trainer(config, train, test, progress=False).fit()
    write_training_outputs(result, config, {}, tmp_path, tmp_path / "m.json", tmp_path / "c.csv", tmp_path / "t.json")
    same = small_config(epochs=1, init=str(tmp_path / "model.pt"))
    trainer = Trainer(same, train, test, progress=False)
    torch.testing.assert_close(trainer.model.decoder.kernels_raw, result.model.decoder.kernels_raw)
    other = small_config(epochs=1, num_gestures=17, init=str(tmp_path / "model.pt"))
    with pytest.raises(ParamsError, match="train.init: .*num_gestures=16 but params.yaml asks for num_gestures=17"):
        Trainer(other, train, test, progress=False)


@pytest.mark.parametrize("overrides, message", [
    (dict(win_size=600, segment_len=500), "params.yaml win_size: must be <= segment_len"),
    (dict(num_gestures=0), "params.yaml num_gestures: must be an integer >= 1"),
    (dict(num_gestures=True), "params.yaml num_gestures: must be an integer >= 1"),
    (dict(num_gestures=100000), "params.yaml num_gestures: must be an integer >= 1 and <= 4096"),
    (dict(model="gan"), "params.yaml model: must be one of ae, vae"),
    (dict(loss="huber"), "params.yaml loss: must be one of mse, l1"),
    (dict(seed=-1), "params.yaml seed: must be an integer >= 0"),
    (dict(l1_weight=-1.0), "params.yaml train.l1_weight: must be a finite number >= 0"),
    (dict(lr="abc"), "params.yaml train.lr: must be a finite number > 0"),
    (dict(lr=float("inf")), "params.yaml train.lr: must be a finite number > 0"),
    (dict(optimizer="sgd"), "params.yaml train.optimizer: must be one of adamw, muon"),
    (dict(muon_lr=0.0), "params.yaml train.muon_lr: must be a finite number > 0"),
    (dict(response_lr=0.0), "params.yaml train.response_lr: must be a finite number > 0"),
    (dict(response_lr="fast"), "params.yaml train.response_lr: must be a finite number > 0"),
    (dict(hidden=1.5), "params.yaml train.hidden: must be an integer >= 1"),
    (dict(threads=1.5), "params.yaml train.threads: must be an integer >= 0"),
    (dict(eval_batch_size=1.5), "params.yaml train.eval_batch_size: must be an integer >= 1"),
    (dict(run_name=123), "params.yaml train.run_name: must be null or a name"),
    (dict(beta=-0.1), "params.yaml train.beta: must be a finite number >= 0"),
    (dict(background_threshold=0.0), "params.yaml train.background_threshold: must be a finite number > 0.0 and <= 1"),
    (dict(background_reach=-1), "params.yaml train.background_reach: must be an integer >= 0"),
    (dict(sparse_warmup_fraction=2.0), "params.yaml train.sparse_warmup_fraction: must be a finite number >= 0"),
    (dict(device="tpu"), "params.yaml device: must be auto, cpu, cuda"),
    (dict(device=0), "params.yaml device: must be auto, cpu, cuda"),
    (dict(device="cuda:abc"), "params.yaml device: must be auto, cpu, cuda"),
    (dict(init="pretrained"), "params.yaml train.init: must be random, kmeans or the path"),
    (dict(kernels="positive"), "params.yaml train.kernels: must be one of nonnegative, signed"),
])
def test_bad_params_fail_naming_the_param(overrides, message):
    with pytest.raises(ParamsError, match=message):
        train_config(**overrides).validate()


def test_unknown_or_missing_train_keys_are_refused():
    params = project_params()
    TrainConfig.from_params(params)  # the committed file is complete
    params["train"]["lr_max"] = 1.0
    with pytest.raises(ParamsError, match=r"train: unknown key\(s\) \['lr_max'\]"):
        TrainConfig.from_params(params)
    del params["train"]["lr_max"], params["train"]["lr"]
    with pytest.raises(ParamsError, match=r"train: missing key\(s\) \['lr'\]"):
        TrainConfig.from_params(params)


def test_a_cuda_device_on_a_machine_without_one_is_one_clear_error():
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    with pytest.raises(ParamsError, match="params.yaml device: 'cuda' asked for, but torch sees no CUDA GPU"):
        resolve_device("cuda")


@pytest.mark.parametrize("make, message", [
    (lambda u: [x[:, :5] for x in u], "every training utterance is shorter than win_size"),
    (lambda u: [np.zeros_like(x) for x in u], "every channel of every training utterance is constant"),
])
def test_data_that_cannot_train_is_refused_with_a_reason(planted_problem, make, message):
    train, test, _ = planted_problem
    with pytest.raises(TrainingDataError, match=message):
        Trainer(small_config(epochs=1), make(train), test, progress=False)


def test_a_checkpoint_from_other_data_or_a_broken_one_starts_fresh(planted_problem, tmp_path):
    train, test, _ = planted_problem
    checkpoint = tmp_path / "train.pt"
    config = small_config(epochs=1)
    Trainer(config, train, test, checkpoint_path=checkpoint, progress=False).fit()
    assert Trainer(config, train, test, checkpoint_path=checkpoint, progress=False).start_epoch == 1
    # Other training data (another speaker, another split, another normalization): fresh.
    shifted = [x * 0.5 for x in train]
    assert Trainer(config, shifted, test, checkpoint_path=checkpoint, progress=False).start_epoch == 0
    # Not a dict, or not a checkpoint at all: fresh, every time, without deleting by hand.
    torch.save([1, 2, 3], checkpoint)
    assert Trainer(config, train, test, checkpoint_path=checkpoint, progress=False).start_epoch == 0
    checkpoint.write_bytes(b"garbage")
    assert Trainer(config, train, test, checkpoint_path=checkpoint, progress=False).start_epoch == 0
