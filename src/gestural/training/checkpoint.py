"""The per-epoch training checkpoint: what it holds, when it is resumed, and its fingerprint.

A checkpoint holds everything needed to continue bit-for-bit (model, optimizer, scheduler,
epoch, history and every RNG state) plus a fingerprint of the run: its settings, its
training and held-out data, the package's code (:func:`code_version`) and the model it
starts from. A killed run resumes from it; a run whose fingerprint differs starts fresh.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from gestural.core.files import UserFileError, check_regular_file, save_torch
from gestural.training.config import TrainConfig
from gestural.training.outputs import EpochRecord

log = logging.getLogger(__name__)


def _hash_file(path: Path, digest) -> None:
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)


def code_version() -> str:
    """Hash of the package's source: a checkpoint from other code is not resumed."""
    digest = hashlib.sha256()
    # Every module of the package (this file's directory), not only the training ones.
    for path in sorted(Path(__file__).resolve().parent.glob("*.py")):
        digest.update(path.name.encode())
        _hash_file(path, digest)
    return digest.hexdigest()[:16]


def run_fingerprint(config: TrainConfig, train_utterances, test_utterances) -> str:
    """What a checkpoint must match to be resumed: settings, training data, code, init model."""
    digest = hashlib.sha256(json.dumps(config.settings_fingerprint(), sort_keys=True).encode())
    for split in (train_utterances, test_utterances):
        digest.update(str(len(split)).encode())
        for utterance in split:
            array = np.ascontiguousarray(utterance, dtype=np.float32)
            digest.update(str(array.shape).encode())
            digest.update(array.tobytes())
    digest.update(code_version().encode())
    if config.init not in ("random", "kmeans") and Path(config.init).is_file():
        _hash_file(Path(config.init), digest)
    return digest.hexdigest()[:16]


def _problem(error: BaseException) -> str:
    """The error's type and first line; some have no message at all (torch.load of an empty
    file raises a bare EOFError)."""
    lines = str(error).strip().splitlines()
    return f"{type(error).__name__}: {lines[0][:200]}" if lines else type(error).__name__


def _rng_state(generator: torch.Generator) -> dict:
    # numpy's state as plain values and a tensor, so that checkpoints load with weights_only.
    name, keys, position, has_gauss, cached = np.random.get_state()
    state = {"python": random.getstate(), "numpy": [name, torch.from_numpy(keys.astype(np.int64)), int(position),
                                                    int(has_gauss), float(cached)],
             "torch": torch.get_rng_state(), "sampler": generator.get_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict, generator: torch.Generator) -> None:
    random.setstate(state["python"])
    name, keys, position, has_gauss, cached = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), position, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    generator.set_state(state["sampler"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(path: Path, *, fingerprint: str, epoch: int, model: torch.nn.Module,
                    optimizer: torch.optim.Optimizer, scheduler, history: list[EpochRecord],
                    trained_frames: int, train_seconds: float, generator: torch.Generator) -> None:
    """Write the state after ``epoch`` epochs (atomically: a kill leaves the previous one).

    Parameters
    ----------
    path : Path
    fingerprint : str
        :func:`run_fingerprint` of the run.
    epoch : int
        Epochs done.
    model, optimizer, scheduler, generator
        The training objects; the generator is the crop sampler's.
    history : list of EpochRecord
        The learning curve so far.
    trained_frames, train_seconds
        Totals over every invocation, so that a resumed run reports its whole training.
    """
    state = {
        "fingerprint": fingerprint,
        "epoch": epoch,
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "history": [dataclasses.asdict(row) for row in history],
        "trained_frames": trained_frames,
        "train_seconds": train_seconds,
        "rng": _rng_state(generator),
    }
    save_torch(path, state)


@dataclass
class Resumed:
    """Where a resumed run continues: after ``epoch``, with its curve and totals so far."""

    epoch: int
    history: list[EpochRecord]
    trained_frames: int
    train_seconds: float


class CheckpointMismatch(Exception):
    """The checkpoint has the run's fingerprint but did not load into its objects, which may be
    partly overwritten: the caller rebuilds them from the seed."""


def resume_checkpoint(path: Path, fingerprint: str, device: torch.device, *, model: torch.nn.Module,
                      optimizer: torch.optim.Optimizer, scheduler, generator: torch.Generator) -> Resumed | None:
    """Load the checkpoint into the training objects (and every RNG) if it was written by this
    very run (same fingerprint); anything else starts fresh and says why in the log.

    Returns
    -------
    Resumed or None
        None, with the objects untouched: no checkpoint, an unreadable one, or another run's.

    Raises
    ------
    CheckpointMismatch
        The fingerprint matches but the state does not fit the objects.
    UserFileError
        The path is a directory, FIFO or device: refused before training, which could never
        write its checkpoint there.
    """
    try:
        check_regular_file(path, "checkpoint file")
    except FileNotFoundError:
        return None
    except UserFileError as error:
        raise UserFileError(path, f"{error.reason}; move it away (the train stage writes its checkpoint "
                                  "there)") from None
    try:
        state = torch.load(path, map_location=device, weights_only=True)
    except Exception as error:  # empty, cut short by a kill, or not a checkpoint at all
        log.info(f"checkpoint {path} is unreadable ({_problem(error)}); starting fresh")
        return None
    if not isinstance(state, dict) or state.get("fingerprint") != fingerprint:
        log.info(f"checkpoint {path} was written for other settings, data or code; starting fresh")
        return None
    try:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        history = [EpochRecord(**row) for row in state["history"]]
        _set_rng_state(state["rng"], generator)
    except (KeyError, TypeError, ValueError, RuntimeError) as error:
        log.info(f"checkpoint {path} does not fit this model ({_problem(error)}); starting fresh")
        raise CheckpointMismatch(str(error)) from error
    resumed = Resumed(epoch=state["epoch"], history=history, trained_frames=state.get("trained_frames", 0),
                      train_seconds=state.get("train_seconds", 0.0))
    log.info(f"resuming from {path} after epoch {resumed.epoch}")
    return resumed
