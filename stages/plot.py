"""DVC stage ``plot``: the summary figures, ``plots/figures/*.png`` (see :mod:`gestural.figures`).

Reads ``models/model.pt``, ``models/gestures.npy``, ``plots/train/learning_curve.csv``, the
evaluate stage's ``evaluation/`` and ``plots/eval/per_channel_correlation.csv``, and the
corpus (``data/normalized``, ``data/extracted``) for phone labels and units.
"""

from __future__ import annotations

import sys
from pathlib import Path

from gestural.figures import FigureInputError, FigureInputs, PlotParams, make_figures
from gestural.params import ParamsError, load_params

OUT_DIR = Path("plots/figures")


def main() -> int:
    try:
        params = PlotParams.from_params(load_params())
        paths = make_figures(OUT_DIR, FigureInputs(), params)
    except (ParamsError, FigureInputError) as error:
        print(f"plot: {error}", file=sys.stderr)
        return 1
    print(f"plot: {len(paths)} figures -> {OUT_DIR}/ ({', '.join(p.name for p in paths)})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
