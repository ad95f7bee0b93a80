"""The results files: where a run's goes, the issue's targets it ends with, writing it, and
which committed ones are full runs (what bench/table.py reads)."""

from __future__ import annotations

import json
from pathlib import Path

from bench import REPO, say
from gestural.core.files import write_json

RESULTS = REPO / "bench" / "results"


def default_out(device_type: str, quick: bool, corpus: str | None = None) -> Path:
    """Where the JSON goes without --out: one file per device type, and per corpus kind other
    than params.yaml's (``corpus``: None for that one); a quick run gets its own, so that a
    smoke test does not overwrite a full run's numbers."""
    name = device_type + (f"-{corpus}" if corpus else "") + ("-quick" if quick else "")
    return RESULTS / f"{name}.json"


def full_runs(directory: Path = RESULTS) -> list[Path]:
    """bench/run.py's full runs' results files in ``directory`` (``-quick`` smoke runs and
    bench/pipeline.py's ``pipeline-*`` left out), by stem: a device's default-corpus file (cpu)
    before its other corpus (cpu-events)."""
    return sorted((p for p in directory.glob("*.json")
                   if not p.stem.endswith("-quick") and not p.stem.startswith("pipeline-")), key=lambda p: p.stem)


def targets(device_type: str, default_fast: dict | None, data_stages: dict, real_data: bool) -> dict:
    """The ``targets`` section: the speed issue's targets, met, missed or not measured here.

    ``default_fast``: the training row at the defaults (fast path, batch 16); ``real_data``:
    whether ``data_stages`` timed the real-size corpus."""
    on_cpu = device_type == "cpu" and default_fast is not None
    fast = default_fast["real_frames_per_s"] if on_cpu else None
    data_seconds = data_stages["nema2npy_plus_normalize_seconds"]
    return {
        "training_default_config_frames_per_s": {
            "target": ">= 250000 real frames/s on 2 CPU cores (batch 16, fast path)",
            "measured": fast,
            "met": (fast >= 250_000) if on_cpu else None,
        },
        "nema2npy_plus_normalize_real_size_seconds": {
            "target": "< 30 s on the real-size corpus",
            "measured": data_seconds if real_data else None,
            "met": (data_seconds < 30) if real_data else None,
        },
        "dvc_repro_default_seconds": {"target": "< 120 s", "measured": None, "met": None,
                                      "note": "not measured here (needs DVC): time `dvc repro` itself"},
    }


def write_result(result: dict, out: Path) -> str:
    """Write ``result`` (JSON-safe already) to ``out`` atomically; returns the JSON text."""
    write_json(out, result)
    return json.dumps(result, indent=2)


def publish(result: dict, out: Path) -> None:
    """Write ``result`` to ``out``, say where, and print it: the end of every bench script."""
    text = write_result(result, out)
    say(f"wrote {out}")
    print(text)
