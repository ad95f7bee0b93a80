"""A task-dynamics EMA generator (``synthetic.kind: articulatory``).

Following Saltzman & Munhall (1989) and the TaDA model, speech is a gestural score: gestures
are activation intervals on tract variables (TVs: lip aperture and protrusion, tongue-tip and
tongue-body constriction location and degree). Each TV follows critically damped
second-order dynamics toward the blended target of its active gestures and relaxes, more
slowly, to a neutral value when none is active. A per-speaker articulatory model maps the six
TVs to the 12 EMA coordinates: the jaw takes a share of every constriction demand (so lips,
tongue tip and body all move the lower incisor), the tongue body is a circle placed by
constriction location (an angle on a palate arc) and degree, its sensors rotate with the
jaw, the tip rides on the body, and contact with the palate or the other lip saturates.

Per utterance the score is a run of (C)V(C) syllables: onset consonant and vowel gestures
start together (in phase), a coda starts late in the vowel (anti-phase), consecutive syllables
overlap, pauses are rare. The phone sequence gives the lab file (boundaries at gesture
releases and constriction achievements) and the words of txt.done.data.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import NamedTuple

import numpy as np

from gestural.core.params import ParamsError, Section
from gestural.core.units import FRAME_RATE, NUM_CHANNELS

logger = logging.getLogger(__name__)

TV_NAMES = ("LA", "LP", "TTCL", "TTCD", "TBCL", "TBCD")  # mm, mm, degrees, mm, degrees, mm
_LA, _LP, _TTCL, _TTCD, _TBCL, _TBCD = range(len(TV_NAMES))
NEUTRAL = np.array([10.0, 0.0, 40.0, 8.0, 110.0, 7.0])
NEUTRAL_HZ = 1.5  # relaxation is slower than any gesture


class Gesture(NamedTuple):
    name: str
    phones: str  # the phones it realises
    targets: tuple[tuple[str, float], ...]  # (TV, target); the first TV is the gesture's own
    hz: float  # natural frequency: stiffness k = (2 pi hz)^2; consonants are stiffer than vowels


INVENTORY = (
    Gesture("lip_closure", "p b m", (("LA", -2.0),), 7.0),
    Gesture("lip_dental", "f v", (("LA", 1.5),), 7.0),
    Gesture("lip_rounding", "w ow uw", (("LP", 4.0), ("LA", 5.0)), 4.5),
    Gesture("tt_closure", "t d n", (("TTCD", -2.0), ("TTCL", 35.0)), 7.0),
    Gesture("tt_critical", "s z", (("TTCD", 1.0), ("TTCL", 38.0)), 7.0),
    Gesture("tt_dental", "th dh", (("TTCD", 0.0), ("TTCL", 20.0)), 7.0),
    Gesture("tt_lateral", "l", (("TTCD", -1.0), ("TTCL", 45.0)), 6.0),
    Gesture("tt_retroflex", "r", (("TTCD", 4.0), ("TTCL", 65.0)), 5.5),
    Gesture("tb_closure", "k g ng", (("TBCD", -2.0), ("TBCL", 120.0)), 6.0),
    Gesture("v_i", "iy", (("TBCD", 3.0), ("TBCL", 75.0)), 3.5),
    Gesture("v_e", "eh", (("TBCD", 7.0), ("TBCL", 85.0)), 3.5),
    Gesture("v_a", "aa", (("TBCD", 6.0), ("TBCL", 170.0)), 3.5),
    Gesture("v_o", "ow", (("TBCD", 7.0), ("TBCL", 145.0)), 3.5),
    Gesture("v_u", "uw w", (("TBCD", 3.0), ("TBCL", 125.0)), 3.5),
)
GESTURE_NAMES = tuple(g.name for g in INVENTORY)
_INDEX = {name: i for i, name in enumerate(GESTURE_NAMES)}
TARGETS = np.full((len(INVENTORY), len(TV_NAMES)), np.nan)  # NaN: the gesture leaves that TV alone
for _g, _gesture in enumerate(INVENTORY):
    for _tv, _value in _gesture.targets:
        TARGETS[_g, TV_NAMES.index(_tv)] = _value
_PHONE_GESTURES = {phone: tuple(g.name for g in INVENTORY if phone in g.phones.split())
                   for phone in {p for g in INVENTORY for p in g.phones.split()}}
ONSETS = ("p", "b", "m", "f", "v", "w", "t", "d", "n", "s", "z", "th", "dh", "l", "r", "k", "g")
CODAS = ("p", "b", "m", "f", "v", "t", "d", "n", "s", "z", "th", "l", "r", "k", "g", "ng")
VOWELS = ("iy", "eh", "aa", "ow", "uw")
_SPELLING = {"iy": "ee", "eh": "e", "aa": "a", "ow": "o", "uw": "oo", "dh": "th"}

# Canonical geometry (mm; x forward, y up; origin at the upper incisor tip).
_PALATE_CENTRE, _PALATE_RADIUS, _BODY_RADIUS = np.array([-30.0, -8.0]), 32.0, 16.0
_CONDYLE = np.array([-80.0, 30.0])  # the jaw opens down and back
_LI, _UL, _LL = np.array([-2.0, -6.0]), np.array([12.0, 9.0]), np.array([11.0, -9.0])  # at neutral
_JAW_NEUTRAL = 7.0  # jaw opening (mm at the incisor) at the neutral posture
_TD_ANGLE, _TB_ANGLE, _TIP_ANCHOR = 110.0, 60.0, 10.0  # points on the tongue-body circle (degrees)


@dataclass(frozen=True)
class ArticulatoryConfig:
    """The ``synthetic.articulatory:`` mapping of params.yaml (see the comments there)."""

    seconds: tuple[float, float] = (1.0, 3.0)
    syllables_per_second: float = 4.5
    onset_probability: float = 0.85
    coda_probability: float = 0.4
    pause_probability: float = 0.05
    stiffness_scale: float = 1.0
    noise_mm: float = 0.3
    drift_mm: float = 0.3

    @classmethod
    def from_mapping(cls, values) -> ArticulatoryConfig:
        """Validate a (partial) mapping; missing keys take the defaults.

        Raises
        ------
        ParamsError
            ``params.yaml synthetic.articulatory.<key>: <problem> (got <value>)``.
        """
        name = "synthetic.articulatory"
        if not isinstance(values, Mapping):
            raise ParamsError(f"params.yaml {name}: must be a mapping of keys (got {values!r})")
        defaults = asdict(cls())
        for key in values:
            if key not in defaults:
                raise ParamsError(f"params.yaml {name}.{key}: unknown key; known: {sorted(defaults)}")
        section = Section({name: {**defaults, **values}}, name)
        seconds = section.get("seconds")
        if not isinstance(seconds, (list, tuple)) or len(seconds) != 2:
            raise section.error("seconds", "must be a list [shortest, longest] of utterance lengths in seconds")
        low = section.check_number("seconds", seconds[0], 0.5, 30.0)
        high = section.check_number("seconds", seconds[1], 0.5, 30.0)
        if low > high:
            raise section.error("seconds", "shortest must not exceed longest")
        config = cls(
            seconds=(low, high),
            syllables_per_second=section.number("syllables_per_second", low=1.0, high=10.0),
            onset_probability=section.number("onset_probability", low=0.0, high=1.0),
            coda_probability=section.number("coda_probability", low=0.0, high=1.0),
            pause_probability=section.number("pause_probability", low=0.0, high=1.0, open_high=True),
            stiffness_scale=section.number("stiffness_scale", low=0.25, high=4.0),
            noise_mm=section.number("noise_mm", low=0.0, high=5.0),
            drift_mm=section.number("drift_mm", low=0.0, high=5.0),
        )
        section.check_unknown()
        return config


@dataclass
class Recording:
    """One generated utterance: sensor positions (mm), phones and gesture activations."""

    utterance_id: str
    speaker: str
    positions: np.ndarray  # (frames, 12) mm in the speaker's head frame
    phones: list[tuple[float, str]]  # Festival (end time s, phone), sil at both ends
    words: str
    activations: np.ndarray  # (n, 3) int64: gesture, start, stop (exclusive) frames


def _frames(seconds: float) -> int:
    return max(1, int(round(seconds * FRAME_RATE)))


def gestural_score(config: ArticulatoryConfig, rng: np.random.Generator, frames: int):
    """One utterance's score: activations (n, 3), per-token targets (n, 6), Hz (n,), phones, words, frames."""
    lead, trail = _frames(rng.uniform(0.1, 0.3)), _frames(rng.uniform(0.1, 0.3))
    period = FRAME_RATE / config.syllables_per_second * rng.uniform(0.85, 1.15)  # this utterance's rate
    units: list[list] = []  # [phone, start, stop, role]: what the lab file is built from
    rows: list[tuple[int, int, int]] = []
    efforts: list[float] = []  # 1: the full target; less: reduced toward neutral
    words: list[str] = []
    t, limit = float(lead), frames - trail - period  # a syllable's gestures end about a period after it starts

    def plant(phone: str, start: float, milliseconds: float, role: str, effort: float = 1.0) -> None:
        start = int(round(start))
        stop = start + int(np.clip(round(milliseconds / 5.0), 12, 60))  # 60-300 ms
        rows.extend((_INDEX[g], start, stop) for g in _PHONE_GESTURES[phone])
        efforts.extend([effort] * len(_PHONE_GESTURES[phone]))
        units.append([phone, start, stop, role])

    while True:
        word = ""
        for _syllable in range(int(rng.integers(1, 4))):
            coda = rng.random() < config.coda_probability
            if rng.random() < config.onset_probability:
                phone = ONSETS[rng.integers(len(ONSETS))]
                plant(phone, t + rng.integers(-1, 2), rng.uniform(70, 140), "onset")  # in phase with the vowel
                word += _SPELLING.get(phone, phone)
            vowel = VOWELS[rng.integers(len(VOWELS))]
            vowel_ms = rng.uniform(140, 280)
            stressed = rng.random() < 0.5  # unstressed vowels are reduced toward the neutral posture
            plant(vowel, t, vowel_ms, "vowel", 1.0 if stressed else rng.uniform(0.5, 0.9))
            word += _SPELLING.get(vowel, vowel)
            if coda:  # anti-phase: late in the vowel
                phone = CODAS[rng.integers(len(CODAS))]
                plant(phone, t + rng.uniform(0.5, 0.7) * vowel_ms / 5.0, rng.uniform(70, 150), "coda")
                word += _SPELLING.get(phone, phone)
            t += period * rng.uniform(0.8, 1.25) * (1.35 if coda else 1.0)
            if t >= limit:
                break
        words.append(word)
        if t >= limit:
            break
        if rng.random() < config.pause_probability:
            units.append(["pau", 0, 0, "pause"])
            t += rng.uniform(0.15, 0.3) * FRAME_RATE

    ends = []
    for i, (_phone, _start, stop, role) in enumerate(units):
        following = units[i + 1] if i + 1 < len(units) else None
        if role == "pause":
            end = following[1]
        elif role != "vowel" or following is None or following[3] == "pause":
            end = stop  # a consonant's release; a vowel before a pause ends with its gesture
        elif following[3] == "vowel":
            end = following[1]
        else:  # the next consonant's constriction is about achieved
            end = following[1] + 0.4 * (following[2] - following[1])
        ends.append(max(int(round(end)), (ends[-1] if ends else units[0][1]) + 1))
    total = max(max(r[2] for r in rows), ends[-1]) + trail
    seconds_per_frame = 1.0 / FRAME_RATE
    phones = [(units[0][1] * seconds_per_frame, "sil")]
    phones += [(end * seconds_per_frame, unit[0]) for end, unit in zip(ends, units)]
    phones.append((total * seconds_per_frame, "sil"))

    activations = np.array(rows, dtype=np.int64)
    spread = np.where(np.isin(np.arange(len(TV_NAMES)), (_TTCL, _TBCL)), 3.0, 0.6)  # degrees / mm
    reduced = NEUTRAL + np.array(efforts)[:, None] * (TARGETS[activations[:, 0]] - NEUTRAL)
    targets = reduced + spread * rng.standard_normal((len(rows), len(TV_NAMES)))
    hz = np.array([INVENTORY[g].hz for g in activations[:, 0]]) * np.exp(0.1 * rng.standard_normal(len(rows)))
    return activations, targets, hz, phones, " ".join(words), total


def drive(activations: np.ndarray, targets: np.ndarray, hz: np.ndarray, frames: int,
          stiffness_scale: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """Per-frame TV targets and natural frequencies (rad/s), (frames, 6) each.

    Where gestures share a TV their targets are blended, weighted by stiffness, and the
    stiffness is their mean; where none is active the TV relaxes to ``NEUTRAL``.
    """
    weight, weighted, count = (np.zeros((frames, len(TV_NAMES))) for _ in range(3))
    stiffness = (2 * np.pi * np.asarray(hz) * stiffness_scale) ** 2
    for (_g, start, stop), target, k in zip(activations, targets, stiffness):
        uses = ~np.isnan(target)
        weight[start:stop, uses] += k
        weighted[start:stop, uses] += k * target[uses]
        count[start:stop, uses] += 1
    active = count > 0
    target = np.where(active, weighted / np.where(active, weight, 1.0), NEUTRAL)
    omega = np.where(active, np.sqrt(weight / np.maximum(count, 1)), 2 * np.pi * NEUTRAL_HZ * stiffness_scale)
    return target, omega


def integrate(targets: list[np.ndarray], omegas: list[np.ndarray]) -> list[np.ndarray]:
    """Critically damped TV trajectories from rest at ``NEUTRAL``, all utterances at once.

    Each frame is advanced with the exact solution for its constant target and stiffness,
    x = target + (A + B t) exp(-w t), so any stiffness is stable without sub-steps.
    """
    lengths = [len(t) for t in targets]
    longest, dt = max(lengths), 1.0 / FRAME_RATE
    target = np.broadcast_to(NEUTRAL, (longest, len(targets), len(TV_NAMES))).copy()
    omega = np.full_like(target, 2 * np.pi * NEUTRAL_HZ)
    for u, (t, w) in enumerate(zip(targets, omegas)):
        target[: len(t), u], omega[: len(w), u] = t, w
    decay = np.exp(-omega * dt)
    x, v = np.broadcast_to(NEUTRAL, target[0].shape).copy(), np.zeros_like(target[0])
    out = np.empty_like(target)
    for frame in range(longest):
        out[frame] = x
        w, e = omega[frame], x - target[frame]
        b = v + w * e
        x = target[frame] + (e + b * dt) * decay[frame]
        v = (v - w * b * dt) * decay[frame]
    return [out[:n, u] for u, n in enumerate(lengths)]


@dataclass(frozen=True)
class Anatomy:
    """One speaker: head-frame transform, sensor placement and how the jaw shares demands."""

    scale: float
    rotation: float  # radians
    offsets: np.ndarray  # (12,) mm, sensor placement
    jaw_share: np.ndarray  # jaw opening per mm of LA, TTCD, TBCD demand
    compensation: np.ndarray  # how much of the jaw's (and body's) carry the lips, body, tip undo
    upper_lip_share: float  # of the lips' own aperture change


def draw_anatomy(rng: np.random.Generator) -> Anatomy:
    return Anatomy(
        scale=rng.uniform(0.9, 1.12), rotation=np.deg2rad(rng.normal(0.0, 3.0)),
        offsets=rng.normal(0.0, 1.5, NUM_CHANNELS),
        jaw_share=np.array([0.35, 0.25, 0.5]) * rng.uniform(0.7, 1.3),
        compensation=rng.uniform(0.5, 0.8, 3), upper_lip_share=rng.uniform(0.25, 0.4))


def _softplus(x: np.ndarray, softness: float) -> np.ndarray:
    return softness * np.logaddexp(0.0, x / softness)


def _unit(degrees: np.ndarray) -> np.ndarray:
    radians = np.deg2rad(degrees)
    return np.stack([np.cos(radians), np.sin(radians)], axis=-1)


def _rotate(points: np.ndarray, angle: np.ndarray, centre: np.ndarray) -> np.ndarray:
    c, s = np.cos(angle)[:, None], np.sin(angle)[:, None]
    d = points - centre
    return centre + np.concatenate([c * d[..., :1] - s * d[..., 1:], s * d[..., :1] + c * d[..., 1:]], axis=-1)


def _inside_palate(points: np.ndarray) -> np.ndarray:
    """Points pushed beyond the palate arc stop at it (softly): contact saturates."""
    d = points - _PALATE_CENTRE
    r = np.linalg.norm(d, axis=-1, keepdims=True)
    return _PALATE_CENTRE + d / r * (_PALATE_RADIUS - _softplus(_PALATE_RADIUS - r, 0.7))


def sensor_positions(tv: np.ndarray, anatomy: Anatomy) -> np.ndarray:
    """Map TV trajectories (frames, 6) to the 12 sensor coordinates (frames, 12), in mm."""
    n = len(tv)
    demand = tv[:, [_LA, _TTCD, _TBCD]] - NEUTRAL[[_LA, _TTCD, _TBCD]]
    opening = _softplus(_JAW_NEUTRAL + demand @ anatomy.jaw_share, 1.0)  # teeth stop the jaw
    arm = np.linalg.norm(_LI - _CONDYLE)
    turn = -(opening - _softplus(np.array(_JAW_NEUTRAL), 1.0)) / arm  # opening turns the jaw clockwise
    lip_keep, body_keep, tip_keep = 1.0 - anatomy.compensation
    li = _rotate(np.broadcast_to(_LI, (n, 2)), turn, _CONDYLE)

    # Lips: the aperture follows LA plus what the lips leave of the jaw's carry, stopping at contact.
    carried_ll = _rotate(np.broadcast_to(_LL, (n, 2)), turn, _CONDYLE)
    jaw_gap = _LL[1] - carried_ll[:, 1]
    aperture = _softplus(tv[:, _LA] + lip_keep * jaw_gap, 1.0)
    own = aperture - _softplus(np.array(NEUTRAL[_LA]), 1.0) - jaw_gap
    share = anatomy.upper_lip_share
    protrusion = tv[:, _LP]
    ul = np.stack([_UL[0] + protrusion, _UL[1] + share * own], axis=1)
    ll = np.stack([carried_ll[:, 0] + 0.8 * protrusion, carried_ll[:, 1] - (1 - share) * own], axis=1)

    # Tongue body: a circle placed by TBCL (angle on the palate arc) and TBCD (gap to the palate).
    def centre_of(location, degree):
        return _PALATE_CENTRE + (_PALATE_RADIUS - _BODY_RADIUS - _softplus(degree, 1.0))[..., None] * _unit(location)

    rest_centre = centre_of(NEUTRAL[_TBCL], NEUTRAL[_TBCD])
    carried_centre = _rotate(np.broadcast_to(rest_centre, (n, 2)), turn, _CONDYLE) - rest_centre
    centre = centre_of(tv[:, _TBCL], tv[:, _TBCD]) + body_keep * carried_centre
    turn_deg = np.rad2deg(turn)  # tongue points rotate with the jaw
    td, tb, anchor = (centre + _BODY_RADIUS * _unit(a + turn_deg) for a in (_TD_ANGLE, _TB_ANGLE, _TIP_ANCHOR))

    # Tongue tip: placed by TTCL/TTCD, plus what it leaves of the body's (and jaw's) carry.
    def tip_of(location, degree):
        return _PALATE_CENTRE + (_PALATE_RADIUS - degree)[..., None] * _unit(location)

    rest_anchor = centre_of(NEUTRAL[_TBCL], NEUTRAL[_TBCD]) + _BODY_RADIUS * _unit(np.array(_TIP_ANCHOR))
    tip = tip_of(tv[:, _TTCL], tv[:, _TTCD]) + tip_keep * (anchor - rest_anchor)
    points = np.stack([_inside_palate(td), _inside_palate(tb), _inside_palate(tip), li, ul, ll], axis=1)

    # The speaker's head frame: size, a small rotation, and where each sensor was glued.
    points = _rotate(points.reshape(-1, 2), np.full(n * 6, anatomy.rotation), np.zeros(2)).reshape(n, 6, 2)
    return points.reshape(n, NUM_CHANNELS) * anatomy.scale + anatomy.offsets


def generate(config: ArticulatoryConfig, speakers: list[str], utterances_per_speaker: int,
             seed: int) -> list[Recording]:
    """All utterances of all speakers, in speaker order (ids ``<speaker>_<nnn>``)."""
    rng = np.random.default_rng([seed, 2])
    anatomy = {speaker: draw_anatomy(rng) for speaker in speakers}
    scores = []
    for speaker in speakers:
        for i in range(utterances_per_speaker):
            frames = _frames(rng.uniform(*config.seconds))
            scores.append((speaker, f"{speaker}_{i + 1:03d}", *gestural_score(config, rng, frames)))
    drives = [drive(s[2], s[3], s[4], s[7], config.stiffness_scale) for s in scores]
    trajectories = integrate([d[0] for d in drives], [d[1] for d in drives])
    recordings = []
    for (speaker, utterance_id, activations, _t, _hz, phones, words, frames), tv in zip(scores, trajectories):
        positions = sensor_positions(tv, anatomy[speaker])
        seconds = np.arange(frames)[:, None] / FRAME_RATE
        amplitude, hz = (config.drift_mm * rng.standard_normal(NUM_CHANNELS),
                         rng.uniform(0.05, 0.3, NUM_CHANNELS))
        drift = amplitude * np.sin(2 * np.pi * hz * seconds + rng.uniform(0, 2 * np.pi, NUM_CHANNELS))
        noise = config.noise_mm * rng.standard_normal(positions.shape)
        recordings.append(Recording(utterance_id, speaker, positions + drift + noise, phones, words, activations))
    logger.debug("generated %d articulatory utterances", len(recordings))
    return recordings


def truth_arrays() -> dict[str, np.ndarray]:
    """The inventory as ground-truth arrays (beyond the common ones of ``ground_truth``)."""
    return dict(
        tv_names=np.array(TV_NAMES),
        tv_neutral=NEUTRAL.copy(),
        gesture_tv=np.array([g.targets[0][0] for g in INVENTORY]),
        gesture_targets=TARGETS.copy(),
        gesture_hz=np.array([g.hz for g in INVENTORY]),
    )
