"""The exported gestural score scored against the planted one (evaluation.score_match): the
matching, IoU, boundary F1, density and the oracle ceiling, on hand-made intervals."""

from __future__ import annotations

import numpy as np
import pytest

from gestural.evaluation.score_match import (
    gestural_score_metrics,
    merged_activations,
    merged_planted_intervals,
    oracle_iou,
    planted_intervals,
)


def planted_mask(*rows, frames=100):
    mask = np.zeros((len(rows), frames), dtype=bool)
    for p, (onset, offset) in enumerate(rows):
        mask[p, onset:offset] = True
    return mask


def test_a_shifted_box_matches_its_planted_gesture_with_the_expected_iou_and_onset_hit():
    planted = [planted_mask((10, 30))]
    exported = [[(1, 15, 35), (0, 60, 70)]]  # learned gesture 1 overlaps; 0 is elsewhere
    scores = [np.zeros((2, 100))]
    metrics, pairs = gestural_score_metrics(planted, exported, scores, tolerance=5)
    # 15 of the learned gesture's 20 frames are its partner's (precision), 15 of the partner's 20 covered
    assert pairs == [(0, 1, pytest.approx(15 / 25), pytest.approx(0.75), pytest.approx(0.75))]
    assert metrics["score_iou"] == pytest.approx(0.6)
    assert metrics["score_onset_f1"] == 1.0 and metrics["score_offset_f1"] == 1.0
    assert metrics["score_on_per_frame"] == pytest.approx(0.3) and metrics["planted_on_per_frame"] == 0.2
    assert metrics["score_intervals_per_utterance"] == 2 and metrics["score_interval_ms"] == pytest.approx(75.0)
    tighter, _ = gestural_score_metrics(planted, exported, scores, tolerance=4)
    assert tighter["score_onset_f1"] == 0.0


def test_a_learned_gesture_that_also_fires_for_another_planted_gesture_has_a_low_precision_not_recall():
    planted = [planted_mask((10, 30), (50, 70))]
    exported = [[(0, 10, 30), (0, 50, 70), (1, 52, 68)]]  # gesture 0 fires for both planted ones
    _, pairs = gestural_score_metrics(planted, exported, [np.zeros((2, 100))], tolerance=2)
    merged = next(pair for pair in pairs if pair[1] == 0)
    assert merged[3] == pytest.approx(0.5) and merged[4] == pytest.approx(1.0)


def test_a_planted_gesture_without_a_learned_partner_counts_zero_and_misses_its_onsets():
    planted = [planted_mask((10, 30), (50, 60))]
    metrics, pairs = gestural_score_metrics(planted, [[(0, 10, 30)]], [np.zeros((1, 100))], tolerance=2)
    assert pairs == [(0, 0, 1.0, 1.0, 1.0)]
    assert metrics["score_iou"] == pytest.approx(0.5)  # (1 + 0) / 2 planted gestures
    assert metrics["score_onset_f1"] == pytest.approx(2 * 1.0 * 0.5 / 1.5)  # precision 1, recall 1/2


def test_an_always_on_tier_scores_low_however_well_it_ranks():
    planted = [planted_mask((10, 30))]
    metrics, _ = gestural_score_metrics(planted, [[(0, 0, 100)]], [np.zeros((1, 100))], tolerance=5)
    assert metrics["score_iou"] == pytest.approx(0.2) and metrics["score_onset_f1"] == 0.0


def test_the_oracle_finds_the_threshold_that_separates_a_box_from_a_haze():
    truth = planted_mask((10, 30), (50, 80))
    rng = np.random.default_rng(0)
    scores = 0.2 * rng.random((3, 100)) + truth[[1, 0, 0]] * 1.0  # row 0 is gesture 1, rows 1-2 gesture 0
    assert oracle_iou([truth], [scores]) > 0.95  # thresholds are 48 quantiles: a frame or so off
    assert oracle_iou([truth], [0.2 * rng.random((3, 100))]) < 0.5


def test_planted_intervals_are_the_runs_of_the_activation_mask():
    assert planted_intervals(planted_mask((10, 30), (50, 60))) == [(0, 10, 30), (1, 50, 60)]


def test_merging_two_planted_gestures_costs_the_one_left_without_its_own_partner():
    planted = [planted_mask((10, 30), (50, 60), (70, 90))]
    itself, _ = gestural_score_metrics(planted, [merged_planted_intervals(planted[0], [[0], [1], [2]])],
                                       [np.zeros((3, 100))], tolerance=0)
    assert itself["score_iou"] == 1.0 and itself["score_onset_f1"] == 1.0
    merged = merged_planted_intervals(planted[0], [[0, 1], [2]])
    assert merged == [(0, 10, 30), (0, 50, 60), (1, 70, 90)]
    metrics, pairs = gestural_score_metrics(planted, [merged], [np.zeros((2, 100))], tolerance=0)
    # The merged gesture partners planted 0 (IoU 20 / 30); planted 1 has no partner left.
    assert metrics["score_iou"] == pytest.approx((20 / 30 + 0 + 1) / 3)
    assert sorted(pair[:2] for pair in pairs) == [(0, 0), (2, 1)]


def test_merged_activations_are_on_where_any_gesture_of_the_group_is():
    planted = planted_mask((10, 30), (20, 40), (70, 90))
    merged = merged_activations(planted, [[2], [0, 1]])
    assert merged.dtype == bool and merged.shape == (2, 100)
    assert planted_intervals(merged) == [(0, 70, 90), (1, 10, 40)]
