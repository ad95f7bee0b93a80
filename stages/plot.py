"""DVC stage ``plot``: the summary figures, ``plots/figures/*.png`` (see :mod:`gestural.figures.summary`),
and the gesture kernels as a table, ``plots/tables/gesture_kernels.csv`` (in mm per speaker where
the corpus has ``ema.stats``; see :func:`gestural.evaluation.export.kernel_rows`).

Reads ``models/model.pt``, ``models/gestures.npy``, ``plots/train/learning_curve.csv``, the
evaluate stage's ``evaluation/`` and ``plots/eval/per_channel_correlation.csv``, and the
corpus (``data/normalized``, ``data/extracted``) for phone labels and units.
"""

from __future__ import annotations

import sys
from pathlib import Path

from gestural.core.params import load_params
from gestural.core.stage import run_stage
from gestural.data.dataset import STATS_FILE
from gestural.evaluation.export import export_kernel_table
from gestural.figures.summary import FigureInputs, PlotParams, make_figures

INPUTS = FigureInputs(
    model=Path("models/model.pt"),
    gestures=Path("models/gestures.npy"),
    learning_curve=Path("plots/train/learning_curve.csv"),
    evaluation=Path("evaluation"),
    correlation=Path("plots/eval/per_channel_correlation.csv"),
    normalized=Path("data/normalized"),
    extracted=Path("data/extracted"),
)
OUT_DIR = Path("plots/figures")
KERNEL_TABLE = Path("plots/tables/gesture_kernels.csv")


def main() -> int:
    params = PlotParams.from_params(load_params())
    paths = make_figures(OUT_DIR, INPUTS, params)
    print(f"plot: {len(paths)} figures -> {OUT_DIR}/ ({', '.join(p.name for p in paths)})")
    rows = export_kernel_table(KERNEL_TABLE, INPUTS.gestures, INPUTS.normalized / STATS_FILE)
    print(f"plot: gesture kernels ({rows} rows) -> {KERNEL_TABLE}")
    return 0


if __name__ == "__main__":
    sys.exit(run_stage("plot", main))
