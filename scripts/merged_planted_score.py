"""What an otherwise perfect export scores when some planted gestures cannot be told apart.

Exports the planted score of the held-out utterances with each ``--merge`` group of planted
gestures merged into one gesture, and scores it as the evaluate stage scores the model's
export (:func:`gestural.evaluation.score_match.gestural_score_metrics`): the ceiling of the
matched IoU and boundary F1 for a model that learns those gestures as one. By default the
articulatory corpus's pairs that differ in size rather than direction: lip closure and lip
dental (both close the lips to contact), tongue-tip closure and critical (the tip against the
palate or 1 mm from it), /iy/ and /eh/ (the same fronting, less of it). Synthetic corpora
only. Run from the project root after ``dvc repro``: ``python scripts/merged_planted_score.py``
(seconds), or e.g. ``--merge tt_lateral+tt_retroflex`` for another set.

``--model models/model.pt`` also scores that model's export (the evaluate stage's segmentation
of its held-out scores, as the TextGrid tiers get it) against the merged planted score: how
well it finds the gestures it could tell apart, beside the ceiling above.
"""

from __future__ import annotations

import argparse
import json
import sys

import numpy as np

from gestural.data.batches import UtteranceStore
from gestural.data.dataset import NormalizedCorpus
from gestural.evaluation.factorizations import neural_factorization
from gestural.evaluation.score_match import (
    exported_intervals,
    gestural_score_metrics,
    merged_activations,
    merged_planted_intervals,
)
from gestural.evaluation.segmentation import Segmentation
from gestural.model.file import ModelFileError, load_model
from gestural.synthetic.ground_truth import load_activations

DEFAULT_MERGES = ("lip_closure+lip_dental", "tt_closure+tt_critical", "v_i+v_e")
REPORTED = ("score_iou", "score_onset_f1", "score_offset_f1")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default="data/normalized")
    parser.add_argument("--truth", default="data/raw/ground_truth.npz")
    parser.add_argument("--merge", action="append", metavar="A+B",
                        help=f"planted gestures merged into one (repeatable; default {' '.join(DEFAULT_MERGES)})")
    parser.add_argument("--tolerance", type=int, default=5, help="boundary tolerance in frames (default 5 = 25 ms)")
    parser.add_argument("--model", help="also score this model file's export against the merged planted score")
    args = parser.parse_args()
    corpus = NormalizedCorpus.load(args.data)
    utterances = corpus.utterances("test")
    try:
        names, activations = load_activations(args.truth, corpus.ids("test"), [u.shape[1] for u in utterances])
    except ValueError as error:
        sys.exit(f"merged_planted_score: {error}")
    names = [str(name) for name in names]
    groups = []
    for merge in args.merge or DEFAULT_MERGES:
        members = merge.split("+")
        unknown = [name for name in members if name not in names]
        if unknown or len(members) < 2:
            sys.exit(f"merged_planted_score: --merge {merge}: expected two or more of {', '.join(names)}")
        groups.append([names.index(name) for name in members])
    merged = {p for group in groups for p in group}
    groups += [[p] for p in range(len(names)) if p not in merged]
    intervals = [merged_planted_intervals(active, groups) for active in activations]
    scores = [np.zeros((len(groups), active.shape[1])) for active in activations]
    metrics, _ = gestural_score_metrics(activations, intervals, scores, tolerance=args.tolerance)
    report = {"merged": [" + ".join(names[p] for p in group) for group in groups if len(group) > 1],
              **{key: round(metrics[key], 3) for key in REPORTED}}
    if args.model:
        report["model"] = {key: round(value, 3) for key, value in
                           model_against_merged(args.model, utterances, activations, groups, args.tolerance).items()}
    print(json.dumps(report, indent=2))


def model_against_merged(model_path: str, utterances, activations, groups, tolerance: int) -> dict:
    """The model's exported held-out score against the planted score with ``groups`` merged."""
    try:
        loaded = load_model(model_path)
    except ModelFileError as error:
        sys.exit(f"merged_planted_score: {error}")
    store = UtteranceStore([np.ascontiguousarray(u, dtype=np.float32) for u in utterances], "cpu")
    scores = neural_factorization(loaded.model, store).scores
    segmentation = Segmentation.of_model(loaded.model, loaded.score_scale)
    intervals = [exported_intervals(row, segmentation) for row in scores]
    merged = [merged_activations(active, groups) for active in activations]
    metrics, _ = gestural_score_metrics(merged, intervals, scores, tolerance=tolerance)
    return {key: metrics[key] for key in REPORTED}


if __name__ == "__main__":
    main()
