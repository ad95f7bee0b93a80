"""Each file has one owner with a typed reader: ``model.pt`` (load_model: model, normalization,
settings, format version checked) and ``metrics/eval.json`` (read_eval_summary)."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch
from conftest import PROJECT_ROOT, model_config, train_config

from gestural.cli.compare import METRICS
from gestural.evaluation.files import SUMMARY_KEYS, EvaluationFileError, read_eval_summary
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


def test_the_eval_summary_reader_reads_the_committed_metrics_as_numbers_only():
    summary = read_eval_summary(PROJECT_ROOT / "metrics" / "eval.json")
    raw = json.loads((PROJECT_ROOT / "metrics" / "eval.json").read_text())
    assert summary.neural == {key: value for key, value in raw["neural"].items() if value is not None}
    assert summary.neural["variance_explained"] > 0.9
    assert "seqnmf_similarity" not in summary.neural  # null on a corpus without planted kernels
    assert summary.raw_channel_auc == raw["raw_channels"]["activation_auc"]


@pytest.mark.parametrize("content, problem", [("{", "not readable JSON"), ('{"classical": {}}', "no neural metrics")])
def test_an_eval_summary_that_is_not_one_is_refused_in_one_line_naming_it(tmp_path, content, problem):
    path = tmp_path / "eval.json"
    path.write_text(content)
    with pytest.raises(EvaluationFileError, match=f"{path}: {problem}"):
        read_eval_summary(path)


def test_compare_reports_only_metrics_the_evaluate_stage_writes():
    assert set(METRICS) <= set(SUMMARY_KEYS)
