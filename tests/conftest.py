"""Shared fixtures and helpers of the whole suite: params.yaml's settings, tiny synthetic
archives, hand-made corpora laid out like emadata.tgz, git + DVC repos, one-line errors.

The tests mirror the package (tests/<subpackage>/test_<module>.py); project-wide tests sit
at the top. Test folders are no packages, so each test file's name must be unique.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import os
import shutil
import subprocess
import sys
import tarfile
import wave
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from gestural.core import units
from gestural.core.params import load_params
from gestural.data import ema, est_track
from gestural.evaluation.classical import BaselineParams
from gestural.evaluation.held_out import EvaluateParams
from gestural.model.network import ModelConfig
from gestural.synthetic.generator import SyntheticConfig, write_corpus
from gestural.training.config import TrainConfig

PROJECT_ROOT = Path(__file__).resolve().parents[1]


def project_params() -> dict:
    """A fresh copy of the project's params.yaml (read with its top-level keys checked)."""
    return load_params(PROJECT_ROOT / "params.yaml")


def src_env() -> dict:
    """This environment, importing ``gestural`` from the project's src/ (for stage scripts)."""
    return dict(os.environ, PYTHONPATH=str(PROJECT_ROOT / "src"))


@pytest.fixture
def one_thread():
    """For tiny problems: one torch thread is fastest, and immune to a busy machine (where
    spinning OpenMP threads fighting for 2 cores make the same fit 30x slower)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@contextlib.contextmanager
def raises_in_one_line(error: type[BaseException], match: str | None = None):
    """``pytest.raises(error, match=match)`` whose message is also a single line."""
    with pytest.raises(error, match=match) as caught:
        yield caught
    assert "\n" not in str(caught.value), str(caught.value)


def the_one_line(stderr: str) -> str:
    """The single line that ``stderr`` holds (surrounding whitespace aside), with no traceback."""
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in stderr, stderr
    return lines[0]


def train_config(**overrides) -> TrainConfig:
    """params.yaml's training settings (the only defaults there are), with ``overrides``
    (not validated: tests of validation call ``.validate()`` themselves)."""
    return dataclasses.replace(TrainConfig.from_params(project_params()), **overrides)


def model_config(**overrides) -> ModelConfig:
    """params.yaml's model settings, with ``overrides`` (not validated)."""
    return dataclasses.replace(train_config().model_config(), **overrides)


def evaluate_params(**overrides) -> EvaluateParams:
    """params.yaml's evaluate settings, with ``overrides``."""
    return dataclasses.replace(EvaluateParams.from_params(project_params()), **overrides)


def baseline_params(**overrides) -> BaselineParams:
    """params.yaml's ``evaluate.baseline`` settings, with ``overrides``."""
    return dataclasses.replace(evaluate_params().baseline, **overrides)


def load_stage(name: str):
    """The module of the stage script stages/<name>.py, loaded (not run)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(f"{name}_stage", PROJECT_ROOT / "stages" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def min_max_normalized(recordings: list[np.ndarray]) -> tuple[list[np.ndarray], np.ndarray, np.ndarray]:
    """Recordings (frames, channels) scaled to [0, 1] per channel over them all, as float32
    (channels, frames); with the per-channel low and high."""
    stacked = np.concatenate(recordings)
    low, high = stacked.min(0), stacked.max(0)
    return [((r - low) / (high - low)).T.astype(np.float32) for r in recordings], low, high


def bump_kernels(num: int, length: int = 10, start: int = 3, width: int = 4, seed: int = 0,
                 channels: int = 12) -> np.ndarray:
    """Random non-negative kernels (num, channels, length) whose support is frames [start, start + width)."""
    rng = np.random.default_rng(seed)
    kernels = np.zeros((num, channels, length))
    kernels[:, :, start:start + width] = rng.random((num, channels, width))
    return kernels


def spike_scores(num: int, frames: int, rate: float = 0.03, seed: int = 0) -> np.ndarray:
    """Random sparse scores (num, frames): a spike of 0.5-1 at each frame with probability ``rate``."""
    rng = np.random.default_rng(seed)
    return (rng.random((num, frames)) < rate) * rng.uniform(0.5, 1.0, (num, frames))


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
    result = subprocess.run(command, cwd=repo, env=env, capture_output=True, text=True)
    assert result.returncode == 0, f"{' '.join(command)} failed:\n{result.stdout}\n{result.stderr}"
    return result.stdout


def dvc_env(tmp_path: Path, **extra: str) -> dict:
    """An environment for git and DVC in a temporary repo: this Python's bin/ first on PATH, no
    analytics, DVC's site cache under ``tmp_path``, no system git config; plus ``extra``."""
    return dict(
        os.environ,
        PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        DVC_NO_ANALYTICS="1",
        DVC_SITE_CACHE_DIR=str(tmp_path / "dvc-site-cache"),
        GIT_CONFIG_NOSYSTEM="1",
        **extra,
    )


def init_git_dvc(repo: Path, env: dict) -> None:
    """``git init`` (branch main, a test identity) and ``dvc init`` in ``repo``."""
    for command in (["git", "init", "-q", "-b", "main"], ["git", "config", "user.name", "Test"],
                    ["git", "config", "user.email", "test@example.com"], ["dvc", "init", "-q"]):
        run_command(command, repo, env)


def commit_all(repo: Path, env: dict, message: str) -> None:
    run_command(["git", "add", "-A"], repo, env)
    run_command(["git", "commit", "-q", "-m", message], repo, env)


def tiny_pipeline_params(params: dict) -> None:
    """Make a copy of params.yaml run the whole pipeline in seconds: a tiny corpus, a 4-gesture
    model trained for 5 steps, a 3-iteration classical baseline (sweep and queue tests)."""
    params["synthetic"].update(dataclasses.asdict(tiny_synthetic_config(utterances_per_speaker=6)))
    params.update(num_gestures=4, segment_len=200, epochs=1, device="cpu")
    params["train"].update(hidden=8, threads=1, figure_every=1000, steps_per_epoch=5)
    params["evaluate"]["baseline"].update(max_iter=3, transform_iter=3, max_train_frames=2000)


def make_pipeline_repo(tmp_path: Path, configure) -> tuple[Path, dict]:
    """A git + DVC copy of the whole project (src, stages, dvc.yaml, params.yaml) in
    ``tmp_path / "repo"``, committed; ``configure(params)`` edits the params first.

    Returns (repo, env): the environment runs the copy's own ``src`` with this Python.
    """
    repo = tmp_path / "repo"
    repo.mkdir()
    for name in ("src", "stages"):
        shutil.copytree(PROJECT_ROOT / name, repo / name, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    for name in ("dvc.yaml", ".gitignore", ".dvcignore"):
        shutil.copy(PROJECT_ROOT / name, repo / name)
    params = project_params()
    configure(params)
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    env = dvc_env(tmp_path, PYTHONPATH=str(repo / "src"), MPLBACKEND="Agg", OMP_NUM_THREADS="1")
    init_git_dvc(repo, env)
    run_command(["dvc", "config", "core.analytics", "false"], repo, env)
    commit_all(repo, env, "pipeline")
    return repo, env
