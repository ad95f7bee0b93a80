"""The task-dynamics corpus (synthetic.kind: articulatory) and the shared ground-truth file."""

from __future__ import annotations

import dataclasses
import hashlib
import tarfile

import numpy as np
import pytest
from conftest import PROJECT_ROOT, raises_in_one_line, tiny_synthetic_config
from scipy.stats import rankdata

from gestural.core import units
from gestural.core.params import ParamsError, load_params
from gestural.data import ema
from gestural.synthetic import articulatory
from gestural.synthetic.articulatory import (
    GESTURE_NAMES,
    NEUTRAL,
    TV_NAMES,
    ArticulatoryConfig,
    draw_anatomy,
    drive,
    generate,
    integrate,
    sensor_positions,
)
from gestural.synthetic.generator import synthetic_config, write_corpus
from gestural.synthetic.ground_truth import load_activations, save_ground_truth

CHANNEL = {name: i for i, name in enumerate(units.CHANNELS)}


def tiny_articulatory(**overrides):
    return tiny_synthetic_config(kind="articulatory", articulatory={"seconds": [1.2, 1.6]}, **overrides)


@pytest.fixture(scope="module")
def recordings():
    """Two speakers x 30 utterances, about 20 000 frames."""
    return generate(ArticulatoryConfig(), ["fsyn0", "msyn0"], 30, seed=0)


def activity(recording) -> np.ndarray:
    active = np.zeros((len(GESTURE_NAMES), len(recording.positions)), dtype=bool)
    for gesture, start, stop in recording.activations:
        active[gesture, start:stop] = True
    return active


def tv_trajectory(rows, frames: int) -> np.ndarray:
    """TV trajectories (frames, 6) of hand-made activations ``(gesture name, start, stop)``."""
    activations = np.array([(GESTURE_NAMES.index(name), a, b) for name, a, b in rows], dtype=np.int64)
    targets = articulatory.TARGETS[activations[:, 0]]
    hz = np.array([articulatory.INVENTORY[g].hz for g in activations[:, 0]])
    target, omega = drive(activations, targets, hz, frames)
    return integrate([target], [omega])[0]


def test_same_seed_gives_a_byte_identical_archive_and_another_seed_does_not(tmp_path):
    config = tiny_articulatory(utterances_per_speaker=3, missing_wav=1, short_nan_runs=1)
    digests = []
    for name, seed in (("a", 0), ("b", 0), ("c", 1)):
        archive, truth = tmp_path / f"{name}.tgz", tmp_path / f"{name}.npz"
        summary = write_corpus(dataclasses.replace(config, seed=seed), archive, truth)
        digests.append(tuple(hashlib.sha256(p.read_bytes()).hexdigest() for p in (archive, truth)))
    assert digests[0] == digests[1]
    assert digests[0][0] != digests[2][0] and digests[0][1] != digests[2][1]
    assert summary["kind"] == "articulatory" and summary["planted_gestures"] == len(GESTURE_NAMES)


def test_activations_last_60_to_300_ms_and_overlap(recordings):
    rows = np.concatenate([r.activations for r in recordings])
    milliseconds = (rows[:, 2] - rows[:, 1]) * 1000 / units.FRAME_RATE
    assert milliseconds.min() >= 60 and milliseconds.max() <= 300
    assert 120 < milliseconds.mean() < 220
    counts = np.concatenate([activity(r).sum(axis=0) for r in recordings])
    speech = counts > 0
    assert np.mean(counts[speech] >= 2) > 0.4, "gestures should overlap (coproduction)"
    assert set(rows[:, 0]) == set(range(len(GESTURE_NAMES))), "every gesture is planted"


def test_every_channel_moves_well_beyond_the_noise():
    quiet = generate(ArticulatoryConfig(noise_mm=0.0, drift_mm=0.0), ["fsyn0"], 20, seed=0)
    spread = np.concatenate([r.positions for r in quiet]).std(axis=0)
    assert np.all(spread > 0.5), dict(zip(units.CHANNELS, spread.round(2)))
    noisy = generate(ArticulatoryConfig(noise_mm=0.3, drift_mm=0.0), ["fsyn0"], 20, seed=0)
    residual = np.concatenate([n.positions - q.positions for n, q in zip(noisy, quiet)])
    assert residual.std() == pytest.approx(0.3, rel=0.05)


def test_one_gesture_moves_several_sensors_and_the_jaw_is_shared():
    anatomy = draw_anatomy(np.random.default_rng(0))
    rest = sensor_positions(NEUTRAL[None, :], anatomy)[0]

    def moved(tv: str, value: float) -> dict[str, float]:
        tvs = NEUTRAL.copy()
        tvs[TV_NAMES.index(tv)] = value
        return {c: abs(sensor_positions(tvs[None, :], anatomy)[0, i] - rest[i]) for c, i in CHANNEL.items()}

    lips = moved("LA", -2.0)  # lip closure
    assert min(lips["ul_y"], lips["ll_y"], lips["li_y"]) > 1.0, lips
    tip = moved("TTCD", -2.0)  # tongue-tip closure
    assert tip["tt_y"] > 2.0 and tip["li_y"] > 0.5, tip
    body = moved("TBCD", 12.0)  # an open vowel
    assert min(body["td_y"], body["tb_y"], body["li_y"]) > 1.0 and body["tt_y"] > 0.3, body
    # The lower incisor answers to all three, and contact saturates: pressing harder barely moves the lips.
    harder = moved("LA", -6.0)
    assert abs(harder["ll_y"] - lips["ll_y"]) < 0.25 * abs(lips["ll_y"])


def test_a_tract_variable_reaches_its_target_in_a_long_activation_and_relaxes_after():
    trajectory = tv_trajectory([("v_a", 20, 80)], 300)  # 300 ms of /a/, then 1.1 s of nothing
    location = TV_NAMES.index("TBCL")
    target = articulatory.TARGETS[GESTURE_NAMES.index("v_a"), location]
    excursion = target - NEUTRAL[location]
    assert abs(trajectory[20, location] - NEUTRAL[location]) < 1e-9  # starts at rest
    assert abs(trajectory[79, location] - target) < 0.05 * abs(excursion)
    assert abs(trajectory[-1, location] - NEUTRAL[location]) < 0.05 * abs(excursion)
    assert np.all(np.diff(trajectory[20:80, location]) >= -1e-9), "critically damped: no overshoot"
    lips = TV_NAMES.index("LA")
    assert np.allclose(trajectory[:, lips], NEUTRAL[lips])  # a TV no gesture drives stays put


def test_gestures_sharing_a_tract_variable_blend_their_targets():
    degree = TV_NAMES.index("TTCD")
    closure, critical = (articulatory.TARGETS[GESTURE_NAMES.index(g), degree] for g in ("tt_closure", "tt_critical"))
    both = tv_trajectory([("tt_closure", 0, 60), ("tt_critical", 0, 60)], 60)
    assert min(closure, critical) < both[-1, degree] < max(closure, critical)


def test_lab_files_parse_and_cover_the_utterance(tmp_path):
    config = tiny_articulatory(missing_wav=0, missing_ema=0, short_nan_runs=0, long_nan_runs=0)
    write_corpus(config, tmp_path / "emadata.tgz", tmp_path / "truth.npz")
    with tarfile.open(tmp_path / "emadata.tgz") as tar:
        tar.extractall(tmp_path, filter="data")
    known = {p for g in articulatory.INVENTORY for p in g.phones.split()} | {"sil", "pau"}
    for speaker in config.speakers:
        root = tmp_path / "emadata" / f"cin_us_{speaker}"
        prompts = ema.read_txt_done_data(root / "etc" / "txt.done.data")
        assert len(prompts) == config.utterances_per_speaker
        for utterance_id, words in prompts.items():
            segments = ema.read_lab(root / "lab" / f"{utterance_id}.lab")
            frames = ema.read_nema(root / "nema" / f"{utterance_id}.ema").shape[0]
            ends = [end for end, _ in segments]
            assert segments[0][1] == segments[-1][1] == "sil" and len(segments) >= 4
            assert all(b > a for a, b in zip(ends, ends[1:])) and ends[0] > 0
            assert ends[-1] == pytest.approx(frames / units.FRAME_RATE)
            assert {label for _, label in segments} <= known and words.strip(".")


def test_ground_truth_round_trips_for_both_kinds(tmp_path, synthetic_archive):
    _archive, truth, _summary, events_config = synthetic_archive
    ids = [f"{events_config.speakers[1]}_{i:03d}" for i in (2, 1)]
    with np.load(truth) as arrays:
        rows = np.flatnonzero(np.isin(arrays["utterance_ids"][arrays["event_utterance"]], ids[:1]))
        expected = [(arrays["event_gesture"][r], arrays["event_onset"][r]) for r in rows]
        assert str(arrays["kind"]) == "events"
    names, active = load_activations(truth, ids, [300, 300])
    assert len(names) == events_config.num_gestures and active[0].shape == (events_config.num_gestures, 300)
    planted = np.zeros_like(active[0])
    for gesture, onset in expected:
        planted[gesture, onset:onset + events_config.kernel_len] = True
    assert np.array_equal(active[0], planted) and active[0].sum() > 0

    config = tiny_articulatory()
    write_corpus(config, tmp_path / "a.tgz", tmp_path / "a.npz")
    recorded = generate(config.articulatory, config.speakers, config.utterances_per_speaker, config.seed)
    names, active = load_activations(tmp_path / "a.npz", [r.utterance_id for r in recorded],
                                     [len(r.positions) for r in recorded])
    assert names == list(GESTURE_NAMES)
    assert all(np.array_equal(a, activity(r)) for a, r in zip(active, recorded))
    with np.load(tmp_path / "a.npz") as arrays:
        assert str(arrays["kind"]) == "articulatory" and list(arrays["tv_names"]) == list(TV_NAMES)
        assert arrays["gesture_phones"][GESTURE_NAMES.index("lip_closure")] == "p b m"


def test_load_activations_refuses_missing_corrupt_and_foreign_files(tmp_path):
    with pytest.raises(ValueError, match=r"nope\.npz: no such file"):
        load_activations(tmp_path / "nope.npz", ["a"], [10])
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(ValueError, match=r"junk\.npz: not a readable"):
        load_activations(tmp_path / "junk.npz", ["a"], [10])
    np.savez(tmp_path / "other.npz", x=np.zeros(3))
    with pytest.raises(ValueError, match=r"other\.npz: not a ground-truth file"):
        load_activations(tmp_path / "other.npz", ["a"], [10])
    save_ground_truth(tmp_path / "gt.npz", kind="articulatory", gesture_names=["g"], gesture_phones=["p"],
                      utterance_ids=["a"], activation_utterance=[0], activation_gesture=[0],
                      activation_start=[5], activation_stop=[50])
    names, [active] = load_activations(tmp_path / "gt.npz", ["a"], [20])  # clipped to the utterance
    assert names == ["g"] and active[0].tolist() == [False] * 5 + [True] * 15
    with raises_in_one_line(ValueError, match=r"gt\.npz has no utterance 'b'"):
        load_activations(tmp_path / "gt.npz", ["b"], [20])


@pytest.mark.parametrize("values, message", [
    ({"syllables_per_secnd": 4}, "params.yaml synthetic.articulatory.syllables_per_secnd: unknown key"),
    ({"coda_probability": 1.5}, "params.yaml synthetic.articulatory.coda_probability: must be in [0, 1] (got 1.5)"),
    ({"seconds": [3.0, 1.0]}, "params.yaml synthetic.articulatory.seconds: shortest must not exceed longest"),
    ({"noise_mm": "0.3"}, "params.yaml synthetic.articulatory.noise_mm: must be a number"),
])
def test_a_bad_articulatory_key_is_refused_naming_it(values, message):
    params = load_params(PROJECT_ROOT / "params.yaml")
    assert set(params["synthetic"]["articulatory"]) == {f.name for f in dataclasses.fields(ArticulatoryConfig)}
    params["synthetic"]["articulatory"].update(values)
    with pytest.raises(ParamsError) as caught:
        synthetic_config(params)
    assert str(caught.value).startswith(message)


def best_channel_auc(recordings) -> np.ndarray:
    """Per planted gesture, the best single channel's ROC-AUC (either sign) on per-speaker z-scored data."""
    zscored, active = [], []
    for speaker in dict.fromkeys(r.speaker for r in recordings):
        mine = [r for r in recordings if r.speaker == speaker]
        positions = np.concatenate([r.positions for r in mine])
        zscored.append((positions - positions.mean(axis=0)) / positions.std(axis=0))
        active += [activity(r) for r in mine]
    ranks = rankdata(np.concatenate(zscored), axis=0)
    active = np.concatenate(active, axis=1)
    best = []
    for on in active:
        n_on, n_off = on.sum(), (~on).sum()
        auc = (ranks[on].sum(axis=0) - n_on * (n_on + 1) / 2) / (n_on * n_off)
        best.append(np.maximum(auc, 1 - auc).max())
    return np.array(best)


def test_no_single_sensor_gives_a_gesture_away(recordings):
    best = best_channel_auc(recordings)
    assert 0.7 <= best.mean() <= 0.82, best.round(3)
    assert best.max() < 0.92 and best.min() > 0.6, best.round(3)
