"""DVC stage ``nema2npy``: pair, read and clean the EMA files of ``data/extracted/``.

Writes ``data/npy/`` (frames.npy, index.csv, report.json, speakers.json) and the
summary ``metrics/data.json``. Policies (pairing, NaN runs, bad files) are
described in :mod:`gestural.data.corpus`.
"""

from __future__ import annotations

import sys
from pathlib import Path

from gestural.core.files import write_json
from gestural.core.params import DataParams, load_params
from gestural.core.stage import run_stage
from gestural.data.corpus import build_npy, data_metrics

IN_DIR = Path("data/extracted")
OUT_DIR = Path("data/npy")
METRICS = Path("metrics/data.json")


def main() -> int:
    data = DataParams.from_params(load_params())
    report = build_npy(IN_DIR, OUT_DIR, data)
    metrics = data_metrics(report)
    write_json(METRICS, metrics)
    print(
        f"nema2npy: kept {metrics['utterances_kept']} of {report['ema_files']} utterances "
        f"({metrics['frames']} frames, {metrics['hours']} h); dropped "
        f"{ {k: v for k, v in metrics['dropped_by_reason'].items() if v} } -> {OUT_DIR}/report.json"
    )
    return 0


if __name__ == "__main__":
    sys.exit(run_stage("nema2npy", main))
