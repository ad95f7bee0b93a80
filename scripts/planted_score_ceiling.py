"""How much of the held-out movement the planted gestural score explains through the model's decoder.

Fits the decoder that params.yaml describes (win_size, train.kernels, train.response_frames,
train.release_response), one gesture per planted gesture, with the scores fixed to the planted
boxes: at height 1, and with a free height per planted interval (an oracle); ``--sensor-map N``
asks the same of that decoder followed by a nonlinear map of the sensors. Compare with the
trained model's variance explained (metrics/eval.json): see
:mod:`gestural.evaluation.planted_ceiling`. Synthetic corpora only. Run from the project root
after ``dvc repro``: ``python scripts/planted_score_ceiling.py`` (about 10 minutes on one core;
with ``--sensor-map`` several times that).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

from gestural.core.params import load_params
from gestural.data.dataset import NormalizedCorpus
from gestural.evaluation.planted_ceiling import PlantedBoxes, decoder_ceiling
from gestural.synthetic.ground_truth import load_activations
from gestural.training.config import TrainConfig


def boxes(corpus: NormalizedCorpus, split: str, truth: str) -> PlantedBoxes:
    utterances = corpus.utterances(split)
    _names, activations = load_activations(truth, corpus.ids(split), [u.shape[1] for u in utterances])
    return PlantedBoxes.of(utterances, activations)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default="data/normalized")
    parser.add_argument("--truth", default="data/raw/ground_truth.npz")
    parser.add_argument("--steps", type=int, default=1500, help="Adam steps of the decoder fit (full batch)")
    parser.add_argument("--sensor-map", type=int, default=0, metavar="HIDDEN",
                        help="> 0: the decoder followed by a per-frame MLP over the sensors, this many hidden units")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    if args.sensor_map < 0:
        sys.exit(f"planted_score_ceiling: --sensor-map must be >= 0 (got {args.sensor_map})")
    torch.set_num_threads(args.threads)
    config = TrainConfig.from_params(load_params()).model_config()
    corpus = NormalizedCorpus.load(args.data)
    try:
        train, test = boxes(corpus, "train", args.truth), boxes(corpus, "test", args.truth)
    except ValueError as error:
        sys.exit(f"planted_score_ceiling: {error}")
    result = {kind: decoder_ceiling(train, test, config, heights=kind == "free_heights", sensor_map=args.sensor_map,
                                    steps=args.steps)
              for kind in ("unit_heights", "free_heights")}
    result["sensor_map"] = args.sensor_map
    if Path("metrics/eval.json").is_file():
        with open("metrics/eval.json") as handle:
            result["trained_model_variance_explained"] = json.load(handle)["neural"]["variance_explained"]
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
