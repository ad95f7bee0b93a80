"""bench/pipeline.py's figures: the frames each stage handles, how its cost scales between
two corpus sizes, and the issue's targets."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

REPRO_TARGET_S = 600  # the whole `dvc repro` at the full size, on 2 cores
MEMORY_TARGET_MIB = 4096  # any stage, the process tree's sum
LINEAR_EXPONENT = 1.1  # seconds ~ frames^exponent: at most this counts as linear (timing noise on shared cores)
# Linearity is judged on CPU seconds where they were measured: the two sizes' wall times may
# have run under different loads of a shared machine (others' jobs do not add to a stage's own
# CPU time, though they can inflate it: threads that wait spin).
# The frames a stage's work grows with (the data stages: the whole corpus). Training is a fixed
# number of steps (epochs x steps_per_epoch), so its cost hardly grows at all.
STAGE_SPLITS = {"train": "train_frames", "evaluate": "test_frames", "plot": "test_frames"}


def _json(path: Path) -> dict:
    return json.loads(path.read_text()) if path.is_file() else {}


def corpus_frames(clone: Path) -> dict:
    """Utterances and frames of the clone's normalized corpus, per split, and what the evaluate
    stage's classical baseline transformed (``classical_test_*``; None where
    evaluation/details.json does not say)."""
    counts = {"train": [0, 0], "test": [0, 0]}
    with open(clone / "data" / "normalized" / "index.csv", newline="") as index:
        for row in csv.DictReader(index):
            counts[row["split"]][0] += 1
            counts[row["split"]][1] += int(row["frames"])
    classical = _json(clone / "evaluation" / "details.json").get("classical", {})
    return {
        "utterances": counts["train"][0] + counts["test"][0],
        "frames": counts["train"][1] + counts["test"][1],
        "train_utterances": counts["train"][0], "train_frames": counts["train"][1],
        "test_utterances": counts["test"][0], "test_frames": counts["test"][1],
        "classical_test_utterances": classical.get("transform_utterances"),
        "classical_test_frames": classical.get("transform_frames"),
        "train_steps": _json(clone / "reports" / "timing" / "train.json").get("steps"),
    }


def stage_frames(stage: str, corpus: dict) -> int:
    return corpus[STAGE_SPLITS.get(stage, "frames")]


def _cpu_seconds(step: dict) -> float | None:
    """User + system seconds of a step's processes (factorize: of its runs); None if not measured."""
    runs = step.get("runs", [step])  # factorize: one run per speaker directory
    if any(run.get("user_seconds") is None for run in runs):
        return None
    return sum(run["user_seconds"] + run["system_seconds"] for run in runs)


def _exponent(small: float, large: float, frames_ratio: float) -> float | None:
    if small <= 0 or large <= 0 or frames_ratio <= 1:
        return None
    return math.log(large / small) / math.log(frames_ratio)


def _steps(size: dict) -> dict:
    """A size's measured steps: its stages, and factorize when it ran."""
    steps = dict(size["stages"])
    if "factorize" in size:
        steps["factorize"] = size["factorize"]
    return steps


def scaling(sizes: list[dict]) -> dict:
    """Per stage, from the smallest to the largest corpus: the frames' ratio, the ratios of wall
    time and peak memory, time's exponent in frames (seconds ~ frames^exponent: 1 linear, below 1
    a fixed cost dominates) and the seconds each further million frames costs. Empty with one size."""
    if len(sizes) < 2:
        return {}
    small, large = sorted(sizes, key=lambda s: s["corpus"]["frames"])[::len(sizes) - 1]
    result = {}
    for name, big in _steps(large).items():
        little = _steps(small).get(name)
        if little is None:
            continue
        ratio = big["frames"] / little["frames"] if little["frames"] else math.nan
        result[name] = {
            "frames": [little["frames"], big["frames"]],
            "frames_ratio": ratio,
            "seconds_ratio": big["seconds"] / little["seconds"],
            "seconds_exponent": _exponent(little["seconds"], big["seconds"], ratio),
            "seconds_per_million_more_frames": ((big["seconds"] - little["seconds"])
                                                / ((big["frames"] - little["frames"]) / 1e6)
                                                if big["frames"] > little["frames"] else None),
            "peak_rss_ratio": big["peak_rss_mib"] / little["peak_rss_mib"],
        }
        cpu = [_cpu_seconds(little), _cpu_seconds(big)]
        result[name]["cpu_seconds_exponent"] = None if None in cpu else _exponent(*cpu, ratio)
        exponent = result[name]["cpu_seconds_exponent"] or result[name]["seconds_exponent"]
        # A stage whose time hardly moves while its frames grow is a fixed cost: linear or better.
        result[name]["linear_or_better"] = None if exponent is None else exponent <= LINEAR_EXPONENT
    return result


def _repro_cpu(size: dict) -> float:
    """CPU seconds (user + system) of every stage's processes."""
    return sum(_cpu_seconds(step) for step in size["stages"].values())


def targets(sizes: list[dict], scale: dict) -> dict:
    """The issue's targets at the full size (fraction 1), met or missed (None: not measured)."""
    full = next((s for s in sizes if s["fraction"] == 1.0), None)
    repro = full["repro_seconds"] if full else None
    peaks = {f"{name} ({s['speakers']}x{s['utterances_per_speaker']})": _peak(step)
             for s in sizes for name, step in _steps(s).items()}
    largest = max(peaks, key=peaks.get)
    linear = {name: row["linear_or_better"] for name, row in scale.items()}
    return {
        "repro_seconds": {"target": f"< {REPRO_TARGET_S} s at the full size", "measured": repro,
                          "cpu_seconds": _repro_cpu(full) if full else None,
                          "met": None if repro is None else repro < REPRO_TARGET_S},
        "peak_memory_mib": {"target": f"< {MEMORY_TARGET_MIB} MiB per stage (process tree)",
                            "largest": largest, "measured": peaks[largest],
                            "met": peaks[largest] < MEMORY_TARGET_MIB},
        "linear_in_frames": {"target": f"CPU (else wall) seconds ~ frames^e with e <= {LINEAR_EXPONENT}",
                             "not_linear": sorted(n for n, ok in linear.items() if ok is False),
                             "met": None if not linear or None in linear.values() else all(linear.values())},
    }


def _peak(step: dict) -> float:
    """A step's peak resident MiB: the process tree's where sampled, else the largest process's."""
    return step["peak_tree_rss_mib"] or step["peak_rss_mib"]


def _cpu(step: dict) -> str:
    seconds = _cpu_seconds(step)
    return "" if seconds is None else f"{seconds:.1f}"


def _cells(step: dict | None) -> list[str]:
    if step is None:
        return ["", "", "", ""]
    return [f"{step['frames']:,}", f"{step['seconds']:.1f}", _cpu(step), f"{_peak(step):,.0f}"]


def markdown_table(result: dict) -> str:
    """The README's table: per stage (and factorize), frames, wall and CPU seconds (user +
    system, every process) and peak resident memory (the process tree's) at each size, smallest
    first, and the exponents of wall and CPU time in frames."""
    sizes = sorted(result["sizes"], key=lambda s: s["corpus"]["frames"])
    header = ["stage"]
    for size in sizes:
        label = f"{size['speakers']} x {size['utterances_per_speaker']}"
        header += [f"frames ({label})", "wall s", "CPU s", "peak RSS MiB"]
    header.append("exponent (wall / CPU)")
    names = list(_steps(sizes[-1]))
    rows = []
    for name in names:
        scale = result["scaling"].get(name, {})
        exponents = [scale.get("seconds_exponent"), scale.get("cpu_seconds_exponent")]
        row = [name] + [cell for size in sizes for cell in _cells(_steps(size).get(name))]
        rows.append(row + [" / ".join("" if e is None else f"{e:.2f}" for e in exponents) if scale else ""])
    total = ["**dvc repro**"]
    for size in sizes:
        peak = max(_peak(step) for step in size["stages"].values())
        total += [f"{size['corpus']['frames']:,}", f"**{size['repro_seconds']:.0f}**", f"{_repro_cpu(size):.0f}",
                  f"{peak:,.0f}"]
    lines = [header, ["---"] * len(header), *rows, total + [""]]
    return "\n".join("| " + " | ".join(line) + " |" for line in lines)
