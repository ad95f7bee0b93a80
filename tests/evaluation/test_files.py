"""The evaluate stage's files: each written by one owner and read back by a typed reader that
names the file and the problem (gestural.evaluation.files)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import PROJECT_ROOT, raises_in_one_line

from gestural.evaluation.files import (
    EvaluationFileError,
    EvaluationResult,
    read_channel_correlation,
    read_classical,
    read_eval_summary,
    read_examples,
    read_matching,
    read_planted,
    write_outputs,
)


def small_result(*, planted: bool = True) -> EvaluationResult:
    """A hand-made EvaluationResult: two channels, two gestures, one example."""
    rng = np.random.default_rng(0)

    def method(r: float | None) -> dict:
        return {"correlation_per_channel": {"td_x": 0.5, "td_y": r}, "variance_explained": 0.75,
                "fit_seconds": 3.0, "inference_seconds": 0.5}

    x = rng.random((2, 20)).astype(np.float32)
    examples = {"ids": np.array(["spk_001"], dtype=str), "x_0": x, "neural_reconstruction_0": x,
                "neural_scores_0": rng.random((2, 20)).astype(np.float32)}
    return EvaluationResult(
        metrics={"neural": method(0.25), "classical": method(None), "raw_channels": {"activation_auc": 0.6}},
        channels=["td_x", "td_y"], classical_kernels=rng.random((2, 2, 4)).astype(np.float32),
        classical_baseline=np.zeros(2, dtype=np.float32), examples=examples,
        matching={"ground_truth": planted, "neural": None, "classical": None},
        planted_kernels=rng.random((1, 2, 4)).astype(np.float32) if planted else None)


def test_evaluation_files_read_back_what_was_written(tmp_path):
    result = small_result()
    out = tmp_path / "evaluation"
    write_outputs(result, metrics_path=tmp_path / "eval.json", plot_path=tmp_path / "corr.csv", out_dir=out,
                  timing_path=tmp_path / "timing.json")
    assert (tmp_path / "corr.csv").read_text() == "channel,neural,classical\ntd_x,0.500000,0.500000\ntd_y,0.250000,\n"
    neural, classical = read_channel_correlation(tmp_path / "corr.csv")
    assert neural[:2].tolist() == [0.5, 0.25] and classical[0] == 0.5 and np.isnan(classical[1])
    assert np.isnan(neural[2:]).all()  # channels the file lacks
    [example] = read_examples(out / "examples.npz")
    assert example["id"] == "spk_001" and set(example) == {"id", "x", "neural_reconstruction", "neural_scores"}
    np.testing.assert_array_equal(example["x"], result.examples["x_0"])
    assert read_matching(out / "matching.json") == result.matching
    np.testing.assert_array_equal(read_classical(out / "classical.npz")["gesture_kernels"], result.classical_kernels)
    np.testing.assert_array_equal(read_planted(out / "planted.npz"), result.planted_kernels)
    assert "fit_seconds" not in json.loads((out / "details.json").read_text())["neural"]
    timing = json.loads((tmp_path / "timing.json").read_text())
    assert timing["neural"] == {"fit_seconds": 3.0, "inference_seconds": 0.5}
    summary = json.loads((tmp_path / "eval.json").read_text())
    assert summary["raw_channels"] == {"activation_auc": 0.6} and summary["neural"]["variance_explained"] == 0.75

    write_outputs(small_result(planted=False), metrics_path=tmp_path / "eval.json", plot_path=tmp_path / "corr.csv",
                  out_dir=out)
    assert read_planted(out / "planted.npz") is None  # no ground truth: no file, no kernels


@pytest.mark.parametrize("name, content, message", [
    ("examples.npz", None, r"examples\.npz: no such file \(run `dvc repro evaluate`\)$"),
    ("examples.npz", "junk", r"examples\.npz: not a readable \.npz file"),
    ("matching.json", None, r"matching\.json: no such file \(run `dvc repro evaluate`\)$"),
    ("matching.json", "{", r"matching\.json: not valid JSON"),
    ("matching.json", "[]", r"matching\.json: expected a JSON object$"),
    ("corr.csv", None, r"corr\.csv: no such file \(run `dvc repro evaluate`\)$"),
    ("corr.csv", "x,y\n", r"corr\.csv: expected columns channel, neural\[, classical\], got \['x', 'y'\]$"),
    ("corr.csv", "channel,neural\ntd_x,abc\n", r"corr\.csv: channel td_x, column neural: 'abc' is not a number$"),
    ("classical.npz", None, r"classical\.npz: no such file"),
    ("planted.npz", "junk", r"planted\.npz: not a readable \.npz file"),
])
def test_evaluation_file_readers_name_the_file_and_the_problem(tmp_path, name, content, message):
    readers = {"examples.npz": read_examples, "matching.json": read_matching, "corr.csv": read_channel_correlation,
               "classical.npz": read_classical, "planted.npz": read_planted}
    if content is not None:
        (tmp_path / name).write_text(content)
    with raises_in_one_line(EvaluationFileError, match=message):
        readers[name](tmp_path / name)


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
