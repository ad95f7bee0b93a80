"""DVC stage ``evaluate``: the trained network vs classical ConvNMF on the held-out utterances.

Reads ``models/model.pt``, ``data/normalized`` and, when present, ``data/raw/ground_truth.npz``
and ``reports/timing/train.json``; writes ``metrics/eval.json``, ``reports/timing/evaluate.json``,
``plots/eval/per_channel_correlation.csv`` and ``evaluation/`` (see :mod:`gestural.evaluation.held_out`;
the files: :mod:`gestural.evaluation.files`), with ``evaluation/gesture_phone_association.csv``
from the lab files of ``data/extracted`` (see :mod:`gestural.evaluation.associations`).
"""

from __future__ import annotations

import sys
from pathlib import Path

from gestural.core.params import load_params
from gestural.core.stage import run_stage
from gestural.evaluation.associations import ASSOCIATION_FILE, held_out_associations, save_associations
from gestural.evaluation.export import annotate_examples
from gestural.evaluation.files import write_outputs
from gestural.evaluation.held_out import EvaluateParams, run_evaluation

MODEL = Path("models/model.pt")
DATA_DIR = Path("data/normalized")
EXTRACTED = Path("data/extracted")
TRUTH = Path("data/raw/ground_truth.npz")
TRAIN_TIMING = Path("reports/timing/train.json")
TIMING = Path("reports/timing/evaluate.json")
METRICS = Path("metrics/eval.json")
PLOT = Path("plots/eval/per_channel_correlation.csv")
OUT_DIR = Path("evaluation")


def main() -> int:
    params = EvaluateParams.from_params(load_params())
    result = run_evaluation(params, model_path=MODEL, data_dir=DATA_DIR, truth_path=TRUTH,
                            train_metrics_path=TRAIN_TIMING)
    associations, labelled = held_out_associations(result.test_ids, result.neural_scores, result.win_size,
                                                   in_use=result.neural_in_use, normalized=DATA_DIR,
                                                   extracted=EXTRACTED)
    write_outputs(result, metrics_path=METRICS, plot_path=PLOT, out_dir=OUT_DIR, timing_path=TIMING)
    save_associations(OUT_DIR / ASSOCIATION_FILE, associations)
    annotated = annotate_examples(OUT_DIR / "examples", result.examples["ids"], result.test_ids, result.neural_scores,
                                  result.neural_segmentation, normalized=DATA_DIR, extracted=EXTRACTED)
    neural, classical = result.metrics["neural"], result.metrics["classical"]

    def show(value) -> str:
        return "n/a" if value is None else f"{value:.4f}"

    for key in ("variance_explained", "rmse", "activation_auc", "seqnmf_similarity", "kernel_cosine", "onset_f1",
                "score_iou", "score_onset_f1", "score_on_per_frame"):
        print(f"evaluate: {key:20s} neural {show(neural[key])}  classical {show(classical[key])}")
    if neural["planted_on_per_frame"] is not None:
        print(f"evaluate: {'planted_on_per_frame':20s} {show(neural['planted_on_per_frame'])} (exported score: "
              f"score_* above; the example's boxes: plots/figures/gestural_score.png)")
    floor = result.metrics.get("raw_channels")
    if floor:
        print(f"evaluate: {'activation_auc':20s} raw channels (floor) {show(floor['activation_auc'])}")
    print(f"evaluate: gesture-phone associations of {len(associations.gestures)} gestures in use x "
          f"{len(associations.phones)} phones ({labelled} of {len(result.test_ids)} held-out utterances labelled)")
    print(f"evaluate: TextGrid and events.csv of {len(annotated)} example utterances -> {OUT_DIR}/examples/")
    print(f"evaluate: -> {METRICS}, {PLOT}, {OUT_DIR}/")
    return 0


if __name__ == "__main__":
    sys.exit(run_stage("evaluate", main))
