"""A synthetic EMA corpus with planted gestures, laid out exactly like CMU's emadata.tgz.

The real corpus cannot be downloaded from every machine, and even where it can it has no
ground truth. Two generators share one archive writer (:func:`write_corpus`):
``synthetic.kind: articulatory`` is continuous, coarticulated task-dynamics movement
(:mod:`gestural.synthetic.articulatory`); ``kind: events``, this module's own, plants a known factorization,

    u[c, t] = baseline[c] + sum_k (W_k * H_k)[c, t] + noise,

with smooth non-negative gesture kernels W and sparse spike-train scores H, maps it to
per-speaker "raw" units (offset and scale), z-scores it per speaker as nema is, and writes
``emadata/cin_us_<speaker>/{nema,wav,lab,etc}`` plus ``ema.stats`` into a tarball. The real
corpus's blemishes are included: EMA files without a wav, wavs without EMA, NaN runs
(short ones to interpolate, a few long ones to drop).

The ground truth is saved beside the archive through :mod:`gestural.synthetic.ground_truth`: for both
kinds every gesture occurrence's activation interval; for events also the kernels and every
event's utterance, gesture, onset frame and amplitude. Kernels are stored in z-scored units
(averaged over speakers), so that the normalization stats map them into the model's space
exactly like the data.
"""

from __future__ import annotations

import gzip
import io
import tarfile
import wave
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path

import numpy as np

from gestural.core import units
from gestural.core.files import atomic_path
from gestural.core.params import ParamsError, Section
from gestural.data import ema
from gestural.synthetic import articulatory
from gestural.synthetic.articulatory import ArticulatoryConfig
from gestural.synthetic.ground_truth import save_ground_truth

KINDS = ("events", "articulatory")
# Bounds past which a value is a typo, not a corpus: a million utterances or an hour-long one
# would run for hours and fill the disk; a jitter (log sd) past 3 or an SNR outside these
# decibels overflows to inf or drowns the signal; amplitudes are z-scored away per speaker.
MAX_UTTERANCES_PER_SPEAKER, MAX_SECONDS = 100_000, 60.0
MAX_GESTURES, MAX_KERNEL_LEN, MAX_EVENTS_PER_SECOND = 1000, 1000, 50.0
MAX_AMPLITUDE, MAX_JITTER, MIN_SNR_DB, MAX_SNR_DB = 1000.0, 3.0, -40.0, 200.0
MAX_EXTRA_COLUMNS = 100

# Phone labels used for the lab files: one per planted gesture (cycled), as if each gesture
# were the articulation of a phone.
_PHONES = ("p", "t", "k", "s", "l", "r", "w", "y", "m", "n", "f", "g", "d", "b", "z", "v")
_WORDS = ("pa", "ta", "ka", "sa", "la", "ra", "wa", "ya", "ma", "na", "fa", "ga", "da", "ba")


@dataclass
class SyntheticConfig:
    """Parameters of the generator (the ``synthetic:`` section of params.yaml)."""

    kind: str = "events"  # events | articulatory
    speakers: list[str] = field(default_factory=lambda: ["fsyn0", "msyn0", "msyn1"])
    utterances_per_speaker: int = 100
    min_seconds: float = 1.0
    max_seconds: float = 5.0
    num_gestures: int = 8
    kernel_len: int = 10
    channels_per_gesture: int = 3
    events_per_second: float = 0.8  # per gesture
    amplitude_range: tuple[float, float] = (0.5, 1.0)
    jitter: float = 0.1  # per-event, per-channel multiplicative amplitude jitter (log sd)
    snr_db: float = 25.0
    extra_columns: int = 2  # real nema files carry more than the 12 channels we use
    missing_wav: int = 3  # EMA files without a wav (dropped by nema2npy)
    missing_ema: int = 2  # wavs without an EMA file (ignored)
    short_nan_runs: int = 4  # NaN runs of a few frames (interpolated)
    long_nan_runs: int = 1  # NaN runs of a second or more (utterance dropped)
    seed: int = 0
    articulatory: ArticulatoryConfig = field(default_factory=ArticulatoryConfig)  # kind: articulatory only

    def __post_init__(self) -> None:
        if isinstance(self.articulatory, Mapping):  # as read from params.yaml, or dataclasses.asdict
            self.articulatory = ArticulatoryConfig.from_mapping(self.articulatory)

    @classmethod
    def from_params(cls, section: dict) -> SyntheticConfig:
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(section) - known, key=str)
        if unknown:
            raise ParamsError(f"params.yaml synthetic: unknown key(s) {unknown}; known: {sorted(known)}")
        config = cls(**section)
        config.validate()
        config.speakers = list(config.speakers)
        config.amplitude_range = tuple(config.amplitude_range)
        return config

    def validate(self) -> None:
        """Refuse impossible settings, naming the key, with the checkers every section uses (types
        included: ``2.5`` or ``true`` is no count, ``.nan`` no signal-to-noise ratio).

        Raises
        ------
        ParamsError
            e.g. ``params.yaml synthetic.snr_db: must be a finite number in [-40, 200] (got nan)``.
        """
        values = {item.name: getattr(self, item.name) for item in fields(self)}
        section = Section({"synthetic": values}, "synthetic")
        section.choice("kind", KINDS)
        if not isinstance(self.articulatory, ArticulatoryConfig):
            raise section.error("articulatory", "must be a mapping of keys")
        section.names("speakers", "speaker names")
        section.bounded_integer("utterances_per_speaker", 2, MAX_UTTERANCES_PER_SPEAKER)
        low = section.number("min_seconds", low=0.2, high=MAX_SECONDS)
        section.number("max_seconds", low=0.2, high=MAX_SECONDS)
        if low > self.max_seconds:
            raise section.error("min_seconds", "must be <= max_seconds")
        section.bounded_integer("num_gestures", 1, MAX_GESTURES)
        section.bounded_integer("kernel_len", 2, MAX_KERNEL_LEN)
        section.bounded_integer("channels_per_gesture", 1, units.NUM_CHANNELS)
        section.number("events_per_second", low=0.0, high=MAX_EVENTS_PER_SECOND, open_low=True)
        amplitudes = section.get("amplitude_range")
        if not isinstance(amplitudes, (list, tuple)) or len(amplitudes) != 2:
            raise section.error("amplitude_range", "must be a list [low, high] of two amplitudes")
        low = section.check_number("amplitude_range", amplitudes[0], 0.0, MAX_AMPLITUDE, open_low=True)
        if low > section.check_number("amplitude_range", amplitudes[1], 0.0, MAX_AMPLITUDE, open_low=True):
            raise section.error("amplitude_range", "low must not exceed high")
        section.number("jitter", low=0.0, high=MAX_JITTER)
        section.number("snr_db", low=MIN_SNR_DB, high=MAX_SNR_DB)
        section.bounded_integer("extra_columns", 0, MAX_EXTRA_COLUMNS)
        for name in ("missing_wav", "missing_ema", "short_nan_runs", "long_nan_runs"):
            section.bounded_integer(name, 0)
        section.bounded_integer("seed", 0, 2**63 - 1)


@dataclass
class Utterance:
    """One generated utterance, before it is written to disk."""

    utterance_id: str
    speaker: str
    latent: np.ndarray  # (frames, 12) float64: planted model units (events) or mm (articulatory), noise included
    events: np.ndarray | None  # (n, 3): gesture, onset frame, amplitude (events only)
    phones: list[tuple[float, str]]
    words: str  # the prompt of txt.done.data


def plant_kernels(config: SyntheticConfig, rng: np.random.Generator) -> np.ndarray:
    """Smooth non-negative kernels, (num_gestures, 12, kernel_len), pairwise distinct.

    Each gesture moves a few channels with a raised-cosine bump of its own width and
    timing, so kernels differ in which articulators move and when.
    """
    length = config.kernel_len
    taus = np.arange(length)
    kernels = np.zeros((config.num_gestures, units.NUM_CHANNELS, length))
    for k in range(config.num_gestures):
        for _attempt in range(200):
            candidate = np.zeros((units.NUM_CHANNELS, length))
            channels = rng.choice(units.NUM_CHANNELS, size=config.channels_per_gesture, replace=False)
            for c in channels:
                width = rng.uniform(0.5, 1.0) * length
                centre = rng.uniform(width / 2 - 0.5, length - width / 2 - 0.5)
                phase = np.clip((taus - centre) / width * 2.0, -1.0, 1.0)
                candidate[c] = rng.uniform(0.3, 0.8) * 0.5 * (1.0 + np.cos(np.pi * phase))
            flat = candidate.ravel() / np.linalg.norm(candidate)
            if k == 0:
                break
            others = kernels[:k].reshape(k, -1)
            if np.max(others @ flat / np.linalg.norm(others, axis=1)) < 0.5:
                break
        kernels[k] = candidate
    return kernels


def _events(config: SyntheticConfig, frames: int, lead: int, rng: np.random.Generator) -> np.ndarray:
    """Poisson onsets per gesture, at least one kernel length apart, inside the speech part."""
    rows = []
    usable = frames - 2 * lead - config.kernel_len
    seconds = usable / units.FRAME_RATE
    for k in range(config.num_gestures):
        count = rng.poisson(config.events_per_second * seconds)
        onsets = np.sort(rng.integers(lead, lead + max(usable, 1), size=count))
        kept = []
        for onset in onsets:
            if not kept or onset - kept[-1] >= config.kernel_len:
                kept.append(onset)
        for onset in kept:
            rows.append((k, onset, rng.uniform(*config.amplitude_range)))
    if not rows:
        return np.zeros((0, 3))
    events = np.array(rows, dtype=np.float64)
    return events[np.lexsort((events[:, 0], events[:, 1]))]


def _phones(events: np.ndarray, frames: int, lead: int) -> list[tuple[float, str]]:
    """Festival-style (end_time, phone) segments: silence, one phone per event, silence."""
    seconds_per_frame = 1.0 / units.FRAME_RATE
    segments: list[tuple[float, str]] = [(lead * seconds_per_frame, "sil")]
    onsets = events[:, 1].astype(int) if len(events) else np.zeros(0, int)
    for i, (gesture, onset, _amp) in enumerate(events):
        end = onsets[i + 1] if i + 1 < len(onsets) else frames - lead
        end = max(end, int(onset) + 1)
        if end * seconds_per_frame > segments[-1][0]:
            segments.append((end * seconds_per_frame, _PHONES[int(gesture) % len(_PHONES)]))
    segments.append((frames * seconds_per_frame, "sil"))
    return segments


def generate(config: SyntheticConfig) -> tuple[np.ndarray, np.ndarray, list[Utterance]]:
    """Generate the planted kernels, per-channel baseline and all utterances (in memory)."""
    rng = np.random.default_rng(config.seed)
    kernels = plant_kernels(config, rng)
    baseline = rng.uniform(0.1, 0.3, size=units.NUM_CHANNELS)
    utterances = []
    for speaker in config.speakers:
        for i in range(config.utterances_per_speaker):
            seconds = rng.uniform(config.min_seconds, config.max_seconds)
            frames = int(round(seconds * units.FRAME_RATE))
            lead = int(rng.uniform(0.1, 0.3) * units.FRAME_RATE)  # silence before and after
            events = _events(config, frames, lead, rng)
            scores = np.zeros((config.num_gestures, frames + config.kernel_len))
            signal = np.zeros((units.NUM_CHANNELS, frames + config.kernel_len))
            for gesture, onset, amplitude in events:
                g, t0 = int(gesture), int(onset)
                scores[g, t0] += amplitude
                jitter = np.exp(config.jitter * rng.standard_normal((units.NUM_CHANNELS, 1)))
                signal[:, t0:t0 + config.kernel_len] += amplitude * jitter * kernels[g]
            signal = signal[:, :frames]
            power = np.mean(signal**2) if np.any(signal) else 1e-4
            noise = rng.standard_normal(signal.shape) * np.sqrt(power / 10 ** (config.snr_db / 10))
            latent = (baseline[:, None] + signal + noise).T
            utterance_id = f"{speaker}_{i + 1:03d}"
            words = " ".join(_WORDS[int(g) % len(_WORDS)] for g in events[:, 0]) or "ah"
            utterances.append(Utterance(utterance_id, speaker, latent, events, _phones(events, frames, lead), words))
    return kernels, baseline, utterances


def _wav_bytes(frames: int) -> bytes:
    """A silent 16 kHz mono wav of the utterance's length (80 samples per EMA frame).

    Only its existence and length matter to the pipeline; silence keeps the archive small.
    """
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as handle:
        handle.setnchannels(1)
        handle.setsampwidth(2)
        handle.setframerate(units.WAV_RATE)
        handle.writeframes(b"\x00\x00" * frames * units.SAMPLES_PER_FRAME)
    return buffer.getvalue()


def _add(tar: tarfile.TarFile, name: str, payload: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(payload)
    info.mtime = 0  # deterministic archive bytes
    info.mode = 0o644
    tar.addfile(info, io.BytesIO(payload))


def write_corpus(config: SyntheticConfig, archive_path: str | Path, truth_path: str | Path) -> dict:
    """Generate the corpus of ``config.kind`` and write the archive and the ground-truth ``.npz`` atomically.

    Returns a summary (counts of utterances, blemishes, frames).
    """
    config.validate()
    if config.kind == "articulatory":
        recordings = articulatory.generate(config.articulatory, config.speakers, config.utterances_per_speaker,
                                           config.seed)
        utterances = [Utterance(r.utterance_id, r.speaker, r.positions, None, r.phones, r.words) for r in recordings]
        summary, _latent_std = _write_archive(config, utterances, archive_path, millimetres=True)
        activations = np.concatenate([np.column_stack([np.full(len(r.activations), i), r.activations])
                                      for i, r in enumerate(recordings)])
        save_ground_truth(
            truth_path, kind="articulatory", gesture_names=articulatory.GESTURE_NAMES,
            gesture_phones=[g.phones for g in articulatory.INVENTORY],
            utterance_ids=[u.utterance_id for u in utterances], activation_utterance=activations[:, 0],
            activation_gesture=activations[:, 1], activation_start=activations[:, 2],
            activation_stop=activations[:, 3], extra=articulatory.truth_arrays())
        summary["planted_gestures"] = len(articulatory.INVENTORY)
        summary["activations"] = len(activations)
        return summary

    kernels, baseline, utterances = generate(config)
    summary, latent_std = _write_archive(config, utterances, archive_path, millimetres=False)
    # Kernels in z-scored units: divide by each speaker's latent std, averaged over speakers.
    mean_latent_std = np.mean([latent_std[s] for s in config.speakers], axis=0)
    event_rows = [(i, *event) for i, utt in enumerate(utterances) for event in utt.events]
    events = np.array(event_rows, dtype=np.float64).reshape(-1, 4)
    onset = events[:, 2].astype(np.int64)
    save_ground_truth(
        truth_path, kind="events", gesture_names=[f"kernel_{k}" for k in range(config.num_gestures)],
        gesture_phones=[_PHONES[k % len(_PHONES)] for k in range(config.num_gestures)],
        utterance_ids=[u.utterance_id for u in utterances], activation_utterance=events[:, 0],
        activation_gesture=events[:, 1], activation_start=onset, activation_stop=onset + config.kernel_len,
        extra=dict(
            kernels_zscored=(kernels / mean_latent_std[None, :, None]).astype(np.float32),
            kernels_latent=kernels.astype(np.float32),
            baseline_latent=baseline.astype(np.float32),
            event_utterance=events[:, 0].astype(np.int64),
            event_gesture=events[:, 1].astype(np.int64),
            event_onset=onset,
            event_amplitude=events[:, 3].astype(np.float32),
        ))
    summary["planted_gestures"] = config.num_gestures
    return summary


def _write_archive(config: SyntheticConfig, utterances: list[Utterance], archive_path: str | Path,
                   millimetres: bool) -> tuple[dict, dict[str, np.ndarray]]:
    """Write ``emadata/cin_us_<speaker>/{nema,wav,lab,etc}`` and ``ema.stats`` with the real corpus's blemishes.

    Each speaker's utterances get per-channel raw units (an offset and, unless they are
    already ``millimetres``, a scale) and are z-scored per speaker, as nema files are.
    Returns the summary and each speaker's latent standard deviation per channel.
    """
    rng = np.random.default_rng([config.seed, 1])
    order = rng.permutation(len(utterances))
    # Pick distinct utterances for each blemish so the drop counts are exact.
    cursor = 0

    def take(count: int) -> set[int]:
        nonlocal cursor
        chosen = set(order[cursor:cursor + count].tolist())
        cursor += count
        return chosen

    no_wav, no_ema, long_nan = take(config.missing_wav), take(config.missing_ema), take(config.long_nan_runs)
    short_nan = take(config.short_nan_runs)

    # Per-speaker raw units: a per-channel offset and scale (like mm in the head frame).
    total_columns = units.NUM_CHANNELS + config.extra_columns
    latent_std = {}
    records = {}
    speaker_stats = {}
    for speaker in config.speakers:
        members = [i for i, u in enumerate(utterances) if u.speaker == speaker]
        offset = rng.uniform(-40.0, 40.0, size=total_columns)
        scale = rng.uniform(5.0, 15.0, size=total_columns)
        if millimetres:  # the articulatory model already speaks mm; keep the draw so the stream stays the same
            scale[: units.NUM_CHANNELS] = 1.0
        raws = {}
        for i in members:
            latent = utterances[i].latent
            extra = rng.standard_normal((latent.shape[0], config.extra_columns)) * 0.1
            raws[i] = offset + scale * np.concatenate([latent, extra], axis=1)
        stacked = np.concatenate([raws[i] for i in members if i not in no_ema])
        mean, std = stacked.mean(axis=0), stacked.std(axis=0)
        latent_std[speaker] = std[: units.NUM_CHANNELS] / scale[: units.NUM_CHANNELS]
        for i in members:
            nema = (raws[i] - mean) / std
            if i in short_nan:
                start = int(rng.integers(0, nema.shape[0] - 5))
                nema[start:start + int(rng.integers(1, 5))] = np.nan
            if i in long_nan:
                start = int(rng.integers(0, max(1, nema.shape[0] - units.FRAME_RATE)))
                nema[start:start + units.FRAME_RATE] = np.nan
            records[i] = nema
        speaker_stats[speaker] = np.stack([mean, std], axis=1)

    with atomic_path(archive_path) as tmp:
        # gzip's header holds a file name and a time: blank both for byte-identical archives.
        with open(tmp, "wb") as raw, \
                gzip.GzipFile(filename="", mode="wb", fileobj=raw, compresslevel=6, mtime=0) as packed, \
                tarfile.open(fileobj=packed, mode="w") as tar:
            for speaker in config.speakers:
                root = f"emadata/cin_us_{speaker}"
                members = [i for i, u in enumerate(utterances) if u.speaker == speaker]
                stats = speaker_stats[speaker]
                _add(tar, f"{root}/ema.stats", ema.ema_stats_text(stats, decimals=6))
                prompts = {}
                for i in members:
                    utt = utterances[i]
                    prompts[utt.utterance_id] = f"{utt.words}."
                    if i not in no_ema:
                        # NaN is written as "nan", as in real files.
                        _add(tar, f"{root}/nema/{utt.utterance_id}.ema", ema.nema_text(records[i]))
                    if i not in no_wav:
                        _add(tar, f"{root}/wav/{utt.utterance_id}.wav", _wav_bytes(utt.latent.shape[0]))
                    _add(tar, f"{root}/lab/{utt.utterance_id}.lab", ema.lab_text(utt.phones))
                _add(tar, f"{root}/etc/txt.done.data", ema.txt_done_data_text(prompts))

    frames = sum(u.latent.shape[0] for u in utterances)
    summary = {
        "kind": config.kind,
        "speakers": len(config.speakers),
        "utterances": len(utterances),
        "frames": int(frames),
        "ema_without_wav": len(no_wav),
        "wav_without_ema": len(no_ema),
        "long_nan_runs": len(long_nan),
        "short_nan_runs": len(short_nan),
    }
    return summary, latent_std


def synthetic_config(params: dict) -> SyntheticConfig:
    """The validated ``synthetic:`` section as a :class:`SyntheticConfig`.

    Raises
    ------
    ParamsError
        The section is missing, has an unknown key, or holds an invalid value.
    """
    section = Section(params, "synthetic")
    # SyntheticConfig has defaults; a key left out of params.yaml must not silently take one.
    for item in fields(SyntheticConfig):
        if item.name not in section.values:
            raise ParamsError(f"params.yaml synthetic.{item.name}: missing")
    return SyntheticConfig.from_params(dict(section.values))
