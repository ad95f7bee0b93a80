"""Turn the extracted EMA corpus into one float32 array plus an index (stage ``nema2npy``).

The corpus extracts to ``emadata/cin_us_<speaker>/`` with ``nema/<id>.ema``,
``wav/<id>.wav``, ``lab/<id>.lab``, ``etc/txt.done.data`` and ``ema.stats``.
An utterance is kept when its EMA file has a wav of the same basename and its
missing samples can be dealt with under the NaN policy; every utterance left
out is listed in ``report.json`` with the reason.

Policies, in words:

- EMA without wav: dropped (reason ``no_wav``); a wav without EMA is ignored
  (listed in the report only).
- Wav length: the wav should hold ``frames * 80`` samples. A difference over
  :data:`WAV_LENGTH_TOLERANCE_S` is *recorded* (``wav_length_mismatch`` in the
  report and the metrics), not dropped: the audio is not used for training, and
  a length rule we cannot check against the real corpus should not silently
  remove data.
- Missing samples (NaN or inf) under ``nan_policy``: ``interpolate`` fills each
  channel's runs of at most ``max_nan_run`` frames linearly (a run touching the
  start or end is held at the nearest value) and drops utterances with a longer
  run (``nan_run_too_long``) or a channel with no value at all
  (``channel_all_nan``); ``drop`` drops any utterance with a missing sample
  (``nan``); ``error`` stops at the first one, naming the file.
- Malformed files (:class:`gestural.data.ema.EmaFormatError`) stop the stage, unless
  ``skip_bad_files`` is set: then the utterance is dropped (``bad_file``) and
  the file and error are listed under ``skipped_bad_files``.
"""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from gestural.core import units
from gestural.core.files import atomic_dir, save_npy, write_json
from gestural.core.params import DataParams
from gestural.core.worker_pool import pool_map
from gestural.data import ema
from gestural.data.dataset import INDEX_COLUMNS, write_index

SPEAKER_GLOB = "emadata/cin_us_*"
SPEAKER_PREFIX = "cin_us_"
OFFICIAL_TEST_LIST = "etc/txt.done.data.test"
WAV_LENGTH_TOLERANCE_S = 0.1

# Drop reasons (the keys of metrics/data.json's dropped_by_reason).
NO_WAV = "no_wav"
NAN = "nan"
NAN_RUN_TOO_LONG = "nan_run_too_long"
CHANNEL_ALL_NAN = "channel_all_nan"
NO_FRAMES = "no_frames"
BAD_FILE = "bad_file"
DROP_REASONS = (NO_WAV, NAN, NAN_RUN_TOO_LONG, CHANNEL_ALL_NAN, NO_FRAMES, BAD_FILE)

# Below this many utterances a process pool costs more than it saves.
POOL_MIN_UTTERANCES = 200

_SKIP_HINT = "; set data.skip_bad_files: true to skip such files"


class CorpusError(ValueError):
    """The extracted corpus cannot be turned into the npy tables (names the file)."""


@dataclass(frozen=True)
class UtteranceFiles:
    """The files of one utterance, as paths relative to the extracted corpus root."""

    utterance_id: str
    speaker: str
    ema: str
    wav: str | None
    lab: str  # "" when the corpus has no label file


def find_speakers(root: str | os.PathLike) -> dict[str, Path]:
    """Speaker directories ``emadata/cin_us_<name>`` under ``root``, by name (sorted).

    Raises
    ------
    CorpusError
        There is none (the message lists what ``root`` holds instead).
    """
    root = Path(root)
    speakers = {
        path.name[len(SPEAKER_PREFIX):]: path
        for path in sorted(root.glob(SPEAKER_GLOB))
        if path.is_dir() and len(path.name) > len(SPEAKER_PREFIX)
    }
    if not speakers:
        found = sorted(p.name for p in root.iterdir()) if root.is_dir() else "nothing (no such directory)"
        raise CorpusError(
            f"{root}: no speaker directories {SPEAKER_GLOB}/ found (it holds {found}); "
            "is this an extracted emadata.tgz?"
        )
    return speakers


def select_speakers(available: dict[str, Path], wanted: tuple[str, ...] | None) -> list[str]:
    """The speakers to process: all of ``available`` for None, else ``wanted`` in its order.

    Raises
    ------
    CorpusError
        ``wanted`` names a speaker the corpus does not have.
    """
    if wanted is None:
        return list(available)
    unknown = [name for name in wanted if name not in available]
    if unknown:
        raise CorpusError(
            f"params.yaml data.speakers: no speaker(s) {unknown} in the corpus; "
            f"available: {', '.join(available)}"
        )
    return list(wanted)


def _stems(directory: Path, suffix: str) -> dict[str, Path]:
    if not directory.is_dir():
        return {}
    return {
        entry.name[: -len(suffix)]: Path(entry.path)
        for entry in os.scandir(directory)
        if entry.name.endswith(suffix) and entry.is_file()
    }


def pair_files(root: str | os.PathLike, speaker: str, speaker_dir: Path) -> tuple[list[UtteranceFiles], list[str]]:
    """Pair each EMA file of a speaker with its wav and lab file by basename.

    Returns
    -------
    utterances : list of UtteranceFiles
        One per EMA file, sorted by id; ``wav`` is None where there is no wav.
    wav_without_ema : list of str
        Ids of wavs that have no EMA file (ignored by the pipeline).
    """
    root = Path(root)
    emas = _stems(speaker_dir / "nema", ".ema")
    wavs = _stems(speaker_dir / "wav", ".wav")
    labs = _stems(speaker_dir / "lab", ".lab")

    def relative(path: Path | None) -> str | None:
        return None if path is None else path.relative_to(root).as_posix()

    utterances = [
        UtteranceFiles(
            utterance_id=utt_id,
            speaker=speaker,
            ema=relative(emas[utt_id]),
            wav=relative(wavs.get(utt_id)),
            lab=relative(labs.get(utt_id)) or "",
        )
        for utt_id in sorted(emas)
    ]
    return utterances, sorted(set(wavs) - set(emas))


def nan_runs(missing: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Start indices and lengths of the runs of True in a 1-D boolean array."""
    edges = np.diff(np.concatenate(([0], missing.view(np.int8), [0])))
    starts = np.flatnonzero(edges == 1)
    ends = np.flatnonzero(edges == -1)
    return starts, ends - starts


def _channel_name(channel: int) -> str:
    return units.CHANNELS[channel] if channel < len(units.CHANNELS) else f"#{channel + 1}"


def fill_nan_runs(values: np.ndarray, max_run: int) -> tuple[np.ndarray | None, str | None, str]:
    """Linearly interpolate each channel's runs of missing samples (NaN or inf).

    Parameters
    ----------
    values : ndarray of shape (frames, channels)
    max_run : int
        Longest run (frames) to fill.

    Returns
    -------
    filled : ndarray of shape (frames, channels), float32, or None
        None when the utterance must be dropped.
    reason : str or None
        :data:`NAN_RUN_TOO_LONG` or :data:`CHANNEL_ALL_NAN` when dropped.
    detail : str
        What was found, in words (empty when nothing was missing).
    """
    missing = ~np.isfinite(values)
    if not missing.any():
        return values, None, ""
    filled = np.array(values, dtype=np.float32, copy=True)
    positions = np.arange(values.shape[0])
    longest, filled_samples = 0, 0
    for channel in np.flatnonzero(missing.any(axis=0)):
        gaps = missing[:, channel]
        if gaps.all():
            return None, CHANNEL_ALL_NAN, f"channel {_channel_name(channel)} has no finite value"
        starts, lengths = nan_runs(gaps)
        run = int(lengths.argmax())
        if lengths[run] > max_run:
            return None, NAN_RUN_TOO_LONG, (
                f"{lengths[run]} missing frames from frame {starts[run] + 1} in channel {_channel_name(channel)} "
                f"(data.max_nan_run is {max_run})"
            )
        longest = max(longest, int(lengths[run]))
        filled_samples += int(gaps.sum())
        # np.interp holds the end values beyond the first/last finite sample.
        filled[gaps, channel] = np.interp(positions[gaps], positions[~gaps], filled[~gaps, channel])
    return filled, None, f"{filled_samples} samples interpolated, longest run {longest} frames"


@dataclass
class _Task:
    root: str
    files: UtteranceFiles
    nan_policy: str
    max_nan_run: int
    skip_bad_files: bool


def load_utterance(task: _Task) -> dict:
    """Read and check one utterance (runs in a worker process).

    Returns a dict with ``status`` (kept | dropped), ``values`` (float32
    (frames, 12)) when kept, ``reason``/``detail`` when dropped, and the
    interpolation and wav-length notes for the report.
    """
    files = task.files
    root = Path(task.root)
    result = {"status": "dropped", "files": files, "values": None, "reason": None, "detail": "",
              "interpolated": "", "wav_seconds": None}
    if files.wav is None:
        result.update(reason=NO_WAV, detail=f"no wav/{files.utterance_id}.wav")
        return result
    try:
        values = ema.read_ema(root / files.ema, units.NUM_CHANNELS)
        wav_samples = ema.wav_num_frames(root / files.wav)
    except ema.EmaFormatError as error:
        if not task.skip_bad_files:
            raise ema.EmaFormatError(error.path, error.line, error.reason + _SKIP_HINT) from None
        result.update(reason=BAD_FILE, detail=str(error), bad_file=error.path)
        return result
    if values.shape[0] == 0:
        result.update(reason=NO_FRAMES, detail="the EMA file holds no frames")
        return result

    if not np.isfinite(values).all():
        if task.nan_policy == "error":
            frame, channel = np.argwhere(~np.isfinite(values))[0]
            raise CorpusError(
                f"{root / files.ema}, frame {frame + 1}: missing sample ({values[frame, channel]}) in channel "
                f"{_channel_name(channel)}; set data.nan_policy to interpolate or drop to accept such files"
            )
        if task.nan_policy == "drop":
            count = int((~np.isfinite(values)).sum())
            result.update(reason=NAN, detail=f"{count} missing samples (data.nan_policy is drop)")
            return result
        values, reason, detail = fill_nan_runs(values, task.max_nan_run)
        if values is None:
            result.update(reason=reason, detail=detail)
            return result
        result["interpolated"] = detail

    result["wav_seconds"] = wav_samples / units.WAV_RATE
    result.update(status="kept", values=values)
    return result


def _speaker_metadata(root: Path, speaker_dir: Path, skip_bad_files: bool, skipped: list) -> dict:
    """ema.stats (first 12 channels) and the official test list of one speaker, if present."""
    meta = {"dir": speaker_dir.relative_to(root).as_posix(), "ema_stats": None, "official_test": None}
    stats_path = speaker_dir / "ema.stats"
    test_path = speaker_dir / OFFICIAL_TEST_LIST
    try:
        if stats_path.is_file():
            stats = ema.read_ema_stats(stats_path)
            meta["ema_stats"] = {
                "mean": stats[: units.NUM_CHANNELS, 0].tolist(),
                "std": stats[: units.NUM_CHANNELS, 1].tolist(),
            }
        if test_path.is_file():
            meta["official_test"] = sorted(ema.read_txt_done_data(test_path))
    except ema.EmaFormatError as error:
        if not skip_bad_files:
            raise ema.EmaFormatError(error.path, error.line, error.reason + _SKIP_HINT) from None
        skipped.append({"path": error.path, "utterance_id": None, "error": str(error)})
    return meta


def build_npy(
    extracted_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    data: DataParams,
    *,
    workers: int | None = None,
) -> dict:
    """Read the extracted corpus and write ``frames.npy``, ``index.csv``, ``report.json``, ``speakers.json``.

    Parameters
    ----------
    extracted_dir : path-like
        Root of the extracted archive (holds ``emadata/``).
    out_dir : path-like
        Output directory, replaced atomically.
    data : DataParams
        Uses ``speakers``, ``nan_policy``, ``max_nan_run`` and ``skip_bad_files``.
    workers : int, optional
        Worker processes; default: the CPUs available.

    Returns
    -------
    report : dict
        The contents of ``report.json`` (see :func:`data_metrics` for the summary).

    Raises
    ------
    CorpusError, gestural.ema.EmaFormatError
        Unknown speaker, no utterance kept, a malformed file (unless
        ``skip_bad_files``), or a missing sample under ``nan_policy: error``.
        Nothing is written then.
    """
    root = Path(extracted_dir)
    available = find_speakers(root)
    speakers = select_speakers(available, data.speakers)

    tasks, wav_without_ema, skipped, metadata = [], {}, [], {}
    for speaker in speakers:
        files, orphans = pair_files(root, speaker, available[speaker])
        tasks += [_Task(str(root), f, data.nan_policy, data.max_nan_run, data.skip_bad_files) for f in files]
        wav_without_ema[speaker] = orphans
        metadata[speaker] = _speaker_metadata(root, available[speaker], data.skip_bad_files, skipped)

    kept_rows, arrays, dropped, interpolated, mismatched = [], [], [], [], []
    start = 0
    results = pool_map(load_utterance, tasks, workers, min_tasks=POOL_MIN_UTTERANCES, desc="reading EMA",
                       unit="utt")
    for result in results:
        files = result["files"]
        if result["status"] == "dropped":
            dropped.append({"utterance_id": files.utterance_id, "speaker": files.speaker,
                            "reason": result["reason"], "detail": result["detail"]})
            if result["reason"] == BAD_FILE:
                skipped.append({"path": result["bad_file"], "utterance_id": files.utterance_id,
                                "error": result["detail"]})
            continue
        values = result["values"]
        frames = values.shape[0]
        kept_rows.append({"utterance_id": files.utterance_id, "speaker": files.speaker, "start": start,
                          "frames": frames, "ema": files.ema, "wav": files.wav, "lab": files.lab})
        arrays.append(values)
        start += frames
        if result["interpolated"]:
            interpolated.append({"utterance_id": files.utterance_id, "detail": result["interpolated"]})
        ema_seconds = frames / units.FRAME_RATE
        if abs(result["wav_seconds"] - ema_seconds) > WAV_LENGTH_TOLERANCE_S:
            mismatched.append({"utterance_id": files.utterance_id, "ema_seconds": ema_seconds,
                               "wav_seconds": round(result["wav_seconds"], 4)})

    if not kept_rows:
        reasons = dict(Counter(d["reason"] for d in dropped))
        raise CorpusError(
            f"{root}: no utterance kept out of {len(tasks)} EMA files of speakers {speakers} "
            f"(dropped by reason: {reasons})"
        )
    frames = np.concatenate(arrays, axis=0).astype(np.float32, copy=False)
    del arrays

    report = {
        "speakers": speakers,
        "ema_files": len(tasks),
        "kept": len(kept_rows),
        "frames": int(frames.shape[0]),
        "settings": {"nan_policy": data.nan_policy, "max_nan_run": data.max_nan_run,
                     "skip_bad_files": data.skip_bad_files,
                     "wav_length_tolerance_s": WAV_LENGTH_TOLERANCE_S},
        "dropped": dropped,
        "skipped_bad_files": skipped,
        "wav_without_ema": wav_without_ema,
        "interpolated": interpolated,
        "wav_length_mismatch": mismatched,
    }
    with atomic_dir(out_dir) as tmp:
        save_npy(tmp / "frames.npy", frames)
        write_index(tmp / "index.csv", kept_rows, INDEX_COLUMNS)
        write_json(tmp / "report.json", report)
        write_json(tmp / "speakers.json", metadata)
    return report


def data_metrics(report: dict) -> dict:
    """The summary written to ``metrics/data.json``.

    Returns
    -------
    metrics : dict
        ``speakers``, ``utterances_kept``, ``dropped_by_reason`` (every reason,
        zeros included, so that ``dvc metrics diff`` lines up), ``frames``,
        ``hours``, ``wav_length_mismatches``.
    """
    counts = Counter(d["reason"] for d in report["dropped"])
    return {
        "speakers": len(report["speakers"]),
        "utterances_kept": report["kept"],
        "dropped_by_reason": {reason: counts.get(reason, 0) for reason in DROP_REASONS},
        "frames": report["frames"],
        "hours": round(report["frames"] / units.FRAME_RATE / 3600, 4),
        "wav_length_mismatches": len(report["wav_length_mismatch"]),
    }
