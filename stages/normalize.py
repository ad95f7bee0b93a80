"""DVC stage ``normalize``: train/test split and per-channel [0, 1] scaling, ``data/npy`` -> ``data/normalized``."""

from __future__ import annotations

import sys
from pathlib import Path

from gestural.core.params import DataParams, load_params
from gestural.core.stage import run_stage
from gestural.data.normalize import normalize_corpus

IN_DIR = Path("data/npy")
OUT_DIR = Path("data/normalized")


def main() -> int:
    data = DataParams.from_params(load_params())
    stats = normalize_corpus(IN_DIR, OUT_DIR, data)
    counts = stats["counts"]
    print(
        f"normalize: train {counts['train']['utterances']} utterances ({counts['train']['frames']} frames), "
        f"test {counts['test']['utterances']} ({counts['test']['frames']} frames) -> {OUT_DIR}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(run_stage("normalize", main))
