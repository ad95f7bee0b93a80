"""``model.pt``: the one writer and reader of a trained model's file.

The file holds plain data only (tensors, dicts, lists, numbers), so that it loads with
``torch.load(weights_only=True)``: it may come from anyone (``train.init: path/to/model.pt``),
and a full unpickle would run whatever code it holds.
"""

from __future__ import annotations

import dataclasses
import io
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from gestural.core.files import MIB, UserFileError, read_user_file, save_torch
from gestural.model.network import GesturalAutoEncoder, ModelConfig

MODEL_FORMAT = "gestural-model/1"
# Settings a model must share with another to take its weights.
SHAPE_KEYS = ("num_gestures", "win_size", "num_channels", "hidden", "model", "release_response")
# A trained model is a few MB (even 4096 gestures with long kernels stay far under this); the
# cap stops a mistaken path (a disk image) from being read into memory whole.
MAX_MODEL_BYTES = 1024 * MIB


class ModelFileError(ValueError):
    """A model file that is not one, is truncated, unsafe, or of another shape."""


def save_model(path: str | Path, model: GesturalAutoEncoder, settings: dict, normalization: dict,
               score_scale: Sequence[float] | None = None) -> None:
    """Write ``model.pt`` atomically and byte-stably: the weights, the model's config, the
    training settings that made it, the normalization of its input and, when given, each
    gesture's largest score on the training utterances (what the export's segmentation cuts at)."""
    payload = {
        "format": MODEL_FORMAT,
        "model_config": dataclasses.asdict(model.config),
        "train_config": dict(settings),
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "normalization": normalization,
    }
    if score_scale is not None:
        payload["score_scale"] = [float(value) for value in score_scale]
    save_torch(path, payload)


def read_model_file(path: str | Path, map_location="cpu") -> dict:
    """The payload of a ``model.pt``, with a one-line error if it is not one.

    Raises
    ------
    FileNotFoundError
        No such file.
    ModelFileError
        Not a regular file (a directory, FIFO or device: never opened), over
        :data:`MAX_MODEL_BYTES`, unreadable, truncated, holding Python objects, or without
        weights and config.
    OSError
        The file cannot be read (permission).
    """
    path = Path(path)
    try:
        data = read_user_file(path, "model file", MAX_MODEL_BYTES)
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: model file not found") from None
    except UserFileError as error:
        raise ModelFileError(str(error)) from None
    try:
        payload = torch.load(io.BytesIO(data), map_location=map_location, weights_only=True)
    except Exception as error:  # torch raises many types for a corrupt or unsafe file
        raise ModelFileError(f"{path}: {_load_problem(error)}") from None
    if not isinstance(payload, dict) or "state_dict" not in payload or "model_config" not in payload:
        raise ModelFileError(f"{path}: not a gestural model file (no state_dict / model_config)")
    if payload.get("format") != MODEL_FORMAT:
        raise ModelFileError(f"{path}: model file format {payload.get('format')!r}, this version reads "
                             f"{MODEL_FORMAT!r}; retrain it (`dvc repro train`)")
    return payload


@dataclass(frozen=True)
class LoadedModel:
    """A trained model as its file holds it.

    Attributes
    ----------
    model : GesturalAutoEncoder
        In eval mode, on the device asked for.
    normalization : dict
        The normalize stage's ``stats.json`` of the data it was trained on (``low``, ``high``
        per channel, ``ema_stats`` where known); empty when the file has none.
    settings : dict
        The training settings that made it (``TrainConfig`` as a dict).
    score_scale : list of float or None
        Each gesture's largest score on the training utterances; None in files written before
        the train stage recorded it.
    """

    model: GesturalAutoEncoder
    normalization: dict
    settings: dict
    score_scale: list[float] | None = None


def load_model(path: str | Path, device: str | torch.device = "cpu") -> LoadedModel:
    """Rebuild a trained model from ``model.pt`` with its normalization and settings.

    Raises
    ------
    FileNotFoundError, ModelFileError
        As :func:`read_model_file`; also a file of another format version, or whose config or
        weights do not fit this version's model.
    """
    payload = read_model_file(path)
    try:
        # Files written before release responses existed have none.
        model = GesturalAutoEncoder(ModelConfig(**{"release_response": False, **payload["model_config"]}))
        model.load_state_dict(payload["state_dict"])
    except (TypeError, ValueError, RuntimeError) as error:
        raise ModelFileError(f"{path}: does not fit this version's model "
                             f"({str(error).splitlines()[0][:200]})") from None
    scale = payload.get("score_scale")
    if scale is not None and (not isinstance(scale, list) or len(scale) != model.config.num_gestures):
        raise ModelFileError(f"{path}: score_scale is not one number per gesture ({model.config.num_gestures})")
    return LoadedModel(model.to(device).eval(), dict(payload.get("normalization") or {}),
                       dict(payload.get("train_config") or {}), scale)


def load_weights_(model: GesturalAutoEncoder, path: str | Path) -> None:
    """Copy a trained model's weights into ``model``; refuse a model of another shape."""
    payload = read_model_file(path)
    theirs = {"release_response": False, **payload["model_config"]}  # as load_model reads older files
    for key in SHAPE_KEYS:
        if theirs.get(key) != getattr(model.config, key):
            raise ModelFileError(
                f"{path} was trained with {key}={theirs.get(key)!r} but params.yaml asks for "
                f"{key}={getattr(model.config, key)!r}; the model shapes must match to continue from it")
    model.load_state_dict(payload["state_dict"])


def _load_problem(error: Exception) -> str:
    """One line for a failed ``torch.load(weights_only=True)``; torch's own message is a
    page of advice that ends by suggesting ``weights_only=False``, which we never want."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    blocked = next((line for line in lines if "GLOBAL" in line), None)
    if blocked is not None:
        return (f"refused: it holds Python objects, not only tensors and plain data ({blocked}); "
                "loading it could run code from the file")
    detail = next((line for line in reversed(lines) if "Unsupported" in line), lines[0] if lines else "")
    detail = detail.split(". ")[0][:200] if detail else type(error).__name__
    return f"not a readable model file, or truncated ({type(error).__name__}: {detail})"
