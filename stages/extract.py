"""DVC stage ``extract``: unpack ``data/raw/emadata.tgz`` into ``data/extracted/``, safely and atomically.

The ``data.extract`` caps of params.yaml bound what the archive may unpack to; temporaries
left by a killed earlier run are removed first (see :func:`gestural.core.files.clean_stale_temporaries`).
"""

from __future__ import annotations

import sys
from pathlib import Path

from gestural.core.params import ExtractLimits, load_params
from gestural.core.stage import run_stage
from gestural.data.archive import safe_extract

ARCHIVE = Path("data/raw/emadata.tgz")
OUT_DIR = Path("data/extracted")


def main() -> int:
    limits = ExtractLimits.from_params(load_params())
    names = safe_extract(ARCHIVE, OUT_DIR, limits)
    print(f"extract: {len(names)} files into {OUT_DIR}")
    return 0


if __name__ == "__main__":
    sys.exit(run_stage("extract", main))
