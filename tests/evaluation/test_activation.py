"""Activation AUC: how well score traces rank the frames where a planted gesture is active."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import mannwhitneyu

from gestural.evaluation.activation import activation_metrics, gesture_activity, raw_channel_floor, roc_auc_matrix


def test_gesture_activity_is_the_causal_sum_over_the_kernel_length():
    scores = np.zeros((2, 12))
    scores[0, 2], scores[1, 10] = 1.0, 2.0
    activity = gesture_activity(scores, 3)
    np.testing.assert_array_equal(activity[0], [0, 0, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0])
    np.testing.assert_array_equal(activity[1], [0] * 10 + [2, 2])


def test_auc_matches_the_mann_whitney_statistic_with_ties():
    rng = np.random.default_rng(0)
    active = [rng.random((3, 200)) < 0.3, rng.random((3, 150)) < 0.3]
    traces = [np.round(rng.random((4, 200)), 1), np.round(rng.random((4, 150)), 1)]  # many ties
    auc, lag = roc_auc_matrix(active, traces)
    pooled_a, pooled_t = np.concatenate(active, 1), np.concatenate(traces, 1)
    for p in range(3):
        for r in range(4):
            u = mannwhitneyu(pooled_t[r, pooled_a[p]], pooled_t[r, ~pooled_a[p]]).statistic
            assert auc[p, r] == pytest.approx(u / (pooled_a[p].sum() * (~pooled_a[p]).sum()))
    assert not lag.any()


def test_a_trace_that_lags_the_activation_is_found_at_its_lag_only_when_lags_are_allowed():
    active = np.zeros((1, 300), dtype=bool)
    for start in range(10, 280, 40):
        active[0, start:start + 15] = True
    trace = np.roll(active.astype(float), 6, axis=1)
    strict, _ = roc_auc_matrix([active], [trace])
    tolerant, lag = roc_auc_matrix([active], [trace], max_lag=10)
    assert strict[0, 0] < 0.85 and tolerant[0, 0] == pytest.approx(1.0) and lag[0, 0] == 6


def test_the_best_row_per_planted_gesture_and_the_signed_floor():
    rng = np.random.default_rng(1)
    active = np.zeros((2, 400), dtype=bool)
    active[0, 50:120] = active[0, 250:300] = True
    active[1, 150:220] = True
    scores = rng.random((3, 400)) * 0.05
    scores[2, 150:220] += 1.0  # row 2 is gesture 1, held
    scores[0, [50, 250]] += 1.0  # row 0 marks gesture 0's onsets (its kernel spans the rest)
    metrics = activation_metrics([active], [scores], win_size=60)
    assert metrics["activation_best_row"] == [0, 2]
    assert metrics["activation_auc"] > 0.9
    # A channel that goes *down* while gesture 1 is on counts with its sign flipped.
    channel = np.ones((1, 400))
    channel[0, 150:220] = 0.0
    floor = raw_channel_floor([active], [channel], max_lag=0)
    assert floor["activation_auc_per_gesture"][1] == pytest.approx(1.0)
