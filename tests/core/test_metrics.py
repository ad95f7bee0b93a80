"""Known-answer tests of gestural.metrics."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from gestural.core.metrics import convolve_scores, factor_reconstructions, hoyer, reconstruction_metrics, score_sparsity
from gestural.evaluation.recovery import kernel_recovery, lag_tolerant_cosine, onset_f1, seqnmf_similarity

C, L = 12, 10


def bump_kernels(num: int, length: int = L, start: int = 3, width: int = 4, seed: int = 0) -> np.ndarray:
    """Non-negative kernels whose support is frames [start, start + width)."""
    rng = np.random.default_rng(seed)
    kernels = np.zeros((num, C, length))
    kernels[:, :, start:start + width] = rng.random((num, C, width))
    return kernels


def spike_scores(num: int, frames: int, rate: float = 0.03, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (rng.random((num, frames)) < rate) * rng.uniform(0.5, 1.0, (num, frames))


# ------------------------------------------------------------------ convolution


def test_unit_impulse_reproduces_kernel_forward_in_time():
    kernels = bump_kernels(2, start=0, width=L, seed=1)
    scores = np.zeros((2, 30))
    scores[1, 5] = 1.0
    scores[0, 27] = 2.0  # near the end: only the first 3 frames of the kernel fit
    out = convolve_scores(scores, kernels).numpy()
    assert out.shape == (C, 30)
    np.testing.assert_allclose(out[:, 5:5 + L], kernels[1], atol=1e-12)
    np.testing.assert_allclose(out[:, 27:], 2.0 * kernels[0][:, :3], atol=1e-12)
    assert np.abs(out[:, :5]).max() == 0.0  # nothing before the impulse
    assert np.abs(out[:, 5 + L:27]).max() == 0.0


def test_convolve_batched_baseline_and_factor_sum():
    kernels = bump_kernels(3, seed=2)
    scores = torch.tensor(spike_scores(3, 50, seed=3)).reshape(1, 3, 50).repeat(2, 1, 1)
    scores[1] *= 2.0
    baseline = np.linspace(0.1, 0.2, C)
    out = convolve_scores(scores, kernels, baseline)
    assert out.shape == (2, C, 50)
    factors = factor_reconstructions(scores, kernels)
    assert factors.shape == (2, 3, C, 50)
    torch.testing.assert_close(factors.sum(dim=1) + torch.tensor(baseline)[None, :, None], out)
    torch.testing.assert_close(out[1] - out[0], out[0] - torch.tensor(baseline)[:, None])
    one = factor_reconstructions(scores[0], kernels)
    assert one.shape == (3, C, 50)
    torch.testing.assert_close(one[2], convolve_scores(scores[0, 2:3], kernels[2:3]))


# -------------------------------------------------------------- reconstruction


def test_perfect_reconstruction():
    x = torch.rand(3, C, 40, dtype=torch.float64)
    result = reconstruction_metrics(x, x.clone())
    assert result["l1"] == 0.0 and result["rmse"] == 0.0
    assert result["variance_explained"] == pytest.approx(1.0)
    assert result["correlation_per_channel"] == pytest.approx([1.0] * C)
    assert result["correlation_mean"] == pytest.approx(1.0)


def test_offset_reconstruction_known_numbers():
    x = torch.rand(2, C, 50, dtype=torch.float64)
    result = reconstruction_metrics(x, x + 0.1)
    assert result["l1"] == pytest.approx(0.1)
    assert result["rmse"] == pytest.approx(0.1)
    sst = ((x - x.mean(dim=(0, 2), keepdim=True)) ** 2).sum().item()
    assert result["variance_explained"] == pytest.approx(1.0 - 0.01 * x.numel() / sst)
    assert result["correlation_mean"] == pytest.approx(1.0)  # an offset does not change r


def test_constant_channel_gives_nan_correlation_not_error():
    x = torch.rand(C, 40, dtype=torch.float64)
    x_hat = x.clone()
    x_hat[3] = 0.5  # constant reconstruction: r undefined
    result = reconstruction_metrics(x, x_hat)
    assert math.isnan(result["correlation_per_channel"][3])
    assert result["correlation_mean"] == pytest.approx(1.0)  # NaN left out of the mean
    assert math.isfinite(result["variance_explained"])


def test_padding_never_changes_reconstruction_metrics():
    rng = np.random.default_rng(0)
    lengths = [30, 17, 44]
    xs = [rng.random((C, n)) for n in lengths]
    hats = [x + 0.05 * rng.standard_normal(x.shape) for x in xs]
    frames = max(lengths)
    x = np.full((3, C, frames), np.nan)
    x_hat = np.full((3, C, frames), 1e6)
    mask = np.zeros((3, frames), dtype=bool)
    for i, n in enumerate(lengths):
        x[i, :, :n], x_hat[i, :, :n], mask[i, :n] = xs[i], hats[i], True
    padded = reconstruction_metrics(torch.tensor(x), torch.tensor(x_hat), torch.tensor(mask))
    pooled = reconstruction_metrics(np.concatenate(xs, axis=1), np.concatenate(hats, axis=1))
    for key in ("l1", "rmse", "variance_explained", "correlation_mean"):
        assert padded[key] == pytest.approx(pooled[key], rel=1e-12)
    assert padded["correlation_per_channel"] == pytest.approx(pooled["correlation_per_channel"], rel=1e-12)
    assert padded["num_frames"] == sum(lengths)


# -------------------------------------------------------------------- sparsity


def test_hoyer_known_values():
    assert hoyer(torch.tensor([0.0, 0.0, 3.0, 0.0])).item() == pytest.approx(1.0)
    assert hoyer(torch.tensor([2.0, 2.0, 2.0, 2.0])).item() == pytest.approx(0.0, abs=1e-12)
    assert hoyer(torch.tensor([1.0, 1.0, 0.0, 0.0])).item() == pytest.approx(2.0 - math.sqrt(2.0))
    zeros = hoyer(torch.zeros(5, 7), dim=1)
    assert zeros.shape == (5,) and torch.all(zeros == 0.0)  # silent is not sparse, and no NaN
    along = hoyer(np.eye(4), dim=0)
    np.testing.assert_allclose(along.numpy(), 1.0)


def test_score_sparsity_known_values_and_padding():
    scores = np.zeros((4, 10))
    scores[0, :5] = 1.0  # frames 0-4: one-hot across gestures; frames 5-9: all silent
    scores[1, 2] = 1e-6  # a gesture used almost nothing
    result = score_sparsity(scores)
    assert result["hoyer_across_gestures"] == pytest.approx(0.5, abs=1e-5)
    # gesture 0: 5 equal values of 10 frames -> (sqrt10 - sqrt5)/(sqrt10 - 1); gesture 1 (one
    # stray spike, not in use) does not count.
    expected_0 = (math.sqrt(10) - math.sqrt(5)) / (math.sqrt(10) - 1)
    assert result["hoyer_across_time"] == pytest.approx(expected_0)
    assert result["num_gestures_in_use"] == 1 and result["gestures_in_use"] == 0.25
    # With kernels, gesture 1's huge kernel makes its contribution count, and its one-hot trace.
    kernels = np.ones((4, C, 3))
    kernels[1] *= 1e4
    weighted = score_sparsity(scores, kernels=kernels)
    assert weighted["num_gestures_in_use"] == 2
    assert weighted["hoyer_across_time"] == pytest.approx((expected_0 + 1.0) / 2)
    assert score_sparsity(np.zeros((3, 5)))["hoyer_across_time"] == 0.0

    batch = np.full((2, 4, 15), 7.0)  # garbage in the padding
    batch[0, :, :10] = scores
    batch[1, :, :6] = scores[:, :6]
    mask = np.zeros((2, 15))
    mask[0, :10] = 1
    mask[1, :6] = 1
    padded = score_sparsity(batch, mask=mask)
    pooled = score_sparsity(np.concatenate([scores, scores[:, :6]], axis=1))
    for key in ("hoyer_across_gestures", "hoyer_across_time", "gestures_in_use"):
        assert padded[key] == pytest.approx(pooled[key], rel=1e-12)


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


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_metrics_on_gpu_match_cpu():
    kernels = bump_kernels(3, seed=16)
    scores = torch.tensor(spike_scores(3, 500, seed=17)).reshape(1, 3, 500).repeat(2, 1, 1)
    mask = torch.ones(2, 500, dtype=torch.bool)
    mask[1, 300:] = False
    x = convolve_scores(scores, kernels) + 0.01 * torch.rand(2, C, 500, dtype=torch.float64)
    for name, run in {
        "reconstruction": lambda dev: reconstruction_metrics(
            x.to(dev), convolve_scores(scores.to(dev), kernels), mask.to(dev)),
        "sparsity": lambda dev: score_sparsity(scores.to(dev), mask.to(dev), kernels),
        "seqnmf": lambda dev: seqnmf_similarity(kernels, scores.to(dev), kernels[::-1].copy(),
                                                scores.flip(1).to(dev), mask.to(dev), chunk_frames=64),
    }.items():
        on_cpu, on_gpu = run("cpu"), run("cuda")
        for key, value in on_cpu.items():
            if isinstance(value, float):
                assert on_gpu[key] == pytest.approx(value, rel=1e-9, abs=1e-12), (name, key)
    out = convolve_scores(scores.cuda(), kernels)
    assert out.is_cuda
    torch.testing.assert_close(out.cpu(), convolve_scores(scores, kernels))
