"""normalize: the train/test split, train-only scaling, and loading the result (gestural.normalize, .dataset)."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging

import numpy as np
import pytest

from gestural.core.params import DataParams
from gestural.data.dataset import CorpusFileError, NormalizedCorpus, write_index
from gestural.data.normalize import NormalizeError, assign_splits, hash_fraction, normalize_corpus

BASE = DataParams(
    source="synthetic", url=None, sha256=None, archive=None, speakers=None, test_fraction=0.25, seed=3,
    nan_policy="interpolate", max_nan_run=20, skip_bad_files=False, percentiles=(0.0, 100.0),
)


def rows_for(ids, speaker="spk"):
    return [{"utterance_id": i, "speaker": speaker} for i in ids]


def test_hash_split_is_deterministic_and_near_the_fraction():
    rows = rows_for(f"spk_{i:04d}" for i in range(4000))
    first = assign_splits(rows, seed=0, test_fraction=0.2)
    assert first == assign_splits(rows, seed=0, test_fraction=0.2)
    assert set(first) == {"train", "test"}
    assert first.count("test") / len(first) == pytest.approx(0.2, abs=0.02)
    # Another seed gives another split of the same size.
    other = assign_splits(rows, seed=1, test_fraction=0.2)
    assert other != first and other.count("test") / len(other) == pytest.approx(0.2, abs=0.02)


def test_hash_is_sha256_of_seed_and_id():
    digest = hashlib.sha256(b"7\x00abc_001").digest()
    assert hash_fraction(7, "abc_001") == int.from_bytes(digest[:4], "big") / 2**32


def test_split_is_stable_when_utterances_are_added_or_removed():
    ids = [f"spk_{i:03d}" for i in range(300)]
    before = dict(zip(ids, assign_splits(rows_for(ids), seed=5, test_fraction=0.3)))
    grown = ids[:100] + ["new_a", "new_b"] + ids[150:]  # 50 removed, 2 added
    after = dict(zip(grown, assign_splits(rows_for(grown), seed=5, test_fraction=0.3)))
    assert all(after[i] == before[i] for i in grown if i in before)


def test_official_test_list_is_honoured_and_other_speakers_hashed():
    mngu = rows_for(["mngu0_s1_0001", "mngu0_s1_0002", "mngu0_s1_0003"], "mngu0")
    msak = rows_for([f"msak0_{i:03d}" for i in range(50)], "msak0")
    splits = assign_splits(mngu + msak, seed=0, test_fraction=0.5,
                           official_test={"mngu0": ["mngu0_s1_0002", "mngu0_s1_9999"], "msak0": None})
    assert splits[:3] == ["train", "test", "train"]
    assert splits[3:] == assign_splits(msak, seed=0, test_fraction=0.5)


def write_npy_dir(directory, utterances: dict[str, np.ndarray], speakers: dict | None = None):
    """A hand-made nema2npy output: {utterance id: (frames, 12)} of one speaker 'spk'."""
    directory.mkdir(parents=True)
    rows, start = [], 0
    for utt_id, values in utterances.items():
        speaker = utt_id.split("_")[0]
        rows.append({"utterance_id": utt_id, "speaker": speaker, "start": start, "frames": len(values),
                     "ema": f"emadata/cin_us_{speaker}/nema/{utt_id}.ema",
                     "wav": f"emadata/cin_us_{speaker}/wav/{utt_id}.wav", "lab": ""})
        start += len(values)
    np.save(directory / "frames.npy", np.concatenate(list(utterances.values())).astype(np.float32))
    write_index(directory / "index.csv", rows)
    if speakers is None:
        names = sorted({row["speaker"] for row in rows})
        speakers = {n: {"dir": f"emadata/cin_us_{n}", "ema_stats": None, "official_test": None} for n in names}
    (directory / "speakers.json").write_text(json.dumps(speakers))


@pytest.fixture
def npy_with_extreme_test_value(tmp_path):
    """Speaker 'spk' with an official split: one test utterance holds extreme (but not absurd) values."""
    rng = np.random.default_rng(1)
    utterances = {f"spk_{i:02d}": rng.uniform(-1, 1, size=(20 + i, 12)) for i in range(6)}
    utterances["spk_03"][5, 4] = 5.0  # ~7 robust sd: out of the train range, yet a possible position
    utterances["spk_03"][6, 9] = -5.0
    speakers = {"spk": {"dir": "emadata/cin_us_spk", "ema_stats": {"mean": [0.0] * 12, "std": [1.0] * 12},
                        "official_test": ["spk_03", "spk_05"]}}
    write_npy_dir(tmp_path / "npy", utterances, speakers)
    return tmp_path / "npy", utterances


def test_scaling_uses_train_frames_only(npy_with_extreme_test_value, tmp_path):
    npy, utterances = npy_with_extreme_test_value
    stats = normalize_corpus(npy, tmp_path / "normalized", BASE)
    train = np.concatenate([v for k, v in utterances.items() if k not in ("spk_03", "spk_05")]).astype(np.float32)
    np.testing.assert_allclose(stats["low"], train.min(axis=0), rtol=1e-6)
    np.testing.assert_allclose(stats["high"], train.max(axis=0), rtol=1e-6)
    assert max(stats["high"]) < 1.0 and min(stats["low"]) > -1.0  # the +-5 in the test set is ignored

    corpus = NormalizedCorpus.load(tmp_path / "normalized")
    assert corpus.frames.dtype == np.float32 and corpus.frames.min() >= 0.0 and corpus.frames.max() <= 1.0
    train_frames = np.concatenate([u.T for u in corpus.utterances("train")])
    assert train_frames.min(axis=0) == pytest.approx(0.0) and train_frames.max(axis=0) == pytest.approx(1.0)
    extreme = corpus.utterances("test")[corpus.ids("test").index("spk_03")]
    assert extreme[4, 5] == 1.0 and extreme[9, 6] == 0.0  # clipped


def test_stats_record_split_counts_and_settings(npy_with_extreme_test_value, tmp_path):
    npy, utterances = npy_with_extreme_test_value
    stats = normalize_corpus(npy, tmp_path / "normalized", BASE)
    test_frames = len(utterances["spk_03"]) + len(utterances["spk_05"])
    total = sum(len(v) for v in utterances.values())
    assert stats["counts"] == {"train": {"utterances": 4, "frames": total - test_frames},
                               "test": {"utterances": 2, "frames": test_frames}}
    assert stats["per_speaker"] == {"spk": {"train": 4, "test": 2}}
    assert stats["split_method"] == {"spk": "official"}
    assert stats["ema_stats"]["spk"]["std"] == [1.0] * 12
    assert stats["channels"][:2] == ["td_x", "td_y"] and len(stats["channels"]) == 12
    assert (stats["percentiles"], stats["seed"], stats["test_fraction"]) == ([0.0, 100.0], 3, 0.25)
    assert json.loads((tmp_path / "normalized" / "stats.json").read_text()) == stats


def test_percentiles_are_robust_low_high(tmp_path):
    rng = np.random.default_rng(2)
    utterances = {f"spk_{i:03d}": rng.standard_normal((40, 12)) for i in range(40)}
    write_npy_dir(tmp_path / "npy", utterances)
    data = dataclasses.replace(BASE, percentiles=(5.0, 95.0))
    stats = normalize_corpus(tmp_path / "npy", tmp_path / "normalized", data)
    corpus = NormalizedCorpus.load(tmp_path / "normalized")
    train = np.concatenate([utterances[i] for i in corpus.ids("train")]).astype(np.float32)
    np.testing.assert_allclose(stats["low"], np.percentile(train, 5, axis=0), rtol=1e-5)
    np.testing.assert_allclose(stats["high"], np.percentile(train, 95, axis=0), rtol=1e-5)
    inside = (corpus.frames > 0) & (corpus.frames < 1)
    assert 0.8 < inside.mean() < 0.95


def test_constant_channel_maps_to_zero(tmp_path):
    utterances = {f"spk_{i:03d}": np.ones((30, 12)) * np.arange(12) for i in range(10)}
    utterances["spk_000"][:, 0] = np.linspace(0, 1, 30)
    write_npy_dir(tmp_path / "npy", utterances)
    stats = normalize_corpus(tmp_path / "npy", tmp_path / "normalized", dataclasses.replace(BASE, test_fraction=0.01))
    frames = NormalizedCorpus.load(tmp_path / "normalized").frames
    assert np.isfinite(frames).all() and (frames[:, 1:] == 0).all()
    assert stats["constant_channels"] == [f"{c}" for c in stats["channels"][1:]]


def test_loaded_corpus_is_views_in_index_order(tmp_path):
    rng = np.random.default_rng(3)
    utterances = {f"spk_{i:03d}": rng.uniform(size=(10 + i, 12)) for i in range(30)}
    write_npy_dir(tmp_path / "npy", utterances)
    before = {p.name: p.read_bytes() for p in (tmp_path / "npy").iterdir()}
    normalize_corpus(tmp_path / "npy", tmp_path / "normalized", BASE)
    assert {p.name: p.read_bytes() for p in (tmp_path / "npy").iterdir()} == before  # inputs untouched

    corpus = NormalizedCorpus.load(tmp_path / "normalized")
    train, test = corpus.ids("train"), corpus.ids("test")
    assert not set(train) & set(test) and sorted(train + test) == sorted(utterances)
    assert corpus.ids() == list(utterances)
    for utt_id, array in zip(test, corpus.utterances("test")):
        assert array.shape == (12, len(utterances[utt_id]))
        assert np.shares_memory(array, corpus.frames)
    row = next(r for r in corpus.index if r["utterance_id"] == test[0])
    assert row["split"] == "test" and isinstance(row["start"], int)
    np.testing.assert_array_equal(corpus.utterances("test")[0],
                                  corpus.frames[row["start"]:row["start"] + row["frames"]].T)
    with pytest.raises(ValueError, match="split must be"):
        corpus.ids("validation")


def test_empty_train_split_is_refused(tmp_path):
    utterances = {"spk_001": np.zeros((5, 12)), "spk_002": np.ones((5, 12))}
    speakers = {"spk": {"dir": "x", "ema_stats": None, "official_test": ["spk_001", "spk_002"]}}
    write_npy_dir(tmp_path / "npy", utterances, speakers)
    with pytest.raises(NormalizeError, match="no training utterances"):
        normalize_corpus(tmp_path / "npy", tmp_path / "normalized", BASE)
    assert not (tmp_path / "normalized").exists()


def test_missing_or_inconsistent_inputs_are_named(tmp_path):
    with pytest.raises(CorpusFileError, match=r"frames\.npy: no such file"):
        normalize_corpus(tmp_path / "npy", tmp_path / "normalized", BASE)
    write_npy_dir(tmp_path / "npy", {"spk_001": np.zeros((5, 12))})
    np.save(tmp_path / "npy" / "frames.npy", np.zeros((7, 12), np.float32))
    with pytest.raises(CorpusFileError, match="index.csv covers 5 frames but frames.npy has 7"):
        normalize_corpus(tmp_path / "npy", tmp_path / "normalized", BASE)
    with pytest.raises(CorpusFileError, match=r"frames\.npy: no such file"):
        NormalizedCorpus.load(tmp_path / "nowhere")


# --------------------------------------------------------------------------
# Absurd samples and leftovers of missing data
# --------------------------------------------------------------------------


def smooth_utterances(count=30, frames=50, seed=4):
    """Random-walk trajectories (like articulator paths) of speaker 'spk'."""
    rng = np.random.default_rng(seed)
    return {f"spk_{i:03d}": np.cumsum(rng.normal(0, 0.1, size=(frames, 12)), axis=0) for i in range(count)}


def normalized_frames(tmp_path, name, utterances, data=BASE):
    write_npy_dir(tmp_path / name, utterances)
    stats = normalize_corpus(tmp_path / name, tmp_path / f"{name}-out", data)
    return NormalizedCorpus.load(tmp_path / f"{name}-out").frames, stats


def test_one_absurd_sample_leaves_the_rest_of_its_channel_intact(tmp_path, caplog):
    clean = smooth_utterances()
    glitched = {k: v.copy() for k, v in clean.items()}
    glitched["spk_007"][20, 0] = 1e30  # td_x; percentiles [0, 100] would make it `high`
    expected, _ = normalized_frames(tmp_path, "clean", clean)
    with caplog.at_level(logging.WARNING, logger="gestural.data.normalize"):
        frames, stats = normalized_frames(tmp_path, "glitched", glitched)

    glitch = 7 * 50 + 20
    others = np.ones(len(frames), dtype=bool)
    others[glitch] = False
    np.testing.assert_allclose(frames[others], expected[others], atol=1e-6)  # was: 18,344 of 18,345 frames at 0
    assert frames[glitch, 0] == pytest.approx((frames[glitch - 1, 0] + frames[glitch + 1, 0]) / 2, abs=1e-6)
    assert stats["absurd_samples"]["count"] == 1
    assert stats["absurd_samples"]["first"] == [
        {"utterance_id": "spk_007", "channel": "td_x", "frame": 21, "value": 1e30}]
    [warning] = [r.getMessage() for r in caplog.records]
    assert "frames.npy: 1 absurd sample(s)" in warning and "spk_007 td_x frame 21 (1e+30)" in warning


def test_many_absurd_samples_are_summarized_in_one_warning(tmp_path, caplog):
    utterances = smooth_utterances()
    for i, channel in enumerate((0, 3, 5, 5, 11)):
        utterances[f"spk_{i:03d}"][10, channel] = -5e8 if i % 2 else 3e4
    with caplog.at_level(logging.WARNING, logger="gestural.data.normalize"):
        _, stats = normalized_frames(tmp_path, "npy", utterances)
    assert stats["absurd_samples"]["count"] == 5
    [warning] = [r.getMessage() for r in caplog.records]
    assert warning.endswith("and 2 more (see stats.json)") and warning.count(" frame 11 ") == 3


def test_sparse_movements_on_a_quiet_channel_are_not_absurd(tmp_path):
    # Mostly at rest (MAD = noise), moving by 1000x the noise 5 % of the time: real data, kept.
    rng = np.random.default_rng(5)
    utterances = {}
    for i in range(20):
        values = rng.normal(0, 1e-3, size=(100, 12))
        values[40:45, 2] += 1.0
        utterances[f"spk_{i:03d}"] = values
    frames, stats = normalized_frames(tmp_path, "npy", utterances)
    assert stats["absurd_samples"]["count"] == 0
    assert frames[40:45, 2].min() > 0.9


def test_a_channel_with_too_many_absurd_samples_is_refused(tmp_path):
    utterances = smooth_utterances()
    for i in range(3):  # 3 % of the channel: a missing-value code, not glitches to interpolate
        utterances[f"spk_{i:03d}"][10:25, 4] = 1e30
    write_npy_dir(tmp_path / "npy", utterances)
    with pytest.raises(NormalizeError, match=r"frames.npy: 45 of 1500 samples of channel tt_x are absurd "
                                             r"\(beyond 1e\+06, or more than 50 robust .* too many to be glitches"):
        normalize_corpus(tmp_path / "npy", tmp_path / "out", BASE)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
def test_missing_samples_left_in_the_frames_are_refused(tmp_path, value):
    utterances = smooth_utterances(count=5)
    utterances["spk_003"][7, 9] = value
    write_npy_dir(tmp_path / "npy", utterances)
    with pytest.raises(NormalizeError, match=r"frames.npy: 1 missing sample\(s\) \(NaN or inf\), the first in "
                                             r"utterance spk_003 channel ul_y frame 8 .*rerun `dvc repro -f nema2npy`"):
        normalize_corpus(tmp_path / "npy", tmp_path / "out", BASE)
    assert not (tmp_path / "out").exists()
