"""Figures of gestural scores: when each gesture acts, and with which phones.

A score heat map of one utterance with its phones (:func:`score_heatmap_figure`; its
drawing, :func:`draw_scores`, also serves :func:`gestural.figures.kinematics.neural_vs_classical_figure`),
and the gesture-phone association of the held-out frames (:func:`gesture_phone_association_figure`).
"Gestures in use" are those of :func:`gestural.core.metrics.score_sparsity`. Colours, input checks
and the other conventions are :mod:`gestural.figures.style`'s.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from matplotlib import colormaps
from matplotlib.colors import ListedColormap
from matplotlib.figure import Figure

from gestural.core.metrics import score_sparsity
from gestural.core.units import FRAME_RATE
from gestural.figures.style import as_array, message_figure, new_figure

__all__ = [
    "draw_phones",
    "draw_scores",
    "score_heatmap_figure",
    "gesture_phone_association_figure",
]

# Zero is white (masked); any non-zero score is at least a light blue: sparse scores read
# as marks on paper and a small score never vanishes into the background.
_SCORE_CMAP = ListedColormap(colormaps["Blues"](np.linspace(0.3, 1.0, 256))).with_extremes(under="white")
# Scores below this fraction of the largest are drawn white: classical NMF leaves a haze of
# tiny positive values everywhere that would otherwise tint the whole map.
_SHOWN_FRACTION = 0.01
_MAX_HEATMAP_COLUMNS = 1000
_SILENCE = {"sil", "pau", "#", "h#", "sp"}


# ------------------------------------------------------------------------ score heat map


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


def draw_phones(ax_strip, ax_scores, phones, duration: float, axes_width_inches: float) -> None:
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


def _gestures_in_use(scores: np.ndarray) -> np.ndarray:
    """Indices of the gestures in use in (K, T) scores, as :func:`gestural.core.metrics.score_sparsity` counts them.

    A NaN score counts as zero, so that one bad frame does not hide the whole map; scores
    without gestures or frames have none in use (``score_sparsity`` needs both).
    """
    if scores.size == 0:
        return np.zeros(0, dtype=np.int64)
    return np.flatnonzero(score_sparsity(np.where(np.isnan(scores), 0.0, scores))["in_use"])


def draw_scores(figure, ax, scores: np.ndarray, frame_rate: float, phones, title: str, ax_strip=None,
                max_row_labels: int = 25) -> None:
    """Heatmap of the gestures in use (rows) over time, with a colour bar.

    Parameters
    ----------
    figure : Figure or SubFigure
        Where the colour bar goes.
    ax : Axes
        The heatmap's axes.
    scores : ndarray, (K, T)
    frame_rate : float
    phones : list of (end_time, phone) or None
        Phone boundaries, drawn across ``ax`` unless ``ax_strip`` has them already.
    title : str
    ax_strip : Axes, optional
        The phone strip above ``ax`` (:func:`score_heatmap_figure`); the colour bar spans both.
    max_row_labels : int
        How many gesture labels fit the axes' height without overprinting.
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
        A Festival segmentation (:func:`gestural.data.ema.read_lab`): phone boundaries are drawn
        across the heatmap and the phones labelled in a strip above it.
    frame_rate : float, default 200
    title : str, optional

    Returns
    -------
    Figure with the heatmap and its colour bar (plus the phone strip when ``phones``).
    Gestures whose total score is below 1e-3 of the largest are left out (those not in use,
    by :func:`gestural.core.metrics.score_sparsity`).
    """
    scores = as_array(scores, "scores", 2)
    frames = scores.shape[1]
    rows = len(_gestures_in_use(scores))
    height = min(9.0, 2.2 + 0.16 * max(rows, 4)) + (0.6 if phones else 0.0)
    width = 12.0
    figure = new_figure(width, height)
    if phones:
        ax_strip, ax = figure.subplots(2, 1, sharex=True, height_ratios=[1, 6])
        draw_phones(ax_strip, ax, phones, frames / frame_rate, axes_width_inches=width * 0.85)
    else:
        ax_strip, ax = None, figure.subplots()
    heatmap_inches = height * (6 / 7 if phones else 1.0) - 1.3  # less title, time axis and phone strip
    draw_scores(figure, ax, scores, frame_rate, phones, "gestural score", ax_strip=ax_strip,
                max_row_labels=int(heatmap_inches / 0.17))  # ~0.17 in per 8-point label
    ax.set_xlabel("time (s)")
    figure.suptitle(title or "Gestural score", x=0.02, ha="left")
    return figure


# ---------------------------------------------------------------- gesture-phone association


def gesture_phone_association_figure(auc, gestures, phones: Sequence[str], phone_frames=None, *,
                                     min_phone_frames: int = 20, max_gestures: int = 60,
                                     frame_rate: float = FRAME_RATE, title: str | None = None) -> Figure:
    """Heat map of how strongly each gesture's activity goes with each phone (ROC-AUC).

    Phones (columns) are grouped by place of articulation, front of the mouth to back, then
    vowels and silence (:func:`gestural.evaluation.associations.order_phones`); each gesture (row) sits
    under its best phone, strongest first (:func:`gestural.evaluation.associations.order_gestures`), so
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
    from gestural.evaluation.associations import order_gestures, order_phones

    auc = as_array(auc, "auc", 2)
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
    figure = new_figure(width, height)
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
