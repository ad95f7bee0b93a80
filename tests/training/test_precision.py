"""train.precision and train.compile: validation, bf16 on the CPU, compile and its fallback."""

from __future__ import annotations

import json
import math
import warnings

import pytest
import torch
from conftest import min_max_normalized, project_params, train_config

from gestural.synthetic.generator import SyntheticConfig, generate
from gestural.training.config import TrainConfig
from gestural.training.trainer import Trainer


@pytest.fixture(scope="module")
def utterances():
    """A few planted utterances in normalized units: (train, test)."""
    config = SyntheticConfig(speakers=["s"], utterances_per_speaker=12, min_seconds=1.0, max_seconds=2.0, seed=1)
    _kernels, _baseline, generated = generate(config)
    normalized, _low, _high = min_max_normalized([u.latent for u in generated])
    return normalized[:-3], normalized[-3:]


def tiny_config(**overrides) -> TrainConfig:
    settings = dict(num_gestures=8, win_size=6, segment_len=120, batch_size=4, epochs=1, hidden=16, threads=1,
                    init="random", device="cpu", figure_every=1000, peak_window=5, l1_weight=0.03,
                    kernels="nonnegative", response_frames=0, smoothness_weight=0.0, hoyer_gestures_weight=0.1,
                    hoyer_time_weight=0.1, hoyer_time_target=0.95)
    settings.update(overrides)
    return train_config(**settings)


@pytest.mark.parametrize("name, value, message", [
    ("precision", "fp16", "params.yaml train.precision: must be one of fp32, tf32, bf16 (got 'fp16')"),
    ("precision", "BF16", "params.yaml train.precision"),
    ("compile", "yes", "params.yaml train.compile: must be true or false (got 'yes')"),
    ("compile", 1, "params.yaml train.compile"),
])
def test_invalid_precision_or_compile_names_the_param(name, value, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        train_config(**{name: value}).validate()


def test_params_yaml_keys_and_defaults():
    params = project_params()
    default = TrainConfig.from_params(params)
    assert (default.precision, default.compile) == ("fp32", False)
    params["train"].update(precision="bf16", compile=True)
    config = TrainConfig.from_params(params)
    assert (config.precision, config.compile) == ("bf16", True)
    # Both change the result, so a checkpoint written with other values is not resumed.
    fingerprints = {json.dumps(c.settings_fingerprint(), sort_keys=True)
                    for c in (default, config, tiny_config(compile=True), tiny_config())}
    assert len(fingerprints) == 4


def test_bf16_on_cpu_trains_with_finite_fp32_loss(utterances):
    train, test = utterances
    trainer = Trainer(tiny_config(precision="bf16"), train, test, progress=False)
    x, mask = trainer.sampler.sample(4)
    loss, reconstruction, _sparsity, out = trainer._loss(x, mask)
    # The convolutions run in bf16 (the encoder ends with one) ...
    with trainer._autocast():
        assert trainer.model.encoder(x, mask[:, None, :].float()).dtype == torch.bfloat16
    # ... and the loss, its terms and the weights are fp32.
    assert loss.dtype == reconstruction.dtype == out.scores.dtype == torch.float32
    result = trainer.fit()
    record = result.history[0]
    assert math.isfinite(record.train_loss) and math.isfinite(record.test_reconstruction)
    assert all(p.dtype == torch.float32 and torch.isfinite(p).all() for p in result.model.parameters())
    # bf16 keeps about 3 significant digits: the loss is that of the fp32 model, roughly.
    fp32 = Trainer(tiny_config(), train, test, progress=False).fit().history[0]
    assert record.test_reconstruction == pytest.approx(fp32.test_reconstruction, rel=0.2)


def test_default_is_eager_fp32_and_unchanged(utterances):
    train, test = utterances
    probe = Trainer(tiny_config(), train, test, progress=False)
    assert probe._compiled_forward is None
    x, mask = probe.sampler.sample(4)
    out = probe._forward(x, mask)
    assert out.scores.dtype == out.reconstruction.dtype == torch.float32
    torch.testing.assert_close(out.reconstruction, probe.model(x, mask).reconstruction, rtol=0, atol=0)
    default = Trainer(tiny_config(), train, test, progress=False).fit().model.state_dict()
    explicit = Trainer(tiny_config(precision="fp32", compile=False), train, test, progress=False).fit()
    for key, value in explicit.model.state_dict().items():
        torch.testing.assert_close(value, default[key], rtol=0, atol=0)


def test_compile_traces_the_model_and_keeps_the_state_dict_keys(utterances, monkeypatch, tmp_path):
    """compile: true with dynamo's eager backend (no C++ build, so the test stays fast)."""
    train, test = utterances
    real_compile = torch.compile
    monkeypatch.setattr(torch, "compile", lambda fn, **kw: real_compile(fn, backend="eager"))
    eager = Trainer(tiny_config(), train, test, progress=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # a fallback would warn
        compiled = Trainer(tiny_config(compile=True), train, test, checkpoint_path=tmp_path / "train.pt",
                           progress=False)
        result = compiled.fit()
    assert compiled._compiled_forward is not None
    assert math.isfinite(result.history[0].train_loss)
    assert list(result.model.state_dict()) == list(eager.model.state_dict())
    saved = torch.load(tmp_path / "train.pt", weights_only=False)
    assert list(saved["model"]) == list(eager.model.state_dict())
    # The traced graph computes what the eager model does.
    reference = eager.fit().model.state_dict()
    for key, value in result.model.state_dict().items():
        torch.testing.assert_close(value, reference[key], rtol=1e-4, atol=1e-5)


def test_compile_failure_falls_back_to_eager_with_a_warning(utterances, monkeypatch):
    train, test = utterances

    def broken_compile(fn, **kw):
        def fails(*args, **kwargs):
            raise RuntimeError("no C++ compiler found")
        return fails

    monkeypatch.setattr(torch, "compile", broken_compile)
    trainer = Trainer(tiny_config(compile=True), train, test, progress=False)
    with pytest.warns(RuntimeWarning, match=r"train\.compile: torch\.compile failed.*no C\+\+ compiler"):
        result = trainer.fit()
    assert trainer._compiled_forward is None
    assert math.isfinite(result.history[0].train_loss)
    reference = Trainer(tiny_config(), train, test, progress=False).fit().model.state_dict()
    for key, value in result.model.state_dict().items():
        torch.testing.assert_close(value, reference[key], rtol=0, atol=0)


def test_compile_that_cannot_start_falls_back(utterances, monkeypatch):
    train, test = utterances

    def unsupported(fn, **kw):
        raise RuntimeError("torch.compile is not supported on Python 3.14+")

    monkeypatch.setattr(torch, "compile", unsupported)
    with pytest.warns(RuntimeWarning, match="not supported"):
        trainer = Trainer(tiny_config(compile=True), train, test, progress=False)
    assert trainer._compiled_forward is None
    assert math.isfinite(trainer.fit().history[0].train_loss)
