"""Tests of the classical convolutive NMF baseline on small planted problems."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import baseline_params

from gestural.classical.cnmf import ConvNMF
from gestural.core.metrics import convolve_scores, reconstruction_metrics
from gestural.evaluation.classical import classical_factorization, fit_classical
from gestural.evaluation.recovery import kernel_recovery

C, L, P = 12, 8, 3
pytestmark = pytest.mark.usefixtures("one_thread")  # tiny problems


def planted_problem(frames: int, seed: int = 0, noise: float = 0.005):
    """Smooth non-negative kernels (bumps centred in the window), sparse spike scores.

    Returns kernels (P, C, L) of unit norm, baseline (C,), and a function that draws
    utterances (C, T) of the same model.
    """
    rng = np.random.default_rng(seed)
    t = np.arange(L)
    kernels = np.zeros((P, C, L))
    for p in range(P):
        for c in rng.choice(C, 4, replace=False):  # each gesture moves 4 channels
            centre, width = rng.uniform(2.5, 4.5), rng.uniform(0.7, 1.2)
            kernels[p, c] = rng.uniform(0.5, 1.0) * np.exp(-0.5 * ((t - centre) / width) ** 2)
    kernels /= np.linalg.norm(kernels.reshape(P, -1), axis=1)[:, None, None]
    baseline = rng.uniform(0.05, 0.2, C)

    def draw(length: int) -> np.ndarray:
        scores = (rng.random((P, length)) < 0.01) * rng.uniform(0.5, 1.0, (P, length))
        x = convolve_scores(scores, kernels, baseline).numpy()
        return np.clip(x + noise * rng.standard_normal(x.shape), 0.0, None)

    utterances = [draw(n) for n in np.full(frames // 1000, 1000)]
    return kernels, baseline, utterances, draw


def continuous_problem(lengths, seed: int = 0, gestures: int = 4, noise: float = 0.01):
    """Continuous movement: smooth kernels moving half the channels each, and activations
    that are never zero (smoothed exponential noise), so every frame is several gestures
    overlapping on top of a baseline, like articulatory data rather than isolated events.

    Returns the planted kernels (gestures, C, L), the utterances (C, T) and ``draw``.
    """
    rng = np.random.default_rng(seed)
    t = np.arange(L)
    kernels = np.zeros((gestures, C, L))
    for p in range(gestures):
        for c in rng.choice(C, C // 2, replace=False):
            centre, width = rng.uniform(1.5, L - 2.5), rng.uniform(1.0, 2.5)
            kernels[p, c] = rng.uniform(0.3, 1.0) * np.exp(-0.5 * ((t - centre) / width) ** 2)
    kernels /= np.linalg.norm(kernels.reshape(gestures, -1), axis=1)[:, None, None]
    baseline = rng.uniform(0.2, 0.4, C)
    smooth = np.exp(-0.5 * (np.arange(-9, 10) / 3.0) ** 2)

    def draw(length: int) -> np.ndarray:
        raw = rng.exponential(1.0, (gestures, length + len(smooth) - 1))
        scores = 0.15 * np.stack([np.convolve(r, smooth, "valid") for r in raw])
        x = convolve_scores(scores, kernels, baseline).numpy()
        return np.clip(x + noise * rng.standard_normal(x.shape), 0.0, None).astype(np.float32)

    return kernels, [draw(n) for n in lengths], draw


def held_out_variance_explained(model: ConvNMF, utterances) -> float:
    scores = model.transform(utterances)
    reconstruction = torch.cat([convolve_scores(s, model.gesture_kernels_, model.baseline_) for s in scores], dim=1)
    return reconstruction_metrics(np.concatenate(utterances, axis=1), reconstruction)["variance_explained"]


@pytest.mark.parametrize(
    "kwargs, name",
    [
        ({"num_gestures": 0, "win_size": 5}, "num_gestures"),
        ({"num_gestures": 3, "win_size": 0}, "win_size"),
        ({"num_gestures": 3, "win_size": 5, "lambda_l1_scores": -1.0}, "lambda_l1_scores"),
        ({"num_gestures": 3, "win_size": 5, "lambda_l1_kernels": -0.1}, "lambda_l1_kernels"),
        ({"num_gestures": 3, "win_size": 5, "lambda_xortho": float("nan")}, "lambda_xortho"),
        ({"num_gestures": 3, "win_size": 5, "max_iter": 0}, "max_iter"),
        ({"num_gestures": 3, "win_size": 5, "tol": -1e-4}, "tol"),
        ({"num_gestures": 3, "win_size": 5, "transform_max_iter": 0}, "transform_max_iter"),
        ({"num_gestures": 3, "win_size": 5, "transform_tol": float("inf")}, "transform_tol"),
    ],
)
def test_bad_parameters_are_named(kwargs, name):
    with pytest.raises(ValueError, match=name):
        ConvNMF(**kwargs)


def test_bad_utterances_are_rejected_clearly():
    model = ConvNMF(2, 4, max_iter=2)
    good = np.ones((C, 30))
    with pytest.raises(TypeError, match="list"):
        model.fit(good)
    bad = good.copy()
    bad[0, 3] = -0.5
    with pytest.raises(ValueError, match="utterance 1 has negative values"):
        model.fit([good, bad])
    bad[0, 3] = np.nan
    with pytest.raises(ValueError, match="utterance 1 contains NaN"):
        model.fit([good, bad])
    with pytest.raises(ValueError, match="utterance 1 has 11 channels"):
        model.fit([good, good[:11]])
    with pytest.raises(RuntimeError, match="fit first"):
        ConvNMF(2, 4).transform([good])
    model.fit([good])
    with pytest.raises(ValueError, match="utterance 0 has 11 channels"):
        model.transform([good[:11]])


def test_fit_explains_continuous_overlapping_movement_and_stops_on_its_own():
    _, utterances, draw = continuous_problem([700, 900, 1100], seed=0)
    model = ConvNMF(4, L, max_iter=2000, tol=1e-4, seed=0).fit(utterances)
    assert model.converged_ and 30 <= model.n_iter_ < 2000
    assert len(model.cost_history_) == model.n_iter_
    assert model.transform_max_iter == 2000 and model.transform_tol == 1e-4
    assert held_out_variance_explained(model, [draw(500), draw(800)]) >= 0.9
    assert model.transform_converged_ and model.transform_n_iter_ >= 20


def test_pipeline_xortho_does_not_empty_the_scores_at_many_gestures():
    # Regression: seqNMF's unscaled x-ortho on data sitting on an offset drove every score
    # to zero within ~10 iterations at K >= 40, leaving the baseline to explain the mean.
    _, utterances, draw = continuous_problem([600, 800], seed=1)
    defaults = baseline_params()
    model = ConvNMF(40, L, max_iter=defaults.max_iter, tol=defaults.tol, lambda_xortho=defaults.lambda_xortho,
                    seed=0).fit(utterances)
    assert model.n_iter_ >= 30
    assert held_out_variance_explained(model, [draw(600)]) >= 0.85


def test_stopping_rule_waits_for_a_window_of_small_decreases():
    _, utterances, _ = continuous_problem([800], seed=2)
    tol = 1e-3
    model = ConvNMF(4, L, max_iter=5000, tol=tol, seed=1).fit(utterances)
    cost = model.cost_history_
    assert model.converged_ and 20 <= model.n_iter_ < 5000
    x = np.concatenate(utterances, axis=1).astype(np.float64)
    spread = 0.5 * ((x - x.mean(axis=1, keepdims=True)) ** 2).sum()  # the cost of a constant fit
    assert (cost[-11] - cost[-1]) / 10 <= tol * spread < (cost[-12] - cost[-2]) / 10
    capped = ConvNMF(4, L, max_iter=25, tol=tol, seed=1).fit(utterances)
    assert capped.n_iter_ == 25 and not capped.converged_


def test_cost_never_increases_without_penalties():
    _, utterances, _ = continuous_problem([1000, 1000], seed=3)
    model = ConvNMF(6, L, max_iter=150, tol=0.0, seed=3).fit(utterances)
    cost = np.array(model.cost_history_)
    assert model.n_iter_ == len(cost) == 150 and not model.converged_
    # float32 arithmetic: allow rounding-level wobble only
    assert np.all(np.diff(cost) <= 1e-6 * cost[:-1])
    assert cost[-1] < 0.1 * cost[0]
    transformed = model.transform(utterances[:1], max_iter=50, tol=0.0)
    t_cost = np.array(model.transform_cost_history_)
    assert len(transformed) == 1 and transformed[0].shape == (6, 1000)
    assert model.transform_n_iter_ == len(t_cost) == 50
    assert np.all(np.diff(t_cost) <= 1e-6 * t_cost[:-1])


@pytest.mark.slow
def test_three_hundred_gestures_on_little_data_converge():
    _, utterances, _ = continuous_problem([300, 400], seed=4)
    model = ConvNMF(300, L, max_iter=1000, tol=1e-4, lambda_xortho=0.1, seed=0)
    scores = model.fit_transform(utterances)
    assert model.converged_ and model.n_iter_ >= 20
    assert np.isfinite(model.cost_history_).all() and np.isfinite(model.gesture_kernels_).all()
    assert [s.shape for s in scores] == [(300, 300), (300, 400)]
    assert held_out_variance_explained(model, utterances) >= 0.9


def test_classical_result_reports_iterations_convergence_and_cost_curve():
    _, train, draw = continuous_problem([500, 700], seed=5)
    params = baseline_params(max_iter=400, transform_iter=200, tol=1e-4, transform_tol=1e-4, lambda_xortho=0.1,
                             max_train_frames=None)
    cnmf, _, _, _ = fit_classical(train, 4, L, params, seed=0)
    assert (cnmf.transform_max_iter, cnmf.transform_tol) == (200, 1e-4)
    extra = classical_factorization(cnmf, [draw(400)]).extra
    assert extra["fit_iterations"] == cnmf.n_iter_ == len(extra["fit_cost_history"]) >= 20
    assert extra["fit_converged"] is True and extra["transform_converged"] is True
    assert extra["transform_iterations"] == len(extra["transform_cost_history"]) <= 200
    assert all(isinstance(c, float) for c in extra["fit_cost_history"])


def test_same_seed_same_result():
    _, _, utterances, _ = planted_problem(2000, seed=2)
    a = ConvNMF(3, L, max_iter=30, seed=5).fit(utterances)
    b = ConvNMF(3, L, max_iter=30, seed=5).fit(utterances)
    np.testing.assert_array_equal(a.gesture_kernels_, b.gesture_kernels_)
    np.testing.assert_array_equal(a.baseline_, b.baseline_)
    assert a.cost_history_ == b.cost_history_


def test_recovers_planted_gestures_and_explains_held_out_data():
    kernels, baseline, utterances, draw = planted_problem(5000, seed=0)
    model = ConvNMF(P, L, max_iter=1000, tol=1e-4, lambda_l1_scores=0.03, seed=0)
    train_scores = model.fit_transform(utterances)
    assert model.converged_
    assert model.gesture_kernels_.shape == (P, C, L) and model.baseline_.shape == (C,)
    np.testing.assert_allclose(np.linalg.norm(model.gesture_kernels_.reshape(P, -1), axis=1), 1.0, rtol=1e-5)
    assert [s.shape for s in train_scores] == [(P, 1000)] * 5
    assert min(s.min() for s in train_scores) >= 0.0

    recovery = kernel_recovery(kernels, model.gesture_kernels_)
    assert recovery["matched_cosine_mean"] >= 0.9
    assert np.abs(model.baseline_ - baseline).max() < 0.01

    assert held_out_variance_explained(model, [draw(600), draw(1400)]) > 0.9


@pytest.mark.parametrize("lambda_xortho", [0.0, 0.3])
def test_utterances_do_not_leak_into_each_other(lambda_xortho):
    # With W fixed, an utterance's scores must not depend on what its neighbour contains:
    # here the neighbour ends mid-movement, whose tail would spill over without the gap
    # (and, with x-ortho, through its smoothing window without the mask).
    _, _, utterances, draw = planted_problem(2000, seed=4)
    model = ConvNMF(P, L, max_iter=100, tol=0.0, lambda_xortho=lambda_xortho, seed=1).fit(utterances)
    quiet, loud = draw(300), draw(300)
    loud[:, :3] = 1.0  # reaches back into an utterance before it through x-ortho's window
    loud[:, -3:] = 1.0
    second = draw(200)
    after_quiet = model.transform([quiet, second])[1]
    after_loud = model.transform([loud, second])[1]
    np.testing.assert_allclose(after_quiet, after_loud, rtol=1e-5, atol=1e-7)
    assert np.abs(after_quiet).max() > 0.1
    before_quiet = model.transform([second, quiet])[0]
    before_loud = model.transform([second, loud])[0]
    np.testing.assert_allclose(before_quiet, before_loud, rtol=1e-5, atol=1e-7)


def test_penalties_run_and_sparsify():
    _, _, utterances, _ = planted_problem(2000, seed=5, noise=0.01)
    plain = ConvNMF(5, L, max_iter=60, seed=0).fit(utterances)
    sparse = ConvNMF(5, L, max_iter=60, seed=0, lambda_l1_scores=0.1, lambda_l1_kernels=0.01,
                     lambda_xortho=0.3).fit(utterances)
    assert np.isfinite(sparse.cost_history_).all()
    assert (sparse.gesture_kernels_ >= 0).all()
    l1_plain = sum(np.abs(s).sum() for s in plain.transform(utterances, max_iter=60))
    l1_sparse = sum(np.abs(s).sum() for s in sparse.transform(utterances, max_iter=60))
    assert l1_sparse < l1_plain


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_gpu_matches_cpu():
    _, _, utterances, _ = planted_problem(2000, seed=6)
    cpu = ConvNMF(P, L, max_iter=50, tol=0.0, seed=0).fit(utterances)
    gpu = ConvNMF(P, L, max_iter=50, tol=0.0, seed=0, device="cuda").fit(utterances)
    np.testing.assert_allclose(gpu.gesture_kernels_, cpu.gesture_kernels_, atol=1e-3)
    np.testing.assert_allclose(gpu.cost_history_, cpu.cost_history_, rtol=1e-3)
