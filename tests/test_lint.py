"""The code passes the linter configured in pyproject.toml ([tool.ruff])."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_ruff_check_is_clean():
    try:
        import ruff  # noqa: F401  (installed by scripts/setup.sh from requirements.lock)
    except ImportError:
        raise AssertionError("ruff is not installed: run ./scripts/setup.sh") from None
    result = subprocess.run([sys.executable, "-m", "ruff", "check", "--no-cache", "src", "tests", "bench", "scripts",
                             "stages"], cwd=ROOT, capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
