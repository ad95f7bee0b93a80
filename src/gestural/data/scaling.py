"""Channel values back in the corpus's own units: undo the normalize stage's [0, 1] scaling
and, where the corpus ships ``ema.stats``, its z-scoring (so a kernel reads in millimetres)."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from gestural.core.units import NUM_CHANNELS


def to_corpus_units(normalized, stats: Mapping | None = None, speaker: str | None = None) -> tuple[np.ndarray, str]:
    """Undo the normalization of channel values: [0, 1] -> the corpus's own units.

    Parameters
    ----------
    normalized : array, (12, ...)
        Channel values in normalized units, channels first.
    stats : mapping, optional
        The normalize stage's ``stats.json`` dict (``low``, ``high`` per channel, and
        ``ema_stats``: {speaker: {mean, std}} when the corpus ships ``ema.stats``), or a
        dict with ``low``/``high`` and optionally ``mean``/``std`` directly.
    speaker : str, optional
        Whose ``ema.stats`` to use; default the first speaker listed.

    Returns
    -------
    values : ndarray, same shape
        In mm when mean/std are known (nema values are z-scores: mm = mean + z * std),
        in the corpus's z-scored units when only low/high are, else unchanged.
    unit : str
        The unit, for an axis label (e.g. ``"mm, speaker fsyn0"``).
    """
    if hasattr(normalized, "detach"):  # a torch tensor
        normalized = normalized.detach().cpu().numpy()
    values = np.asarray(normalized, dtype=np.float64)
    if values.ndim == 0 or values.shape[0] != NUM_CHANNELS:
        raise ValueError(f"normalized: expected {NUM_CHANNELS} channels first, got shape {values.shape}")
    if not stats or "low" not in stats or "high" not in stats:
        return values, "normalized units"
    shape = (NUM_CHANNELS,) + (1,) * (values.ndim - 1)
    low = np.asarray(stats["low"], dtype=np.float64)[:NUM_CHANNELS].reshape(shape)
    high = np.asarray(stats["high"], dtype=np.float64)[:NUM_CHANNELS].reshape(shape)
    values = low + values * (high - low)
    mean_std, unit = None, "corpus units (z-scored)"
    if "mean" in stats and "std" in stats:
        mean_std, unit = (stats["mean"], stats["std"]), "mm"
    else:
        per_speaker = stats.get("ema_stats") or {}
        if per_speaker:
            name = speaker if speaker in per_speaker else next(iter(per_speaker))
            mean_std, unit = (per_speaker[name]["mean"], per_speaker[name]["std"]), f"mm, speaker {name}"
    if mean_std is not None:
        mean = np.asarray(mean_std[0], dtype=np.float64)[:NUM_CHANNELS].reshape(shape)
        std = np.asarray(mean_std[1], dtype=np.float64)[:NUM_CHANNELS].reshape(shape)
        values = mean + values * std
    return values, unit
