"""Gesture-phone associations: a planted gesture-to-phone mapping is recovered, saved and drawn."""

from __future__ import annotations

import numpy as np
import pytest

from gestural.core import units
from gestural.data import ema
from gestural.data.dataset import write_index
from gestural.evaluation.associations import (
    AssociationTable,
    gesture_phone_associations,
    held_out_associations,
    load_associations,
    order_gestures,
    order_phones,
    phone_indicators,
    save_associations,
)
from gestural.evaluation.export import ExportError
from gestural.figures.scores import gesture_phone_association_figure

PHONES = ("p", "t", "k", "s", "l", "r", "w", "y")  # the events corpus: gesture g realises PHONES[g]
WIN = 10


def planted_corpus(utterances: int = 12, seed: int = 0, *, spiky: bool = True):
    """Utterances of random phone strings; gesture g is played at the start of every phone g.

    Gestures 8 and 9 are distractors: 8 fires at random times, 9 never. Scores are spikes
    (``spiky``) or a held plateau over the phone (continuous articulation).
    """
    rng = np.random.default_rng(seed)
    all_scores, all_phones = [], []
    for _ in range(utterances):
        segments, frame = [(0.1, "sil")], 20
        scores = np.zeros((10, 400))
        while frame < 360:
            g = int(rng.integers(len(PHONES)))
            length = int(rng.integers(12, 25))
            if spiky:
                scores[g, frame] = rng.uniform(0.5, 1.0)
            else:
                scores[g, frame:frame + length] = rng.uniform(0.05, 0.1)
            frame += length
            segments.append((frame / units.FRAME_RATE, PHONES[g]))
        segments.append((400 / units.FRAME_RATE, "sil"))
        scores[8, rng.integers(0, 400, size=6)] = rng.uniform(0.5, 1.0, size=6)
        scores += 0.01 * rng.random(scores.shape) * (rng.random(scores.shape) < 0.05)  # a faint haze
        scores[9] = 0.0
        all_scores.append(scores)
        all_phones.append(segments)
    return all_scores, all_phones


@pytest.mark.parametrize("spiky", [True, False], ids=["spiky", "continuous"])
def test_each_planted_gesture_is_most_associated_with_its_phone(spiky):
    scores, phones = planted_corpus(spiky=spiky)
    table = gesture_phone_associations(scores, phones, WIN)
    assert 9 not in table.gestures  # never active: not in use
    assert set(table.phones) == set(PHONES) | {"sil"}
    best = table.best_phone()
    for g, phone in enumerate(PHONES):
        assert best[g] == phone
        row = table.auc[list(table.gestures).index(g)]
        own = row[table.phones.index(phone)]
        others = np.delete(row, table.phones.index(phone))
        # A spike covers the first 10 frames of a 12-24 frame phone: AUC about 0.5 + coverage / 2.
        assert own > 0.7 and np.nanmax(others) < 0.6, (g, own, np.nanmax(others))
    distractor = table.auc[list(table.gestures).index(8)]
    assert np.nanmax(np.abs(distractor - 0.5)) < 0.2  # random firing: no phone stands out


def test_phone_frames_count_the_frames_each_phone_covers():
    phones = [(0.05, "sil"), (0.1, "p"), (0.1, "empty"), (0.2, "sil")]
    active = phone_indicators(phones, 30, ["sil", "p"])
    assert active[0].tolist() == [True] * 10 + [False] * 10 + [True] * 10  # 0.2 s = 40 frames, cut at 30
    assert active[1].sum() == 10 and not (active[0] & active[1]).any()
    table = gesture_phone_associations([np.ones((2, 30))], [phones], WIN)
    assert dict(zip(table.phones, table.phone_frames.tolist())) == {"p": 10, "sil": 20}


def test_the_table_has_a_row_for_each_gesture_the_evaluation_counts_in_use():
    scores, phones = planted_corpus(utterances=4)
    in_use = [True] * 8 + [False, False]  # the distractor 8 fell below the evaluation's threshold
    table = gesture_phone_associations(scores, phones, WIN, in_use=in_use)
    assert table.gestures.tolist() == list(range(8)) and table.auc.shape == (8, len(table.phones))
    with pytest.raises(ValueError, match="in_use: 9 flags for 10 gestures"):
        gesture_phone_associations(scores, phones, WIN, in_use=in_use[:9])


def test_the_table_round_trips_through_its_csv(tmp_path):
    scores, phones = planted_corpus(utterances=4)
    table = gesture_phone_associations(scores, phones, WIN)
    table.auc[0, 0] = np.nan  # an undefined AUC stays undefined
    save_associations(tmp_path / "a.csv", table)
    header = (tmp_path / "a.csv").read_text().splitlines()[0]
    assert header == "gesture,phone,auc,phone_frames"
    loaded = load_associations(tmp_path / "a.csv")
    assert loaded.gestures.tolist() == table.gestures.tolist() and loaded.phones == table.phones
    np.testing.assert_allclose(loaded.auc, table.auc, atol=1e-6)
    assert loaded.phone_frames.tolist() == table.phone_frames.tolist()
    (tmp_path / "bad.csv").write_text("gesture,phone,auc,phone_frames\n0,p,high,3\n")
    with pytest.raises(ExportError, match="bad.csv: line 2"):
        load_associations(tmp_path / "bad.csv")


def test_held_out_associations_find_the_lab_files_of_the_index(tmp_path):
    scores, phones = planted_corpus(utterances=6)
    extracted = tmp_path / "extracted"
    rows = []
    for i, segmentation in enumerate(phones):
        lab = f"emadata/cin_us_spk/lab/u{i}.lab" if i < 5 else ""  # the last has no labels
        if lab:
            ema.write_lab(extracted / lab, segmentation)
        rows.append({"utterance_id": f"u{i}", "speaker": "spk", "start": 0, "frames": 400, "ema": "", "wav": "",
                     "lab": lab, "split": "test"})
    write_index(tmp_path / "normalized" / "index.csv", rows, tuple(rows[0]))
    table, used = held_out_associations([f"u{i}" for i in range(6)], scores, WIN,
                                        normalized=tmp_path / "normalized", extracted=extracted)
    assert used == 5
    assert table.best_phone()[2] == "k"
    assert table.phone_frames.sum() == 5 * 400  # the sixth utterance's frames are not pooled


def test_phones_are_grouped_by_place_and_gestures_placed_under_their_best_phone():
    phones = ["sil", "k", "aa", "p", "zz", "t", "iy"]
    order, groups = order_phones(phones)
    assert [phones[i] for i in order] == ["p", "t", "k", "iy", "aa", "zz", "sil"]
    assert groups == ["labial", "alveolar", "velar", "front V", "back V", "other", "silence"]
    auc = np.array([[0.5, 0.9, 0.5, 0.5, 0.5, 0.5, 0.5],    # best: k
                    [0.5, 0.5, 0.5, 0.95, 0.5, 0.5, 0.5],   # best: p
                    [0.5, 0.5, 0.5, 0.8, 0.5, 0.5, 0.5],    # best: p, weaker
                    [np.nan] * 7])
    assert order_gestures(auc, order) == [1, 2, 0, 3]


def test_heat_map_draws_the_ordered_grid_and_says_what_it_left_out():
    scores, phones = planted_corpus()
    table = gesture_phone_associations(scores, phones, WIN)
    counts = table.phone_frames.copy()
    counts[table.phones.index("y")] = 3  # too rare to draw
    figure = gesture_phone_association_figure(table.auc, table.gestures, table.phones, counts)
    heat = figure.axes[0]
    grid = heat.images[0].get_array()
    assert grid.shape == (len(table.gestures), len(table.phones) - 1)
    labels = [t.get_text() for t in figure.axes[1].get_xticklabels()]
    assert labels[:3] == ["p", "w", "t"] and labels[-1] == "sil"  # labial first, silence last
    rows = [t.get_text() for t in heat.get_yticklabels()]
    assert rows[:3] == ["g0", "g6", "g1"]  # each gesture under its phone
    assert "1 phone with < 20 frames left out" in figure._suptitle.get_text()
    empty = gesture_phone_association_figure(np.zeros((0, 0)), [], [])
    assert "phone labels" in " ".join(t.get_text() for ax in empty.axes for t in ax.texts)


def test_an_empty_table_saves_and_loads(tmp_path):
    empty = AssociationTable(np.zeros(0, np.int64), [], np.zeros((0, 0)), np.zeros(0, np.int64))
    save_associations(tmp_path / "e.csv", empty)
    loaded = load_associations(tmp_path / "e.csv")
    assert loaded.gestures.size == 0 and loaded.phones == []
