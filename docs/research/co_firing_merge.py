"""Research: merge learned gestures whose exported intervals overlap on the training utterances.

Run from a project root after `dvc repro` (or from a research copy: SRC=/path/to/copy holds the
model, this root the data). Prints, for the unmerged export and merges at training IoU 0.7, 0.6
and 0.5 (average linkage on 1 - IoU between the learned gestures' exported frames; a merged tier
is on where at least half its members are, runs shorter than 6 frames dropped), the evaluate
stage's matched IoU, onset and offset F1 and gestures on per frame on the held-out utterances.
"""

import os
import sys

import numpy as np
from scipy.cluster.hierarchy import fcluster, linkage
from scipy.spatial.distance import squareform

sys.path.insert(0, "src")
from gestural.data.batches import UtteranceStore  # noqa: E402
from gestural.data.dataset import NormalizedCorpus  # noqa: E402
from gestural.evaluation.factorizations import neural_factorization  # noqa: E402
from gestural.evaluation.score_match import (  # noqa: E402
    exported_intervals,
    gestural_score_metrics,
    interval_mask,
    mask_runs,
)
from gestural.evaluation.segmentation import Segmentation  # noqa: E402
from gestural.model.file import load_model  # noqa: E402
from gestural.synthetic.ground_truth import load_activations  # noqa: E402

root = os.environ.get("SRC", ".")
corpus = NormalizedCorpus.load("data/normalized")
loaded = load_model(f"{root}/models/model.pt")
segmentation = Segmentation.of_model(loaded.model, loaded.score_scale)


def exported_masks(split):
    utterances = corpus.utterances(split)
    store = UtteranceStore([np.ascontiguousarray(u, dtype=np.float32) for u in utterances], "cpu")
    scores = neural_factorization(loaded.model, store).scores
    count = scores[0].shape[0]
    return utterances, [interval_mask(exported_intervals(s, segmentation), count, s.shape[1]) for s in scores]


_, train_masks = exported_masks("train")
count = train_masks[0].shape[0]
both = sum(m.astype(float) @ m.T.astype(float) for m in train_masks)
alone = np.diag(both)
union = alone[:, None] + alone[None, :] - both
overlap = np.divide(both, union, out=np.zeros_like(both), where=union > 0)
utterances, test_masks = exported_masks("test")
names, planted = load_activations("data/raw/ground_truth.npz", corpus.ids("test"), [u.shape[1] for u in utterances])
for level in (None, 0.7, 0.6, 0.5):
    if level is None:
        labels = np.arange(count)
    else:
        distance = 1 - overlap
        np.fill_diagonal(distance, 0)
        labels = fcluster(linkage(squareform(distance, checks=False), "average"), 1 - level, "distance") - 1
    groups = labels.max() + 1
    intervals = []
    for mask in test_masks:
        tiers = []
        for g in range(groups):
            members = mask[labels == g]
            on = (members.sum(0) * 2 >= len(members)) & members.any(0)
            tiers += [(g, int(a), int(b)) for a, b in zip(*mask_runs(on)) if b - a >= 6]
        intervals.append(tiers)
    metrics, _ = gestural_score_metrics(planted, intervals, [np.zeros((groups, m.shape[1])) for m in test_masks],
                                        tolerance=5)
    print(level, groups, {k: round(metrics[k], 3) for k in
                          ("score_iou", "score_onset_f1", "score_offset_f1", "score_on_per_frame")})
