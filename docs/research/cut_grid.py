"""Research: a model's held-out export under other cuts, scored as the evaluate stage scores it.

Re-segments the held-out scores of models/model.pt (in the folder this runs from; run it with
the environment the model was trained with, e.g. TADA=1 for the patched decoder) at each level
(a share of the gesture's training maximum) and peak share of the grid, and prints the matched
IoU, onset and offset F1, gestures on per frame and mean interval. SATURATE=1 cuts the
activations 1 - exp(-H) instead of the scores H (the patch's SAT=1). A cut chosen here is
chosen with the truth: a ceiling, not a setting.

    LEVELS="0.1 0.2 0.3" SHARES="0 0.5" python docs/research/cut_grid.py
"""

import dataclasses
import os
import sys

import numpy as np

sys.path.insert(0, "src")
from gestural.data.batches import UtteranceStore  # noqa: E402
from gestural.data.dataset import NormalizedCorpus  # noqa: E402
from gestural.evaluation.factorizations import neural_factorization  # noqa: E402
from gestural.evaluation.score_match import exported_intervals, gestural_score_metrics  # noqa: E402
from gestural.evaluation.segmentation import Segmentation  # noqa: E402
from gestural.model.file import load_model  # noqa: E402
from gestural.synthetic.ground_truth import load_activations  # noqa: E402

corpus = NormalizedCorpus.load("data/normalized")
utterances = corpus.utterances("test")
_names, planted = load_activations("data/raw/ground_truth.npz", corpus.ids("test"), [u.shape[1] for u in utterances])
loaded = load_model("models/model.pt")
store = UtteranceStore([np.ascontiguousarray(u, dtype=np.float32) for u in utterances], "cpu")
scores = neural_factorization(loaded.model, store).scores
segmentation = Segmentation.of_model(loaded.model, loaded.score_scale)
if int(os.environ.get("SATURATE", "0")):
    scores = [1 - np.exp(-s) for s in scores]
    segmentation = dataclasses.replace(segmentation, scale=1 - np.exp(-np.asarray(loaded.score_scale)))
keys = ("score_iou", "score_onset_f1", "score_offset_f1", "score_on_per_frame", "score_interval_ms")
for level in (float(v) for v in os.environ.get("LEVELS", "0.2 0.3 0.4 0.5").split()):
    for share in (float(v) for v in os.environ.get("SHARES", "0 0.5 0.8").split()):
        cut = dataclasses.replace(segmentation, relative_height=level, peak_share=share)
        metrics, _ = gestural_score_metrics(planted, [exported_intervals(s, cut) for s in scores], scores, tolerance=5)
        print(f"level {level} share {share}", {k: round(metrics[k], 3) for k in keys})
