"""Exports for speech scientists: events from scores, Praat TextGrids, CSV tables, scores.npz."""

from __future__ import annotations

import re

import numpy as np
import pytest
from conftest import raises_in_one_line

from gestural.core import units
from gestural.data import ema
from gestural.evaluation import export
from gestural.evaluation.segmentation import GestureEvent

L = 10
PHONES = [(0.1, "sil"), (0.2, "p"), (0.35, "aa"), (0.5, "sil")]  # Festival (end_time, label)


def test_event_rows_give_seconds_and_the_phone_under_the_onset():
    events = [GestureEvent(1, 30, 40, 0.5), GestureEvent(0, 19, 29, 0.25), GestureEvent(0, 95, 100, 1.0)]
    rows = export.event_rows("u1", events, PHONES)
    assert [(r["gesture"], r["onset_s"], r["offset_s"], r["phone"]) for r in rows] == [
        (1, 0.15, 0.2, "p"), (0, 0.095, 0.145, "sil"), (0, 0.475, 0.5, "sil")]
    assert export.phone_at(export.phone_segments(PHONES), 0.2) == "aa"  # a boundary belongs to the next phone
    assert [r["phone"] for r in export.event_rows("u1", events)] == ["", "", ""]


def test_events_csv_round_trips_for_pandas_and_r(tmp_path):
    rows = export.event_rows("u1", [GestureEvent(3, 20, 30, 0.123456789)], PHONES)
    export.write_events(tmp_path / "events.csv", rows)
    text = (tmp_path / "events.csv").read_text()
    assert text.splitlines() == ["utterance,gesture,onset_s,offset_s,amplitude,phone", "u1,3,0.1,0.15,0.123457,p"]
    back = export.read_events(tmp_path / "events.csv")
    assert back == [{"utterance": "u1", "gesture": 3, "onset_s": 0.1, "offset_s": 0.15, "amplitude": 0.123457,
                     "phone": "p"}]


def _parse_long_textgrid(text: str) -> dict:
    """A strict reader of Praat's long ("full") text format, as Praat writes it: every line
    checked in order (https://www.fon.hum.uva.nl/praat/manual/TextGrid_file_formats.html)."""
    lines = [line.rstrip() for line in text.splitlines()]
    position = 0

    def take(pattern: str) -> re.Match:
        nonlocal position
        match = re.fullmatch(pattern, lines[position].strip())
        assert match, f"line {position + 1}: {lines[position]!r} does not match {pattern!r}"
        position += 1
        return match

    number, string = r"(-?\d+(?:\.\d+)?(?:[eE]-?\d+)?)", r'"((?:[^"]|"")*)"'
    take(r'File type = "ooTextFile"')
    take(r'Object class = "TextGrid"')
    take(r"")
    grid = {"xmin": float(take(rf"xmin = {number}")[1]), "xmax": float(take(rf"xmax = {number}")[1]), "tiers": []}
    take(r"tiers\? <exists>")
    size = int(take(r"size = (\d+)")[1])
    take(r"item \[\]:")
    for i in range(1, size + 1):
        take(rf"item \[{i}\]:")
        tier_class = take(r'class = "(IntervalTier|TextTier)"')[1]
        assert tier_class == "IntervalTier"
        tier = {"name": take(rf"name = {string}")[1], "xmin": float(take(rf"xmin = {number}")[1]),
                "xmax": float(take(rf"xmax = {number}")[1]), "intervals": []}
        count = int(take(r"intervals: size = (\d+)")[1])
        for j in range(1, count + 1):
            take(rf"intervals \[{j}\]:")
            tier["intervals"].append((float(take(rf"xmin = {number}")[1]), float(take(rf"xmax = {number}")[1]),
                                      take(rf"text = {string}")[1]))
        grid["tiers"].append(tier)
    assert position == len(lines) or all(not line for line in lines[position:])
    return grid


def test_textgrid_is_praat_long_format_with_tiers_covering_the_whole_utterance(tmp_path):
    events = [GestureEvent(4, 20, 30, 0.8), GestureEvent(1, 50, 60, 0.3), GestureEvent(4, 60, 75, 1.25)]
    grid = export.build_textgrid(events, 90, phones=PHONES, gestures=[4, 1, 7])
    export.write_textgrid(tmp_path / "u.TextGrid", grid)
    parsed = _parse_long_textgrid((tmp_path / "u.TextGrid").read_text(encoding="utf-8"))
    assert (parsed["xmin"], parsed["xmax"]) == (0.0, 0.5)  # the lab runs past the 0.45 s of EMA
    assert [t["name"] for t in parsed["tiers"]] == ["phones", "g4", "g1", "g7"]
    for tier in parsed["tiers"]:
        # Praat's interval tiers tile the grid: no gap, no overlap.
        assert (tier["xmin"], tier["xmax"]) == (0.0, 0.5)
        starts, ends = [i[0] for i in tier["intervals"]], [i[1] for i in tier["intervals"]]
        assert starts[0] == 0.0 and ends[-1] == 0.5 and starts[1:] == ends[:-1]
    g4 = [i for i in parsed["tiers"][1]["intervals"] if i[2]]
    assert g4 == [(0.1, 0.15, "g4 0.8"), (0.3, 0.375, "g4 1.25")]
    assert [i[2] for i in parsed["tiers"][3]["intervals"]] == [""]  # a listed gesture without events


def test_praatio_reads_the_textgrid_back(tmp_path):
    events = [GestureEvent(2, 10, 20, 0.5), GestureEvent(0, 40, 50, 0.7)]
    export.write_textgrid(tmp_path / "u.TextGrid", export.build_textgrid(events, 100, phones=PHONES))
    grid = export.read_textgrid(tmp_path / "u.TextGrid")
    assert grid.tierNames == ("phones", "g0", "g2")
    assert [(e.start, e.end, e.label) for e in grid.getTier("phones").entries] == [
        (0.0, 0.1, "sil"), (0.1, 0.2, "p"), (0.2, 0.35, "aa"), (0.35, 0.5, "sil")]
    assert [(e.start, e.end, e.label) for e in grid.getTier("g2").entries] == [(0.05, 0.1, "g2 0.5")]
    assert grid.maxTimestamp == 0.5
    without_lab = export.build_textgrid(events, 100)
    assert without_lab.tierNames == ("g0", "g2") and without_lab.maxTimestamp == 0.5


def test_scores_npz_carries_its_time_axis(tmp_path):
    scores = np.arange(12, dtype=np.float32).reshape(3, 4)
    export.write_scores(tmp_path / "scores.npz", scores)
    back, times, rate = export.read_scores(tmp_path / "scores.npz")
    np.testing.assert_array_equal(back, scores)
    assert rate == units.FRAME_RATE and times.tolist() == [0.0, 0.005, 0.01, 0.015]
    assert not [p for p in tmp_path.iterdir() if p.name != "scores.npz"]  # no temporary file left
    np.savez(tmp_path / "other.npz", values=scores)  # an .npz without the scores format's keys
    with pytest.raises(export.ExportError, match="other.npz"):
        export.read_scores(tmp_path / "other.npz")


def test_kernel_table_gives_millimetres_per_speaker(tmp_path):
    rng = np.random.default_rng(0)
    kernels = rng.random((2, 12, 3))
    low, high = -np.linspace(1, 2, 12), np.linspace(2, 3, 12)
    std_a, std_b = np.full(12, 4.0), np.linspace(1, 12, 12)
    stats = {"low": low.tolist(), "high": high.tolist(),
             "ema_stats": {"a": {"mean": [50.0] * 12, "std": std_a.tolist()},
                           "b": {"mean": [-9.0] * 12, "std": std_b.tolist()}}}
    export.write_kernel_table(tmp_path / "k.csv", kernels, stats)
    rows = export.read_kernel_table(tmp_path / "k.csv")
    assert len(rows) == 2 * 12 * 3 * 2
    row = next(r for r in rows if (r["gesture"], r["channel"], r["frame"], r["speaker"]) == (1, "tt_y", 2, "b"))
    c = units.CHANNELS.index("tt_y")
    # A displacement: z-units per normalized unit (high - low) times mm per z-unit (std); no offsets.
    assert row["value_mm"] == pytest.approx(kernels[1, c, 2] * (high[c] - low[c]) * std_b[c], rel=1e-5)
    assert row["value_normalized"] == pytest.approx(kernels[1, c, 2], rel=1e-5) and row["time_ms"] == 10.0
    export.write_kernel_table(tmp_path / "plain.csv", kernels, {"low": low.tolist(), "high": high.tolist()})
    plain = export.read_kernel_table(tmp_path / "plain.csv")
    assert len(plain) == 2 * 12 * 3 and all(r["speaker"] == "" and np.isnan(r["value_mm"]) for r in plain)


def test_kernel_export_names_the_missing_input(tmp_path):
    with pytest.raises(export.ExportError, match=r"gestures\.npy: no such file \(run `dvc repro train`\)"):
        export.export_kernel_table(tmp_path / "k.csv", tmp_path / "gestures.npy", tmp_path / "stats.json")
    np.save(tmp_path / "gestures.npy", np.zeros((2, 12, 3), np.float32))
    with pytest.raises(export.ExportError, match=r"stats\.json: no such file"):
        export.export_kernel_table(tmp_path / "k.csv", tmp_path / "gestures.npy", tmp_path / "stats.json")
    (tmp_path / "stats.json").write_text("{not json")
    with pytest.raises(export.ExportError, match=r"stats\.json: not readable JSON"):
        export.export_kernel_table(tmp_path / "k.csv", tmp_path / "gestures.npy", tmp_path / "stats.json")
    assert not (tmp_path / "k.csv").exists()


@pytest.mark.parametrize("content, problem", [
    (b"\x93NUMPY garbage", "not a readable .npy array"),
    (np.zeros((12, 3), np.float32), r"expected a \(K, C, L\) float array, got \(12, 3\)"),
    (np.full((2, 12, 3), np.nan, np.float32), "holds NaN or infinite values"),
])
def test_a_corrupt_gestures_file_is_refused_in_one_line_naming_it(tmp_path, content, problem):
    path = tmp_path / "gestures.npy"
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        np.save(path, content)
    (tmp_path / "stats.json").write_text('{"low": [0], "high": [1]}')
    with raises_in_one_line(export.ExportError, match=rf"^{tmp_path / 'gestures.npy'}: {problem}"):
        export.export_kernel_table(tmp_path / "k.csv", path, tmp_path / "stats.json")
    assert not (tmp_path / "k.csv").exists()


def test_row_phones_reads_the_lab_of_an_index_row_and_tolerates_a_bad_one(tmp_path, caplog):
    ema.write_lab(tmp_path / "emadata" / "lab" / "u.lab", PHONES)
    assert export.row_phones({"lab": "emadata/lab/u.lab"}, tmp_path) == PHONES
    assert export.row_phones({"lab": ""}, tmp_path) is None
    (tmp_path / "bad.lab").write_text("no header end\n")
    assert export.row_phones({"lab": "bad.lab"}, tmp_path) is None
    assert "bad.lab" in caplog.text
