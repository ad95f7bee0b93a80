"""Known-answer tests of gestural.core.metrics: convolution, reconstruction, sparsity."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from conftest import bump_kernels, spike_scores

from gestural.core.metrics import convolve_scores, factor_reconstructions, hoyer, reconstruction_metrics, score_sparsity
from gestural.evaluation.recovery import seqnmf_similarity

C, L = 12, 10  # bump_kernels: 12 channels, 10 frames


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
