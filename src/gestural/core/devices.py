"""Which torch device to run on (a name params.yaml accepts, see ``params.is_device_name``), and timing on it."""

from __future__ import annotations

import torch

from gestural.core.params import DEVICE_CHOICES, ParamsError, is_device_name


def resolve_device(name: str) -> torch.device:
    """``auto`` picks the GPU when there is one; an absent GPU asked for by name is an error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if not is_device_name(name):
        raise ParamsError(f"params.yaml device: must be {DEVICE_CHOICES} (got {name!r})")
    device = torch.device(name)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ParamsError(f"params.yaml device: {name!r} asked for, but torch sees no CUDA GPU; use auto or cpu")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ParamsError(f"params.yaml device: {name!r} asked for, but torch sees "
                              f"{torch.cuda.device_count()} GPU(s)")
    return device


def synchronize(device: torch.device) -> None:
    """Wait for the GPU's queued work, so that a timer measures it (no-op on the CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
