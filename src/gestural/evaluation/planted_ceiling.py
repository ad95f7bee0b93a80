"""How much of the movement the planted gestural score itself explains through the model's decoder.

The exported score is judged against the planted boxes; this asks the converse. If the scores
*were* the planted boxes (one row per planted gesture, on exactly over its intervals), how much
of the held-out movement could the model's decoder explain (gesture kernels, their learned
responses and the baseline, fitted by gradient descent on the training utterances)? Two fits:

* ``unit``: every box at height 1 (the planted score as a TextGrid holds it);
* ``heights``: a free height per planted interval, fitted on the held-out utterances too with
  the decoder fixed: an oracle that knows the movement, the most a box score can give.

If the held-out variance explained of both stays below the trained model's, a model of this
decoder that fits as well must use scores that are not the planted boxes: fit and box-like
planted scores pull apart, whatever the encoder or the segmentation.

``sensor_map`` asks the same of a decoder the model does not have (yet): the decoder's movement
passed through a pointwise nonlinear map of the sensors (:class:`SensorMappedDecoder`), a
stand-in for an articulatory model, where tract variables reach the sensors through the jaw,
the tongue's shape and contact, none of which adds up linearly.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from gestural.core.metrics import reconstruction_metrics
from gestural.core.units import FRAME_RATE
from gestural.evaluation.score_match import mask_runs
from gestural.model.network import GestureDecoder, ModelConfig

logger = logging.getLogger(__name__)


@dataclass
class PlantedBoxes:
    """Utterances padded into one batch, with their planted score as boxes.

    Attributes
    ----------
    x : tensor (N, C, T)
    mask : tensor (N, T), 1 on real frames
    boxes : tensor (N, P, T), 1 where a planted gesture is active
    interval : tensor (N, P, T), long: which planted interval a frame of ``boxes`` belongs to
    intervals : int, how many there are
    """

    x: torch.Tensor
    mask: torch.Tensor
    boxes: torch.Tensor
    interval: torch.Tensor
    intervals: int

    @classmethod
    def of(cls, utterances: Sequence[np.ndarray], activations: Sequence[np.ndarray]) -> PlantedBoxes:
        """From (C, T_i) utterances and their (P, T_i) bool planted activations."""
        if len(utterances) != len(activations) or not utterances:
            raise ValueError(f"{len(utterances)} utterances but {len(activations)} activation masks")
        frames = max(u.shape[1] for u in utterances)
        count, channels, planted = len(utterances), utterances[0].shape[0], activations[0].shape[0]
        x, mask = torch.zeros(count, channels, frames), torch.zeros(count, frames)
        boxes, interval = torch.zeros(count, planted, frames), torch.zeros(count, planted, frames, dtype=torch.long)
        intervals = 0
        for i, (utterance, active) in enumerate(zip(utterances, activations)):
            length = utterance.shape[1]
            if active.shape != (planted, length):
                raise ValueError(f"utterance {i}: activations of shape {active.shape}, expected {(planted, length)}")
            x[i, :, :length] = torch.from_numpy(np.asarray(utterance, dtype=np.float32))
            mask[i, :length] = 1.0
            boxes[i, :, :length] = torch.from_numpy(active.astype(np.float32))
            for p in range(planted):
                for onset, offset in zip(*mask_runs(active[p])):
                    interval[i, p, onset:offset] = intervals
                    intervals += 1
        return cls(x, mask, boxes, interval, intervals)

    def scores(self, log_heights: torch.Tensor | None) -> torch.Tensor:
        """The boxes, each interval at its height (1 without heights)."""
        return self.boxes if log_heights is None else self.boxes * log_heights.exp()[self.interval]


class SensorMappedDecoder(nn.Module):
    """A :class:`GestureDecoder` whose movement m (displacement from the baseline) reaches the
    sensors as m + f(m), f a per-frame MLP over the channels (tanh, ``hidden`` units, two
    layers); f starts at zero, so the fit starts from the additive decoder."""

    def __init__(self, decoder: GestureDecoder, hidden: int):
        super().__init__()
        self.decoder = decoder
        channels = decoder.kernel_shape[1]
        self.sensor_map = nn.Sequential(nn.Conv1d(channels, hidden, 1), nn.Tanh(), nn.Conv1d(hidden, hidden, 1),
                                        nn.Tanh(), nn.Conv1d(hidden, channels, 1))
        nn.init.zeros_(self.sensor_map[-1].weight)
        nn.init.zeros_(self.sensor_map[-1].bias)

    def forward(self, scores: torch.Tensor) -> torch.Tensor:
        baseline = self.decoder.baseline[None, :, None]
        movement = self.decoder(scores) - baseline
        return baseline + movement + self.sensor_map(movement)


def _fit(decoder: nn.Module, data: PlantedBoxes, log_heights: torch.Tensor | None, train_decoder: bool,
         steps: int, lr: float) -> None:
    """Minimize the mean squared error over real frames (Adam, full batch)."""
    parameters = list(decoder.parameters()) if train_decoder else []
    if log_heights is not None:
        parameters.append(log_heights)
    optimizer = torch.optim.Adam(parameters, lr=lr)
    real = data.mask[:, None, :]
    for _ in range(steps):
        optimizer.zero_grad()
        error = (decoder(data.scores(log_heights)) - data.x) * real
        (error.square().sum() / real.sum()).backward()
        optimizer.step()


def decoder_ceiling(train: PlantedBoxes, test: PlantedBoxes, config: ModelConfig, *, heights: bool,
                    sensor_map: int = 0, steps: int = 1500, lr: float = 0.01, seed: int = 0) -> dict:
    """Fit the decoder of ``config`` (one gesture per planted row) to the planted boxes.

    ``sensor_map`` > 0: the decoder followed by a nonlinear sensor map of that many hidden units
    (:class:`SensorMappedDecoder`).

    Returns
    -------
    dict: ``train_variance_explained``, ``test_variance_explained`` and the learned
    ``response_hz`` per planted gesture (empty without responses).
    """
    planted = train.boxes.shape[1]
    torch.manual_seed(seed)
    gestures = GestureDecoder(dataclasses.replace(config, num_gestures=planted))
    decoder = SensorMappedDecoder(gestures, sensor_map) if sensor_map else gestures
    with torch.no_grad():  # start at the median posture, as training does
        gestures.init_baseline_(train.x.permute(1, 0, 2)[:, train.mask > 0].median(dim=1).values)
    train_heights = torch.zeros(train.intervals, requires_grad=True) if heights else None
    _fit(decoder, train, train_heights, True, steps, lr)
    test_heights = torch.zeros(test.intervals, requires_grad=True) if heights else None
    if heights:
        _fit(decoder, test, test_heights, False, steps // 3, 3 * lr)
    with torch.no_grad():
        fits = [reconstruction_metrics(d.x, decoder(d.scores(h)), d.mask)["variance_explained"]
                for d, h in ((train, train_heights), (test, test_heights))]
        hz = [] if gestures.log_rate is None else (gestures.log_rate.exp() * FRAME_RATE / (2 * math.pi)).tolist()
    logger.info("planted boxes (%s%s): held-out variance explained %.4f", "free heights" if heights else "unit",
                ", sensor map" if sensor_map else "", fits[1])
    return {"train_variance_explained": fits[0], "test_variance_explained": fits[1], "response_hz": hz}
