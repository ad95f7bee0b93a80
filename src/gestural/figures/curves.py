"""Figures of training and evaluation metrics: learning curves, per-channel correlation.

:func:`learning_curves_figure` draws the train stage's ``learning_curve.csv`` (losses and
how many gestures stay in use, per epoch); :func:`channel_correlation_figure` the evaluate
stage's per-channel correlation of reconstruction and data, auto-encoder against classical
CNMF. Colours and the other conventions are :mod:`gestural.figures.style`'s.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from gestural.figures.style import (
    ARTICULATOR_COLOURS,
    CHANNEL_LABELS,
    NUM_CHANNELS,
    as_array,
    message_figure,
    new_figure,
)

__all__ = [
    "learning_curves_figure",
    "channel_correlation_figure",
]


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
    figure = new_figure(11 if usage else 7, 4.2)
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
    axes[0].set_ylabel(f"loss ({loss.upper()}, normalized units)" if loss else "loss (normalized units)")
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
    series = [("auto-encoder", as_array(neural, "neural", 1), "#0072B2")]
    if classical is not None:
        series.append(("classical CNMF", as_array(classical, "classical", 1), "0.55"))
    for name, values, _ in series:
        if values.shape != (NUM_CHANNELS,):
            raise ValueError(f"{name}: expected {NUM_CHANNELS} values, got shape {values.shape}")
    figure = new_figure(10, 4.5)
    ax = figure.add_subplot()
    width = 0.8 / len(series)
    positions = np.arange(NUM_CHANNELS)
    lowest = 0.0
    for i, (name, values, colour) in enumerate(series):
        offset = (i - (len(series) - 1) / 2) * width
        finite = np.isfinite(values)
        mean = float(values[finite].mean()) if finite.any() else math.nan
        ax.bar(positions + offset, np.where(finite, values, 0.0), width, color=colour,
               label=f"{name} (mean r = {mean:.3f})")
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
