#!/usr/bin/env python
"""The README's Performance table, built from the committed results of bench/run.py.

    python bench/table.py [bench/results/*.json]

Reads every full run (``bench/results/<device>.json``, ``<device>-<corpus>.json`` for the
synthetic corpus kind that params.yaml does not use; ``*-quick.json`` smoke runs are left
out) and prints one Markdown table: a row per device and corpus, training speed at the
defaults and at the fastest setting measured, time to quality (training seconds until
held-out variance explained reaches 99 % of its final value, batch 16 at the defaults), the
quality reached (with kernel cosine and onset F1 where the corpus plants kernels), the same
for the largest batch trained with Muon on as many frames, evaluation speed, and
the data stages on the real-size corpus. A device without a results file is printed as
"not measured".
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the bench package, run as a script too

from bench.result_files import full_runs  # noqa: E402

DEVICE_TYPES = ("cpu", "cuda")
COLUMNS = ("device (corpus)", "training, defaults (batch 16, fp32)", "fastest training setting",
           "time to quality (batch 16)", "held-out VE / AUC (kernel cosine / onset F1)",
           "largest batch, Muon, same frames: quality, time to quality", "evaluation", "nema2npy + normalize")


def _mega(frames_per_s: float | None) -> str:
    return "" if frames_per_s is None else f"{frames_per_s / 1e6:.3f} M frames/s"


def _setting(row: dict) -> str:
    extras = [row["precision"]] + (["compile"] if row.get("compile") else [])
    return f"batch {row['batch_size']}, K={row['num_gestures']}, {', '.join(extras)}"


def _seconds_of(row: dict) -> str:
    """Time to quality of a quality row, "<t> s of <fit> s"."""
    seconds = row.get("time_to_quality_seconds")
    return "" if seconds is None else f"{seconds:.0f} s of {row['fit_seconds']:.0f} s"


def _quality(row: dict) -> str:
    """Held-out variance explained / activation AUC, and the recovery of planted kernels."""
    text = f"{row['variance_explained']:.3f} / {row['activation_auc']:.3f}"
    if row.get("kernel_cosine") is not None:
        text += f" ({row['kernel_cosine']:.3f} / {row['onset_f1']:.3f})"
    return text


def table_row(result: dict) -> list[str]:
    """The table's cells for one bench/run.py result."""
    default_k = result["settings"]["default_config"]["num_gestures"]
    fast = [row for row in result["training"]["rows"] if row["path"] == "fast" and row["num_gestures"] == default_k]
    default = next((row for row in fast if row["batch_size"] == 16 and row["precision"] == "fp32"
                    and not row.get("compile")), None)
    fastest = max(fast, key=lambda row: row["frames_per_s"], default=None)
    quality = (result.get("quality") or {}).get("rows") or []
    reference = next((row for row in quality if row["batch_size"] == 16 and row["precision"] == "fp32"), None)
    large = max((row for row in quality if row["batch_size"] > 16 and row.get("optimizer") == "muon"),
                key=lambda row: row["batch_size"], default=None)
    evaluation = max(result.get("evaluation") or [], key=lambda row: row["frames_per_s"], default=None)
    data_seconds = (result.get("data_stages") or {}).get("nema2npy_plus_normalize_seconds")
    machine = result["machine"]
    return [
        f"{machine['device']}, torch {machine['torch']} ({result['corpus']['kind']})",
        _mega(default and default["frames_per_s"]),
        f"{_mega(fastest['frames_per_s'])} ({_setting(fastest)})" if fastest else "",
        _seconds_of(reference) if reference else "",
        _quality(reference) if reference else "",
        f"batch {large['batch_size']}: {_quality(large)}, {_seconds_of(large)}" if large else "",
        _mega(evaluation and evaluation["frames_per_s"]),
        "" if data_seconds is None else f"{data_seconds:.1f} s",
    ]


def markdown(results: dict[str, dict | None]) -> str:
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    for device_type, result in results.items():
        cells = table_row(result) if result else [device_type] + ["not measured"] + [""] * (len(COLUMNS) - 2)
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("files", nargs="*", type=Path,
                        help="bench/run.py results (default: the full runs in bench/results/)")
    args = parser.parse_args()
    files = args.files or full_runs()
    results: dict[str, dict | None] = {}
    for path in files:
        results[path.stem if not args.files else str(path)] = json.loads(path.read_text())
    if not args.files:
        # The devices never measured still get a row, so that the table says so.
        measured = {result["machine"]["device_type"] for result in results.values()}
        results |= {device: None for device in DEVICE_TYPES if device not in measured}
    print(markdown(results))


if __name__ == "__main__":
    main()
