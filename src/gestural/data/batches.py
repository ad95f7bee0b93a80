"""Utterances held on the device as one tensor; crops and padded batches cut there.

Every utterance of a split is concatenated into one (C, frames) tensor with its offsets
and lengths, so that a training batch is one gather (no per-item Python, no DataLoader
workers) and an evaluation batch is the same gather at full length with a mask.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
import torch


class UtteranceStore:
    """The utterances of one split, concatenated on ``device``.

    Parameters
    ----------
    utterances : sequence of arrays (C, T_i)
        Normalized utterances, channels first.
    device : torch.device or str
    """

    def __init__(self, utterances: Sequence[np.ndarray], device: torch.device | str = "cpu"):
        if len(utterances) == 0:
            raise ValueError("no utterances to train or evaluate on")
        lengths = np.array([u.shape[1] for u in utterances], dtype=np.int64)
        self.num_channels = int(utterances[0].shape[0])
        self.device = torch.device(device)
        flat = np.concatenate([np.asarray(u, dtype=np.float32) for u in utterances], axis=1)
        # One zero frame at the end: indices past an utterance's last frame point there
        # when they would run off the tensor (they are masked anyway).
        flat = np.concatenate([flat, np.zeros((self.num_channels, 1), np.float32)], axis=1)
        self.values = torch.from_numpy(flat).to(self.device)
        self.lengths = torch.from_numpy(lengths).to(self.device)
        self.offsets = torch.cumsum(self.lengths, 0) - self.lengths
        self.total_frames = int(lengths.sum())

    def __len__(self) -> int:
        return int(self.lengths.numel())

    def gather(self, utterance: torch.Tensor, start: torch.Tensor, frames: int):
        """Windows of ``frames`` frames from ``start`` in each ``utterance``: (x, mask).

        Frames past an utterance's end are zero and masked out.
        """
        steps = torch.arange(frames, device=self.device)
        position = start[:, None] + steps[None, :]
        mask = position < self.lengths[utterance][:, None]
        index = torch.where(mask, self.offsets[utterance][:, None] + position, self.values.shape[1] - 1)
        x = self.values[:, index].permute(1, 0, 2)  # (B, C, frames)
        return x, mask

    def batches(self, batch_size: int) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        """Full-length padded batches (utterance indices, x, mask), shortest first.

        Sorting by length keeps padding small, so evaluation costs about the real frames.
        """
        order = torch.argsort(self.lengths)
        for first in range(0, len(order), batch_size):
            chosen = order[first:first + batch_size]
            frames = int(self.lengths[chosen].max())
            x, mask = self.gather(chosen, torch.zeros_like(chosen), frames)
            yield chosen, x, mask


class CropSampler:
    """Random training crops of ``segment_len`` frames.

    An utterance shorter than ``segment_len`` gives one crop, padded and masked.
    """

    def __init__(self, store: UtteranceStore, segment_len: int, generator: torch.Generator):
        self.store = store
        self.segment_len = segment_len
        self.generator = generator
        self.positions = (store.lengths - segment_len + 1).clamp_min(1)
        # Utterances are drawn in proportion to their frames, so that every frame is about
        # equally likely to be trained on, short utterances (one padded crop) included.
        self.weights = store.lengths.to(torch.float32)

    def sample(self, batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
        utterance = torch.multinomial(self.weights, batch_size, replacement=True, generator=self.generator)
        uniform = torch.rand(batch_size, device=self.store.device, generator=self.generator)
        start = (uniform * self.positions[utterance]).long()
        return self.store.gather(utterance, start, self.segment_len)
