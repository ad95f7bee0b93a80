"""DVC stage ``evaluate``: the trained network vs classical ConvNMF on the held-out utterances.

Reads ``models/model.pt``, ``data/normalized`` and, when present, ``data/raw/ground_truth.npz``
and ``metrics/train.json``; writes ``metrics/eval.json``,
``plots/eval/per_channel_correlation.csv`` and ``evaluation/`` (see
:mod:`gestural.evaluation`).
"""

from __future__ import annotations

import sys
from pathlib import Path

from gestural.evaluation import EvaluateParams, EvaluationError, run_evaluation, write_outputs
from gestural.params import ParamsError, load_params

MODEL = Path("models/model.pt")
DATA_DIR = Path("data/normalized")
TRUTH = Path("data/raw/ground_truth.npz")
TRAIN_METRICS = Path("metrics/train.json")
METRICS = Path("metrics/eval.json")
PLOT = Path("plots/eval/per_channel_correlation.csv")
OUT_DIR = Path("evaluation")


def main() -> int:
    try:
        params = EvaluateParams.from_params(load_params())
        result = run_evaluation(params, model_path=MODEL, data_dir=DATA_DIR, truth_path=TRUTH,
                                train_metrics_path=TRAIN_METRICS)
    except (ParamsError, EvaluationError) as error:
        print(f"evaluate: {error}", file=sys.stderr)
        return 1
    write_outputs(result, metrics_path=METRICS, plot_path=PLOT, out_dir=OUT_DIR)
    neural, classical = result.metrics["neural"], result.metrics["classical"]

    def show(value) -> str:
        return "n/a" if value is None else f"{value:.4f}"

    for key in ("variance_explained", "rmse", "seqnmf_similarity", "kernel_cosine", "onset_f1"):
        print(f"evaluate: {key:20s} neural {show(neural[key])}  classical {show(classical[key])}")
    print(f"evaluate: -> {METRICS}, {PLOT}, {OUT_DIR}/")
    return 0


if __name__ == "__main__":
    sys.exit(main())
