"""Model selection across experiments: grouping, spread, stability, the chosen setting, the CLI."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from gestural.cli.compare import METRICS, compare_experiments, kernel_set_dissimilarity
from gestural.cli.compare_report import write_report
from gestural.cli.experiments import CompareError, experiments_from_exp_show, load_kernels, read_exp_show
from gestural.evaluation.files import SUMMARY_KEYS

PARAMS = {"num_gestures": 100, "seed": 0, "device": "auto", "sparse": False, "train": {"lr": 0.003, "threads": 0}}


def exp_entry(name: str, params: dict, neural: dict | None, state: str | None = "success", error=None) -> dict:
    """One experiment as `dvc exp show --json` (DVC 3.x) lists it under its baseline commit."""
    rev = hashlib.sha1(name.encode()).hexdigest()
    metrics = {} if neural is None else {"metrics/eval.json": {"data": {"neural": neural, "ground_truth": True}}}
    executor = None if state is None else {"state": state, "name": "dvc-task", "local": {}}
    return {
        "revs": [{"rev": rev, "name": name, "error": error, "experiments": None,
                  "data": {"rev": rev, "timestamp": None, "params": {"params.yaml": {"data": params}},
                           "metrics": metrics, "deps": {}, "outs": {}, "meta": {}}}],
        "executor": executor, "name": name,
    }


def exp_show(entries: list[dict]) -> list[dict]:
    baseline = {"rev": "a" * 40, "name": "main", "error": None, "experiments": entries,
                "data": {"rev": "a" * 40, "params": {"params.yaml": {"data": PARAMS}},
                         "metrics": {"metrics/eval.json": {"data": {"neural": {"seqnmf_similarity": 0.99}}}}}}
    workspace = dict(baseline, rev="workspace", name=None, experiments=None)
    return [workspace, baseline]


def params(**overrides) -> dict:
    result = json.loads(json.dumps(PARAMS))
    for key, value in overrides.items():
        result[key] = value
    return result


def neural(similarity: float, explained: float = 0.9) -> dict:
    """metrics/eval.json "neural" metrics (DVC drops the ones that are null in the file)."""
    return {"variance_explained": explained, "seqnmf_similarity": similarity, "kernel_cosine": similarity - 0.05,
            "hoyer_across_time": 0.8, "gestures_in_use": 0.5}


def base_kernels(count: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    kernels = rng.random((count, 12, 10)) * (rng.random((count, 12, 1)) < 0.3)
    kernels[:, 0, 0] += 1e-3  # no kernel is all zero
    return kernels


def shifted(kernels: np.ndarray, lag: int) -> np.ndarray:
    out = np.zeros_like(kernels)
    out[..., lag:] = kernels[..., : kernels.shape[-1] - lag]
    return out


@pytest.fixture
def sweep():
    """(exp-show JSON, kernels by rev, kernels by name): K = 2, 4, 8 with three seeds each.

    K=8 recovers best (0.91); K=4 is within 0.01 (0.90 mean) and its gestures are the same
    for every seed; K=2 is clearly worse. A queued and a failed experiment carry the
    baseline's (excellent) metrics and must be ignored.
    """
    similarities = {2: [0.70, 0.72, 0.74], 4: [0.905, 0.90, 0.895], 8: [0.91, 0.91, 0.91]}
    entries, by_name = [], {}
    stable = base_kernels(4, seed=0)
    for k, values in similarities.items():
        for seed, value in enumerate(values):
            name = f"k{k}-s{seed}"
            entries.append(exp_entry(name, params(num_gestures=k, seed=seed), neural(value)))
            if k == 4:  # the same gestures, reordered and shifted by a frame
                by_name[name] = shifted(stable[np.roll(np.arange(4), seed)], seed % 2)
            else:
                by_name[name] = base_kernels(k, seed=100 * k + seed)
    entries.append(exp_entry("queued", params(num_gestures=1), neural(0.99), state="queued"))
    entries.append(exp_entry("broken", params(num_gestures=1, seed=5), neural(0.99), state="failed",
                             error={"msg": "Experiment run failed", "type": ""}))
    show = exp_show(entries)
    experiments, _ = experiments_from_exp_show(show)
    by_rev = {e.rev: by_name[e.name] for e in experiments}
    return show, by_rev, by_name


def test_dissimilarity_of_a_run_with_itself_is_zero_and_of_disjoint_sets_is_high():
    kernels = base_kernels(6, seed=1)
    assert kernel_set_dissimilarity(kernels, kernels) == pytest.approx(0.0, abs=1e-9)
    # Order and a one-frame shift do not matter (lag-tolerant cosine, best match).
    assert kernel_set_dissimilarity(kernels, shifted(kernels[::-1], 1)) < 0.15
    # Kernels on disjoint channels have cosine 0 with each other: dissimilarity 1.
    left, right = np.zeros((3, 12, 10)), np.zeros((3, 12, 10))
    left[:, :6] = base_kernels(3, seed=2)[:, :6]
    right[:, 6:] = base_kernels(3, seed=3)[:, 6:]
    assert kernel_set_dissimilarity(left, right) == pytest.approx(1.0)
    # Symmetric; spare kernels of a larger set are not held against it.
    a, b = base_kernels(4, seed=4), base_kernels(4, seed=5)
    assert kernel_set_dissimilarity(a, b) == pytest.approx(kernel_set_dissimilarity(b, a))
    assert kernel_set_dissimilarity(a[:2], a) == pytest.approx(0.0, abs=1e-9)
    assert 0.1 < kernel_set_dissimilarity(a, b) < 0.9  # random non-negative kernels: partly alike


def test_reads_only_finished_experiments(sweep):
    show, _, _ = sweep
    experiments, skipped = experiments_from_exp_show(show)
    assert len(experiments) == 9
    assert {e.name for e in experiments} == {f"k{k}-s{s}" for k in (2, 4, 8) for s in range(3)}
    assert {s["name"]: s["reason"] for s in skipped} == {"queued": "queued", "broken": "failed"}
    first = next(e for e in experiments if e.name == "k4-s1")
    assert first.params["train.lr"] == 0.003 and first.seed == 1
    assert first.metrics["seqnmf_similarity"] == 0.90


def test_picks_the_most_parsimonious_near_best_setting_and_reports_the_spread(sweep):
    show, kernels, _ = sweep
    experiments, skipped = experiments_from_exp_show(show)
    report = compare_experiments(experiments, kernels, skipped=skipped)
    assert report["recovery_metric"] == "seqnmf_similarity"
    assert [s["label"] for s in report["settings"]] == ["num_gestures=2", "num_gestures=4", "num_gestures=8"]
    assert report["chosen"] == "num_gestures=4"
    assert report["reason"].startswith("chose num_gestures=4: mean seqNMF similarity 0.900, within 0.01 of the best")
    assert "the smallest num_gestures" in report["reason"]
    k4 = report["settings"][1]
    spread = k4["metrics"]["seqnmf_similarity"]
    assert spread["mean"] == pytest.approx(0.90)
    assert spread["std"] == pytest.approx(0.005)
    assert (spread["min"], spread["max"], spread["n"]) == (pytest.approx(0.895), pytest.approx(0.905), 3)
    assert k4["seeds"] == [0, 1, 2]
    # K=4 learned the same gestures with every seed; K=8 random ones.
    assert k4["stability"]["pairs"] == 3
    assert k4["stability"]["dissimilarity_mean"] < 0.15
    assert report["settings"][2]["stability"]["dissimilarity_mean"] > 0.2
    assert report["kernel_errors"] == {}
    # A tighter tolerance leaves only the best.
    strict = compare_experiments(experiments, kernels, tolerance=0.001)
    assert strict["chosen"] == "num_gestures=8"


def test_ties_on_num_gestures_are_broken_by_stability():
    stable = base_kernels(4, seed=0)
    entries, kernels = [], {}
    for sparse in (False, True):
        for seed in range(2):
            entry = exp_entry(f"sparse{sparse}-{seed}", params(num_gestures=4, sparse=sparse, seed=seed), neural(0.9))
            entries.append(entry)
            rev = entry["revs"][0]["rev"]
            kernels[rev] = stable if sparse else base_kernels(4, seed=10 + seed)
    experiments, _ = experiments_from_exp_show(exp_show(entries))
    report = compare_experiments(experiments, kernels)
    assert [s["label"] for s in report["settings"]] == ["num_gestures=4, sparse=false", "num_gestures=4, sparse=true"]
    assert report["chosen"] == "num_gestures=4, sparse=true"
    assert "most stable" in report["reason"]


def test_device_does_not_split_a_setting_and_variance_explained_is_used_without_ground_truth():
    entries = [exp_entry(f"k{k}-{device}", params(num_gestures=k, device=device, seed=s),
                         {"variance_explained": v, "gestures_in_use": 1.0})
               for k, v in ((10, 0.80), (20, 0.95), (40, 0.955))
               for s, device in enumerate(("cuda:0", "cuda:1"))]
    experiments, _ = experiments_from_exp_show(exp_show(entries))
    report = compare_experiments(experiments, None)
    assert len(report["settings"]) == 3 and all(len(s["runs"]) == 2 for s in report["settings"])
    assert report["recovery_metric"] == "variance_explained"
    assert report["chosen"] == "num_gestures=20"
    assert report["settings"][0]["stability"]["dissimilarity_mean"] is None


def test_no_finished_experiment_is_a_clear_error():
    show = exp_show([exp_entry("q", params(), neural(0.9), state="queued")])
    experiments, skipped = experiments_from_exp_show(show)
    with pytest.raises(CompareError, match="no finished experiment.*q queued"):
        compare_experiments(experiments, None, skipped=skipped)
    with pytest.raises(CompareError, match="win_size"):
        compare_experiments(experiments_from_exp_show(exp_show([exp_entry("a", params(), neural(0.9))]))[0],
                            None, param="win_size")


def test_write_report_writes_json_markdown_and_figure(sweep, tmp_path):
    show, kernels, _ = sweep
    experiments, skipped = experiments_from_exp_show(show)
    paths = write_report(compare_experiments(experiments, kernels, skipped=skipped), tmp_path / "out")
    report = json.loads(paths["json"].read_text())
    assert report["chosen"] == "num_gestures=4"
    table = paths["markdown"].read_text()
    assert "| **num_gestures=4** ✓ | 3 | 0.900 ± 0.000 | 0.900 ± 0.005 |" in table
    assert "broken (failed)" in table
    assert paths["figure"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["compare.json", "compare.md", "model_selection.png"]


def test_unreadable_kernels_are_reported_not_fatal(sweep, tmp_path):
    show, kernels, _ = sweep
    experiments, _ = experiments_from_exp_show(show)
    missing = experiments[0].rev
    loaded, errors = load_kernels([missing], repo=tmp_path)  # not a DVC repository
    assert loaded == {} and missing[:7] in errors[missing]

    def partly(revs):
        return {r: k for r, k in kernels.items() if r != missing}, errors

    report = compare_experiments(experiments, partly)
    assert report["kernel_errors"] == errors
    setting = next(s for s in report["settings"] if missing in s["revs"])
    assert len(setting["stability"]["runs"]) == len(setting["runs"]) - 1
    write_report(report, tmp_path / "out")  # a setting with fewer runs still draws


def _cli(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, MPLBACKEND="Agg")
    return subprocess.run([sys.executable, "-m", "gestural", "compare", *args], cwd=cwd, env=env,
                          capture_output=True, text=True)


@pytest.mark.slow
def test_cli_writes_the_three_files(sweep, tmp_path):
    show, _, by_name = sweep
    (tmp_path / "show.json").write_text(json.dumps(show))
    (tmp_path / "kernels").mkdir()
    for name, array in by_name.items():
        np.save(tmp_path / "kernels" / f"{name}.npy", array.astype(np.float32))
    result = _cli(["--exp-show-json", "show.json", "--kernels", "kernels", "--out", "out"], tmp_path)
    assert result.returncode == 0, result.stderr
    assert "chose num_gestures=4" in result.stdout
    assert "skipped queued: queued" in result.stderr
    assert {p.name for p in (tmp_path / "out").iterdir()} == {"compare.json", "compare.md", "model_selection.png"}
    assert json.loads((tmp_path / "out" / "compare.json").read_text())["source"] == "show.json"


@pytest.mark.slow
def test_cli_bad_json_names_the_file_and_writes_nothing(tmp_path):
    (tmp_path / "show.json").write_text("{not json")
    result = _cli(["--exp-show-json", "show.json", "--out", "out", "--no-stability"], tmp_path)
    assert result.returncode == 2
    assert "gestural compare: error: show.json: not JSON (line 1" in result.stderr
    assert not (tmp_path / "out").exists()
    with pytest.raises(CompareError, match="expected a list of commits"):
        (tmp_path / "dict.json").write_text("{}")
        read_exp_show(tmp_path / "dict.json")


def test_compare_reports_only_metrics_the_evaluate_stage_writes():
    assert set(METRICS) <= set(SUMMARY_KEYS)
