"""Does training at the defaults converge whatever the corpus size? (issue: training length)

Generates articulatory corpora of about 60k and 3M frames in memory, trains each with the
params.yaml defaults (epochs x train.steps_per_epoch steps) and prints the held-out loss
over the last epochs: a converged run changes by less than
train_outputs.CONVERGED_CHANGE (1 %) over its last five epochs.

    python bench/corpus_size.py [--threads 2] [--epochs N] [--sizes 60k 3M]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from gestural.synthetic.articulatory import ArticulatoryConfig, generate  # noqa: E402
from gestural.training.config import TrainConfig  # noqa: E402
from gestural.training.outputs import CONVERGENCE_EPOCHS, held_out_loss_change  # noqa: E402
from gestural.training.trainer import Trainer  # noqa: E402

TOP_LEVEL = ("segment_len", "win_size", "num_gestures", "sparse", "batch_size", "model", "loss", "epochs", "seed",
             "device")


def corpus(speakers: int, per_speaker: int):
    recordings = generate(ArticulatoryConfig(), [f"s{i}" for i in range(speakers)], per_speaker, seed=0)
    positions = np.concatenate([r.positions for r in recordings])
    low, high = positions.min(0), positions.max(0)
    utterances = [((r.positions - low) / (high - low)).T.astype(np.float32) for r in recordings]
    # Every fifth utterance is held out, so that every speaker is in both splits (the
    # recordings come speaker by speaker: a tail split would hold out unseen speakers).
    return [u for i, u in enumerate(utterances) if i % 5], utterances[::5]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=None, help="override params.yaml epochs")
    parser.add_argument("--sizes", nargs="+", default=["60k", "3M"], choices=["60k", "3M"])
    args = parser.parse_args()
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    values = {key: params[key] for key in TOP_LEVEL} | dict(params["train"])
    values.update(threads=args.threads, figure_every=10_000)
    if args.epochs:
        values["epochs"] = args.epochs
    config = TrainConfig(**values)
    results = []
    sizes = {"60k": ("60k frames", 1, 160), "3M": ("3M frames", 8, 1000)}
    for label, speakers, per_speaker in (sizes[size] for size in args.sizes):
        train, test = corpus(speakers, per_speaker)
        frames = sum(u.shape[1] for u in train + test)
        started = time.perf_counter()
        history = Trainer(config, train, test, progress=False).fit().history
        losses = [row.test_reconstruction for row in history]
        change = held_out_loss_change(history)
        results.append({"corpus": label, "frames": frames, "steps": len(history) * config.steps_per_epoch,
                        "seconds": round(time.perf_counter() - started, 1),
                        "held_out_loss_last_epochs": [round(v, 6) for v in losses[-1 - CONVERGENCE_EPOCHS:]],
                        f"relative_change_last_{CONVERGENCE_EPOCHS}_epochs": change})
        print(json.dumps(results[-1]), flush=True)


if __name__ == "__main__":
    main()
