"""The gestural score as phoneticians draw it: boxes, planted against exported.

One held-out utterance, one row per matched pair (the planted gesture's box in grey above the
learned gesture's exported intervals in blue, the very intervals of its TextGrid tier), the
learned gestures left without a planted partner below them, and the phones on top. The
intervals, the pairs and the phones come from the evaluate stage's ``gestural_scores.json``.
"""

from __future__ import annotations

from collections.abc import Sequence

from matplotlib.figure import Figure
from matplotlib.patches import Patch

from gestural.core.units import FRAME_RATE
from gestural.figures.scores import draw_phones
from gestural.figures.style import message_figure, new_figure

__all__ = ["gestural_score_figure"]

_PLANTED, _EXPORTED, _UNMATCHED = "0.55", "#0072B2", "#D55E00"


def _boxes(ax, row: float, intervals, gesture: int, colour: str, height: float) -> None:
    spans = [(onset / FRAME_RATE, (offset - onset) / FRAME_RATE) for g, onset, offset in intervals if g == gesture]
    if spans:
        ax.broken_barh(spans, (row - height / 2, height), facecolors=colour, edgecolors="none")


def gestural_score_figure(planted: Sequence[Sequence[int]], exported: Sequence[Sequence[int]],
                          pairs: Sequence[Sequence], planted_names: Sequence[str], frames: int, *,
                          phones=None, title: str = "") -> Figure:
    """Planted and exported gestural score of one utterance as boxes.

    Parameters
    ----------
    planted, exported : sequences of (gesture, onset, offset) in frames
        The planted activation intervals (gesture = planted index) and the exported ones
        (gesture = learned row).
    pairs : sequence of (planted, learned, iou, ...)
        The held-out matching; its order is the rows' order.
    planted_names : sequence of str
    frames : int
        The utterance's length.
    phones : sequence of (end_time_s, label), optional
    """
    if frames <= 0:
        return message_figure("an empty utterance has no gestural score", title=title)
    matched = {int(pair[1]) for pair in pairs}
    unmatched = sorted({int(g) for g, _, _ in exported} - matched)
    rows = len(pairs) + len(unmatched)
    if not rows:
        return message_figure("no gesture has an exported interval in this utterance", title=title)
    duration = frames / FRAME_RATE
    width = min(16.0, 5.0 + 2.5 * duration)
    figure = new_figure(width, 1.2 + 0.32 * rows)
    strip, ax = figure.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [0.6, rows * 0.32]})
    labels = []
    for row, (p, k, iou, *_) in enumerate(pairs):
        _boxes(ax, row - 0.2, planted, int(p), _PLANTED, 0.32)
        _boxes(ax, row + 0.2, exported, int(k), _EXPORTED, 0.32)
        labels.append(f"{planted_names[int(p)]} / g{int(k)} (IoU {float(iou):.2f})")
    for n, k in enumerate(unmatched):
        _boxes(ax, len(pairs) + n, exported, k, _UNMATCHED, 0.5)
        labels.append(f"g{k} (no planted partner)")
    ax.set_yticks(range(rows))
    ax.set_yticklabels(labels, fontsize=8)
    ax.set_ylim(rows - 0.5, -0.5)
    ax.set_xlim(0, duration)
    ax.set_xlabel("time (s)")
    ax.grid(axis="x", color="0.9", lw=0.5)
    handles = [Patch(color=c, label=name) for c, name in
               ((_PLANTED, "planted"), (_EXPORTED, "exported (TextGrid)"), (_UNMATCHED, "exported, no partner"))]
    figure.legend(handles=handles, loc="outside lower center", fontsize=8, ncols=3, frameon=False)
    draw_phones(strip, ax, phones, duration, axes_width_inches=width * 0.75)
    if title:
        strip.set_title(title, fontsize=10)
    return figure
