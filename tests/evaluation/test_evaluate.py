"""Tests of the evaluate stage: planted truth in normalized units, metric plumbing, baseline, outputs."""

from __future__ import annotations

import csv
import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from conftest import baseline_params, evaluate_params, load_stage, model_config, train_config

from gestural.core import units
from gestural.core.files import save_npy, write_json
from gestural.core.metrics import convolve_scores
from gestural.core.params import ParamsError
from gestural.core.stage import run_stage
from gestural.data.batches import UtteranceStore
from gestural.data.dataset import INDEX_COLUMNS, write_index
from gestural.evaluation.classical import fit_classical, held_out_subset
from gestural.evaluation.export import read_events
from gestural.evaluation.factorizations import HeldOutFactorization, neural_factorization
from gestural.evaluation.files import (
    SUMMARY_KEYS,
    TIMING_KEYS,
)
from gestural.evaluation.held_out import (
    COMPARED,
    METRIC_KEYS,
    EvaluateParams,
    evaluate_factorization,
    example_indices,
    run_evaluation,
)
from gestural.evaluation.planted import EvaluationError, PlantedTruth, planted_kernels_normalized, planted_truth
from gestural.evaluation.planted_recovery import recovery_metrics
from gestural.evaluation.recovery import kernel_recovery
from gestural.model.file import save_model
from gestural.model.network import GesturalAutoEncoder
from gestural.synthetic.ground_truth import save_ground_truth

C, L, P = 12, 8, 3
pytestmark = pytest.mark.usefixtures("one_thread")  # tiny problems


def planted_kernels(seed: int = 0) -> np.ndarray:
    """(P, C, L) smooth bumps on 4 channels each, unit norm, clearly distinct."""
    rng = np.random.default_rng(seed)
    t = np.arange(L)
    kernels = np.zeros((P, C, L))
    for p in range(P):
        for c in rng.choice(C, 4, replace=False):
            kernels[p, c] = rng.uniform(0.5, 1.0) * np.exp(-0.5 * ((t - rng.uniform(2.5, 4.5)) / 1.0) ** 2)
    return kernels / np.linalg.norm(kernels.reshape(P, -1), axis=1)[:, None, None]


def spike_scores(frames: int, rng: np.random.Generator, rate: float = 0.015) -> np.ndarray:
    """Sparse spikes, at least L frames apart within each gesture, none in the first or last L frames."""
    scores = np.zeros((P, frames))
    for p in range(P):
        t = L + int(rng.integers(0, L))  # room before the first onset for shifted copies
        while t < frames - L:
            if rng.random() < rate * L:
                scores[p, t] = rng.uniform(0.5, 1.0)
                t += L
            else:
                t += 1
    return scores


def planted_problem(lengths, seed: int = 0):
    """Kernels (P, C, L), baseline (C,), per-utterance scores and data (noise-free)."""
    rng = np.random.default_rng(seed)
    kernels = planted_kernels(seed)
    baseline = rng.uniform(0.1, 0.2, C)
    scores = [spike_scores(n, rng) for n in lengths]
    data = [convolve_scores(h, kernels, baseline).numpy().astype(np.float32) for h in scores]
    return kernels, baseline, scores, data


def onsets_of(scores: list[np.ndarray]) -> list[list[np.ndarray]]:
    return [[np.flatnonzero(h[p]) for p in range(h.shape[0])] for h in scores]


# --------------------------------------------------------------------- planted truth


def test_planted_kernels_map_with_high_minus_low():
    stats = {"low": [-1.0] * 11 + [2.0], "high": [3.0] * 11 + [2.5]}
    kernels = np.zeros((1, 12, 2))
    kernels[0, 0] = [2.0, 4.0]  # span 4 -> 0.5, 1.0
    kernels[0, 11] = [1.0, 0.25]  # span 0.5 -> 2.0, 0.5 (the offset low = 2 cancels)
    mapped = planted_kernels_normalized(kernels, stats)
    np.testing.assert_allclose(mapped[0, 0], [0.5, 1.0])
    np.testing.assert_allclose(mapped[0, 11], [2.0, 0.5])
    assert np.all(mapped[0, 1:11] == 0)
    with pytest.raises(ValueError, match="high must exceed low"):
        planted_kernels_normalized(kernels, {"low": [0.0] * 12, "high": [0.0] + [1.0] * 11})


def write_truth(path: Path, kernels_zscored, ids, events) -> None:
    """events: rows (utterance index, gesture, onset, amplitude)."""
    events = np.asarray(events, dtype=np.float64).reshape(-1, 4)
    kernels_zscored = np.asarray(kernels_zscored, np.float32)
    count, length = kernels_zscored.shape[0], kernels_zscored.shape[-1]
    save_ground_truth(
        path, kind="events", gesture_names=[f"g{p}" for p in range(count)], gesture_phones=["p"] * count,
        utterance_ids=ids, activation_utterance=events[:, 0], activation_gesture=events[:, 1],
        activation_start=events[:, 2], activation_stop=events[:, 2] + length,
        extra=dict(kernels_zscored=kernels_zscored, event_utterance=events[:, 0].astype(np.int64),
                   event_gesture=events[:, 1].astype(np.int64), event_onset=events[:, 2].astype(np.int64),
                   event_amplitude=events[:, 3].astype(np.float32)))


def test_planted_truth_builds_spikes_by_utterance_id(tmp_path):
    stats = {"low": [0.0] * 12, "high": [2.0] * 12}
    kernels = np.ones((2, 12, 3))
    events = [(0, 0, 5, 0.5), (1, 1, 2, 0.75), (1, 0, 7, 1.0), (2, 1, 1, 0.25), (1, 1, 9, 0.5)]
    path = tmp_path / "truth.npz"
    write_truth(path, kernels, ["a", "b", "c"], events)
    # "a" was dropped by nema2npy: not in the test split. Order follows test_ids.
    truth = planted_truth(path, ["c", "b"], [4, 10], stats)
    np.testing.assert_allclose(truth.kernels, 0.5)
    assert [h.shape for h in truth.scores] == [(2, 4), (2, 10)]
    expected_c = np.zeros((2, 4))
    expected_c[1, 1] = 0.25
    expected_b = np.zeros((2, 10))
    expected_b[1, 2], expected_b[0, 7], expected_b[1, 9] = 0.75, 1.0, 0.5
    np.testing.assert_allclose(truth.scores[0], expected_c)
    np.testing.assert_allclose(truth.scores[1], expected_b)
    assert [o.tolist() for o in truth.onsets[1]] == [[7], [2, 9]]
    with pytest.raises(EvaluationError, match=r"truth.npz has no utterance 'z'"):
        planted_truth(path, ["b", "z"], [10, 5], stats)


# ------------------------------------------------------------------- metric plumbing


def test_perfect_factorization_scores_one():
    lengths = [300, 420, 350]
    kernels, baseline, scores, data = planted_problem(lengths)
    truth = PlantedTruth(kernels=kernels, scores=scores, onsets=onsets_of(scores))
    # Learned: the planted gestures in another order, plus one spare that is never used.
    order = [2, 0, 1]
    learned_kernels = np.concatenate([kernels[order], np.full((1, C, L), 1.0 / np.sqrt(C * L))])
    learned_scores = [np.concatenate([h[order], np.zeros((1, h.shape[1]))]) for h in scores]
    factorized = HeldOutFactorization(gesture_kernels=learned_kernels, baseline=baseline, scores=learned_scores,
                            reconstructions=data, fit_seconds=1.5, inference_seconds=0.25)
    metrics, matching = evaluate_factorization(data, factorized, truth)
    assert set(METRIC_KEYS) <= set(metrics)
    assert metrics["variance_explained"] == pytest.approx(1.0)
    assert metrics["rmse"] == pytest.approx(0.0, abs=1e-7)
    assert list(metrics["correlation_per_channel"]) == list(units.CHANNELS)
    assert metrics["seqnmf_similarity"] == pytest.approx(1.0, abs=1e-9)
    assert metrics["kernel_cosine"] == pytest.approx(1.0, abs=1e-9)
    assert metrics["onset_f1"] == pytest.approx(1.0)
    assert metrics["gestures_in_use"] == pytest.approx(3 / 4)
    assert metrics["fit_seconds"] == 1.5
    assert {(m["planted"], m["learned"], m["lag"]) for m in matching["kernel_recovery"]} == {(2, 0, 0), (0, 1, 0),
                                                                                            (1, 2, 0)}
    assert {(m["planted"], m["learned"]) for m in matching["seqnmf"]} == {(2, 0), (0, 1), (1, 2)}


def test_onset_f1_uses_the_matched_lag():
    """A learned kernel delayed by 2 frames fires 2 frames earlier; the lag puts it back."""
    lengths = [400, 300]
    kernels, _, scores, _ = planted_problem(lengths, seed=1)
    truth = PlantedTruth(kernels=kernels, scores=scores, onsets=onsets_of(scores))
    delayed = np.concatenate([np.zeros((P, C, 2)), kernels], axis=2)  # (P, C, L + 2)
    early = [np.concatenate([h[:, 2:], np.zeros((P, 2))], axis=1) for h in scores]
    metrics, matching = recovery_metrics(truth, delayed, early, onset_tolerance=0)
    assert [m["lag"] for m in matching["kernel_recovery"]] == [2, 2, 2]
    assert metrics["kernel_cosine"] == pytest.approx(1.0)
    assert metrics["onset_f1"] == pytest.approx(1.0)
    assert metrics["seqnmf_similarity"] == pytest.approx(1.0)
    # Peaks 1 frame late (lag 0) are misses with tolerance 0 and hits with tolerance 1.
    late = [np.concatenate([np.zeros((P, 1)), h[:, :-1]], axis=1) for h in scores]
    assert recovery_metrics(truth, kernels, late, onset_tolerance=0)[0]["onset_f1"] == 0.0
    assert recovery_metrics(truth, kernels, late, onset_tolerance=1)[0]["onset_f1"] == pytest.approx(1.0)


def test_a_kernel_never_switched_on_is_not_matched_to_a_planted_gesture():
    """A spare kernel with exactly a planted shape but no activity loses the match to the used
    gesture (a slightly distorted copy) that carries that planted gesture's onsets."""
    lengths = [400, 300]
    kernels, _, scores, _ = planted_problem(lengths, seed=2)
    truth = PlantedTruth(kernels=kernels, scores=scores, onsets=onsets_of(scores))
    rng = np.random.default_rng(0)
    distorted = kernels + 0.3 * rng.standard_normal(kernels.shape) * kernels.std()
    learned_kernels = np.concatenate([distorted, kernels[:1]])
    learned_scores = [np.concatenate([h, np.zeros((1, h.shape[1]))]) for h in scores]
    metrics, matching = recovery_metrics(truth, learned_kernels, learned_scores, onset_tolerance=0)
    assert [m["learned"] for m in matching["kernel_recovery"]] == list(range(P))
    assert metrics["onset_f1"] == pytest.approx(1.0)
    assert metrics["kernel_cosine"] < 1.0


def test_neural_factorization_is_full_length_in_store_order():
    config = model_config(num_gestures=4, win_size=L, hidden=8, peak_window=5, kernels="nonnegative", response_frames=0)
    torch.manual_seed(0)
    model = GesturalAutoEncoder(config).eval()
    kernels = np.concatenate([planted_kernels(), planted_kernels(1)[:1]])
    with torch.no_grad():
        model.decoder.kernels_raw.copy_(torch.from_numpy(kernels))
        torch.nn.init.normal_(model.encoder.layers[-1].weight, std=0.3)  # scores that vary
        model.encoder.layers[-1].bias.fill_(0.05)
    rng = np.random.default_rng(0)
    utterances = [rng.uniform(0, 1, (C, n)).astype(np.float32) for n in (70, 30, 55)]
    factorized = neural_factorization(model, UtteranceStore(utterances), batch_size=2)
    np.testing.assert_allclose(factorized.gesture_kernels, kernels, atol=1e-6)
    # The encoder's inner conv sees the padding's hidden activations (not zeros) in the last
    # 2 frames of a padded utterance; peak picking (+-5) can carry that a few frames further.
    edge = 2 + config.peak_window + 1
    for x, h, x_hat in zip(utterances, factorized.scores, factorized.reconstructions):
        with torch.no_grad():
            alone = model(torch.from_numpy(x)[None], torch.ones(1, x.shape[1], dtype=torch.bool))
        assert h.shape == (4, x.shape[1]) and x_hat.shape == x.shape
        assert np.count_nonzero(h[:, :-edge]) > 0
        np.testing.assert_allclose(h[:, :-edge], alone.scores[0, :, :-edge].numpy(), atol=1e-5)
        np.testing.assert_allclose(x_hat[:, :-edge], alone.reconstruction[0, :, :-edge].numpy(), atol=1e-5)
    assert factorized.inference_seconds > 0


def test_example_indices_pick_median_lengths_deterministically():
    lengths = [50, 10, 30, 40, 20, 60, 30]
    ids = ["a", "b", "c", "d", "e", "f", "g"]
    # sorted: b10 e20 c30 g30 d40 a50 f60 -> the middle three
    assert example_indices(lengths, ids, 3) == [2, 6, 3]
    assert example_indices(lengths[:2], ids[:2], 3) == [1, 0]


# ------------------------------------------------------------------ classical baseline


def test_classical_baseline_recovers_planted_gestures():
    kernels, _, _, train = planted_problem([1000] * 4, seed=2)
    _, _, _, test = planted_problem([600], seed=3)
    params = baseline_params(max_iter=150, transform_iter=50, tol=0.0, lambda_xortho=0.0, max_train_frames=None)
    cnmf, seconds, frames, _ = fit_classical(train, P, L, params, seed=0)
    assert frames == 4000 and seconds > 0
    assert kernel_recovery(kernels, cnmf.gesture_kernels_)["matched_cosine_mean"] > 0.8


def test_classical_training_subset_respects_the_frame_cap():
    _, _, _, train = planted_problem([200] * 6, seed=4)
    params = baseline_params(max_iter=1, transform_iter=1, max_train_frames=450)
    _, _, frames, _ = fit_classical(train, P, L, params, seed=0)
    assert frames == 400


def test_classical_held_out_subset_is_seeded_bounded_and_keeps_the_examples():
    assert held_out_subset(5, None, seed=0) == held_out_subset(5, 5, seed=0) == [0, 1, 2, 3, 4]
    subset = held_out_subset(100, 10, seed=3, keep=[7, 42])
    assert len(subset) == 10 and {7, 42} <= set(subset) and subset == sorted(subset)
    assert held_out_subset(100, 10, seed=3, keep=[7, 42]) == subset  # seeded
    assert held_out_subset(100, 10, seed=4, keep=[7, 42]) != subset
    assert held_out_subset(100, 1, seed=0, keep=[7, 42]) == [7, 42]  # the examples are never dropped


# ------------------------------------------------------------------------ parameters


def evaluate_section(**baseline) -> dict:
    base = dict(max_iter=15, transform_iter=10, tol=1e-4, transform_tol=1e-4, lambda_l1_scores=0.0,
                lambda_l1_kernels=0.0, lambda_xortho=0.0, max_train_frames=None, max_test_utterances=None)
    base.update(baseline)
    return {"batch_size": 4, "onset_tolerance": 2, "score_tolerance": 5,
            "onset_relative_height": 0.1, "examples": 3, "baseline": base}


def test_params_are_validated_with_the_key_named():
    params = {"device": "cpu", "seed": 1, "evaluate": evaluate_section()}
    parsed = EvaluateParams.from_params(params)
    assert parsed.baseline.max_iter == 15 and parsed.seed == 1 and parsed.baseline.max_train_frames is None
    top = {"device": "cpu", "seed": 0}
    with pytest.raises(ParamsError, match=r"evaluate\.baseline: unknown key\(s\) \['maxiter'\]"):
        EvaluateParams.from_params({**top, "evaluate": evaluate_section(maxiter=3)})
    with pytest.raises(ParamsError, match=r"evaluate\.baseline\.lambda_xortho: must be"):
        EvaluateParams.from_params({**top, "evaluate": evaluate_section(lambda_xortho=-1.0)})
    # The same device check as the train stage's (a name like "cudax" is no device either).
    for device in ("tpu", "cudax"):
        with pytest.raises(ParamsError, match=r"params\.yaml device: must be auto, cpu, cuda or cuda:<index>"):
            EvaluateParams.from_params({"device": device, "seed": 0, "evaluate": evaluate_section()})
    with pytest.raises(ParamsError, match=r"params\.yaml seed: must be an integer >= 0"):
        EvaluateParams.from_params({"device": "cpu", "seed": True, "evaluate": evaluate_section()})
    with pytest.raises(ParamsError, match=r"params\.yaml device: missing"):
        EvaluateParams.from_params({})
    with pytest.raises(ParamsError, match=r"no 'evaluate:' section"):
        EvaluateParams.from_params(top)


# -------------------------------------------------------------------------- the stage


def make_project(root: Path, *, model: bool = True, truth: bool = True) -> None:
    """A tiny project: data/normalized, data/raw/ground_truth.npz, models/model.pt, params.yaml."""
    lengths = [120, 150, 90, 130, 110, 140, 100, 125]
    kernels, _, scores, data = planted_problem(lengths, seed=5)
    ids = [f"spk_{i:03d}" for i in range(len(lengths))]
    splits = ["train"] * 5 + ["test"] * 3
    span = np.linspace(2.0, 4.0, C)
    low = -np.ones(C)
    normalized = root / "data" / "normalized"
    frames = np.concatenate(data, axis=1).T.astype(np.float32)
    save_npy(normalized / "frames.npy", frames)
    starts = np.cumsum([0] + lengths[:-1])
    rows = [dict(utterance_id=u, speaker="spk", start=int(s), frames=n, ema="", wav="", lab="", split=sp)
            for u, s, n, sp in zip(ids, starts, lengths, splits)]
    write_index(normalized / "index.csv", rows, INDEX_COLUMNS + ("split",))
    stats = {"channels": list(units.CHANNELS), "low": low.tolist(), "high": (low + span).tolist()}
    write_json(normalized / "stats.json", stats)
    if truth:
        events = [(i, p, t, h[p, t]) for i, h in enumerate(scores) for p, t in zip(*np.nonzero(h))]
        (root / "data" / "raw").mkdir(parents=True)
        write_truth(root / "data" / "raw" / "ground_truth.npz", kernels * span[None, :, None], ids, events)
    if model:
        config = train_config(num_gestures=4, win_size=L, hidden=8, epochs=1)
        torch.manual_seed(0)
        network = GesturalAutoEncoder(config.model_config())
        with torch.no_grad():
            network.decoder.kernels_raw[:P].copy_(torch.from_numpy(kernels))
        save_model(root / "models" / "model.pt", network, dataclasses.asdict(config), stats)
        write_json(root / "reports" / "timing" / "train.json", {"seconds": 12.5})
    params = {"device": "cpu", "seed": 0, "evaluate": evaluate_section()}
    (root / "params.yaml").write_text(yaml.safe_dump(params))


def stage_main():
    return lambda: run_stage("evaluate", load_stage("evaluate").main)


def test_stage_writes_every_output(tmp_path, monkeypatch, capsys):
    make_project(tmp_path)
    monkeypatch.chdir(tmp_path)
    assert stage_main()() == 0
    # eval.json: the figures of merit only, so that `dvc metrics diff` reads well.
    summary = json.loads((tmp_path / "metrics" / "eval.json").read_text())
    assert set(summary) == {"neural", "classical", "raw_channels"}
    assert set(summary["neural"]) == set(SUMMARY_KEYS)
    assert 0 <= summary["neural"]["score_iou"] <= 1 and summary["neural"]["score_on_per_frame"] >= 0
    assert 0.5 <= summary["raw_channels"]["activation_auc"] <= 1.0
    # evaluation/details.json: everything else, timings aside.
    metrics = json.loads((tmp_path / "evaluation" / "details.json").read_text())
    assert metrics["ground_truth"] is True and metrics["test_utterances"] == 3
    assert metrics["test_frames"] == 140 + 100 + 125
    for method in ("neural", "classical"):
        assert set(METRIC_KEYS) - set(TIMING_KEYS) <= set(metrics[method]), method
        for key in set(METRIC_KEYS) - set(TIMING_KEYS) - {"correlation_per_channel", "elbo_per_frame"}:
            assert isinstance(metrics[method][key], (int, float)), (method, key)
    timing = json.loads((tmp_path / "reports" / "timing" / "evaluate.json").read_text())
    assert timing["neural"]["fit_seconds"] == 12.5 and timing["classical"]["inference_seconds"] > 0
    assert set(metrics["neural_beats_classical"]) == set(COMPARED)
    assert all(isinstance(v, bool) for v in metrics["neural_beats_classical"].values())

    with open(tmp_path / "plots" / "eval" / "per_channel_correlation.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert [r["channel"] for r in rows] == list(units.CHANNELS) and set(rows[0]) == {"channel", "neural", "classical"}

    out = tmp_path / "evaluation"
    with np.load(out / "classical.npz") as classical:
        assert classical["gesture_kernels"].shape == (4, C, L) and classical["baseline"].shape == (C,)
    with np.load(out / "examples.npz") as examples:
        assert examples["ids"].tolist() == ["spk_006", "spk_007", "spk_005"]  # by length: 100, 125, 140
        for i in range(3):
            frames = examples[f"x_{i}"].shape[1]
            assert examples[f"neural_scores_{i}"].shape == (4, frames)
            assert examples[f"classical_scores_{i}"].shape == (4, frames)
            assert examples[f"neural_reconstruction_{i}"].shape == (C, frames)
            assert examples[f"classical_reconstruction_{i}"].shape == (C, frames)
    with np.load(out / "planted.npz") as planted:
        np.testing.assert_allclose(planted["kernels"], planted_kernels(5), rtol=1e-5, atol=1e-6)
    matching = json.loads((out / "matching.json").read_text())
    # Only gestures in use are matched (the untrained network may use fewer than P).
    in_use = metrics["neural"]["num_gestures_in_use"]
    assert len(matching["neural"]["kernel_recovery"]) == min(P, in_use) and len(matching["classical"]["seqnmf"]) == P
    assert "neural" in capsys.readouterr().out
    # the exported gestural score: the intervals the example TextGrids hold, and the matching
    scores = json.loads((out / "gestural_scores.json").read_text())
    assert [e["id"] for e in scores["examples"]] == ["spk_006", "spk_007", "spk_005"]
    # the untrained network holds no score for 30 ms: no interval; the classical scores do
    assert [pair[0] for pair in scores["pairs"]["classical"]] and len(scores["planted_names"]) == P
    for example in scores["examples"]:
        rows = read_events(out / "examples" / example["id"] / "events.csv")
        rate = units.FRAME_RATE
        exported = sorted((r["gesture"], round(r["onset_s"] * rate), round(r["offset_s"] * rate))
                          for r in rows)
        assert exported == sorted(tuple(interval) for interval in example["neural"])


def test_stage_transforms_a_bounded_subset_with_the_classical_baseline(tmp_path, monkeypatch):
    make_project(tmp_path)
    params = {"device": "cpu", "seed": 0, "evaluate": dict(evaluate_section(max_test_utterances=1), examples=1)}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    monkeypatch.chdir(tmp_path)
    assert stage_main()() == 0
    metrics = json.loads((tmp_path / "evaluation" / "details.json").read_text())
    # The network scores all three held-out utterances, the baseline only the example (spk_007, 125 frames).
    assert metrics["test_utterances"] == 3 and metrics["neural"]["num_gestures_in_use"] >= 0
    assert (metrics["classical"]["transform_utterances"], metrics["classical"]["transform_frames"]) == (1, 125)
    with np.load(tmp_path / "evaluation" / "examples.npz") as examples:
        assert examples["ids"].tolist() == ["spk_007"]
        assert examples["classical_scores_0"].shape == (4, 125)
    scores = json.loads((tmp_path / "evaluation" / "gestural_scores.json").read_text())
    assert [e["id"] for e in scores["examples"]] == ["spk_007"]


def test_stage_without_ground_truth_skips_recovery(tmp_path, monkeypatch):
    make_project(tmp_path, truth=False)
    monkeypatch.chdir(tmp_path)
    assert stage_main()() == 0
    metrics = json.loads((tmp_path / "evaluation" / "details.json").read_text())
    assert metrics["ground_truth"] is False
    assert metrics["neural"]["kernel_cosine"] is None and metrics["classical"]["seqnmf_similarity"] is None
    assert metrics["neural_beats_classical"]["kernel_cosine"] is None
    assert isinstance(metrics["neural_beats_classical"]["variance_explained"], bool)
    assert not (tmp_path / "evaluation" / "planted.npz").exists()


def test_stage_refuses_a_missing_model(tmp_path, monkeypatch, capsys):
    make_project(tmp_path, model=False)
    monkeypatch.chdir(tmp_path)
    assert stage_main()() == 1
    assert "models/model.pt not found: run `dvc repro train` first" in capsys.readouterr().err
    assert not (tmp_path / "metrics" / "eval.json").exists()
    assert not (tmp_path / "evaluation").exists()


def test_missing_data_names_the_stage(tmp_path):
    make_project(tmp_path)
    with pytest.raises(EvaluationError, match=r"frames\.npy not found: run `dvc repro normalize` first"):
        run_evaluation(evaluate_params(device="cpu"), model_path=tmp_path / "models" / "model.pt",
                       data_dir=tmp_path / "nowhere", truth_path=None, train_metrics_path=None, progress=False)
