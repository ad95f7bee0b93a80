"""``models/gestures.npy``: what each learned gesture does in the data, written by the train stage.

A float32 array (K, 12, L): gesture k's kernel in normalized channel units, convolved with
its response when it has one (L = win_size + response_frames - 1, else win_size). It is the
model's inventory without the model: the plot stage draws and tabulates it, ``gestural
compare`` reads it from each experiment's DVC cache. This module is its one writer and
reader; it needs numpy only, so that comparing experiments does not import torch.
"""

from __future__ import annotations

import os
from typing import BinaryIO

import numpy as np

from gestural.core.files import save_npy

__all__ = ["GESTURES_FILE", "GesturesFileError", "write_gestures", "read_gestures"]

GESTURES_FILE = "gestures.npy"


class GesturesFileError(ValueError):
    """A gestures file is missing or is not a (K, C, L) array of finite numbers."""


def write_gestures(path: str | os.PathLike, kernels: np.ndarray) -> None:
    """Write ``kernels`` (K, C, L) as float32, atomically."""
    kernels = np.asarray(kernels)
    if kernels.ndim != 3:
        raise ValueError(f"kernels: expected a (K, C, L) array, got shape {kernels.shape}")
    save_npy(path, kernels.astype(np.float32))


def read_gestures(source: str | os.PathLike | BinaryIO, name: str | None = None) -> np.ndarray:
    """The (K, C, L) kernels of a gestures file (a path, or an open binary file named ``name``).

    Raises GesturesFileError, one line naming the file: missing, not a .npy array, or not a
    (K, C, L) array of finite numbers.
    """
    name = name or str(source)
    try:
        array = np.load(source, allow_pickle=False)
    except FileNotFoundError:
        raise GesturesFileError(f"{name}: no such file") from None
    except (OSError, ValueError, EOFError) as error:
        raise GesturesFileError(f"{name}: not a readable .npy array ({error})") from None
    if not isinstance(array, np.ndarray) or array.ndim != 3 or not np.issubdtype(array.dtype, np.floating):
        shape = getattr(array, "shape", None)
        raise GesturesFileError(f"{name}: expected a (K, C, L) float array, got {shape} "
                                f"{getattr(array, 'dtype', type(array).__name__)}")
    if not np.all(np.isfinite(array)):
        raise GesturesFileError(f"{name}: holds NaN or infinite values")
    return array
