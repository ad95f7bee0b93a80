"""Figures of movement: utterances' kinematics and the gesture kernels' shapes and paths.

One utterance's original and reconstructed channels (:func:`reconstruction_figure`), the
auto-encoder against classical convolutive NMF (:func:`neural_vs_classical_figure`), the
gesture kernels as channel traces (:func:`gesture_traces_figure`) and as midsagittal sensor
paths (:func:`gesture_paths_figure`), and planted gestures beside their learned matches
(:func:`planted_vs_learned_figure`). Colours, input checks and the other conventions are
:mod:`gestural.figures.style`'s.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from gestural.core.units import ARTICULATORS, FRAME_RATE
from gestural.data.scaling import to_corpus_units
from gestural.figures.scores import draw_scores
from gestural.figures.style import (
    ARTICULATOR_COLOURS,
    CHANNEL_LABELS,
    NUM_CHANNELS,
    NUM_SENSORS,
    articulator_handles,
    as_array,
    channel_array,
    channel_style,
    frame_times,
    kernel_array,
    new_figure,
    panel_grid,
    pick_gestures,
    rank_gestures,
)

__all__ = [
    "reconstruction_figure",
    "neural_vs_classical_figure",
    "gesture_traces_figure",
    "gesture_paths_figure",
    "planted_vs_learned_figure",
    "tensorboard_figures",
]

_DATA_COLOUR = "0.6"  # the original signal, under the coloured reconstruction
_CLASSICAL_COLOUR = "0.15"


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
        Original and reconstruction, normalized units.
    title : str, optional
    frame_rate : float, default 200
        Frames per second, for the time axis.

    Returns
    -------
    Figure with 12 axes (6 articulators x 2 coordinates).
    """
    x = channel_array(x, "x")
    x_hat = channel_array(x_hat, "x_hat")
    if x.shape != x_hat.shape:
        raise ValueError(f"x has shape {x.shape} but x_hat has shape {x_hat.shape}")
    frames = x.shape[1]
    time = frame_times(frames, frame_rate)
    figure = new_figure(11, 10)
    axes = _kinematic_panels(figure, frames, frame_rate)
    for channel in range(NUM_CHANNELS):
        ax = axes[channel // 2, channel % 2]
        ax.plot(time, x[channel], color=_DATA_COLOUR, lw=2.2, solid_capstyle="butt")
        ax.plot(time, x_hat[channel], lw=1.1, **channel_style(channel))
    figure.supylabel("position (normalized units)")
    figure.legend(
        handles=[Line2D([], [], color=_DATA_COLOUR, lw=2.2, label="original"),
                 Line2D([], [], color="0.2", lw=1.1, label="reconstruction (articulator colour)")],
        loc="outside upper right", ncols=2, fontsize=9, frameon=False)
    figure.suptitle(title or "Original and reconstructed kinematics", x=0.02, ha="left")
    return figure


def neural_vs_classical_figure(x, neural_hat, classical_hat, neural_scores, classical_scores, *,
                               frame_rate: float = FRAME_RATE, title: str | None = None,
                               phones: Sequence[tuple[float, str]] | None = None) -> Figure:
    """One utterance factorized by the auto-encoder and by classical convolutive NMF.

    Parameters
    ----------
    x, neural_hat, classical_hat : array, (12, T)
        Original and the two reconstructions (normalized units).
    neural_scores, classical_scores : array, (K1, T) and (K2, T)
    frame_rate : float, default 200
    title : str, optional
    phones : list of (end_time, phone), optional
        Phone segmentation, drawn as boundaries on the score panels.

    Returns
    -------
    Figure with 12 kinematic axes, 2 score heatmaps and their 2 colour bars.
    """
    x = channel_array(x, "x")
    neural_hat = channel_array(neural_hat, "neural_hat")
    classical_hat = channel_array(classical_hat, "classical_hat")
    if not (x.shape == neural_hat.shape == classical_hat.shape):
        raise ValueError(f"x {x.shape}, neural_hat {neural_hat.shape} and classical_hat {classical_hat.shape} differ")
    frames = x.shape[1]
    time = frame_times(frames, frame_rate)
    figure = new_figure(12, 14)
    top, bottom = figure.subfigures(2, 1, height_ratios=[2.6, 1.0])
    axes = _kinematic_panels(top, frames, frame_rate)
    for channel in range(NUM_CHANNELS):
        ax = axes[channel // 2, channel % 2]
        ax.plot(time, x[channel], color=_DATA_COLOUR, lw=2.4, solid_capstyle="butt")
        ax.plot(time, neural_hat[channel], lw=1.1, **channel_style(channel))
        ax.plot(time, classical_hat[channel], color=_CLASSICAL_COLOUR, lw=0.9, linestyle=":")
    top.supylabel("position (normalized units)")
    top.legend(
        handles=[Line2D([], [], color=_DATA_COLOUR, lw=2.4, label="original"),
                 Line2D([], [], color="0.2", lw=1.1, label="auto-encoder (articulator colour)"),
                 Line2D([], [], color=_CLASSICAL_COLOUR, lw=0.9, linestyle=":", label="classical CNMF")],
        loc="outside upper right", ncols=3, fontsize=9, frameon=False)
    top.suptitle(title or "Auto-encoder vs classical convolutive NMF", x=0.02, ha="left")
    score_axes = bottom.subplots(2, 1, sharex=True)
    for ax, scores, name in zip(score_axes, (neural_scores, classical_scores), ("auto-encoder", "classical CNMF")):
        draw_scores(bottom, ax, as_array(scores, f"{name} scores", 2), frame_rate, phones, f"{name}: gestural scores",
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
    kernels = kernel_array(kernels)
    num_gestures, _, length = kernels.shape
    ranking, share = rank_gestures(kernels, scores)
    chosen = pick_gestures(order, ranking, max_gestures, num_gestures)
    rows, columns = panel_grid(len(chosen))
    figure = new_figure(max(6.5, 2.9 * columns + 1.8), 2.3 * rows + 1.0)
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
    figure.supylabel("displacement (normalized units)")
    figure.legend(handles=articulator_handles(), loc="outside right upper", fontsize=8, frameon=False)
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
        Resting posture, normalized units.
    stats : mapping, optional
        Normalization statistics (see :func:`gestural.data.scaling.to_corpus_units`): with them the paths are
        in the corpus's units (mm when ``ema.stats`` is known), else normalized units.
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
    kernels = kernel_array(kernels)
    num_gestures, _, length = kernels.shape
    baseline = as_array(baseline, "baseline", 1)
    if baseline.shape != (NUM_CHANNELS,):
        raise ValueError(f"baseline: expected shape (12,), got {baseline.shape}")
    amplitudes = np.ones(num_gestures) if amplitudes is None else as_array(amplitudes, "amplitudes", 1)
    if amplitudes.shape != (num_gestures,):
        raise ValueError(f"amplitudes: expected shape ({num_gestures},), got {amplitudes.shape}")
    ranking, _ = rank_gestures(kernels, scores)
    chosen = pick_gestures(order, ranking, max_gestures, num_gestures)

    # Positions in corpus units: rest (12,) and, per chosen gesture, the L displaced postures.
    rest, unit = to_corpus_units(baseline, stats, speaker)
    posed, _ = to_corpus_units(baseline[:, None, None] + amplitudes[chosen][None, :, None]
                               * kernels[chosen].transpose(1, 0, 2), stats, speaker)  # (12, n, L)
    movement = posed - rest[:, None, None]
    factor = _exaggeration(rest, movement) if exaggeration == "auto" else float(exaggeration)
    paths = rest[:, None, None] + factor * movement

    rows, columns = panel_grid(len(chosen))
    figure = new_figure(max(6.5, 3.1 * columns + 1.8), 2.9 * rows + 1.0)
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
    handles = [Line2D([], [], color=colour, lw=2, label=name)
               for colour, name in zip(ARTICULATOR_COLOURS, ARTICULATORS)]
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
        :func:`gestural.evaluation.recovery.kernel_recovery` returns). A planted gesture without a
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
    planted = kernel_array(planted, "planted")
    methods = [("auto-encoder", kernel_array(learned, "learned"), assignment)]
    if classical is not None:
        methods.append(("classical", kernel_array(classical, "classical"), classical_assignment))
    methods = [(name, kernels, _matches(pairs, len(planted), len(kernels))) for name, kernels, pairs in methods]
    rows = min(len(planted), max(1, int(max_rows)))
    figure = new_figure(4.2 * (1 + len(methods)) + 1.6, 1.9 * rows + 1.2)
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
    figure.legend(handles=articulator_handles(), loc="outside right upper", fontsize=8, frameon=False)
    shown = "" if rows == len(planted) else f" (first {rows} of {len(planted)})"
    figure.suptitle(title or f"Planted gestures and their learned matches{shown}; "
                    "cos: lag-tolerant cosine, lag in frames", x=0.02, ha="left")
    return figure


def tensorboard_figures(x, reconstruction, kernels, scores) -> dict:
    """The figures a training run logs to TensorBoard every ``train.figure_every`` epochs:
    one held-out utterance's reconstruction, and the gestures with its scores."""
    return {"reconstruction": reconstruction_figure(x, reconstruction),
            "gestures": gesture_traces_figure(kernels, scores)}
