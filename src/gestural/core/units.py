"""The EMA data's fixed layout: the 12 channels (x/y of six sensors) and the sampling rates.

Every layer that needs to name a channel or turn frames into seconds reads it here, not from
a file-format module.
"""

from __future__ import annotations

CHANNELS: tuple[str, ...] = (
    "td_x", "td_y",
    "tb_x", "tb_y",
    "tt_x", "tt_y",
    "li_x", "li_y",
    "ul_x", "ul_y",
    "ll_x", "ll_y",
)
NUM_CHANNELS = 12
ARTICULATORS: tuple[str, ...] = (
    "tongue dorsum",
    "tongue blade",
    "tongue tip",
    "jaw (lower incisor)",
    "upper lip",
    "lower lip",
)
CHANNELS_PER_SENSOR = 2  # x and y: channels 2i and 2i + 1 are ARTICULATORS[i]
FRAME_RATE = 200  # Hz, EMA frames
WAV_RATE = 16000  # Hz, audio samples
SAMPLES_PER_FRAME = WAV_RATE // FRAME_RATE  # 80
