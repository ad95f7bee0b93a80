"""DVC stage ``check``: validate every section of params.yaml before any stage touches an output.

DVC removes a stage's outputs before it runs the stage's command, so a param that only the
train stage refused (``dvc exp run -S num_gestures=0``) used to cost the workspace its model
and metrics. This stage depends on the whole of params.yaml and ``download`` depends on what
it writes, so DVC runs it before every other stage and stops here, with nothing removed.
It runs the very checks each stage runs on its own sections, plus whether the device and a
model to continue from are there.

Writes ``data/params_checked.json``, whose content is the same for every valid params.yaml:
after a change to one param this stage reruns, and nothing downstream reruns for it.
"""

from __future__ import annotations

import sys
from pathlib import Path

from gestural.core.devices import resolve_device
from gestural.core.files import write_json
from gestural.core.params import DataParams, ParamsError, load_params
from gestural.core.stage import run_stage
from gestural.evaluation.held_out import EvaluateParams
from gestural.figures.summary import PlotParams
from gestural.synthetic.generator import synthetic_config
from gestural.training.config import TrainConfig

OUT = Path("data/params_checked.json")


def main() -> int:
    params = load_params()  # duplicate and unknown top-level keys
    DataParams.from_params(params)  # data: and data.extract:
    synthetic_config(params)  # checked whatever data.source says: a section in the file is valid
    train = TrainConfig.from_params(params)
    EvaluateParams.from_params(params)
    PlotParams.from_params(params)
    resolve_device(train.device)  # the train and evaluate stages' device: is it there?
    if train.init not in ("random", "kmeans") and not Path(train.init).is_file():
        raise ParamsError(f"params.yaml train.init: no such file (got {train.init!r})")
    write_json(OUT, {"params.yaml": "valid"})
    print(f"check: params.yaml is valid ({OUT})")
    return 0


if __name__ == "__main__":
    sys.exit(run_stage("check", main))
