"""Factorize new utterances with a trained model: ``gestural factorize``.

One utterance (a nema or EST Track file of z-scored EMA, as in the corpus) goes through
the same steps as the training data: short runs of missing samples are interpolated,
each channel is scaled with the model's saved normalization (``low``/``high`` of the
training frames, clipped to [0, 1]), and the model, in evaluation mode (the posterior
mean for a VAE), gives the gestural scores and the reconstruction. The results go into
``<out>/<utterance id>/``, built in a temporary directory and swapped in whole:

- ``scores.npz``: ``scores`` (K, T) float32 gestural scores, ``times_s`` (T,) the start of
  each frame in seconds, ``frame_rate`` (200);
- ``reconstruction.npy``: (12, T) float32, normalized units, on the same frames;
- ``metrics.json``: reconstruction metrics, sparsity, gestures in use, frames, frame rate;
- ``<utterance id>.TextGrid``: the phones (when a lab file is found) and one interval tier
  per gesture in use, for Praat (opens beside ``<utterance id>.wav``: same time axis);
- ``events.csv``: one row per gesture event with the phone under its onset;
- ``kinematics.png``, ``gestures.png``, ``scores.png`` (unless figures are turned off).

The TextGrid, events and scores formats are :mod:`gestural.evaluation.export`'s.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from gestural.core.devices import resolve_device
from gestural.core.files import UserFileError, atomic_dir, check_regular_file, json_safe, save_npy, write_json
from gestural.core.metrics import reconstruction_metrics, score_sparsity
from gestural.core.params import DEVICE_CHOICES, ParamsError, is_device_name
from gestural.core.units import CHANNELS, FRAME_RATE, NUM_CHANNELS
from gestural.data.corpus import fill_nan_runs
from gestural.data.ema import EmaFormatError, read_ema, read_lab
from gestural.data.normalize import scale_to_unit
from gestural.evaluation import export
from gestural.evaluation.segmentation import DEFAULT_RELATIVE_HEIGHT, Segmentation
from gestural.figures.kinematics import gesture_traces_figure, reconstruction_figure
from gestural.figures.scores import score_heatmap_figure
from gestural.figures.style import message_figure, save_figure
from gestural.model.file import ModelFileError, load_model
from gestural.model.network import GesturalAutoEncoder

OUTPUT_FILES: tuple[str, ...] = ("scores.npz", "reconstruction.npy", "metrics.json", "events.csv")
TEXTGRID_SUFFIX = ".TextGrid"  # <utterance id>.TextGrid: named like the utterance's wav, as Praat users pair them
FIGURE_FILES: tuple[str, ...] = ("kinematics.png", "gestures.png", "scores.png")
DEFAULT_MAX_NAN_RUN = 20  # frames (100 ms), as data.max_nan_run


class FactorizeError(ValueError):
    """A model or an utterance cannot be used (the message names the file and the problem)."""


@dataclass
class FileFactorizer:
    """A trained model with the normalization of its training data.

    Attributes
    ----------
    model : GesturalAutoEncoder
        In evaluation mode, on ``device``.
    low, high : ndarray of shape (12,)
        Per-channel values mapped to 0 and 1 (the normalize stage's ``stats.json``).
    device : torch.device
    max_nan_run : int
        Longest run of missing frames interpolated; a longer one refuses the utterance.
    model_path : str
    """

    model: GesturalAutoEncoder
    low: np.ndarray
    high: np.ndarray
    device: torch.device
    max_nan_run: int = DEFAULT_MAX_NAN_RUN
    model_path: str = ""
    score_scale: list[float] | None = None  # each gesture's largest training score (the export's reference)

    @classmethod
    def load(cls, model_path: str | os.PathLike, device: str = "auto",
             max_nan_run: int = DEFAULT_MAX_NAN_RUN) -> FileFactorizer:
        """Load ``model.pt`` (written by the train stage) onto ``device`` (auto | cpu | cuda[:i]).

        Raises
        ------
        FactorizeError
            The file is missing, is not a model, or has no normalization; or the device
            is unavailable.
        """
        if max_nan_run < 0:
            raise FactorizeError(f"--max-nan-run must be >= 0 (got {max_nan_run})")
        if not is_device_name(device):
            raise FactorizeError(f"--device must be {DEVICE_CHOICES} (got {device!r})")
        try:
            torch_device = resolve_device(device)
        except ParamsError as error:
            raise FactorizeError(str(error).replace("params.yaml device", "--device")) from None
        try:
            loaded = load_model(model_path, torch_device)
        except (FileNotFoundError, ModelFileError) as error:
            raise FactorizeError(str(error)) from None
        except OSError as error:  # e.g. no permission to read it
            raise FactorizeError(f"{model_path}: cannot read the model file ({error.strerror or error})") from None
        model, normalization = loaded.model, loaded.normalization
        try:
            low = np.asarray(normalization["low"], dtype=np.float64)[:NUM_CHANNELS]
            high = np.asarray(normalization["high"], dtype=np.float64)[:NUM_CHANNELS]
        except (KeyError, TypeError, ValueError):
            raise FactorizeError(f"{model_path}: the model file holds no normalization (low/high per channel); "
                                 "it was not written by the train stage") from None
        if low.shape != (NUM_CHANNELS,) or high.shape != (NUM_CHANNELS,):
            raise FactorizeError(f"{model_path}: normalization has {low.shape[0]} channels, expected {NUM_CHANNELS}")
        return cls(model=model, low=low, high=high, device=torch_device, max_nan_run=max_nan_run,
                   model_path=os.fspath(model_path), score_scale=loaded.score_scale)

    @property
    def gesture_kernels(self) -> np.ndarray:
        """What each gesture does to the sensors, (K, 12, L'): the kernels, convolved with each
        gesture's response when the model has responses."""
        return self.model.decoder.effective_kernels.detach().cpu().numpy()

    def prepare(self, values: np.ndarray, path: str | os.PathLike = "<array>") -> tuple[np.ndarray, dict]:
        """Raw (z-scored) frames -> the model's input.

        Parameters
        ----------
        values : ndarray of shape (frames, 12)
            As :func:`gestural.data.ema.read_ema` returns them.
        path : path-like
            For messages.

        Returns
        -------
        x : ndarray of shape (12, frames), float32, in [0, 1]
        notes : dict
            ``missing``: what was interpolated (empty if nothing), ``clipped_fraction``:
            share of samples outside the training range (clipped to [0, 1]).

        Raises
        ------
        FactorizeError
            A run of missing samples longer than ``max_nan_run``, or a channel with none.
        """
        values = np.asarray(values, dtype=np.float32)
        if values.ndim != 2 or values.shape[1] != NUM_CHANNELS or values.shape[0] < 1:
            raise FactorizeError(f"{path}: expected (frames, {NUM_CHANNELS}) values, got shape {values.shape}")
        filled, reason, detail = fill_nan_runs(values, self.max_nan_run)
        if filled is None:
            detail = detail.replace("data.max_nan_run", "--max-nan-run")  # the CLI's name for the limit
            raise FactorizeError(f"{path}: missing samples that cannot be interpolated: {detail}")
        span = self.high - self.low
        raw = (filled - self.low) / np.where(span > 0, span, 1.0)
        clipped = float(np.mean((raw < 0) | (raw > 1)))
        x = scale_to_unit(filled, self.low, self.high).T
        return np.ascontiguousarray(x), {"missing": detail, "clipped_fraction": clipped}

    @torch.inference_mode()
    def __call__(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Scores (K, T) and reconstruction (12, T), float32, of one normalized utterance (12, T)."""
        tensor = torch.as_tensor(np.asarray(x, dtype=np.float32), device=self.device)[None]
        mask = torch.ones(1, tensor.shape[-1], device=self.device)
        out = self.model(tensor, mask)
        return (out.scores[0].float().cpu().numpy(), out.reconstruction[0].float().cpu().numpy())


@dataclass
class UtteranceResult:
    """What :func:`factorize_file` wrote."""

    utterance_id: str
    source: Path
    out_dir: Path
    metrics: dict


def require_regular_file(path: str | os.PathLike, what: str = "EMA file") -> None:
    """Refuse a path that is not a regular file: opening a FIFO would block until a writer
    comes, a device would be read forever (:func:`gestural.core.files.check_regular_file`).

    Raises
    ------
    FactorizeError
        ``path`` is missing, or a FIFO, a device, a socket or a directory.
    """
    try:
        check_regular_file(path, what)
    except FileNotFoundError:
        raise FactorizeError(f"{path}: no such file or directory") from None
    except UserFileError as error:
        raise FactorizeError(str(error)) from None


def find_lab(ema_path: str | os.PathLike) -> Path | None:
    """The phone labels of an utterance, if the corpus layout has them.

    Looks for ``../lab/<id>.lab`` (the corpus's ``nema/`` beside ``lab/``) and then
    ``<id>.lab`` beside the EMA file.
    """
    ema_path = Path(ema_path)
    for candidate in (ema_path.parent.parent / "lab" / f"{ema_path.stem}.lab", ema_path.with_suffix(".lab")):
        if candidate.is_file():
            return candidate
    return None


def utterance_metrics(x: np.ndarray, reconstruction: np.ndarray, scores: np.ndarray, kernels: np.ndarray) -> dict:
    """Reconstruction and sparsity numbers of one factorized utterance (JSON-ready)."""
    fit = reconstruction_metrics(x, reconstruction)
    sparsity = score_sparsity(scores, kernels=kernels)
    contribution = np.asarray(sparsity.pop("contribution"))
    in_use = np.flatnonzero(np.asarray(sparsity["in_use"], dtype=bool))
    in_use = in_use[np.argsort(-contribution[in_use], kind="stable")]
    fit["correlation_per_channel"] = dict(zip(CHANNELS, fit["correlation_per_channel"]))
    return json_safe({
        "reconstruction": fit,
        "sparsity": sparsity,
        "gestures_in_use": in_use.tolist(),  # most used first
        "gesture_contribution": {int(k): float(contribution[k]) for k in in_use},
    })


def _figures(directory: Path, utterance_id: str, x, reconstruction, scores, kernels, in_use, phones,
             *, dpi: int, max_gestures: int) -> None:
    save_figure(reconstruction_figure(x, reconstruction, title=f"{utterance_id}: original and reconstruction"),
                directory / "kinematics.png", dpi)
    if in_use:
        gallery = gesture_traces_figure(
            kernels, scores, order=in_use, max_gestures=max_gestures,
            title=f"{utterance_id}: gestures used ({min(len(in_use), max_gestures)} of {len(in_use)} in use "
                  "shown, most used first)")
    else:
        gallery = message_figure("No gesture is active in this utterance: the model reconstructs it "
                                 "with the resting posture alone.", title=f"{utterance_id}: gestures used")
    save_figure(gallery, directory / "gestures.png", dpi)
    save_figure(score_heatmap_figure(scores, phones=phones, title=f"{utterance_id}: gestural score"),
                directory / "scores.png", dpi)


def factorize_file(factorizer: FileFactorizer, ema_path: str | os.PathLike, out_root: str | os.PathLike, *,
                   lab_path: str | os.PathLike | None = None, figures: bool = True, dpi: int = 110,
                   max_gestures: int = 16, event_height: float = DEFAULT_RELATIVE_HEIGHT,
                   warn=print) -> UtteranceResult:
    """Factorize one EMA file into ``<out_root>/<file stem>/`` (replaced whole, atomically).

    Parameters
    ----------
    factorizer : FileFactorizer
    ema_path : path-like
        nema (ASCII) or EST Track file of z-scored EMA, 200 frames per second.
    out_root : path-like
    lab_path : path-like, optional
        Phone labels for the TextGrid, ``events.csv`` and ``scores.png``; default
        :func:`find_lab`. A given file that cannot be read is an error; a found one only a
        warning.
    figures : bool, default True
    dpi, max_gestures : int
        For the figures.
    event_height : float in (0, 1]
        A gesture is on where its score is at least this fraction of its largest score on the
        training utterances (see :mod:`gestural.evaluation.segmentation`).
    warn : callable
        Receives warnings (one line each).

    Returns
    -------
    UtteranceResult

    Raises
    ------
    EmaFormatError
        The EMA file (or the given lab file) is malformed.
    FactorizeError
        Not a regular file (a FIFO, a device), or missing samples that cannot be interpolated.
    OSError
        A file cannot be read or the output written.
    """
    ema_path = Path(ema_path)
    utterance_id = ema_path.stem
    if not 0 < event_height <= 1:
        raise FactorizeError(f"--event-height must be in (0, 1] (got {event_height})")
    require_regular_file(ema_path)
    if lab_path is not None:
        require_regular_file(lab_path, "label file")
    x, notes = factorizer.prepare(read_ema(ema_path), ema_path)

    phones, lab_used = None, None
    if lab_path is not None:
        phones, lab_used = read_lab(lab_path), Path(lab_path)
    else:
        found = find_lab(ema_path)
        if found is not None:
            try:
                phones, lab_used = read_lab(found), found
            except (OSError, EmaFormatError) as error:
                warn(f"warning: {error}; outputs without phone labels")

    scores, reconstruction = factorizer(x)
    kernels = factorizer.gesture_kernels
    numbers = utterance_metrics(x, reconstruction, scores, kernels)
    in_use = numbers["gestures_in_use"]
    metrics = {
        "utterance_id": utterance_id,
        "source": os.fspath(ema_path),
        "lab": None if lab_used is None else os.fspath(lab_used),
        "model": factorizer.model_path,
        "frames": int(x.shape[1]),
        "frame_rate": FRAME_RATE,
        "seconds": x.shape[1] / FRAME_RATE,
        "event_height": event_height,
        "num_gestures": int(kernels.shape[0]),
        "missing_samples": notes["missing"] or None,
        "clipped_fraction": notes["clipped_fraction"],
        **numbers,
    }
    if notes["clipped_fraction"] > 0.01:
        warn(f"warning: {ema_path}: {notes['clipped_fraction']:.1%} of the samples lie outside the training "
             "range and were clipped (another speaker or recording setup?)")

    out_dir = Path(out_root) / utterance_id
    with atomic_dir(out_dir) as tmp:
        export.write_scores(tmp / "scores.npz", scores, frame_rate=FRAME_RATE)
        save_npy(tmp / "reconstruction.npy", reconstruction.astype(np.float32))
        segmentation = Segmentation.of_model(factorizer.model, factorizer.score_scale,
                                             relative_height=event_height)
        events = export.write_annotations(tmp, utterance_id, scores, segmentation, phones=phones, gestures=in_use)
        metrics["events"] = len(events)
        write_json(tmp / "metrics.json", metrics)
        if figures:
            _figures(tmp, utterance_id, x, reconstruction, scores, kernels, metrics["gestures_in_use"], phones,
                     dpi=dpi, max_gestures=max_gestures)
    return UtteranceResult(utterance_id=utterance_id, source=ema_path, out_dir=out_dir, metrics=metrics)


def list_inputs(path: str | os.PathLike) -> list[Path]:
    """The EMA files to factorize: ``path`` itself, or the ``*.ema`` files in a directory (sorted).

    Raises
    ------
    FactorizeError
        ``path`` does not exist or is not a regular file (a FIFO, a device), or a
        directory holds no ``*.ema`` file.
    """
    path = Path(path)
    if path.is_dir():
        files = sorted(p for p in path.glob("*.ema") if p.is_file())
        if not files:
            raise FactorizeError(f"{path}: no *.ema files in this directory")
        return files
    require_regular_file(path)
    return [path]
