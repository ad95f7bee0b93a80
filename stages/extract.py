"""DVC stage ``extract``: unpack ``data/raw/emadata.tgz`` into ``data/extracted/``, safely and atomically."""

from __future__ import annotations

import sys
from pathlib import Path

from gestural.archive import ArchiveError, safe_extract

ARCHIVE = Path("data/raw/emadata.tgz")
OUT_DIR = Path("data/extracted")


def main() -> int:
    try:
        names = safe_extract(ARCHIVE, OUT_DIR)
    except ArchiveError as error:
        print(f"extract: {error}", file=sys.stderr)
        return 1
    print(f"extract: {len(names)} files into {OUT_DIR}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
