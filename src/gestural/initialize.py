"""Starting points for the gesture kernels: random, k-means of data windows, or a trained model."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from scipy.cluster.vq import kmeans2

from .model import GesturalAutoEncoder

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


def _load_problem(error: Exception) -> str:
    """One line for a failed ``torch.load(weights_only=True)``; torch's own message is a
    page of advice that ends by suggesting ``weights_only=False``, which we never want."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    blocked = next((line for line in lines if "GLOBAL" in line), None)
    if blocked is not None:
        return (f"refused: it holds Python objects, not only tensors and plain data ({blocked}); "
                "loading it could run code from the file")
    detail = next((line for line in reversed(lines) if "Unsupported" in line), lines[0] if lines else "")
    detail = detail.split(". ")[0][:200] if detail else type(error).__name__
    return f"not a readable model file, or truncated ({type(error).__name__}: {detail})"


def load_model_file(path: str | Path, map_location="cpu") -> dict:
    """Read a ``model.pt`` written by the train stage, with a clear error if it is not one.

    ``weights_only=True``: the file may come from anyone (``train.init: path/to/model.pt``),
    and a full unpickle would run whatever code it holds. The train stage writes only
    tensors, dicts, lists and numbers, which this loader accepts.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: model file not found")
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as error:  # torch raises many types for a corrupt or unsafe file
        raise InitError(f"{path}: {_load_problem(error)}") from None
    if not isinstance(payload, dict) or "state_dict" not in payload or "model_config" not in payload:
        raise InitError(f"{path}: not a gestural model file (no state_dict / model_config)")
    return payload


def load_pretrained_(model: GesturalAutoEncoder, path: str | Path) -> None:
    """Copy a trained model's weights into ``model``; refuse a model of another shape."""
    payload = load_model_file(path)
    theirs = payload["model_config"]
    ours = model.config
    for key in ("num_gestures", "win_size", "num_channels", "hidden", "model"):
        if theirs.get(key) != getattr(ours, key):
            raise InitError(
                f"init: {path} was trained with {key}={theirs.get(key)!r} but params.yaml asks for "
                f"{key}={getattr(ours, key)!r}; the model shapes must match to continue from it"
            )
    model.load_state_dict(payload["state_dict"])
