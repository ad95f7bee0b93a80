"""The benchmark suite's modules (scripts, not part of the installed package).

The scripts (``bench/run.py``, the driver, and ``bench/table.py``) put ``<repo>`` on sys.path,
so that these modules import as ``bench.<name>``; importing this package puts ``<repo>/src``
there too, so that the library imports as ``gestural`` without an install.
"""

from __future__ import annotations

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO / "src") not in sys.path:
    sys.path.insert(0, str(REPO / "src"))


def say(message: str) -> None:
    """A progress line on stderr (stdout is kept for the one JSON object)."""
    print(f"bench: {message}", file=sys.stderr, flush=True)
