"""Known-answer tests of gestural.evaluation.recovery: kernel recovery, seqNMF similarity, onsets."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import bump_kernels, spike_scores

from gestural.core.metrics import convolve_scores
from gestural.evaluation.recovery import kernel_recovery, lag_tolerant_cosine, onset_f1, seqnmf_similarity

C = 12  # bump_kernels: 12 channels


# -------------------------------------------------------------- kernel recovery


def test_kernel_recovery_of_shuffled_copy():
    planted = bump_kernels(5, seed=4)
    order = np.array([3, 0, 4, 1, 2])
    result = kernel_recovery(planted, planted[order])
    assert result["matched_cosine_mean"] == pytest.approx(1.0)
    for p, k, lag in result["assignment"]:
        assert order[k] == p and lag == 0
    assert len(result["per_gesture"]) == 5


def test_kernel_recovery_more_or_fewer_learned():
    planted = bump_kernels(4, seed=5)
    spare = bump_kernels(3, seed=6)
    assert kernel_recovery(planted, np.concatenate([spare, planted]))["matched_cosine_mean"] == pytest.approx(1.0)
    fewer = kernel_recovery(planted, planted[:2])
    assert fewer["matched_cosine_mean"] == pytest.approx(0.5)
    assert sorted(fewer["per_gesture"])[:2] == [0.0, 0.0]


def test_shifted_kernel_matches_at_its_lag():
    planted = bump_kernels(1, seed=7)  # support frames 3..6 of 10
    delayed = np.zeros_like(planted)
    delayed[:, :, 2:] = planted[:, :, :-2]  # the same movement, 2 frames later
    assert lag_tolerant_cosine(planted[0], delayed[0]) == pytest.approx(1.0)
    assert lag_tolerant_cosine(planted[0], delayed[0], max_lag=1) < 0.99
    result = kernel_recovery(planted, delayed)
    assert result["matched_cosine_mean"] == pytest.approx(1.0)
    assert result["assignment"] == [(0, 0, 2)]
    assert kernel_recovery(delayed, planted)["assignment"] == [(0, 0, -2)]
    # Kernels of different lengths compare too.
    longer = np.concatenate([np.zeros((1, C, 5)), planted], axis=2)
    assert kernel_recovery(planted, longer)["assignment"] == [(0, 0, 5)]
    assert kernel_recovery(planted, longer)["matched_cosine_mean"] == pytest.approx(1.0)


# ------------------------------------------------------------ seqNMF similarity


def test_seqnmf_similarity_permuted_identical_is_one():
    kernels = bump_kernels(3, seed=8)
    scores = spike_scores(3, 400, seed=9)
    order = [2, 0, 1]
    result = seqnmf_similarity(kernels, scores, kernels[order], scores[order])
    assert result["score"] == pytest.approx(1.0)
    assert sorted((p, k) for p, k, _ in result["matches"]) == sorted((order[k], k) for k in range(3))


def test_seqnmf_similarity_split_factor_is_below_one():
    kernels = bump_kernels(3, seed=10)
    scores = spike_scores(3, 2000, rate=0.02, seed=11)
    onsets = np.flatnonzero(scores[2])
    first_half, second_half = scores[2].copy(), scores[2].copy()
    first_half[onsets[1::2]] = 0.0  # planted factor 2 split between two learned factors
    second_half[onsets[::2]] = 0.0
    learned_scores = np.stack([scores[0], scores[1], first_half, second_half])
    learned_kernels = kernels[[0, 1, 2, 2]]
    result = seqnmf_similarity(kernels, scores, learned_kernels, learned_scores)
    # The bigger half matches with cosine ~ 1/sqrt(2) (sparse spikes barely overlap).
    assert 0.85 < result["score"] < 0.95
    assert result["score"] == pytest.approx((2 + max(c for p, _, c in result["matches"] if p == 2)) / 3)


def test_seqnmf_similarity_padding_and_chunking_do_not_matter():
    planted_kernels, learned_kernels = bump_kernels(3, seed=12), bump_kernels(4, length=7, start=1, seed=13)
    lengths = [120, 75, 200]
    planted = [spike_scores(3, n, seed=20 + i) for i, n in enumerate(lengths)]
    learned = [spike_scores(4, n, seed=30 + i) for i, n in enumerate(lengths)]
    reference = seqnmf_similarity(planted_kernels, planted, learned_kernels, learned, chunk_frames=100000)
    chunked = seqnmf_similarity(planted_kernels, planted, learned_kernels, learned, chunk_frames=7)
    np.testing.assert_allclose(chunked["cosine_matrix"], reference["cosine_matrix"], rtol=1e-10)
    pad_p = np.full((3, 3, 200), 5.0)  # non-zero padding would add movement if it leaked
    pad_l = np.full((3, 4, 200), 5.0)
    mask = np.zeros((3, 200), dtype=bool)
    for i, n in enumerate(lengths):
        pad_p[i, :, :n], pad_l[i, :, :n], mask[i, :n] = planted[i], learned[i], True
    padded = seqnmf_similarity(planted_kernels, pad_p, learned_kernels, pad_l, mask=mask, chunk_frames=33)
    np.testing.assert_allclose(padded["cosine_matrix"], reference["cosine_matrix"], rtol=1e-10)
    assert padded["score"] == pytest.approx(reference["score"])


# ---------------------------------------------------------------------- onsets


def test_onset_f1_exact_peaks_and_missing_half():
    onsets = [10, 40, 75, 120, 160, 199]  # 199 = last frame: edge peaks count
    trace = np.zeros(200)
    trace[onsets] = 1.0
    result = onset_f1(onsets, trace)
    assert (result["precision"], result["recall"], result["f1"]) == (1.0, 1.0, 1.0)
    half = np.zeros(200)
    half[onsets[::2]] = 1.0
    result = onset_f1(onsets, half)
    assert result["recall"] == pytest.approx(0.5) and result["precision"] == 1.0
    assert result["f1"] == pytest.approx(2 / 3)


def test_onset_f1_tolerance_lag_and_one_to_one():
    onsets = np.array([20, 60, 100])
    trace = np.zeros(150)
    trace[onsets - 2] = 1.0  # a kernel delayed by 2 frames is switched on 2 frames early
    assert onset_f1(onsets, trace, tolerance=1)["f1"] == 0.0
    assert onset_f1(onsets, trace, tolerance=2)["f1"] == 1.0
    assert onset_f1(onsets, trace, tolerance=0, lag=2)["f1"] == 1.0
    # Two onsets within reach of one peak: only one of them is matched.
    crowded = onset_f1([50, 52], np.eye(1, 150, 51)[0], tolerance=2)
    assert crowded["num_matched"] == 1 and crowded["precision"] == 1.0 and crowded["recall"] == 0.5
    # Small bumps under the relative height are not peaks.
    noisy = trace.copy()
    noisy[[5, 130]] = 0.05
    assert onset_f1(onsets, noisy, lag=2, tolerance=0)["precision"] == 1.0


def test_recovery_lag_feeds_onset_matching():
    kernels = bump_kernels(1, seed=14)
    rng = np.random.default_rng(15)
    onsets = np.sort(rng.choice(np.arange(2, 300, 4), size=20, replace=False))  # spikes >= 4 apart
    scores = np.zeros((1, 300))
    scores[0, onsets] = rng.uniform(0.5, 1.0, onsets.size)
    delayed = np.zeros_like(kernels)
    delayed[:, :, 2:] = kernels[:, :, :-2]
    early = np.zeros_like(scores)
    early[:, :-2] = scores[:, 2:]  # same reconstruction with the delayed kernel
    torch.testing.assert_close(convolve_scores(early, delayed), convolve_scores(scores, kernels))
    (_, _, lag), = kernel_recovery(kernels, delayed)["assignment"]
    assert onset_f1(onsets, early[0], tolerance=0, lag=lag)["f1"] == 1.0
