"""Figures of EMA kinematics, gesture kernels and gestural scores.

Every function takes plain arrays (numpy or torch) and returns a
:class:`matplotlib.figure.Figure` with ``constrained`` layout, rendered by the
Agg canvas. Nothing here touches pyplot's global state or calls ``show``: the
figures can be saved (:func:`save_figure`), logged to TensorBoard, or shown in
a notebook by the caller.

Conventions shared by all figures:

* one colour per articulator (:data:`ARTICULATOR_COLOURS`, the Okabe-Ito
  colour-blind-safe palette), the x coordinate drawn solid and the y coordinate
  dashed;
* time in seconds for utterances and in milliseconds inside a gesture kernel;
* values in normalised units ([0, 1] per channel) unless a figure says otherwise.
"""

from __future__ import annotations

import math
import os
import textwrap
from collections.abc import Mapping, Sequence

import numpy as np
from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import ListedColormap
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import MaxNLocator

from .ema import ARTICULATORS, CHANNELS, FRAME_RATE
from .io import atomic_path

__all__ = [
    "ARTICULATOR_COLOURS",
    "CHANNEL_LABELS",
    "channel_style",
    "rank_gestures",
    "to_corpus_units",
    "reconstruction_figure",
    "gesture_traces_figure",
    "gesture_paths_figure",
    "score_heatmap_figure",
    "learning_curves_figure",
    "channel_correlation_figure",
    "planted_vs_learned_figure",
    "neural_vs_classical_figure",
    "gesture_phone_association_figure",
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

_DATA_COLOUR = "0.6"  # the original signal, under the coloured reconstruction
_CLASSICAL_COLOUR = "0.15"
# Zero is white (masked); any non-zero score is at least a light blue: sparse scores read
# as marks on paper and a small score never vanishes into the background.
_SCORE_CMAP = ListedColormap(colormaps["Blues"](np.linspace(0.3, 1.0, 256))).with_extremes(under="white")
# Scores below this fraction of the largest are drawn white: classical NMF leaves a haze of
# tiny positive values everywhere that would otherwise tint the whole map.
_SHOWN_FRACTION = 0.01
_MAX_HEATMAP_COLUMNS = 1000
_SILENCE = {"sil", "pau", "#", "h#", "sp"}


# ----------------------------------------------------------------------------- helpers


def _array(values, name: str, ndim: int | tuple[int, ...]) -> np.ndarray:
    """``values`` (numpy, torch, nested lists) as a float64 array with the expected rank."""
    if hasattr(values, "detach"):
        values = values.detach().cpu().numpy()
    array = np.asarray(values, dtype=np.float64)
    allowed = (ndim,) if isinstance(ndim, int) else ndim
    if array.ndim not in allowed:
        raise ValueError(f"{name}: expected a {' or '.join(f'{n}-D' for n in allowed)} array, got shape {array.shape}")
    return array


def _channels(values, name: str) -> np.ndarray:
    array = _array(values, name, 2)
    if array.shape[0] != NUM_CHANNELS:
        raise ValueError(f"{name}: expected {NUM_CHANNELS} channels (12, frames), got shape {array.shape}")
    return array


def _kernels(values, name: str = "kernels") -> np.ndarray:
    array = _array(values, name, 3)
    if array.shape[0] < 1 or array.shape[1] != NUM_CHANNELS:
        raise ValueError(f"{name}: expected shape (K >= 1, 12, L), got {array.shape}")
    return array


def _new_figure(width: float, height: float) -> Figure:
    figure = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(figure)  # render with Agg whatever pyplot's backend is
    return figure


def channel_style(channel: int) -> dict:
    """Line style of one channel: its articulator's colour, solid for x, dashed for y."""
    return {"color": ARTICULATOR_COLOURS[channel // 2], "linestyle": "-" if channel % 2 == 0 else "--"}


def _articulator_handles() -> list[Line2D]:
    handles = [Line2D([], [], color=colour, lw=2, label=name) for colour, name in zip(ARTICULATOR_COLOURS, ARTICULATORS)]
    handles.append(Line2D([], [], color="0.3", lw=1.5, linestyle="-", label="x (solid)"))
    handles.append(Line2D([], [], color="0.3", lw=1.5, linestyle="--", label="y (dashed)"))
    return handles


def _grid(count: int, max_columns: int = 4) -> tuple[int, int]:
    columns = min(max_columns, max(1, math.ceil(math.sqrt(count))))
    return math.ceil(count / columns), columns


def _seconds(frames: int, frame_rate: float) -> np.ndarray:
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
    kernels = _kernels(kernels)
    usage = np.linalg.norm(kernels.reshape(len(kernels), -1), axis=1)
    if scores is not None:
        usage = usage * _score_mass(_array(scores, "scores", (2, 3)), len(kernels))
    total = usage.sum()
    share = usage / total if total > 0 else np.zeros_like(usage)
    return np.argsort(-usage, kind="stable"), share


def _pick(order, default_order: np.ndarray, max_items: int, count: int) -> np.ndarray:
    chosen = default_order if order is None else np.asarray(order, dtype=np.int64).reshape(-1)
    bad = chosen[(chosen < 0) | (chosen >= count)]
    if bad.size:
        raise ValueError(f"order: gesture indices must be in 0..{count - 1}, got {bad.tolist()}")
    return chosen[: max(1, int(max_items))]


def to_corpus_units(normalised, stats: Mapping | None = None, speaker: str | None = None) -> tuple[np.ndarray, str]:
    """Undo the normalisation of channel values: [0, 1] -> the corpus's own units.

    Parameters
    ----------
    normalised : array, (12, ...)
        Channel values in normalised units, channels first.
    stats : mapping, optional
        The normalize stage's ``stats.json`` dict (``low``, ``high`` per channel, and
        ``ema_stats``: {speaker: {mean, std}} when the corpus ships ``ema.stats``), or a
        dict with ``low``/``high`` and optionally ``mean``/``std`` directly.
    speaker : str, optional
        Whose ``ema.stats`` to use; default the first speaker listed.

    Returns
    -------
    values : ndarray, same shape
        In mm when mean/std are known (nema values are z-scores: mm = mean + z * std),
        in the corpus's z-scored units when only low/high are, else unchanged.
    unit : str
        The unit, for an axis label (e.g. ``"mm, speaker fsyn0"``).
    """
    values = _array(normalised, "normalised", tuple(range(1, 8)))
    if values.shape[0] != NUM_CHANNELS:
        raise ValueError(f"normalised: expected {NUM_CHANNELS} channels first, got shape {values.shape}")
    if not stats or "low" not in stats or "high" not in stats:
        return values, "normalised units"
    shape = (NUM_CHANNELS,) + (1,) * (values.ndim - 1)
    low = np.asarray(stats["low"], dtype=np.float64)[:NUM_CHANNELS].reshape(shape)
    high = np.asarray(stats["high"], dtype=np.float64)[:NUM_CHANNELS].reshape(shape)
    values = low + values * (high - low)
    mean_std, unit = None, "corpus units (z-scored)"
    if "mean" in stats and "std" in stats:
        mean_std, unit = (stats["mean"], stats["std"]), "mm"
    else:
        per_speaker = stats.get("ema_stats") or {}
        if per_speaker:
            name = speaker if speaker in per_speaker else next(iter(per_speaker))
            mean_std, unit = (per_speaker[name]["mean"], per_speaker[name]["std"]), f"mm, speaker {name}"
    if mean_std is not None:
        mean = np.asarray(mean_std[0], dtype=np.float64)[:NUM_CHANNELS].reshape(shape)
        std = np.asarray(mean_std[1], dtype=np.float64)[:NUM_CHANNELS].reshape(shape)
        values = mean + values * std
    return values, unit


def save_figure(figure: Figure, path: str | os.PathLike, dpi: int = 110) -> None:
    """Write ``figure`` as a PNG, atomically."""
    with atomic_path(path) as tmp:
        figure.savefig(tmp, format="png", dpi=dpi)


def message_figure(message: str, *, title: str | None = None) -> Figure:
    """A figure that only says something (e.g. why the real one cannot be drawn)."""
    figure = _new_figure(7, 2.5)
    ax = figure.add_subplot()
    ax.axis("off")
    text = "\n".join(textwrap.fill(paragraph, 70) for paragraph in message.split("\n"))
    ax.text(0.5, 0.5, text, ha="center", va="center", fontsize=11, transform=ax.transAxes)
    if title:
        ax.set_title(title)
    return figure


# ---------------------------------------------------------------------- kinematics


def _kinematic_panels(figure_or_subfigure, frames: int, frame_rate: float):
    """6 x 2 panels (rows: articulators, columns: x and y), shared time axis."""
    axes = figure_or_subfigure.subplots(NUM_SENSORS, 2, sharex=True, squeeze=False)
    for channel in range(NUM_CHANNELS):
        ax = axes[channel // 2, channel % 2]
        ax.set_title(CHANNEL_LABELS[channel], fontsize=9, color=ARTICULATOR_COLOURS[channel // 2], loc="left")
        ax.tick_params(labelsize=8)
        if frames > 1:
            ax.set_xlim(0, (frames - 1) / frame_rate)
    for ax in axes[-1]:
        ax.set_xlabel("time (s)")
    return axes


def reconstruction_figure(x, x_hat, *, title: str | None = None, frame_rate: float = FRAME_RATE) -> Figure:
    """Original and reconstructed kinematics of one utterance, one panel per channel.

    Parameters
    ----------
    x, x_hat : array, (12, T)
        Original and reconstruction, normalised units.
    title : str, optional
    frame_rate : float, default 200
        Frames per second, for the time axis.

    Returns
    -------
    Figure with 12 axes (6 articulators x 2 coordinates).
    """
    x = _channels(x, "x")
    x_hat = _channels(x_hat, "x_hat")
    if x.shape != x_hat.shape:
        raise ValueError(f"x has shape {x.shape} but x_hat has shape {x_hat.shape}")
    frames = x.shape[1]
    time = _seconds(frames, frame_rate)
    figure = _new_figure(11, 10)
    axes = _kinematic_panels(figure, frames, frame_rate)
    for channel in range(NUM_CHANNELS):
        ax = axes[channel // 2, channel % 2]
        ax.plot(time, x[channel], color=_DATA_COLOUR, lw=2.2, solid_capstyle="butt")
        ax.plot(time, x_hat[channel], lw=1.1, **channel_style(channel))
    figure.supylabel("position (normalised units)")
    figure.legend(
        handles=[Line2D([], [], color=_DATA_COLOUR, lw=2.2, label="original"),
                 Line2D([], [], color="0.2", lw=1.1, label="reconstruction (articulator colour)")],
        loc="outside upper right", ncols=2, fontsize=9, frameon=False)
    figure.suptitle(title or "Original and reconstructed kinematics", x=0.02, ha="left")
    return figure


def neural_vs_classical_figure(x, neural_hat, classical_hat, neural_scores, classical_scores, *,
                               frame_rate: float = FRAME_RATE, title: str | None = None,
                               phones: Sequence[tuple[float, str]] | None = None) -> Figure:
    """One utterance factorised by the auto-encoder and by classical convolutive NMF.

    Parameters
    ----------
    x, neural_hat, classical_hat : array, (12, T)
        Original and the two reconstructions (normalised units).
    neural_scores, classical_scores : array, (K1, T) and (K2, T)
    frame_rate : float, default 200
    title : str, optional
    phones : list of (end_time, phone), optional
        Phone segmentation, drawn as boundaries on the score panels.

    Returns
    -------
    Figure with 12 kinematic axes, 2 score heatmaps and their 2 colour bars.
    """
    x = _channels(x, "x")
    neural_hat = _channels(neural_hat, "neural_hat")
    classical_hat = _channels(classical_hat, "classical_hat")
    if not (x.shape == neural_hat.shape == classical_hat.shape):
        raise ValueError(f"x {x.shape}, neural_hat {neural_hat.shape} and classical_hat {classical_hat.shape} differ")
    frames = x.shape[1]
    time = _seconds(frames, frame_rate)
    figure = _new_figure(12, 14)
    top, bottom = figure.subfigures(2, 1, height_ratios=[2.6, 1.0])
    axes = _kinematic_panels(top, frames, frame_rate)
    for channel in range(NUM_CHANNELS):
        ax = axes[channel // 2, channel % 2]
        ax.plot(time, x[channel], color=_DATA_COLOUR, lw=2.4, solid_capstyle="butt")
        ax.plot(time, neural_hat[channel], lw=1.1, **channel_style(channel))
        ax.plot(time, classical_hat[channel], color=_CLASSICAL_COLOUR, lw=0.9, linestyle=":")
    top.supylabel("position (normalised units)")
    top.legend(
        handles=[Line2D([], [], color=_DATA_COLOUR, lw=2.4, label="original"),
                 Line2D([], [], color="0.2", lw=1.1, label="auto-encoder (articulator colour)"),
                 Line2D([], [], color=_CLASSICAL_COLOUR, lw=0.9, linestyle=":", label="classical CNMF")],
        loc="outside upper right", ncols=3, fontsize=9, frameon=False)
    top.suptitle(title or "Auto-encoder vs classical convolutive NMF", x=0.02, ha="left")
    score_axes = bottom.subplots(2, 1, sharex=True)
    for ax, scores, name in zip(score_axes, (neural_scores, classical_scores), ("auto-encoder", "classical CNMF")):
        _draw_scores(bottom, ax, _array(scores, f"{name} scores", 2), frame_rate, phones, f"{name}: gestural scores",
                     max_row_labels=8)
    score_axes[-1].set_xlabel("time (s)")
    return figure


# -------------------------------------------------------------------------- gestures


def gesture_traces_figure(kernels, scores=None, *, max_gestures: int = 16, order=None,
                          frame_rate: float = FRAME_RATE, title: str | None = None) -> Figure:
    """Gallery of gesture kernels, each drawn as its 12 channel traces.

    Parameters
    ----------
    kernels : array, (K, 12, L)
        Gesture kernels, any K >= 1.
    scores : array, (K, T) or (B, K, T), optional
        Used to rank the gestures by use (score mass); without it, by kernel norm.
    max_gestures : int, default 16
        At most this many panels.
    order : sequence of int, optional
        Gesture indices to draw, in this order (overrides the ranking; still capped at
        ``max_gestures``).
    frame_rate : float, default 200
    title : str, optional

    Returns
    -------
    Figure with one axes per gesture drawn (``min(K, max_gestures)`` without ``order``).
    """
    kernels = _kernels(kernels)
    num_gestures, _, length = kernels.shape
    ranking, share = rank_gestures(kernels, scores)
    chosen = _pick(order, ranking, max_gestures, num_gestures)
    rows, columns = _grid(len(chosen))
    figure = _new_figure(max(6.5, 2.9 * columns + 1.8), 2.3 * rows + 1.0)
    axes = figure.subplots(rows, columns, sharex=True, sharey=True, squeeze=False).ravel()
    time_ms = np.arange(length) * 1000.0 / frame_rate
    for ax, gesture in zip(axes, chosen):
        for channel in range(NUM_CHANNELS):
            ax.plot(time_ms, kernels[gesture, channel], lw=1.3, **channel_style(channel))
        label = f"gesture {gesture}"
        if scores is not None:
            label += f" ({share[gesture]:.0%} of use)"
        ax.set_title(label, fontsize=9)
        ax.tick_params(labelsize=8)
        ax.grid(alpha=0.25)
    for ax in axes[len(chosen):]:
        figure.delaxes(ax)
    figure.supxlabel("time from gesture onset (ms)")
    figure.supylabel("displacement (normalised units)")
    figure.legend(handles=_articulator_handles(), loc="outside right upper", fontsize=8, frameon=False)
    if title is None:
        ranked = "by use in the scores" if scores is not None else "by kernel norm"
        title = (f"Gesture kernels: {len(chosen)} of {num_gestures}, ranked {ranked}"
                 if order is None else f"Gesture kernels: {len(chosen)} of {num_gestures}")
    figure.suptitle(title, x=0.02, ha="left")
    return figure


def _exaggeration(rest: np.ndarray, displaced: np.ndarray) -> float:
    """A round factor that makes the largest movement about a sixth of the posture's extent.

    Gestures move sensors by a few mm while the sensors lie several cm apart: drawn to
    scale, every path would be a dot. One factor for all panels keeps them comparable.
    """
    extent = float(np.ptp(rest[0::2]) + np.ptp(rest[1::2])) / 2 or 1.0
    movement = float(np.abs(displaced).max())
    if movement <= 0 or movement >= extent / 6:
        return 1.0
    wanted = extent / 6 / movement
    return float(max(f for f in (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000) if f <= wanted))


def gesture_paths_figure(kernels, baseline, *, stats: Mapping | None = None, max_gestures: int = 16, order=None,
                         scores=None, speaker: str | None = None, amplitudes=None,
                         exaggeration: float | str = "auto", title: str | None = None) -> Figure:
    """Midsagittal paths of the six sensors during each gesture.

    Each panel shows the resting posture (the baseline, grey; the tongue sensors joined
    as a contour) and, per sensor, the path ``baseline + a * kernel[:, t]`` over the
    kernel's frames, from the rest position to an arrowhead at the gesture's last frame.

    Parameters
    ----------
    kernels : array, (K, 12, L)
    baseline : array, (12,)
        Resting posture, normalised units.
    stats : mapping, optional
        Normalisation statistics (see :func:`to_corpus_units`): with them the paths are
        in the corpus's units (mm when ``ema.stats`` is known), else normalised units.
    max_gestures, order, scores :
        Which gestures, as in :func:`gesture_traces_figure`.
    speaker : str, optional
        Whose ``ema.stats`` to use for mm.
    amplitudes : array, (K,), optional
        Score amplitude ``a`` of each gesture (e.g. its typical peak score); default 1.
    exaggeration : float or "auto", default "auto"
        Factor applied to the movements (not the rest posture); "auto" picks a round
        factor that makes them visible. The factor is stated in the title.
    title : str, optional

    Returns
    -------
    Figure with one axes per gesture drawn.
    """
    kernels = _kernels(kernels)
    num_gestures, _, length = kernels.shape
    baseline = _array(baseline, "baseline", 1)
    if baseline.shape != (NUM_CHANNELS,):
        raise ValueError(f"baseline: expected shape (12,), got {baseline.shape}")
    amplitudes = np.ones(num_gestures) if amplitudes is None else _array(amplitudes, "amplitudes", 1)
    if amplitudes.shape != (num_gestures,):
        raise ValueError(f"amplitudes: expected shape ({num_gestures},), got {amplitudes.shape}")
    ranking, _ = rank_gestures(kernels, scores)
    chosen = _pick(order, ranking, max_gestures, num_gestures)

    # Positions in corpus units: rest (12,) and, per chosen gesture, the L displaced postures.
    rest, unit = to_corpus_units(baseline, stats, speaker)
    posed, _ = to_corpus_units(baseline[:, None, None] + amplitudes[chosen][None, :, None]
                               * kernels[chosen].transpose(1, 0, 2), stats, speaker)  # (12, n, L)
    movement = posed - rest[:, None, None]
    factor = _exaggeration(rest, movement) if exaggeration == "auto" else float(exaggeration)
    paths = rest[:, None, None] + factor * movement

    rows, columns = _grid(len(chosen))
    figure = _new_figure(max(6.5, 3.1 * columns + 1.8), 2.9 * rows + 1.0)
    axes = figure.subplots(rows, columns, sharex=True, sharey=True, squeeze=False).ravel()
    for ax, index, gesture in zip(axes, range(len(chosen)), chosen):
        ax.plot(rest[[4, 2, 0]], rest[[5, 3, 1]], color="0.75", lw=1.5, zorder=1)  # tongue: tip-blade-dorsum
        ax.scatter(rest[0::2], rest[1::2], s=14, color="0.6", zorder=2)
        for sensor in range(NUM_SENSORS):
            colour = ARTICULATOR_COLOURS[sensor]
            xs = np.concatenate([[rest[2 * sensor]], paths[2 * sensor, index]])
            ys = np.concatenate([[rest[2 * sensor + 1]], paths[2 * sensor + 1, index]])
            ax.plot(xs, ys, color=colour, lw=1.4, zorder=3)
            if np.hypot(xs[-1] - xs[-2], ys[-1] - ys[-2]) > 0:  # an arrow needs a direction
                ax.annotate("", xy=(xs[-1], ys[-1]), xytext=(xs[-2], ys[-2]), zorder=4,
                            arrowprops={"arrowstyle": "-|>", "color": colour, "lw": 1.2, "mutation_scale": 9})
        ax.set_title(f"gesture {gesture}", fontsize=9)
        ax.set_aspect("equal", adjustable="box")
        ax.tick_params(labelsize=8)
        ax.grid(alpha=0.25)
    for ax in axes[len(chosen):]:
        figure.delaxes(ax)
    figure.supxlabel(f"x ({unit})")
    figure.supylabel(f"y ({unit})")
    handles = [Line2D([], [], color=colour, lw=2, label=name) for colour, name in zip(ARTICULATOR_COLOURS, ARTICULATORS)]
    handles.append(Line2D([], [], color="0.6", marker="o", lw=1.5, markersize=4, label="rest posture"))
    figure.legend(handles=handles, loc="outside right upper", fontsize=8, frameon=False)
    scale = "movements to scale" if factor == 1 else f"movements exaggerated x{factor:g}"
    figure.suptitle(title or f"Sensor paths of each gesture, from rest ({scale})", x=0.02, ha="left")
    return figure


def _matches(assignment, num_planted: int, num_learned: int) -> dict[int, tuple[int, int | None, float | None]]:
    """planted index -> (learned index, lag or None, cosine or None)."""
    matches = {}
    for pair in assignment or ():
        if isinstance(pair, Mapping):
            p, k, lag, cosine = pair["planted"], pair["learned"], pair.get("lag"), pair.get("cosine")
        else:
            p, k, lag, cosine = (tuple(pair) + (None, None))[:4]
        if k is None:
            continue
        if not (0 <= int(p) < num_planted and 0 <= int(k) < num_learned):
            raise ValueError(f"assignment: pair ({p}, {k}) is out of range for {num_planted} planted "
                             f"and {num_learned} learned gestures")
        matches[int(p)] = (int(k), None if lag is None else int(lag), None if cosine is None else float(cosine))
    return matches


def planted_vs_learned_figure(planted, learned, assignment, *, classical=None, classical_assignment=None,
                              max_rows: int = 16, frame_rate: float = FRAME_RATE, title: str | None = None) -> Figure:
    """Each planted (ground-truth) gesture beside the learned gesture matched to it.

    Parameters
    ----------
    planted : array, (P, 12, L1)
    learned : array, (K, 12, L2)
        The auto-encoder's gesture kernels.
    assignment : list
        Matched pairs, each a mapping with ``planted``, ``learned`` and optionally ``lag``
        and ``cosine`` (as in the evaluate stage's ``matching.json``), or a tuple
        ``(planted, learned[, lag[, cosine]])`` (as
        :func:`gestural.recovery.kernel_recovery` returns). A planted gesture without a
        pair gets an empty panel.
    classical, classical_assignment : optional
        The same for a second method (classical CNMF): drawn as a third column.
    max_rows : int, default 16
    frame_rate : float, default 200
    title : str, optional

    Returns
    -------
    Figure with ``min(P, max_rows)`` rows of two axes (three with ``classical``).
    """
    planted = _kernels(planted, "planted")
    methods = [("auto-encoder", _kernels(learned, "learned"), assignment)]
    if classical is not None:
        methods.append(("classical", _kernels(classical, "classical"), classical_assignment))
    methods = [(name, kernels, _matches(pairs, len(planted), len(kernels))) for name, kernels, pairs in methods]
    rows = min(len(planted), max(1, int(max_rows)))
    figure = _new_figure(4.2 * (1 + len(methods)) + 1.6, 1.9 * rows + 1.2)
    axes = figure.subplots(rows, 1 + len(methods), sharex=True, sharey=True, squeeze=False)
    length = max(k.shape[2] for k in [planted] + [m[1] for m in methods])

    def draw(ax, kernel):
        # Shapes are compared, not sizes (the cosine ignores scale, and planted kernels carry
        # their amplitude while learned ones do not): every kernel is drawn at unit norm.
        kernel = kernel / (np.linalg.norm(kernel) or 1.0)
        for channel in range(NUM_CHANNELS):
            ax.plot(np.arange(kernel.shape[1]) * 1000.0 / frame_rate, kernel[channel], lw=1.2,
                    **channel_style(channel))

    for row in range(rows):
        draw(axes[row, 0], planted[row])
        axes[row, 0].set_title(f"planted gesture {row}", fontsize=9, loc="left")
        for ax, (name, kernels, matches) in zip(axes[row, 1:], methods):
            if row not in matches:
                ax.text(0.5, 0.5, f"no {name} gesture matched", ha="center", va="center", transform=ax.transAxes,
                        color="0.4", fontsize=9)
                continue
            k, lag, cosine = matches[row]
            draw(ax, kernels[k])
            detail = [f"cos {cosine:.2f}"] if cosine is not None else []
            if lag is not None:
                detail.append(f"lag {lag:+d}")
            ax.set_title(f"{name} gesture {k}" + (f" ({', '.join(detail)})" if detail else ""), fontsize=9,
                         loc="left")
        for ax in axes[row]:
            ax.tick_params(labelsize=8)
            ax.grid(alpha=0.25)
            ax.set_xlim(0, (length - 1) * 1000.0 / frame_rate if length > 1 else 1.0)
    figure.supxlabel("time from gesture onset (ms)")
    figure.supylabel("displacement (kernel scaled to unit norm)")
    figure.legend(handles=_articulator_handles(), loc="outside right upper", fontsize=8, frameon=False)
    shown = "" if rows == len(planted) else f" (first {rows} of {len(planted)})"
    figure.suptitle(title or f"Planted gestures and their learned matches{shown}; "
                    "cos: lag-tolerant cosine, lag in frames", x=0.02, ha="left")
    return figure


# --------------------------------------------------------------------------- scores


def _phone_segments(phones) -> list[tuple[float, float, str]]:
    """(start, end, label) from Festival-style (end_time, label) pairs."""
    segments, start = [], 0.0
    for end, label in phones or ():
        end = float(end)
        segments.append((start, end, str(label)))
        start = end
    return segments


def _max_pool_columns(scores: np.ndarray, frame_rate: float) -> tuple[np.ndarray, float]:
    """Shrink long score matrices by taking the max over bins of frames.

    Scores are spikes one frame wide; letting the renderer resample a long matrix would
    average them away, so the binning keeps every spike's height.
    """
    frames = scores.shape[1]
    width = max(1, math.ceil(frames / _MAX_HEATMAP_COLUMNS))
    if width == 1:
        return scores, 1.0 / frame_rate
    padded = np.pad(scores, ((0, 0), (0, (-frames) % width)))
    return padded.reshape(scores.shape[0], -1, width).max(axis=2), width / frame_rate


def _draw_phones(ax_strip, ax_scores, phones, duration: float, axes_width_inches: float) -> None:
    """Phone boundaries on the score axes and labels in the strip above, staggered when crowded."""
    segments = [s for s in _phone_segments(phones) if s[0] < duration]
    seconds_per_inch = duration / max(axes_width_inches, 1e-6)
    level_end = [-math.inf] * 3  # right edge (s) of the last label on each of 3 rows
    for start, end, label in segments:
        end_clipped = min(end, duration)
        if end < duration:
            ax_scores.axvline(end, color="0.35", lw=0.6, alpha=0.6)
            ax_strip.axvline(end, color="0.35", lw=0.6, alpha=0.6)
        centre = (start + end_clipped) / 2
        half_width = 0.5 * (0.075 * len(label) + 0.04) * seconds_per_inch  # ~9 pt characters
        level = next((i for i, right in enumerate(level_end) if centre - half_width > right), None)
        if level is None:
            continue  # no room on any row: drop the label rather than overprint it
        level_end[level] = centre + half_width
        silent = label.lower() in _SILENCE
        ax_strip.text(centre, 0.78 - 0.3 * level, label, ha="center", va="center", fontsize=9,
                      color="0.5" if silent else "0.1", style="italic" if silent else "normal")
    ax_strip.set_ylim(0, 1)
    ax_strip.set_yticks([])
    ax_strip.tick_params(axis="x", labelbottom=False)
    ax_strip.set_ylabel("phone", rotation=0, ha="right", va="center", fontsize=9)
    for side in ("top", "right", "left"):
        ax_strip.spines[side].set_visible(False)


def _gestures_in_use(scores: np.ndarray, threshold: float = 1e-3) -> np.ndarray:
    mass = np.nansum(np.abs(scores), axis=1)
    largest = mass.max() if mass.size else 0.0
    return np.flatnonzero((mass > 0) & (mass > threshold * largest))


def _draw_scores(figure, ax, scores: np.ndarray, frame_rate: float, phones, title: str, ax_strip=None,
                 max_row_labels: int = 25) -> None:
    """Heatmap of the gestures in use (rows) over time, with a colour bar.

    ``max_row_labels``: how many gesture labels fit the axes' height without overprinting.
    """
    frames = scores.shape[1]
    duration = frames / frame_rate
    rows = _gestures_in_use(scores)
    if rows.size == 0:
        ax.text(0.5, 0.5, "no gesture is active in this utterance", ha="center", va="center",
                transform=ax.transAxes, color="0.4")
        ax.set_yticks([])
        ax.set_xlim(0, duration)
        ax.set_title(title, loc="left", fontsize=10)
        return
    pooled, bin_seconds = _max_pool_columns(scores[rows], frame_rate)
    vmax = float(np.nanmax(pooled)) or 1.0
    image = ax.imshow(pooled, aspect="auto", interpolation="nearest", cmap=_SCORE_CMAP,
                      vmin=_SHOWN_FRACTION * vmax, vmax=vmax,
                      extent=(0.0, pooled.shape[1] * bin_seconds, len(rows) - 0.5, -0.5))
    ax.set_xlim(0, duration)
    step = max(1, math.ceil(len(rows) / max(1, max_row_labels)))
    ax.set_yticks(np.arange(0, len(rows), step))
    ax.set_yticklabels([str(g) for g in rows[::step]], fontsize=8 if len(rows) <= 12 else 7)
    ax.set_ylabel("gesture")
    ax.set_title(f"{title} ({len(rows)} of {scores.shape[0]} gestures in use; white: below "
                 f"{_SHOWN_FRACTION:.0%} of the largest score)", loc="left", fontsize=10)
    figure.colorbar(image, ax=[ax] if ax_strip is None else [ax_strip, ax], shrink=0.9, pad=0.01, extend="min",
                    label="score")
    if phones and ax_strip is None:
        for end, _ in phones:
            if float(end) < duration:
                ax.axvline(float(end), color="0.35", lw=0.6, alpha=0.6)


def score_heatmap_figure(scores, *, phones: Sequence[tuple[float, str]] | None = None,
                         frame_rate: float = FRAME_RATE, title: str | None = None) -> Figure:
    """Gestural score of one utterance: gestures in use (rows) over time.

    Parameters
    ----------
    scores : array, (K, T)
    phones : list of (end_time, phone), optional
        A Festival segmentation (:func:`gestural.ema.read_lab`): phone boundaries are drawn
        across the heatmap and the phones labelled in a strip above it.
    frame_rate : float, default 200
    title : str, optional

    Returns
    -------
    Figure with the heatmap and its colour bar (plus the phone strip when ``phones``).
    Gestures whose total score is below 1e-3 of the largest are left out.
    """
    scores = _array(scores, "scores", 2)
    frames = scores.shape[1]
    rows = len(_gestures_in_use(scores))
    height = min(9.0, 2.2 + 0.16 * max(rows, 4)) + (0.6 if phones else 0.0)
    width = 12.0
    figure = _new_figure(width, height)
    if phones:
        ax_strip, ax = figure.subplots(2, 1, sharex=True, height_ratios=[1, 6])
        _draw_phones(ax_strip, ax, phones, frames / frame_rate, axes_width_inches=width * 0.85)
    else:
        ax_strip, ax = None, figure.subplots()
    heatmap_inches = height * (6 / 7 if phones else 1.0) - 1.3  # less title, time axis and phone strip
    _draw_scores(figure, ax, scores, frame_rate, phones, "gestural score", ax_strip=ax_strip,
                 max_row_labels=int(heatmap_inches / 0.17))  # ~0.17 in per 8-point label
    ax.set_xlabel("time (s)")
    figure.suptitle(title or "Gestural score", x=0.02, ha="left")
    return figure


# -------------------------------------------------------------------------- summary


def _column(rows: Sequence[Mapping], name: str) -> np.ndarray | None:
    if not rows or name not in rows[0]:
        return None
    values = []
    for row in rows:
        try:
            values.append(float(row[name]))
        except (TypeError, ValueError):
            values.append(math.nan)
    return np.asarray(values)


def learning_curves_figure(rows: Sequence[Mapping], *, loss: str | None = None, title: str | None = None) -> Figure:
    """Train and held-out loss per epoch, and how many gestures stay in use.

    Parameters
    ----------
    rows : list of mappings
        Rows of ``plots/train/learning_curve.csv`` (values may be strings): ``epoch``,
        ``train_loss`` (with the penalties), ``train_reconstruction``,
        ``test_reconstruction``, and optionally ``gestures_in_use``, ``active_scores``.
    loss : str, optional
        Name of the reconstruction loss (``mse``, ``l1``), for the axis label.
    title : str, optional

    Returns
    -------
    Figure with one axes (losses), or two when the usage columns are present.
    """
    rows = list(rows)
    if not rows:
        return message_figure("The learning curve is empty (no epoch finished).", title=title or "Learning curves")
    epoch = _column(rows, "epoch")
    if epoch is None:
        epoch = np.arange(1, len(rows) + 1, dtype=np.float64)
    usage = [(name, label) for name, label in (("gestures_in_use", "gestures in use"),
                                               ("active_scores", "active scores")) if name in rows[0]]
    figure = _new_figure(11 if usage else 7, 4.2)
    axes = figure.subplots(1, 2 if usage else 1, squeeze=False).ravel()
    marker = "o" if len(rows) <= 30 else None
    curves = (("train_reconstruction", "train reconstruction", "#0072B2", "-"),
              ("test_reconstruction", "held-out reconstruction", "#D55E00", "-"),
              ("train_loss", "train total (with penalties)", "#0072B2", ":"))
    positive = True
    for name, label, colour, style in curves:
        values = _column(rows, name)
        if values is not None:
            axes[0].plot(epoch, values, color=colour, linestyle=style, marker=marker, markersize=3, label=label)
            positive &= bool(np.all(values[np.isfinite(values)] > 0))
    if positive and axes[0].lines:
        axes[0].set_yscale("log")
    for ax in axes:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    axes[0].set_xlabel("epoch")
    axes[0].set_ylabel(f"loss ({loss.upper()}, normalised units)" if loss else "loss (normalised units)")
    axes[0].set_title("Loss", loc="left")
    axes[0].grid(alpha=0.3, which="both")
    axes[0].legend(fontsize=8)
    if usage:
        for (name, label), colour in zip(usage, ("#009E73", "#CC79A7")):
            axes[1].plot(epoch, _column(rows, name), color=colour, marker=marker, markersize=3, label=label)
        axes[1].set_ylim(0, 1.02)
        axes[1].set_xlabel("epoch")
        axes[1].set_ylabel("fraction (held-out)")
        axes[1].set_title("Sparsity", loc="left")
        axes[1].grid(alpha=0.3)
        axes[1].legend(fontsize=8)
    figure.suptitle(title or "Learning curves", x=0.02, ha="left")
    return figure


def channel_correlation_figure(neural, classical=None, *, title: str | None = None) -> Figure:
    """Per-channel correlation of reconstruction and data: auto-encoder vs classical.

    Parameters
    ----------
    neural : array, (12,)
        Pearson r per channel for the auto-encoder (NaN where undefined).
    classical : array, (12,), optional
        The same for classical convolutive NMF.
    title : str, optional

    Returns
    -------
    Figure with one axes: grouped bars per channel.
    """
    series = [("auto-encoder", _array(neural, "neural", 1), "#0072B2")]
    if classical is not None:
        series.append(("classical CNMF", _array(classical, "classical", 1), "0.55"))
    for name, values, _ in series:
        if values.shape != (NUM_CHANNELS,):
            raise ValueError(f"{name}: expected {NUM_CHANNELS} values, got shape {values.shape}")
    figure = _new_figure(10, 4.5)
    ax = figure.add_subplot()
    width = 0.8 / len(series)
    positions = np.arange(NUM_CHANNELS)
    lowest = 0.0
    for i, (name, values, colour) in enumerate(series):
        offset = (i - (len(series) - 1) / 2) * width
        finite = np.isfinite(values)
        mean = float(values[finite].mean()) if finite.any() else math.nan
        ax.bar(positions + offset, np.where(finite, values, 0.0), width, color=colour, label=f"{name} (mean r = {mean:.3f})")
        for p in positions[~finite]:
            ax.text(p + offset, 0.02, "n/a", ha="center", va="bottom", fontsize=7, rotation=90, color="0.3")
        if finite.any():
            lowest = min(lowest, float(values[finite].min()))
    ax.set_xticks(positions)
    ax.set_xticklabels(CHANNEL_LABELS, rotation=35, ha="right", fontsize=8)
    for tick, channel in zip(ax.get_xticklabels(), range(NUM_CHANNELS)):
        tick.set_color(ARTICULATOR_COLOURS[channel // 2])
    ax.set_ylim(lowest - 0.05 if lowest < 0 else 0.0, 1.0)
    ax.axhline(0, color="0.3", lw=0.6)
    ax.set_ylabel("Pearson r, data vs reconstruction")
    ax.set_xlabel("channel")
    ax.grid(axis="y", alpha=0.3)
    figure.legend(loc="outside upper right", ncols=len(series), fontsize=8, frameon=False)
    figure.suptitle(title or "Per-channel reconstruction correlation (held-out utterances)", x=0.02, ha="left")
    return figure


# ---------------------------------------------------------------- gesture-phone association


def gesture_phone_association_figure(auc, gestures, phones: Sequence[str], phone_frames=None, *,
                                     min_phone_frames: int = 20, max_gestures: int = 60,
                                     frame_rate: float = FRAME_RATE, title: str | None = None) -> Figure:
    """Heat map of how strongly each gesture's activity goes with each phone (ROC-AUC).

    Phones (columns) are grouped by place of articulation, front of the mouth to back, then
    vowels and silence (:func:`gestural.associations.order_phones`); each gesture (row) sits
    under its best phone, strongest first (:func:`gestural.associations.order_gestures`), so
    that a gesture specific to one phone class makes a diagonal block. A dot marks each row's
    best phone. Below, how much held-out speech each phone has: AUCs of rare phones are noisy.

    Parameters
    ----------
    auc : array, (G, P)
        ROC-AUC of gesture activity against each phone (0.5 = no association); NaN allowed.
    gestures : array of int, (G,)
        Gesture indices of the rows.
    phones : sequence of str, (P,)
    phone_frames : array of int, (P,), optional
        Frames of each phone; phones with fewer than ``min_phone_frames`` are left out.
    max_gestures : int
        At most this many rows: those with the highest best AUC.
    frame_rate : float
        To show the phone totals in seconds.
    title : str, optional
    """
    from .associations import order_gestures, order_phones

    auc = _array(auc, "auc", 2)
    gestures = np.asarray(gestures, dtype=np.int64).reshape(-1)
    phones = [str(p) for p in phones]
    if auc.shape != (len(gestures), len(phones)):
        raise ValueError(f"auc: expected shape ({len(gestures)}, {len(phones)}), got {auc.shape}")
    title = title or "Gesture-phone association (ROC-AUC of gesture activity, held-out frames)"
    counts = None if phone_frames is None else np.asarray(phone_frames, dtype=np.float64).reshape(-1)
    if counts is not None and counts.shape != (len(phones),):
        raise ValueError(f"phone_frames: expected {len(phones)} values, got shape {counts.shape}")
    keep = np.arange(len(phones)) if counts is None else np.flatnonzero(counts >= min_phone_frames)
    if not len(gestures) or not keep.size:
        return message_figure("No gesture-phone association to draw: the held-out utterances have no phone "
                              "labels (lab files), or no gesture is in use.", title=title)
    notes = ["dot: each gesture's best phone"]
    if keep.size < len(phones):
        dropped = len(phones) - keep.size
        notes.append(f"{dropped} phone{'s' * (dropped > 1)} with < {min_phone_frames} frames left out")
    auc, phones = auc[:, keep], [phones[i] for i in keep]
    counts = None if counts is None else counts[keep]
    best_auc = np.where(np.isfinite(auc).any(axis=1), np.nanmax(np.where(np.isfinite(auc), auc, -np.inf), axis=1),
                        -np.inf)
    if len(gestures) > max_gestures:
        notes.append(f"the {max_gestures} of {len(gestures)} gestures with the strongest association shown")
        strongest = np.sort(np.argsort(-best_auc, kind="stable")[:max_gestures])
        auc, gestures = auc[strongest], gestures[strongest]
    columns, groups = order_phones(phones)
    rows = order_gestures(auc, columns)
    grid = auc[np.ix_(rows, columns)]

    width = min(22.0, max(6.5, 0.3 * len(columns) + 2.8))
    height = min(16.0, max(4.0, 0.17 * len(rows) + 2.6 + (0.9 if counts is not None else 0.0)))
    figure = _new_figure(width, height)
    if counts is not None:
        ax, ax_counts = figure.subplots(2, 1, sharex=True, height_ratios=[max(3.0, 0.17 * len(rows)), 0.9])
    else:
        ax, ax_counts = figure.subplots(), None
    cmap = colormaps["RdBu_r"].with_extremes(bad="0.85")  # NaN: grey
    # Centred on 0.5 (white), spread to the largest deviation (at least 0.1): phone-level AUCs of
    # gestures shorter than their phones stay well below 1, and a 0-1 scale would wash them out.
    spread = float(np.nanmax(np.abs(grid - 0.5))) if np.isfinite(grid).any() else 0.5
    spread = min(0.5, max(0.1, math.ceil(spread * 20) / 20))
    image = ax.imshow(grid, aspect="auto", interpolation="nearest", cmap=cmap, vmin=0.5 - spread, vmax=0.5 + spread)
    finite_rows = np.isfinite(grid).any(axis=1)
    best = np.nanargmax(np.where(np.isfinite(grid), grid, -np.inf), axis=1)
    ax.scatter(best[finite_rows], np.flatnonzero(finite_rows), s=9, color="black", zorder=3, label="best phone")
    ax.set_yticks(np.arange(len(rows)))
    ax.set_yticklabels([f"g{gestures[r]}" for r in rows], fontsize=7 if len(rows) > 25 else 8)
    ax.set_ylabel("gesture")
    # Group names on top, separators between groups.
    bounds = [i for i in range(1, len(groups)) if groups[i] != groups[i - 1]]
    for axis in (ax, ax_counts) if ax_counts is not None else (ax,):
        for b in bounds:
            axis.axvline(b - 0.5, color="0.2", lw=0.8)
    starts = [0] + bounds
    ends = bounds + [len(groups)]
    top = ax.secondary_xaxis("top")
    top.set_xticks([(a + b - 1) / 2 for a, b in zip(starts, ends)])
    top.set_xticklabels([groups[a] for a in starts], fontsize=8, rotation=30, ha="left")
    top.tick_params(length=0)
    bottom = ax_counts if ax_counts is not None else ax
    bottom.set_xticks(np.arange(len(columns)))
    bottom.set_xticklabels([phones[c] for c in columns], fontsize=8)
    bottom.set_xlabel("phone")
    if ax_counts is not None:
        ax.tick_params(axis="x", labelbottom=False)
        ax_counts.bar(np.arange(len(columns)), counts[columns] / frame_rate, color="0.55", width=0.8)
        ax_counts.set_ylabel("s", fontsize=8)
        ax_counts.set_title("held-out speech per phone", loc="left", fontsize=8)
        ax_counts.tick_params(axis="y", labelsize=7)
        ax_counts.grid(axis="y", alpha=0.3)
    figure.colorbar(image, ax=[ax] if ax_counts is None else [ax, ax_counts], shrink=0.8, pad=0.01,
                    label="ROC-AUC (0.5 = no association)")
    figure.suptitle(f"{title}\n({'; '.join(notes)})", x=0.02, ha="left", fontsize=10)
    return figure
