"""Which phones each learned gesture goes with, over the held-out utterances.

For every gesture in use and every phone label, the question is a ranking one: does the
gesture's activity (its causal box sum over the kernel length,
:func:`gestural.evaluation.activation.gesture_activity`) rank the frames inside that phone above the
frames outside it? The pooled-frame ROC-AUC answers it without a threshold
(:func:`gestural.evaluation.activation.roc_auc_matrix`): 0.5 = no association, 1 = the gesture is more
active during every frame of the phone than during any other frame, below 0.5 = the
gesture is avoided during the phone. A frame belongs to the phone whose lab segment holds
its start time; frames after the lab's last boundary belong to none.

The table (``evaluation/gesture_phone_association.csv``) is long ("tidy", one row per
gesture and phone: ``gesture, phone, auc, phone_frames``), which pandas pivots and R plots
as is. :func:`order_phones` and :func:`order_gestures` give the heat map its layout: phones
grouped by place of articulation (consonants front to back, then vowels, then silence) and
each gesture placed under its best phone.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from gestural.core.metrics import score_sparsity
from gestural.core.units import FRAME_RATE
from gestural.data.dataset import CorpusFileError, read_index
from gestural.evaluation.activation import gesture_activity, roc_auc_matrix
from gestural.evaluation.export import ExportError, phone_segments, read_csv_rows, row_phones, write_csv_rows

logger = logging.getLogger(__name__)

__all__ = ["ASSOCIATION_FILE", "AssociationTable", "phone_indicators", "gesture_phone_associations",
           "held_out_associations", "save_associations", "load_associations", "PLACE_GROUPS",
           "order_phones", "order_gestures"]

ASSOCIATION_FILE = "gesture_phone_association.csv"
COLUMNS = ("gesture", "phone", "auc", "phone_frames")

# Place of articulation of the CMU/Festival (ARPAbet) phones, front of the mouth to back, then
# vowels (front, central, back, diphthongs) and silence: gestures of one articulator then sit
# side by side in the heat map.
PLACE_GROUPS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("labial", ("p", "b", "m", "em", "w")),
    ("labiodental", ("f", "v")),
    ("dental", ("th", "dh")),
    ("alveolar", ("t", "d", "dx", "n", "en", "nx", "s", "z", "l", "el")),
    ("postalveolar", ("sh", "zh", "ch", "jh", "r")),
    ("palatal", ("y",)),
    ("velar", ("k", "g", "ng")),
    ("glottal", ("hh",)),
    ("front V", ("iy", "ih", "ey", "eh", "ae")),
    ("central V", ("ah", "ax", "er", "axr")),
    ("back V", ("uw", "uh", "ow", "ao", "aa")),
    ("diphthong", ("ay", "aw", "oy")),
    ("silence", ("pau", "sil", "h#", "#", "sp", "ssil")),
)
_PLACE = {phone: (g, i) for g, (_, phones) in enumerate(PLACE_GROUPS) for i, phone in enumerate(phones)}


@dataclass
class AssociationTable:
    """Gesture x phone ROC-AUC over the pooled frames of some utterances.

    Attributes
    ----------
    gestures : ndarray of int, (G,)
        Rows: the gestures in use (indices into the scores' K rows).
    phones : list of str, (P,)
    auc : ndarray, (G, P)
        NaN where undefined (a phone covering no frame or every frame).
    phone_frames : ndarray of int, (P,)
        Frames of each phone in the pooled utterances.
    """

    gestures: np.ndarray
    phones: list[str]
    auc: np.ndarray
    phone_frames: np.ndarray

    def best_phone(self) -> dict[int, str]:
        """Each gesture's phone of highest AUC (gestures with no defined AUC left out)."""
        best = {}
        for row, gesture in enumerate(self.gestures):
            if np.any(np.isfinite(self.auc[row])):
                best[int(gesture)] = self.phones[int(np.nanargmax(self.auc[row]))]
        return best


def phone_indicators(phones: Sequence[tuple[float, str]], frames: int, labels: Sequence[str], *,
                     frame_rate: float = FRAME_RATE) -> np.ndarray:
    """(P, frames) bool: frame t is inside a segment of phone ``labels[p]`` (by its start time)."""
    index = {label: p for p, label in enumerate(labels)}
    active = np.zeros((len(labels), frames), dtype=bool)
    for start, end, label in phone_segments(phones):
        if label in index:
            first = int(np.ceil(start * frame_rate - 1e-9))
            last = int(np.ceil(end * frame_rate - 1e-9))  # exclusive: frames starting before `end`
            active[index[label], max(first, 0):min(last, frames)] = True
    return active


def gesture_phone_associations(scores: Sequence[np.ndarray], phones: Sequence[Sequence[tuple[float, str]]],
                               win_size: int, *, in_use: Sequence[bool] | None = None,
                               frame_rate: float = FRAME_RATE) -> AssociationTable:
    """ROC-AUC of every gesture in use against every phone, frames pooled over utterances.

    Parameters
    ----------
    scores : sequence of arrays (K, T_i)
        Gestural scores of the utterances.
    phones : sequence of lists of (end_time, label)
        Their phone segmentations (same order).
    win_size : int
        Kernel length (frames).
    in_use : sequence of K bools, optional
        The gestures in use, as the evaluation counts them (``metrics.score_sparsity``), so
        that the table and ``num_gestures_in_use`` speak of the same gestures. None: the same
        rule on these scores alone (without the kernels' norms).
    frame_rate : float

    Returns
    -------
    AssociationTable; empty (no rows or no phones) when there are no utterances.
    """
    if len(scores) != len(phones):
        raise ValueError(f"need one phone segmentation per score matrix (got {len(phones)} and {len(scores)})")
    if not scores:
        return AssociationTable(np.zeros(0, np.int64), [], np.zeros((0, 0)), np.zeros(0, np.int64))
    if in_use is None:
        in_use = score_sparsity(np.concatenate([np.asarray(s, dtype=np.float64) for s in scores], axis=1))["in_use"]
    if len(in_use) != np.shape(scores[0])[0]:
        raise ValueError(f"in_use: {len(in_use)} flags for {np.shape(scores[0])[0]} gestures")
    gestures = np.flatnonzero(np.asarray(in_use, dtype=bool))
    labels = sorted({label for segmentation in phones for _, _, label in phone_segments(segmentation)})
    activations = [phone_indicators(p, np.shape(s)[1], labels, frame_rate=frame_rate) for s, p in zip(scores, phones)]
    phone_frames = np.sum([a.sum(axis=1) for a in activations], axis=0).astype(np.int64) if labels \
        else np.zeros(0, np.int64)
    if not labels or not gestures.size:
        return AssociationTable(gestures, labels, np.full((len(gestures), len(labels)), np.nan), phone_frames)
    traces = [gesture_activity(np.asarray(s, dtype=np.float64)[gestures], win_size) for s in scores]
    auc = roc_auc_matrix(activations, traces)[0].T  # (P, G) -> (G, P)
    return AssociationTable(gestures, labels, auc, phone_frames)


def held_out_associations(test_ids: Sequence[str], scores: Sequence[np.ndarray], win_size: int, *,
                          in_use: Sequence[bool] | None = None,
                          normalized: str | os.PathLike = "data/normalized",
                          extracted: str | os.PathLike = "data/extracted") -> tuple[AssociationTable, int]:
    """The evaluate stage's table: held-out scores with the lab files of ``index.csv``.

    Utterances without a readable lab file are left out (logged). ``in_use``: the
    evaluation's gestures in use (see :func:`gesture_phone_associations`).

    Returns
    -------
    table : AssociationTable
    used : int
        Utterances that had phone labels.
    """
    if len(test_ids) != len(scores):
        raise ValueError(f"need one score matrix per utterance id (got {len(scores)} and {len(test_ids)})")
    try:
        rows = {row["utterance_id"]: row for row in read_index(Path(normalized) / "index.csv",
                                                               ("utterance_id", "lab"))}
    except CorpusFileError as error:
        logger.warning("%s; no gesture-phone associations", error)
        rows = {}
    kept_scores, kept_phones = [], []
    for utterance_id, utterance_scores in zip(test_ids, scores):
        segmentation = row_phones(rows.get(utterance_id), extracted)
        if segmentation:
            kept_scores.append(utterance_scores)
            kept_phones.append(segmentation)
    if len(kept_scores) < len(test_ids):
        logger.info("gesture-phone associations: %d of %d held-out utterances have phone labels",
                    len(kept_scores), len(test_ids))
    return gesture_phone_associations(kept_scores, kept_phones, win_size, in_use=in_use), len(kept_scores)


def save_associations(path: str | os.PathLike, table: AssociationTable) -> None:
    """Write the long table (``gesture, phone, auc, phone_frames``), atomically."""
    rows = [{"gesture": int(g), "phone": phone, "auc": table.auc[i, p], "phone_frames": int(table.phone_frames[p])}
            for i, g in enumerate(table.gestures) for p, phone in enumerate(table.phones)]
    write_csv_rows(path, COLUMNS, rows)


def load_associations(path: str | os.PathLike) -> AssociationTable:
    """Read a table written by :func:`save_associations` (gestures and phones in file order).

    Raises
    ------
    ExportError
        A missing column, a bad number, or a gesture x phone grid with holes.
    """
    rows = read_csv_rows(path, COLUMNS)
    gestures, phones, cells, frames = [], [], {}, {}
    for line, row in enumerate(rows, 2):
        try:
            gesture, count = int(row["gesture"]), int(row["phone_frames"])
            auc = float(row["auc"]) if row["auc"].strip() else np.nan
        except ValueError:
            raise ExportError(f"{path}: line {line}: gesture, auc and phone_frames must be numbers") from None
        phone = row["phone"]
        if gesture not in cells:
            gestures.append(gesture)
            cells[gesture] = {}
        if phone not in frames:
            phones.append(phone)
            frames[phone] = count
        cells[gesture][phone] = auc
    auc = np.full((len(gestures), len(phones)), np.nan)
    for i, gesture in enumerate(gestures):
        if set(cells[gesture]) != set(phones):
            raise ExportError(f"{path}: gesture {gesture} lacks phones {sorted(set(phones) - set(cells[gesture]))}")
        auc[i] = [cells[gesture][phone] for phone in phones]
    return AssociationTable(np.array(gestures, dtype=np.int64), phones, auc,
                            np.array([frames[p] for p in phones], dtype=np.int64))


def _place_key(phone: str) -> str:
    return phone.lower().rstrip("012")  # ARPAbet stress digits (AA1) share their vowel's place


def order_phones(phones: Sequence[str]) -> tuple[list[int], list[str]]:
    """Column order grouped by place of articulation, and each ordered column's group name.

    Phones outside :data:`PLACE_GROUPS` form an ``other`` group (alphabetical) before silence.
    """
    silence = len(PLACE_GROUPS) - 1

    def rank(index: int) -> tuple[int, int, str, str]:  # (sort group, position, phone, group name)
        phone = phones[index]
        place = _PLACE.get(_place_key(phone))
        if place is None:
            return (silence, 0, phone, "other")
        group, position = place
        return (group if group < silence else silence + 1, position, phone, PLACE_GROUPS[group][0])

    order = sorted(range(len(phones)), key=lambda i: rank(i)[:3])
    return order, [rank(i)[3] for i in order]


def order_gestures(auc: np.ndarray, column_order: Sequence[int]) -> list[int]:
    """Row order: by the position of each gesture's best column in ``column_order``, then by
    that best AUC, highest first; rows without a defined AUC last."""
    auc = np.asarray(auc, dtype=np.float64)
    position = {column: i for i, column in enumerate(column_order)}

    def key(row: int):
        values = auc[row, list(column_order)] if len(column_order) else np.array([])
        if not np.any(np.isfinite(values)):
            return (len(column_order), 0.0)
        best = int(column_order[int(np.nanargmax(values))])
        return (position[best], -float(np.nanmax(values)))

    return sorted(range(auc.shape[0]), key=key)
