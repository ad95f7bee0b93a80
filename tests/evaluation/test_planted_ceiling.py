"""The planted-score ceiling: the model's decoder fitted to movement with the scores fixed to
the planted boxes (scripts/planted_score_ceiling.py)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from gestural.evaluation.planted_ceiling import PlantedBoxes, decoder_ceiling
from gestural.model.network import GestureDecoder, ModelConfig

CONFIG = ModelConfig(num_gestures=2, win_size=4, num_channels=12, hidden=8, model="ae", peak_window=0,
                     prior_mean=-1.0, prior_std=1.0, movement_noise=0.05, kernels="signed",
                     response_frames=10, release_response=False)


def box_corpus(count: int, seed: int, saturate: bool = False) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Movement made by a decoder from two gestures' boxes, each box at its own height (0.3-1.7);
    ``saturate``: every box at height 1, and the sensors' displacement from the baseline
    saturates (tanh), as at contact."""
    rng = np.random.default_rng(seed)
    torch.manual_seed(1)  # the same decoder for every corpus
    decoder = GestureDecoder(CONFIG)
    decoder.init_baseline_(torch.full((12,), 0.5))
    utterances, activations = [], []
    for _ in range(count):
        frames = int(rng.integers(150, 200))
        active, scores = np.zeros((2, frames), dtype=bool), np.zeros((2, frames), dtype=np.float32)
        for p in range(2):
            for onset in range(int(rng.integers(0, 20)), frames - 30, 60):
                active[p, onset:onset + 25] = True
                scores[p, onset:onset + 25] = 1.0 if saturate else rng.uniform(0.3, 1.7)
        with torch.no_grad():
            baseline = decoder.baseline[:, None]
            movement = decoder(torch.from_numpy(scores)[None])[0] - baseline
        utterances.append((baseline + (0.15 * torch.tanh(movement / 0.15) if saturate else movement)).numpy())
        activations.append(active)
    return utterances, activations


@pytest.mark.slow
def test_free_heights_explain_movement_made_from_boxes_and_unit_heights_explain_less():
    train, test = (PlantedBoxes.of(*box_corpus(6, seed)) for seed in (0, 1))
    free = decoder_ceiling(train, test, CONFIG, heights=True, steps=300, lr=0.05)
    unit = decoder_ceiling(train, test, CONFIG, heights=False, steps=300, lr=0.05)
    assert free["test_variance_explained"] > 0.97
    assert unit["test_variance_explained"] < free["test_variance_explained"] - 0.05
    assert len(free["response_hz"]) == 2


@pytest.mark.slow
def test_a_sensor_map_lets_unit_boxes_explain_movement_that_saturates():
    train, test = (PlantedBoxes.of(*box_corpus(6, seed, saturate=True)) for seed in (0, 1))
    additive = decoder_ceiling(train, test, CONFIG, heights=False, steps=600, lr=0.02)
    mapped = decoder_ceiling(train, test, CONFIG, heights=False, sensor_map=16, steps=600, lr=0.02)
    assert mapped["test_variance_explained"] > 0.95
    assert additive["test_variance_explained"] < mapped["test_variance_explained"] - 0.05
    assert len(mapped["response_hz"]) == 2


def test_boxes_number_each_planted_interval_once():
    active = np.zeros((2, 10), dtype=bool)
    active[0, 1:3] = active[0, 5:7] = active[1, 2:9] = True
    boxes = PlantedBoxes.of([np.zeros((12, 10))], [active])
    assert boxes.intervals == 3
    heights = torch.log(torch.tensor([1.0, 2.0, 3.0]))
    assert boxes.scores(heights)[0, 0, 5].item() == pytest.approx(2.0)
    assert boxes.scores(None)[0, 1].sum().item() == 7


def test_boxes_refuse_activations_that_do_not_fit_their_utterance():
    with pytest.raises(ValueError, match="activations of shape"):
        PlantedBoxes.of([np.zeros((12, 10))], [np.zeros((2, 9), dtype=bool)])
