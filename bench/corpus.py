"""The benchmark's synthetic corpora, built through the library, and the data stages' timing.

``write_corpus`` -> ``safe_extract`` -> ``build_npy`` -> ``normalize_corpus`` in a temporary
directory, so that the bench never touches ``data/``.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import numpy as np

from bench import say
from gestural.core.params import DataParams
from gestural.data.archive import safe_extract
from gestural.data.corpus import build_npy
from gestural.data.dataset import NormalizedCorpus
from gestural.data.normalize import normalize_corpus
from gestural.evaluation.planted import PlantedTruth, planted_truth
from gestural.synthetic.generator import SyntheticConfig, synthetic_config, write_corpus
from gestural.synthetic.ground_truth import has_planted_kernels, load_activations


def quick_synthetic(params: dict) -> SyntheticConfig:
    """params.yaml's synthetic corpus (its kind included), cut to 2 speakers x 20 utterances
    (training is a fixed number of steps, so more utterances cost little and steady the
    held-out metrics)."""
    return dataclasses.replace(synthetic_config(params), speakers=["fsyn0", "msyn0"], utterances_per_speaker=20,
                               min_seconds=1.0, max_seconds=3.0, missing_wav=1, missing_ema=1, short_nan_runs=1,
                               long_nan_runs=0)


def real_size_synthetic(params: dict) -> SyntheticConfig:
    """params.yaml's synthetic kind at about the size of CMU's corpus: 8 speakers x 551
    utterances of 1-5 s (~2.6 M frames)."""
    config = synthetic_config(params)
    return dataclasses.replace(config, speakers=[f"syn{i}" for i in range(8)], utterances_per_speaker=551,
                               min_seconds=1.0, max_seconds=5.0,
                               articulatory=dataclasses.replace(config.articulatory, seconds=(1.0, 5.0)))


def build_corpus(config: SyntheticConfig, directory: Path, data: DataParams) -> dict:
    """The data stages through the library: write_corpus -> safe_extract -> build_npy -> normalize.

    Returns the seconds of each (generation and extraction are reported, not counted as the
    pipeline's own cost) and the paths.
    """
    seconds = {}
    archive, truth = directory / "emadata.tgz", directory / "ground_truth.npz"
    started = time.perf_counter()
    summary = write_corpus(config, archive, truth)
    seconds["generate"] = time.perf_counter() - started
    started = time.perf_counter()
    safe_extract(archive, directory / "extracted")
    seconds["extract"] = time.perf_counter() - started
    started = time.perf_counter()
    build_npy(directory / "extracted", directory / "npy", data)
    seconds["nema2npy"] = time.perf_counter() - started
    started = time.perf_counter()
    normalize_corpus(directory / "npy", directory / "normalized", data)
    seconds["normalize"] = time.perf_counter() - started
    return {"seconds": seconds, "summary": summary, "truth": truth, "normalized": directory / "normalized"}


def data_stages(built: dict, label: str) -> dict:
    """The ``data_stages`` section of one built corpus."""
    s = built["seconds"]
    return {
        "corpus": label,
        "utterances": built["summary"]["utterances"],
        "frames": built["summary"]["frames"],
        "nema2npy_seconds": s["nema2npy"],
        "normalize_seconds": s["normalize"],
        "nema2npy_plus_normalize_seconds": s["nema2npy"] + s["normalize"],
        "not_counted": {"generate_seconds": s["generate"], "extract_seconds": s["extract"]},
    }


@dataclasses.dataclass
class BenchCorpus:
    """The corpus every training and evaluation of the bench runs on, with its planted truth.

    Both synthetic kinds plant activations; only the events corpus plants kernels and onsets
    (``truth`` is None on the other)."""

    kind: str
    built: dict  # build_corpus's result
    train: list[np.ndarray]
    test: list[np.ndarray]
    gesture_names: list[str]
    activations: list
    truth: PlantedTruth | None

    @property
    def planted_kernels(self) -> bool:
        return self.truth is not None

    def summary(self) -> dict:
        """The result's ``corpus`` section."""
        return {"kind": self.kind, "planted_gestures": len(self.gesture_names),
                "planted_kernels": self.planted_kernels, "utterances_train": len(self.train),
                "utterances_test": len(self.test), "frames_train": sum(u.shape[1] for u in self.train),
                "frames_test": sum(u.shape[1] for u in self.test)}


def benchmark_corpus(params: dict, data: DataParams, directory: Path, quick: bool) -> BenchCorpus:
    """Build the default synthetic corpus (what `dvc repro` trains on; cut short with ``quick``)
    in ``directory`` and load its splits and planted truth."""
    synthetic = quick_synthetic(params) if quick else synthetic_config(params)
    say(f"building the {'quick' if quick else 'default'} synthetic corpus ({synthetic.kind})")
    built = build_corpus(synthetic, directory, data)
    corpus = NormalizedCorpus.load(built["normalized"])
    test = [np.ascontiguousarray(u, dtype=np.float32) for u in corpus.utterances("test")]
    lengths = [u.shape[1] for u in test]
    gesture_names, activations = load_activations(built["truth"], corpus.ids("test"), lengths)
    truth = (planted_truth(built["truth"], corpus.ids("test"), lengths, corpus.stats)
             if has_planted_kernels(built["truth"]) else None)
    return BenchCorpus(kind=synthetic.kind, built=built, train=corpus.utterances("train"), test=test,
                       gesture_names=gesture_names, activations=activations, truth=truth)


def data_stage_timing(data_size: str, params: dict, data: DataParams, corpus: BenchCorpus, directory: Path,
                      quick: bool) -> dict:
    """The ``data_stages`` section: on a real-size corpus built in ``directory`` (``data_size``
    "real"), else the benchmark corpus's own timings."""
    if data_size != "real":
        return data_stages(corpus.built, "quick synthetic" if quick else "default synthetic")
    say("data stages on a real-size synthetic corpus (generation takes a while, not counted)")
    real = build_corpus(real_size_synthetic(params), directory, data)
    return data_stages(real, f"real-size synthetic {corpus.kind} (8 speakers x 551 utterances, 1-5 s)")
