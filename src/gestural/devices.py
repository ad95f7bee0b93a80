"""Which torch device to run on, and timing on it: the one place a device name is checked."""

from __future__ import annotations

import re

import torch

from .params import ParamsError

DEVICE_NAME = re.compile(r"auto|cpu|cuda(:[0-9]+)?")
DEVICE_CHOICES = "auto, cpu, cuda or cuda:<index>"


def is_device_name(name) -> bool:
    """Whether ``name`` is spelled like a device params.yaml accepts (not whether it exists)."""
    return isinstance(name, str) and DEVICE_NAME.fullmatch(name) is not None


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
