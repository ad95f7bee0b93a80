"""DVC stage ``normalize``: train/test split and per-channel [0, 1] scaling, ``data/npy`` -> ``data/normalized``."""

from __future__ import annotations

import sys
from pathlib import Path

from gestural.dataset import CorpusFileError
from gestural.normalize import NormalizeError, normalize_corpus
from gestural.params import DataParams, ParamsError, load_params

IN_DIR = Path("data/npy")
OUT_DIR = Path("data/normalized")


def main() -> int:
    try:
        data = DataParams.from_params(load_params())
        stats = normalize_corpus(IN_DIR, OUT_DIR, data)
    except (ParamsError, CorpusFileError, NormalizeError) as error:
        print(f"normalize: {error}", file=sys.stderr)
        return 1
    counts = stats["counts"]
    print(
        f"normalize: train {counts['train']['utterances']} utterances ({counts['train']['frames']} frames), "
        f"test {counts['test']['utterances']} ({counts['test']['frames']} frames) -> {OUT_DIR}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
