"""Starting points for the gesture kernels: random, k-means of data windows, or a trained model."""

from __future__ import annotations

import numpy as np
from scipy.cluster.vq import kmeans2

# Enough windows for stable centres, few enough that k-means takes about a second.
_MAX_WINDOWS = 20000


class InitError(ValueError):
    """No starting point: an unreadable, unsafe or mismatched model file, or too little data for k-means."""


def resting_posture(utterances: list[np.ndarray], percentile: float = 5.0) -> np.ndarray:
    """Per-channel low percentile of the training frames: where gestures start from."""
    return np.percentile(np.concatenate(utterances, axis=1), percentile, axis=1).astype(np.float32)


def kmeans_kernels(utterances: list[np.ndarray], num_gestures: int, win_size: int, seed: int,
                   signed: bool = False) -> np.ndarray:
    """k-means centres of win_size-frame windows above the resting posture, (K, C, L), >= 0.

    Windows are taken every win_size // 2 frames; the lower half by energy (rest, which
    carries no gesture) is left out so that the centres describe movements.
    """
    baseline = resting_posture(utterances, 50.0 if signed else 5.0)
    step = max(win_size // 2, 1)
    windows = []
    for x in utterances:
        frames = x.shape[1]
        if frames < win_size:
            continue
        starts = np.arange(0, frames - win_size + 1, step)
        index = starts[:, None] + np.arange(win_size)[None, :]
        deviation = x[:, index] - baseline[:, None, None]
        windows.append((deviation if signed else deviation.clip(min=0.0)).transpose(1, 0, 2))
    if not windows:
        raise InitError(f"init: kmeans needs training utterances of at least win_size={win_size} frames")
    windows = np.concatenate(windows).reshape(-1, x.shape[0] * win_size)
    energy = np.linalg.norm(windows, axis=1)
    windows = windows[energy > np.median(energy)]
    rng = np.random.default_rng(seed)
    if len(windows) > _MAX_WINDOWS:
        windows = windows[rng.choice(len(windows), _MAX_WINDOWS, replace=False)]
    if len(windows) < num_gestures:
        raise InitError(
            f"init: kmeans needs at least num_gestures={num_gestures} windows, the training data has {len(windows)}"
        )
    centres, _ = kmeans2(windows.astype(np.float64), num_gestures, minit="++", seed=rng)
    if not signed:
        # A small floor keeps every entry trainable (an exact zero stays in the ReLU's dead zone).
        centres = centres.clip(min=0.0) + 1e-3
    return centres.reshape(num_gestures, x.shape[0], win_size).astype(np.float32)
