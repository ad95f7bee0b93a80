"""DVC stage ``train``: learn gestures and gestural scores from ``data/normalized``.

Writes models/model.pt, models/gestures.npy, metrics/train.json, reports/timing/train.json and
plots/train/learning_curve.csv; logs to runs/<run name> for TensorBoard. The per-epoch
checkpoint (checkpoints/train.pt) is no DVC output: a killed run resumes from it when the
settings, data and code are the same, and it is removed once the run has finished.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from gestural.core.params import load_params
from gestural.core.stage import run_stage
from gestural.data.dataset import NormalizedCorpus
from gestural.training.config import TrainConfig
from gestural.training.outputs import (
    CONVERGED_CHANGE,
    CONVERGENCE_EPOCHS,
    default_run_name,
    held_out_loss_change,
    write_training_outputs,
)
from gestural.training.trainer import Trainer

DATA_DIR = Path("data/normalized")
CHECKPOINT = Path("checkpoints/train.pt")


def runs_dir() -> Path:
    """``runs/`` of the project: a queued experiment runs in a temporary copy that DVC deletes
    afterwards, and sets DVC_ROOT to the project it belongs to."""
    return Path(os.environ.get("DVC_ROOT", ".")) / "runs"


def main() -> int:
    params = load_params()
    config = TrainConfig.from_params(params)
    corpus = NormalizedCorpus.load(DATA_DIR)
    run_name = default_run_name(config)
    print(f"train: {len(corpus.ids('train'))} train / {len(corpus.ids('test'))} held-out utterances; "
          f"TensorBoard run {runs_dir() / run_name}", flush=True)
    data = {f"data.{key}": value for key, value in (params.get("data") or {}).items()}
    data["synthetic.kind"] = params["synthetic"]["kind"]
    # TensorBoard figures only (runs/ is no DVC output): not among the stage's deps.
    from gestural.figures.kinematics import tensorboard_figures

    trainer = Trainer(config, corpus.utterances("train"), corpus.utterances("test"),
                      checkpoint_path=CHECKPOINT, log_dir=runs_dir() / run_name, extra_hparams=data,
                      figures=tensorboard_figures)
    result = trainer.fit()
    write_training_outputs(result, config, corpus.stats, Path("models"), Path("metrics/train.json"),
                           Path("plots/train/learning_curve.csv"), Path("reports/timing/train.json"))
    CHECKPOINT.unlink(missing_ok=True)
    last = result.history[-1]
    print(f"train: {result.seconds:.1f} s, {result.frames_per_second / 1e6:.3f} M frames/s on {result.device}; "
          f"held-out {config.loss} {last.test_reconstruction:.5f}, gestures in use {last.gestures_in_use:.2f}")
    change = held_out_loss_change(result.history)
    if change is not None and change >= CONVERGED_CHANGE:
        print(f"train: not converged: the held-out loss fell {100 * change:.1f} % over the last {CONVERGENCE_EPOCHS} "
              f"epochs (converged: < {100 * CONVERGED_CHANGE:g} %); more steps would fit better, e.g. "
              f"-S epochs={2 * config.epochs}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(run_stage("train", main))
