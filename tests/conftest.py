"""Shared fixtures: tiny synthetic archives and hand-made corpora laid out like emadata.tgz."""

from __future__ import annotations

import dataclasses
import io
import tarfile
import wave
from pathlib import Path

import numpy as np
import pytest

from gestural.core import units
from gestural.core.params import load_params
from gestural.data import ema, est_track
from gestural.evaluation.classical import BaselineParams
from gestural.evaluation.held_out import EvaluateParams
from gestural.model.network import ModelConfig
from gestural.synthetic.generator import SyntheticConfig, write_corpus
from gestural.training.config import TrainConfig

PROJECT_ROOT = Path(__file__).resolve().parents[1]


def train_config(**overrides) -> TrainConfig:
    """params.yaml's training settings (the only defaults there are), with ``overrides``
    (not validated: tests of validation call ``.validate()`` themselves)."""
    return dataclasses.replace(TrainConfig.from_params(load_params(PROJECT_ROOT / "params.yaml")), **overrides)


def model_config(**overrides) -> ModelConfig:
    """params.yaml's model settings, with ``overrides`` (not validated)."""
    return dataclasses.replace(train_config().model_config(), **overrides)


def evaluate_params(**overrides) -> EvaluateParams:
    """params.yaml's evaluate settings, with ``overrides``."""
    return dataclasses.replace(EvaluateParams.from_params(load_params(PROJECT_ROOT / "params.yaml")), **overrides)


def baseline_params(**overrides) -> BaselineParams:
    """params.yaml's ``evaluate.baseline`` settings, with ``overrides``."""
    return dataclasses.replace(evaluate_params().baseline, **overrides)


def tiny_synthetic_config(**overrides) -> SyntheticConfig:
    """A two-speaker corpus of a few 1.2-1.6 s utterances, with every blemish of the real one.

    Utterances are long enough (>= 240 frames) that the 200-frame "long" NaN run
    leaves finite samples on both sides, so it is dropped as a too-long run.
    """
    settings = dict(
        speakers=["fsyn0", "msyn0"],
        utterances_per_speaker=6,
        min_seconds=1.2,
        max_seconds=1.6,
        missing_wav=2,
        missing_ema=1,
        short_nan_runs=2,
        long_nan_runs=1,
        seed=0,
    )
    settings.update(overrides)
    return SyntheticConfig(**settings)


@pytest.fixture(scope="session")
def synthetic_archive(tmp_path_factory):
    """(archive path, ground-truth path, generator summary, config) of a tiny synthetic corpus."""
    directory = tmp_path_factory.mktemp("synthetic")
    config = tiny_synthetic_config()
    archive, truth = directory / "emadata.tgz", directory / "ground_truth.npz"
    summary = write_corpus(config, archive, truth)
    return archive, truth, summary, config


def wav_bytes(samples: int) -> bytes:
    """A silent 16 kHz mono 16-bit wav with ``samples`` samples."""
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as handle:
        handle.setnchannels(1)
        handle.setsampwidth(2)
        handle.setframerate(units.WAV_RATE)
        handle.writeframes(b"\x00\x00" * samples)
    return buffer.getvalue()


class CorpusBuilder:
    """Write a small corpus by hand: ``<root>/emadata/cin_us_<speaker>/{nema,wav,lab,etc}``.

    Parameters
    ----------
    root : Path
        The directory that plays ``data/extracted``.
    """

    def __init__(self, root: Path):
        self.root = root
        self.rng = np.random.default_rng(0)

    def speaker_dir(self, speaker: str) -> Path:
        return self.root / "emadata" / f"cin_us_{speaker}"

    def values(self, frames: int = 50, columns: int = 14) -> np.ndarray:
        """Random z-scored-looking trajectories (frames, columns)."""
        return self.rng.standard_normal((frames, columns))

    def add(self, speaker: str, utt_id: str, values: np.ndarray | None = None, *, wav: bool = True,
            wav_frames: int | None = None, lab: bool = True, est: bool = False) -> np.ndarray:
        """Add one utterance; returns the values written (frames, columns)."""
        values = self.values() if values is None else np.asarray(values, dtype=np.float64)
        base = self.speaker_dir(speaker)
        path = base / "nema" / f"{utt_id}.ema"
        if est:
            est_track.write_est_track(path, values)
        else:
            ema.write_nema(path, values)
        if wav:
            frames = values.shape[0] if wav_frames is None else wav_frames
            (base / "wav").mkdir(parents=True, exist_ok=True)
            (base / "wav" / f"{utt_id}.wav").write_bytes(wav_bytes(frames * units.SAMPLES_PER_FRAME))
        if lab:
            ema.write_lab(base / "lab" / f"{utt_id}.lab", [(values.shape[0] / units.FRAME_RATE, "sil")])
        return values

    def add_wav_only(self, speaker: str, utt_id: str, frames: int = 50) -> None:
        path = self.speaker_dir(speaker) / "wav" / f"{utt_id}.wav"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(wav_bytes(frames * units.SAMPLES_PER_FRAME))

    def write_stats(self, speaker: str, columns: int = 14) -> np.ndarray:
        stats = np.column_stack([np.arange(columns) * 1.5, np.arange(columns) + 2.0])
        ema.write_ema_stats(self.speaker_dir(speaker) / "ema.stats", stats)
        return stats

    def write_prompts(self, speaker: str, ids: list[str], suffix: str = "") -> None:
        ema.write_txt_done_data(
            self.speaker_dir(speaker) / "etc" / f"txt.done.data{suffix}", {i: "Some text." for i in ids}
        )

    def tar(self, path: Path) -> Path:
        """Pack ``root/emadata`` into a .tgz as emadata.tgz is packed."""
        with tarfile.open(path, "w:gz") as tar:
            tar.add(self.root / "emadata", arcname="emadata")
        return path


@pytest.fixture
def corpus_builder(tmp_path) -> CorpusBuilder:
    return CorpusBuilder(tmp_path / "extracted")


def run_command(command: list[str], repo: Path, env: dict) -> str:
    """Run a command in ``repo``; fail the test with its output if it fails."""
    import subprocess

    result = subprocess.run(command, cwd=repo, env=env, capture_output=True, text=True)
    assert result.returncode == 0, f"{' '.join(command)} failed:\n{result.stdout}\n{result.stderr}"
    return result.stdout


def make_pipeline_repo(tmp_path: Path, configure) -> tuple[Path, dict]:
    """A git + DVC copy of the whole project (src, stages, dvc.yaml, params.yaml) in
    ``tmp_path / "repo"``, committed; ``configure(params)`` edits the params first.

    Returns (repo, env): the environment runs the copy's own ``src`` with this Python.
    """
    import os
    import shutil
    import sys

    import yaml

    repo = tmp_path / "repo"
    repo.mkdir()
    for name in ("src", "stages"):
        shutil.copytree(PROJECT_ROOT / name, repo / name, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    for name in ("dvc.yaml", ".gitignore", ".dvcignore"):
        shutil.copy(PROJECT_ROOT / name, repo / name)
    params = yaml.safe_load((PROJECT_ROOT / "params.yaml").read_text())
    configure(params)
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    env = dict(
        os.environ,
        PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        PYTHONPATH=str(repo / "src"),
        DVC_NO_ANALYTICS="1",
        DVC_SITE_CACHE_DIR=str(tmp_path / "dvc-site-cache"),
        GIT_CONFIG_NOSYSTEM="1",
        MPLBACKEND="Agg",
        OMP_NUM_THREADS="1",
    )
    for command in (["git", "init", "-q", "-b", "main"], ["git", "config", "user.name", "Test"],
                    ["git", "config", "user.email", "test@example.com"], ["dvc", "init", "-q"],
                    ["dvc", "config", "core.analytics", "false"],
                    ["git", "add", "-A"], ["git", "commit", "-q", "-m", "pipeline"]):
        run_command(command, repo, env)
    return repo, env
