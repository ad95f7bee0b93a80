"""What every figure of :mod:`gestural` shares: colours, channel styles, input checks, saving.

Every figure function (:mod:`gestural.figures.kinematics`, :mod:`gestural.figures.scores`,
:mod:`gestural.figures.curves`) takes plain arrays (numpy or torch) and returns a
:class:`matplotlib.figure.Figure` with ``constrained`` layout, rendered by the Agg canvas
(:func:`new_figure`). Nothing touches pyplot's global state or calls ``show``: the figures
can be saved (:func:`save_figure`), logged to TensorBoard, or shown in a notebook by the
caller.

Conventions shared by all figures:

* one colour per articulator (:data:`ARTICULATOR_COLOURS`, the Okabe-Ito
  colour-blind-safe palette), the x coordinate drawn solid and the y coordinate
  dashed (:func:`channel_style`);
* time in seconds for utterances and in milliseconds inside a gesture kernel;
* values in normalized units ([0, 1] per channel) unless a figure says otherwise.
"""

from __future__ import annotations

import math
import os
import textwrap

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from gestural.core.files import atomic_path
from gestural.core.units import ARTICULATORS, CHANNELS

__all__ = [
    "NUM_CHANNELS",
    "NUM_SENSORS",
    "ARTICULATOR_COLOURS",
    "ARTICULATOR_CODES",
    "CHANNEL_LABELS",
    "CHANNEL_CODES",
    "channel_style",
    "articulator_handles",
    "as_array",
    "channel_array",
    "kernel_array",
    "new_figure",
    "panel_grid",
    "frame_times",
    "rank_gestures",
    "pick_gestures",
    "message_figure",
    "save_figure",
]

NUM_CHANNELS = len(CHANNELS)
NUM_SENSORS = len(ARTICULATORS)

# Okabe & Ito (2008): distinguishable under the common colour-vision deficiencies.
ARTICULATOR_COLOURS: tuple[str, ...] = (
    "#0072B2",  # tongue dorsum: blue
    "#009E73",  # tongue blade: bluish green
    "#D55E00",  # tongue tip: vermilion
    "#000000",  # jaw (lower incisor): black
    "#E69F00",  # upper lip: orange
    "#CC79A7",  # lower lip: reddish purple
)
ARTICULATOR_CODES: tuple[str, ...] = ("TD", "TB", "TT", "LI", "UL", "LL")
CHANNEL_LABELS: tuple[str, ...] = tuple(f"{ARTICULATORS[c // 2]} {'xy'[c % 2]}" for c in range(NUM_CHANNELS))
CHANNEL_CODES: tuple[str, ...] = tuple(f"{ARTICULATOR_CODES[c // 2]} {'xy'[c % 2]}" for c in range(NUM_CHANNELS))


# ----------------------------------------------------------------------------- helpers


def as_array(values, name: str, ndim: int | tuple[int, ...]) -> np.ndarray:
    """``values`` (numpy, torch, nested lists) as a float64 array with the expected rank."""
    if hasattr(values, "detach"):
        values = values.detach().cpu().numpy()
    array = np.asarray(values, dtype=np.float64)
    allowed = (ndim,) if isinstance(ndim, int) else ndim
    if array.ndim not in allowed:
        raise ValueError(f"{name}: expected a {' or '.join(f'{n}-D' for n in allowed)} array, got shape {array.shape}")
    return array


def channel_array(values, name: str) -> np.ndarray:
    """``values`` as a (12, frames) float64 array (:func:`as_array`), channels first."""
    array = as_array(values, name, 2)
    if array.shape[0] != NUM_CHANNELS:
        raise ValueError(f"{name}: expected {NUM_CHANNELS} channels (12, frames), got shape {array.shape}")
    return array


def kernel_array(values, name: str = "kernels") -> np.ndarray:
    """``values`` as a (K >= 1, 12, L) float64 array of gesture kernels."""
    array = as_array(values, name, 3)
    if array.shape[0] < 1 or array.shape[1] != NUM_CHANNELS:
        raise ValueError(f"{name}: expected shape (K >= 1, 12, L), got {array.shape}")
    return array


def new_figure(width: float, height: float) -> Figure:
    """An empty ``constrained``-layout figure of ``width`` x ``height`` inches on its own Agg canvas."""
    figure = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(figure)  # render with Agg whatever pyplot's backend is
    return figure


def channel_style(channel: int) -> dict:
    """Line style of one channel: its articulator's colour, solid for x, dashed for y."""
    return {"color": ARTICULATOR_COLOURS[channel // 2], "linestyle": "-" if channel % 2 == 0 else "--"}


def articulator_handles() -> list[Line2D]:
    """Legend entries: one colour per articulator, then the x (solid) and y (dashed) styles."""
    handles = [Line2D([], [], color=colour, lw=2, label=name)
               for colour, name in zip(ARTICULATOR_COLOURS, ARTICULATORS)]
    handles.append(Line2D([], [], color="0.3", lw=1.5, linestyle="-", label="x (solid)"))
    handles.append(Line2D([], [], color="0.3", lw=1.5, linestyle="--", label="y (dashed)"))
    return handles


def panel_grid(count: int, max_columns: int = 4) -> tuple[int, int]:
    """(rows, columns) of a near-square gallery of ``count`` panels, at most ``max_columns`` wide."""
    columns = min(max_columns, max(1, math.ceil(math.sqrt(count))))
    return math.ceil(count / columns), columns


def frame_times(frames: int, frame_rate: float) -> np.ndarray:
    """Start time (s) of each of ``frames`` frames."""
    return np.arange(frames) / float(frame_rate)


def _score_mass(scores: np.ndarray, num_gestures: int) -> np.ndarray:
    """Total score of each gesture, from (K, T) or (B, K, T) scores."""
    if scores.ndim == 3:
        scores = scores.transpose(1, 0, 2).reshape(scores.shape[1], -1)
    if scores.shape[0] != num_gestures:
        raise ValueError(f"scores have {scores.shape[0]} gestures but kernels have {num_gestures}")
    return np.nansum(np.abs(scores), axis=1)


def rank_gestures(kernels, scores=None) -> tuple[np.ndarray, np.ndarray]:
    """Gestures from most to least used, and each one's share of the total.

    Parameters
    ----------
    kernels : array, (K, 12, L)
    scores : array, (K, T) or (B, K, T), optional
        Usage is a gesture's score mass times its kernel's norm (what it adds to the
        reconstruction); without scores it is the kernel norm alone.

    Returns
    -------
    order : ndarray of int, (K,)
        Gesture indices, most used first (ties keep index order).
    share : ndarray of float, (K,)
        Each gesture's share of the total usage, indexed by gesture (sums to 1, or all 0).
    """
    kernels = kernel_array(kernels)
    usage = np.linalg.norm(kernels.reshape(len(kernels), -1), axis=1)
    if scores is not None:
        usage = usage * _score_mass(as_array(scores, "scores", (2, 3)), len(kernels))
    total = usage.sum()
    share = usage / total if total > 0 else np.zeros_like(usage)
    return np.argsort(-usage, kind="stable"), share


def pick_gestures(order, default_order: np.ndarray, max_items: int, count: int) -> np.ndarray:
    """The gestures to draw: ``order`` (checked against ``count``) or ``default_order``, capped at ``max_items``."""
    chosen = default_order if order is None else np.asarray(order, dtype=np.int64).reshape(-1)
    bad = chosen[(chosen < 0) | (chosen >= count)]
    if bad.size:
        raise ValueError(f"order: gesture indices must be in 0..{count - 1}, got {bad.tolist()}")
    return chosen[: max(1, int(max_items))]


# Resolutions plot.dpi and `gestural factorize --dpi` accept: 1200 is print quality for line
# art, and the largest figure (12 x 14 in) is already 240 M pixels there, about 1 GB in Agg;
# past it a typo (dpi: 10000000) asks for terabytes.
MIN_DPI, MAX_DPI = 30, 1200


def save_figure(figure: Figure, path: str | os.PathLike, dpi: int = 110) -> None:
    """Write ``figure`` as a PNG, atomically."""
    with atomic_path(path) as tmp:
        figure.savefig(tmp, format="png", dpi=dpi)


def message_figure(message: str, *, title: str | None = None) -> Figure:
    """A figure that only says something (e.g. why the real one cannot be drawn)."""
    figure = new_figure(7, 2.5)
    ax = figure.add_subplot()
    ax.axis("off")
    text = "\n".join(textwrap.fill(paragraph, 70) for paragraph in message.split("\n"))
    ax.text(0.5, 0.5, text, ha="center", va="center", fontsize=11, transform=ax.transAxes)
    if title:
        ax.set_title(title)
    return figure

