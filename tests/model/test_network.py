"""The convolutive non-negative auto-encoder: orientation, non-negativity, masking, VAE."""

from __future__ import annotations

import math

import pytest
import torch
from conftest import model_config

from gestural.model import losses
from gestural.model.network import GesturalAutoEncoder


def tiny_model(**overrides) -> GesturalAutoEncoder:
    settings = dict(num_gestures=3, win_size=4, hidden=8, peak_window=0, kernels="nonnegative", response_frames=0)
    settings.update(overrides)
    torch.manual_seed(0)
    return GesturalAutoEncoder(model_config(**settings))


def test_an_impulse_reproduces_its_kernel_forward_in_time():
    model = tiny_model()
    decoder = model.decoder
    with torch.no_grad():
        decoder.kernels_raw.uniform_(0.0, 1.0)
        decoder.baseline_raw.zero_()
    kernels = decoder.gesture_kernels
    scores = torch.zeros(1, 3, 20)
    scores[0, 1, 7] = 2.0
    reconstruction = decoder(scores)[0]
    # Frames 7..10 hold 2 * W[1] in natural order; nothing before the impulse.
    torch.testing.assert_close(reconstruction[:, 7:11], 2.0 * kernels[1])
    assert torch.all(reconstruction[:, :7] == 0) and torch.all(reconstruction[:, 11:] == 0)
    # Not time-reversed: the kernel's first frame comes first.
    assert not torch.allclose(reconstruction[:, 7:11], 2.0 * kernels[1].flip(-1))


def test_kernels_have_unit_norm_and_baseline_is_added():
    model = tiny_model()
    with torch.no_grad():
        model.decoder.baseline_raw.copy_(torch.arange(12, dtype=torch.float32) / 10)
    norms = model.decoder.gesture_kernels.flatten(1).norm(dim=1)
    torch.testing.assert_close(norms, torch.ones(3))
    out = model.decoder(torch.zeros(2, 3, 5))
    torch.testing.assert_close(out, (torch.arange(12.0) / 10)[None, :, None].expand(2, 12, 5))


@pytest.mark.slow
def test_weights_scores_and_baseline_stay_non_negative_under_training():
    model = tiny_model(peak_window=2)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.5)  # large steps try to push below zero
    generator = torch.Generator().manual_seed(1)
    x = torch.rand(4, 12, 50, generator=generator) - 0.5  # targets below zero pull W and b down
    mask = torch.ones(4, 50, dtype=torch.bool)
    for _ in range(20):
        out = model(x, mask)
        loss = losses.reconstruction_loss(x, out.reconstruction, mask)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        model.decoder.project_()
        assert torch.all(out.scores >= 0)
    assert torch.all(model.decoder.kernels_raw >= 0) and torch.all(model.decoder.baseline_raw >= 0)
    assert torch.all(model.decoder.gesture_kernels >= 0) and torch.all(model.decoder.baseline >= 0)


def test_padding_does_not_change_the_loss_or_the_real_frames_scores():
    model = tiny_model(peak_window=2)
    model.eval()
    generator = torch.Generator().manual_seed(2)
    real = torch.rand(1, 12, 40, generator=generator)
    mask = torch.zeros(1, 60, dtype=torch.bool)
    mask[:, :40] = True
    padded_a = torch.cat([real, torch.zeros(1, 12, 20)], dim=2)
    padded_b = torch.cat([real, torch.full((1, 12, 20), 7.0)], dim=2)
    out_a, out_b = model(padded_a, mask), model(padded_b, mask)
    loss_a = losses.reconstruction_loss(padded_a, out_a.reconstruction, mask)
    loss_b = losses.reconstruction_loss(padded_b, out_b.reconstruction, mask)
    torch.testing.assert_close(loss_a, loss_b)
    torch.testing.assert_close(out_a.scores, out_b.scores)
    assert torch.all(out_a.scores[..., 40:] == 0)
    # Without the mask the padding would count: the loss differs.
    full = torch.ones_like(mask)
    assert not torch.isclose(losses.reconstruction_loss(padded_b, out_b.reconstruction, full), loss_b)


def test_l1_and_mse_losses_on_known_errors():
    x = torch.zeros(1, 12, 4)
    x_hat = torch.full((1, 12, 4), 0.5)
    mask = torch.tensor([[True, True, False, False]])
    assert losses.reconstruction_loss(x, x_hat, mask, "l1").item() == pytest.approx(0.5)
    assert losses.reconstruction_loss(x, x_hat, mask, "mse").item() == pytest.approx(0.25)


def test_hoyer_penalty_does_not_call_silent_gestures_sparse():
    mask = torch.ones(1, 10, dtype=torch.bool)
    silent = torch.zeros(1, 4, 10)
    across_gestures, across_time, active = losses.score_hoyer(silent, mask)
    assert across_gestures.item() == 0.0 and not active.any()
    # A silent gesture is left out of the time penalty: switching gestures off is no way out.
    assert losses.hoyer_shortfall(across_time, 0.9, active).item() == 0.0
    spike = torch.zeros(1, 4, 10)
    spike[0, 2, 5] = 1.0
    across_gestures, across_time, active = losses.score_hoyer(spike, mask)
    # One active frame, perfectly sparse across gestures; the 9 silent frames count 0.
    assert across_gestures.item() == pytest.approx(0.1)
    assert active.tolist() == [False, False, True, False] and across_time[2].item() == pytest.approx(1.0)
    flat = torch.ones(1, 4, 10)
    _, across_time, active = losses.score_hoyer(flat, mask)
    assert losses.hoyer_shortfall(across_time, 0.5, active).item() == pytest.approx(0.25)
    assert losses.hoyer_shortfall(torch.tensor([0.9]), 0.5).item() == 0.0  # sparser than the target: free
    scores = torch.rand(1, 4, 10, requires_grad=True)
    across_gestures, across_time, active = losses.score_hoyer(scores, mask)
    (losses.hoyer_shortfall(across_gestures, 0.9) + losses.hoyer_shortfall(across_time, 0.9, active)).backward()
    assert torch.isfinite(scores.grad).all() and scores.grad.abs().sum() > 0


def test_background_count_zeroes_weak_activity_far_from_strong_activity_and_leaves_the_edges():
    mask = torch.tensor([[True] * 40 + [False] * 5])
    scores = torch.zeros(1, 2, 45)
    scores[0, 0, 10:15] = 1.0       # an activation (peak 1: strong above 0.1)
    scores[0, 0, 16] = 0.05         # its falling edge, within reach 3: left alone
    scores[0, 0, 30] = 0.05         # background: counts 0.05 / 0.1
    scores[0, 0, 35] = 0.5          # strong, so not background, and it costs nothing
    scores[0, 0, 42] = 0.05         # padding: never counted
    scores[0, 1, 0] = 0.02          # gesture 1's own peak: strong for itself
    scores.requires_grad_(True)
    count = losses.background_score_count(scores, mask, threshold=0.1, reach=3)
    assert count.item() == pytest.approx(0.5 / 40)
    count.backward()
    grad = scores.grad[0]
    assert grad[0, 30].item() == pytest.approx(1 / (0.1 * 40))  # pushed towards zero
    assert grad[0, 16] == 0 and grad[0, 12] == 0 and grad[0, 35] == 0 and grad[0, 42] == 0 and grad[1, 0] == 0
    assert grad[0, 25].item() > 0  # a zero background frame stays at zero (the ReLU keeps it there)
    silent = torch.zeros(1, 2, 45, requires_grad=True)
    losses.background_score_count(silent, mask, 0.1, 3).backward()
    assert silent.grad.abs().max() < 1e8  # finite: the peak has a floor


def test_kernel_sensor_norm_is_one_for_a_gesture_on_one_sensor_and_grows_as_it_spreads():
    one_sensor = torch.zeros(1, 12, 4)
    one_sensor[0, 2:4] = 1 / math.sqrt(8)  # the tongue blade's x and y over 4 lags: unit norm
    everywhere = torch.full((1, 12, 4), 1 / math.sqrt(48))  # unit norm spread over all six sensors
    assert losses.kernel_sensor_norm(one_sensor).item() == pytest.approx(1.0)
    assert losses.kernel_sensor_norm(everywhere).item() == pytest.approx(math.sqrt(6))
    both = torch.cat([one_sensor, everywhere]).requires_grad_(True)
    assert losses.kernel_sensor_norm(both).item() == pytest.approx((1 + math.sqrt(6)) / 2)
    losses.kernel_sensor_norm(both).backward()
    assert torch.isfinite(both.grad).all()  # sensors a kernel leaves alone (norm 0) have a finite gradient
    assert both.grad[0, 2:4].abs().sum() > 0 and both.grad[0, :2].abs().sum() == 0


def test_vae_kl_is_non_negative_and_inference_uses_the_posterior_mean():
    model = tiny_model(model="vae")
    generator = torch.Generator().manual_seed(3)
    x = torch.rand(2, 12, 30, generator=generator)
    mask = torch.ones(2, 30, dtype=torch.bool)
    with torch.no_grad():
        model.encoder.layers[-1].bias.normal_(0.0, 2.0)  # a spread of posteriors
    model.train()
    assert (model(x, mask).kl >= 0.0).all()
    # Sampling in training: two passes differ.
    assert not torch.equal(model(x, mask).scores, model(x, mask).scores)
    model.eval()
    with torch.no_grad():
        first, second = model(x, mask), model(x, mask)
        torch.testing.assert_close(first.scores, second.scores)
        out = model.encoder(x, mask[:, None, :].float())
        mu, std = out[:, :3], out[:, 3:].clamp(-9, 2).exp()
        normal = torch.distributions.Normal(0.0, 1.0)
        expected = mu * normal.cdf(mu / std) + std * normal.log_prob(mu / std).exp()
        torch.testing.assert_close(first.scores, expected)
        # The Monte-Carlo mean of training samples approaches it.
        samples = torch.stack([torch.relu(mu + std * torch.randn_like(mu)) for _ in range(4000)]).mean(0)
    assert torch.allclose(samples, expected, atol=0.1 * float(expected.abs().max()) + 1e-3)


def test_vae_kl_is_zero_when_posterior_equals_prior():
    model = tiny_model(model="vae", prior_mean=-1.0, prior_std=1.0)
    with torch.no_grad():
        last = model.encoder.layers[-1]
        last.weight.zero_()
        last.bias[:3] = -1.0
        last.bias[3:] = 0.0  # log std 0 -> std 1
    out = model(torch.rand(1, 12, 10), torch.ones(1, 10, dtype=torch.bool))
    assert out.kl.sum().item() == pytest.approx(0.0, abs=1e-6)


def test_vae_likelihood_lets_a_sensor_vary_more_the_further_it_moves_from_rest():
    model = tiny_model(model="vae", movement_noise=0.1)
    baseline = model.decoder.baseline.detach()[None, :, None]
    mask = torch.ones(1, 4, dtype=torch.bool)
    residual = torch.full((1, 12, 4), 0.05)
    at_rest = baseline.expand(1, 12, 4)
    moved = at_rest + 0.8
    with torch.no_grad():
        nll_at_rest = model.negative_log_likelihood(at_rest + residual, at_rest, mask)
        nll_moved = model.negative_log_likelihood(moved + residual, moved, mask)
    # At rest only the noise floor (0.01) counts: the plain Gaussian NLL, summed over 12 channels.
    plain = torch.distributions.Normal(0.0, 0.01).log_prob(torch.tensor(0.05)).neg() * 12
    assert nll_at_rest.item() == pytest.approx(plain.item(), rel=1e-5)
    # 0.8 from rest the standard deviation is sqrt(0.01^2 + (0.1 * 0.8)^2): the same residual costs far less.
    scale = math.sqrt(0.01 ** 2 + 0.08 ** 2)
    expected = torch.distributions.Normal(0.0, scale).log_prob(torch.tensor(0.05)).neg() * 12
    assert nll_moved.item() == pytest.approx(expected.item(), rel=1e-5)
    assert nll_moved.item() < nll_at_rest.item() - 100


def test_keep_peaks_leaves_one_spike_per_window():
    model = tiny_model(peak_window=2)
    scores = torch.tensor([[[0.0, 0.2, 0.5, 0.3, 0.0, 0.0, 0.0, 0.4, 0.1, 0.0]]])
    kept = model.keep_peaks(scores)
    torch.testing.assert_close(kept, torch.tensor([[[0.0, 0.0, 0.5, 0.0, 0.0, 0.0, 0.0, 0.4, 0.0, 0.0]]]))


@pytest.mark.parametrize("key, value, message", [
    ("num_gestures", 0, "num_gestures: must be >= 1"),
    ("win_size", 0, "win_size: must be >= 1"),
    ("model", "gan", "model: must be 'ae' or 'vae'"),
    ("movement_noise", 0.0, "train.movement_noise: must be > 0"),
])
def test_model_config_refuses_impossible_shapes(key, value, message):
    with pytest.raises(ValueError, match=message):
        model_config(**{key: value}).validate()


def test_encoder_sees_win_size_frames_on_both_sides():
    model = tiny_model(win_size=4)
    x = torch.zeros(1, 12, 41, requires_grad=True)
    mask = torch.ones(1, 41)
    pre_activation = model.encoder(x, mask[:, None, :])
    pre_activation[0, 0, 20].backward()
    touched = (x.grad[0].abs().sum(0) > 0).nonzero().flatten()
    assert touched.min().item() <= 20 - 4 and touched.max().item() >= 20 + 4
    assert math.isfinite(float(pre_activation.detach().sum()))


def test_weights_saved_as_three_way_tensors_by_earlier_versions_still_load():
    # Earlier model files hold the encoder's convolution weights (out, in, width) and the
    # kernels as decoder.kernels_raw (K, C, L); they are now stored as matrices (for Muon).
    model = tiny_model(response_frames=0)
    earlier = {}
    for key, value in model.state_dict().items():
        if key == "decoder.kernel_matrix":
            earlier["decoder.kernels_raw"] = value.view(model.decoder.kernel_shape).clone()
        elif key.startswith("encoder.layers.") and key.endswith(".weight"):
            layer = model.encoder.layers[int(key.split(".")[2])]
            earlier[key] = value.view(layer.out_channels, layer.in_channels, *layer.kernel_size).clone()
        else:
            earlier[key] = value.clone()
    assert earlier["encoder.layers.0.weight"].dim() == 3
    loaded = tiny_model(response_frames=0)
    with torch.no_grad():
        for parameter in loaded.parameters():
            parameter.zero_()
    loaded.load_state_dict(earlier)
    x, mask = torch.rand(2, 12, 30), torch.ones(2, 30)
    torch.testing.assert_close(loaded(x, mask).reconstruction, model(x, mask).reconstruction, rtol=0, atol=0)


def _step_response(log_rate: float, frames: int = 40) -> torch.Tensor:
    steps = torch.arange(frames, dtype=torch.float32) + 0.5
    shape = steps * torch.exp(-math.exp(log_rate) * steps)
    return (shape / shape.sum()).cumsum(0)


def test_a_falling_score_lets_its_movement_go_through_the_slower_release_response():
    model = tiny_model(num_gestures=1, response_frames=40, release_response=True)
    fast, slow = math.log(0.5), math.log(0.05)
    with torch.no_grad():
        model.decoder.log_rate.fill_(fast)
        model.decoder.log_release_rate.fill_(slow)
    scores = torch.zeros(1, 1, 200)
    scores[0, 0, 10:60] = 1.0  # a held activation, then off
    driven = model.decoder.drive(scores)[0, 0]
    rise, release = _step_response(fast), _step_response(slow)
    expected = torch.zeros(200)
    for t in range(10, 200):
        expected[t] = rise[min(t - 10, 39)] - (release[min(t - 60, 39)] if t >= 60 else 0.0)
    torch.testing.assert_close(driven, expected, atol=1e-5, rtol=0)
    # 50 ms after the fall the movement is mostly still there (the rise response alone: under 5 %), and it settles
    assert driven[60 + 10] > 0.75 > 0.05 > rise[-1] - rise[10] and driven[-1].abs() < 1e-5


def test_without_a_release_response_a_score_falls_as_it_rose():
    model = tiny_model(num_gestures=1, response_frames=40, release_response=False)
    scores = torch.zeros(1, 1, 120)
    scores[0, 0, 10:60] = 1.0
    driven = model.decoder.drive(scores)[0, 0]
    rise = _step_response(float(model.decoder.log_rate.detach()))
    torch.testing.assert_close(driven[60:100], rise[-1] - rise, atol=1e-5, rtol=0)
    responses = model.decoder.responses
    kernels = model.decoder.gesture_kernels
    direct = torch.nn.functional.conv_transpose1d(responses[None], kernels, groups=1)[0].reshape(1, 12, -1)
    torch.testing.assert_close(model.decoder.effective_kernels, direct)
