"""``model.pt`` has one owner with a typed reader: load_model gives the model, its
normalization and its settings, with the format version checked (gestural.model.file)."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from conftest import model_config, train_config

from gestural.model.file import MODEL_FORMAT, ModelFileError, load_model, save_model
from gestural.model.network import GesturalAutoEncoder

STATS = {"low": [0.0] * 12, "high": [2.0] * 12}


def saved_model(tmp_path):
    path = tmp_path / "model.pt"
    torch.manual_seed(0)
    model = GesturalAutoEncoder(model_config(num_gestures=3, hidden=8))
    save_model(path, model, dataclasses.asdict(train_config(num_gestures=3, hidden=8)), STATS)
    return path, model


def test_load_model_gives_the_model_its_normalization_and_its_settings(tmp_path):
    path, model = saved_model(tmp_path)
    loaded = load_model(path)
    assert loaded.normalization == STATS
    assert loaded.settings["num_gestures"] == 3 and loaded.settings["loss"] == train_config().loss
    assert not loaded.model.training
    for name, tensor in model.state_dict().items():
        torch.testing.assert_close(loaded.model.state_dict()[name], tensor)


def test_a_model_file_of_another_format_version_is_refused_naming_file_and_version(tmp_path):
    path, _ = saved_model(tmp_path)
    payload = torch.load(path, weights_only=True)
    payload["format"] = "gestural-model/0"
    torch.save(payload, path)
    with pytest.raises(ModelFileError, match=rf"{path}: model file format 'gestural-model/0', "
                                             rf"this version reads '{MODEL_FORMAT}'"):
        load_model(path)
