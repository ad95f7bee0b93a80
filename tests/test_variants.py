"""Each documented variant (model: ae | vae, sparse: true, loss: l1, train.release_response) learns at the
defaults of params.yaml, on a small articulatory corpus: scores alive, held-out variance explained above a
floor, and gesture activity that says more about the planted gestures than chance (at least 0.7;
the raw channels of such a corpus give about 0.77, the full-length default training 0.87).

The training is shortened (fewer steps, a narrower encoder) to keep the suite quick; every
other setting is the committed default.
"""

from __future__ import annotations

import numpy as np
import pytest
from conftest import min_max_normalized, project_params

from gestural.data.batches import UtteranceStore
from gestural.evaluation.held_out import evaluate_model
from gestural.model import losses
from gestural.synthetic.articulatory import GESTURE_NAMES, ArticulatoryConfig, generate
from gestural.training.config import TrainConfig
from gestural.training.trainer import Trainer

pytestmark = pytest.mark.slow

TOP_LEVEL = ("segment_len", "win_size", "num_gestures", "sparse", "batch_size", "model", "loss", "epochs", "seed",
             "device")


@pytest.fixture(scope="module")
def corpus():
    """(train, test, test activations): 2 speakers x 40 utterances of 1-3 s, min-max normalized."""
    recordings = generate(ArticulatoryConfig(), ["fsyn0", "msyn0"], 40, seed=1)
    utterances, _low, _high = min_max_normalized([r.positions for r in recordings])
    activations = []
    for r in recordings[-12:]:
        active = np.zeros((len(GESTURE_NAMES), len(r.positions)), dtype=bool)
        for gesture, start, stop in r.activations:
            active[gesture, start:stop] = True
        activations.append(active)
    return utterances[:-12], utterances[-12:], activations


def default_config(**overrides) -> TrainConfig:
    params = project_params()
    values = {key: params[key] for key in TOP_LEVEL}
    values.update(params["train"])
    values.update(device="cpu", epochs=12, steps_per_epoch=25, hidden=32, threads=2, figure_every=1000)
    values.update(overrides)
    return TrainConfig(**values)


_TRAINED: dict = {}


def train_and_evaluate(corpus, **variant):
    """(config, result, metrics) of a variant, trained once per test session."""
    key = tuple(sorted(variant.items()))
    if key not in _TRAINED:
        train, test, activations = corpus
        config = default_config(**variant)
        result = Trainer(config, train, test, progress=False).fit()
        metrics, _, _ = evaluate_model(result.model, UtteranceStore(test, "cpu"), activations=activations)
        _TRAINED[key] = config, result, metrics
    return _TRAINED[key]


@pytest.mark.parametrize("variant", [dict(), dict(model="vae"), dict(sparse=True), dict(loss="l1"),
                                     dict(release_response=True)],
                         ids=["ae", "vae", "sparse", "l1", "release_response"])
def test_each_variant_learns_at_the_defaults(corpus, variant):
    config, result, metrics = train_and_evaluate(corpus, **variant)
    # A collapse (the failure seen with the earlier sparse settings) explains about 0.3.
    assert metrics["variance_explained"] >= 0.75, metrics["variance_explained"]
    # Scores alive: several gestures in use, not just one or two always-on ones.
    assert metrics["num_gestures_in_use"] >= 0.4 * config.num_gestures
    assert result.history[-1].active_scores > 0.01
    assert metrics["activation_auc"] >= 0.7, metrics["activation_auc"]
    if config.model == "vae":
        assert np.isfinite(metrics["elbo_per_frame"])


def test_sparse_scores_are_sparser_than_the_default_ones_and_keep_their_gestures(corpus):
    _, _, default = train_and_evaluate(corpus)
    _, _, sparse = train_and_evaluate(corpus, sparse=True)
    # Same seed and crops: without the penalty the two would be equal. Measured on this short
    # training 0.25 against 0.21 (the full default training on the default corpus: 0.45-0.49
    # against 0.33-0.39).
    assert sparse["hoyer_across_time"] >= default["hoyer_across_time"] + 0.03, (
        sparse["hoyer_across_time"], default["hoyer_across_time"])
    assert sparse["num_gestures_in_use"] >= default["num_gestures_in_use"] - 2
    assert sparse["variance_explained"] >= default["variance_explained"] - 0.05


def test_muon_learns_from_a_large_batch_in_few_steps_where_adamw_does_not(corpus):
    # Batch 128 for 36 steps: the crops of the default training (batch 16, 300 steps) in an
    # eighth of the steps (train.optimizer). Measured: Muon 0.79 / 0.83, AdamW 0.36 / 0.69.
    large = dict(batch_size=128, epochs=12, steps_per_epoch=3)
    _, _, adamw = train_and_evaluate(corpus, optimizer="adamw", **large)
    _, _, muon = train_and_evaluate(corpus, optimizer="muon", **large)
    assert muon["variance_explained"] >= 0.7, muon["variance_explained"]
    assert muon["activation_auc"] >= 0.75, muon["activation_auc"]
    assert muon["variance_explained"] >= adamw["variance_explained"] + 0.2, (muon, adamw)


def test_the_sensor_penalty_keeps_each_gesture_to_fewer_sensors_at_the_same_fit(corpus):
    with_penalty, trained, fitted = train_and_evaluate(corpus)
    assert with_penalty.kernel_sensor_weight > 0  # the default
    _, free, free_fit = train_and_evaluate(corpus, kernel_sensor_weight=0.0)

    def spread(result):  # mean over gestures of the per-sensor norms' sum: 1 = one sensor, 2.45 = all alike
        return losses.kernel_sensor_norm(result.model.decoder.gesture_kernels.detach()).item()

    # Measured on this short training: 2.01 against 2.20 (the full default training: 1.40 against 2.19).
    assert spread(trained) <= spread(free) - 0.1, (spread(trained), spread(free))
    assert fitted["variance_explained"] >= free_fit["variance_explained"] - 0.02
