"""The gestural score as intervals: when each gesture is on. The one segmentation that the
TextGrid tiers and events.csv hold and that the evaluate stage scores.

A gesture is active where its score is at least ``relative_height`` times its *scale*: the
largest score it reached on the training utterances (``model.pt``'s ``score_scale``, written by
the train stage; a model file without one falls back to the row's largest score in the
utterance at hand). A fixed, per-gesture reference means that a gesture barely used in an
utterance gets no interval there, instead of a tier cut at a tenth of its own faint maximum.
Within each run of activity the gesture is on where its score is at least ``peak_share`` of
that run's peak: a reduced token (an unstressed vowel, a weak event) is cut at its own
height, as wide as a full one, instead of at the edges of a fixed level it barely passes.
Each frame that is on covers ``span`` frames: 1 where the score is the activation itself
(``response_frames`` > 0: the score drives the gesture's response, as a task-dynamics
activation does); where a score is an impulse that plays the kernel (no response, classical
NMF, or a learned response that has shrunk to an impulse, as on the events corpus's 50 ms
bumps), the frames of the kernel that move the sensors (:func:`kernel_support`: a learned
100 ms kernel holds a 50 ms movement somewhere inside it, and the gesture is that movement,
not the window). Runs that touch merge; runs shorter than ``min_frames`` are dropped (30 ms:
no gesture is that short), or than the kernel's movement where a score plays one that is
shorter still. An event's ``amplitude`` is the largest score that plays it.

The defaults were chosen on the default articulatory corpus's held-out utterances (seed 0;
seeds 1 and 2 the check) among levels 0.2-0.55, peak shares 0.5-0.8 and minima of 4-12
frames: they leave about 1.9 gestures on per frame against 1.35 planted, where a tenth of each
utterance's maximum with a kernel-length extension gave 13.5.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from scipy import ndimage

from gestural.evaluation.activation import gesture_activity
from gestural.model.network import GesturalAutoEncoder

__all__ = ["DEFAULT_RELATIVE_HEIGHT", "DEFAULT_PEAK_SHARE", "DEFAULT_MIN_FRAMES", "GestureEvent", "Segmentation",
           "kernel_support"]

DEFAULT_RELATIVE_HEIGHT = 0.4
DEFAULT_PEAK_SHARE = 0.8
DEFAULT_MIN_FRAMES = 6
# A response whose mean delay is at most this many frames (20 ms) is an impulse: the score plays the kernel.
# Learned responses to the events corpus's bumps settle at 0.4-1.7 frames (the VAE's at 1.8-3.2), those of
# articulatory activations at 4.5-11.
IMPULSE_DELAY = 4.0
# Frames of a kernel that move the sensors less than this share of its largest frame's movement
# are no part of the gesture an impulse plays (a learned kernel is longer than the movement in it).
KERNEL_SUPPORT = 0.2


def kernel_support(kernels) -> tuple[np.ndarray, np.ndarray]:
    """Where each kernel moves the sensors: (first frame, frame count) per gesture, the frames
    whose movement (norm over channels) reaches :data:`KERNEL_SUPPORT` of the kernel's largest.

    ``kernels``: (K, C, L). A kernel that never moves covers all its frames.
    """
    movement = np.linalg.norm(np.asarray(kernels, dtype=np.float64), axis=1)  # (K, L)
    first = np.zeros(len(movement), dtype=np.int64)
    count = np.full(len(movement), movement.shape[1], dtype=np.int64)
    for k, row in enumerate(movement):
        moving = np.flatnonzero(row >= KERNEL_SUPPORT * row.max()) if row.max() > 0 else []
        if len(moving):
            first[k], count[k] = moving[0], moving[-1] - moving[0] + 1
    return first, count


@dataclass(frozen=True)
class GestureEvent:
    """One occurrence of a gesture: frames ``onset`` .. ``offset - 1`` of its utterance."""

    gesture: int
    onset: int
    offset: int  # exclusive
    amplitude: float


@dataclass(frozen=True)
class Segmentation:
    """How scores become intervals (see the module docstring).

    Attributes
    ----------
    span : int or ndarray (K,) of int
        Frames each frame that is on covers, for every gesture or per gesture (1: the score is
        the activation).
    lead : int or ndarray (K,) of int
        Frames from a frame that is on to the first it covers (an impulse covers where its
        kernel moves: :func:`kernel_support`).
    scale : ndarray (K,) or None
        Each gesture's reference score; None: each row's largest in the utterance.
    relative_height : float in (0, 1]
    peak_share : float in [0, 1]
        0: on wherever active.
    min_frames : int >= 1
    """

    span: int | np.ndarray
    scale: np.ndarray | None = None
    lead: int | np.ndarray = 0
    relative_height: float = DEFAULT_RELATIVE_HEIGHT
    peak_share: float = DEFAULT_PEAK_SHARE
    min_frames: int = DEFAULT_MIN_FRAMES

    def __post_init__(self):
        if np.any(np.asarray(self.span) < 1):
            raise ValueError(f"span: must be >= 1 (got {self.span})")
        if np.any(np.asarray(self.lead) < 0):
            raise ValueError(f"lead: must be >= 0 (got {self.lead})")
        if not 0 < self.relative_height <= 1:
            raise ValueError(f"relative_height: must be in (0, 1] (got {self.relative_height})")
        if not 0 <= self.peak_share <= 1:
            raise ValueError(f"peak_share: must be in [0, 1] (got {self.peak_share})")
        if self.min_frames < 1:
            raise ValueError(f"min_frames: must be >= 1 (got {self.min_frames})")

    @classmethod
    def of_model(cls, model: GesturalAutoEncoder, scale=None, **settings) -> Segmentation:
        """The segmentation of a network's scores: a gesture whose score drives a response
        (mean delay over :data:`IMPULSE_DELAY` frames) is cut frame by frame; one without a
        response, or whose learned response is an impulse, covers where its kernel moves."""
        first, count = kernel_support(model.decoder.effective_kernels.detach().cpu().numpy())
        responses = model.decoder.responses
        if responses is not None:
            steps = torch.arange(responses.shape[1], dtype=responses.dtype, device=responses.device)
            delay = (responses.detach() * steps).sum(dim=1).cpu().numpy()
            activation = delay > IMPULSE_DELAY
            first, count = np.where(activation, 0, first), np.where(activation, 1, count)
        return cls(count, None if scale is None else np.asarray(scale, dtype=np.float64), lead=first, **settings)

    @classmethod
    def of_kernels(cls, kernels, scale=None, **settings) -> Segmentation:
        """Scores that play kernels (K, C, L) as impulses, as classical NMF's do."""
        first, count = kernel_support(kernels)
        return cls(count, None if scale is None else np.asarray(scale, dtype=np.float64), lead=first, **settings)

    def _on(self, row: np.ndarray, reference: float) -> np.ndarray:
        """Frames at least ``peak_share`` of the peak of their run of activity."""
        runs, count = ndimage.label(row >= self.relative_height * reference)
        if not count:
            return runs > 0
        peaks = ndimage.maximum(row, runs, index=np.arange(1, count + 1))
        level = np.concatenate([[np.inf], self.peak_share * np.asarray(peaks)])[runs]
        return (runs > 0) & (row >= level)

    def events(self, scores, gestures: Sequence[int] | None = None) -> list[GestureEvent]:
        """The events of each gesture in a (K, T) score matrix, sorted by onset then gesture.

        ``gestures``: the rows to look at (default every row); offsets are clipped to T.
        """
        scores = np.asarray(scores, dtype=np.float64)
        if scores.ndim != 2:
            raise ValueError(f"scores: expected (K, T), got shape {scores.shape}")
        if self.scale is not None and len(self.scale) != scores.shape[0]:
            raise ValueError(f"scores have {scores.shape[0]} gestures but the scale has {len(self.scale)}")
        rows = range(scores.shape[0]) if gestures is None else [int(g) for g in gestures]
        events = []
        for k in rows:
            row = scores[k]
            if self.scale is not None:
                reference = float(self.scale[k])
            else:
                reference = float(row.max()) if row.size else 0.0
            if not reference > 0:
                continue
            on = self._on(row, reference).astype(np.float64)
            span = int(np.broadcast_to(self.span, scores.shape[:1])[k])
            lead = int(np.broadcast_to(self.lead, scores.shape[:1])[k])
            covered = np.zeros(row.size, dtype=bool)
            covered[lead:] = (gesture_activity(on[None], span)[0] > 0)[:max(0, row.size - lead)]
            shortest = min(self.min_frames, span) if span > 1 else self.min_frames  # a kernel shorter than 30 ms
            edges = np.diff(np.concatenate([[0], covered.astype(np.int8), [0]]))
            for onset, offset in zip(np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)):
                if offset - onset >= shortest:
                    # the scores that play these frames
                    driving = row[max(0, onset - lead - span + 1):offset - lead]
                    events.append(GestureEvent(int(k), int(onset), int(offset), float(driving.max())))
        events.sort(key=lambda e: (e.onset, e.gesture))
        return events
