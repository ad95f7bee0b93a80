"""The machine a benchmark runs on: CPU, GPU, versions, load, and the device's peak FLOP/s."""

from __future__ import annotations

import os
import platform
from pathlib import Path

import torch

# Dense peak FLOP/s by precision (vendor datasheets, no structured sparsity). The H200 has
# the H100 SXM's compute. fp32 means the CUDA cores' (non-tensor) fp32 rate.
PEAK_FLOPS = {
    "H100 PCIe": {"fp32": 51e12, "tf32": 378e12, "bf16": 756e12},
    "H100": {"fp32": 67e12, "tf32": 495e12, "bf16": 989e12},
    "H200": {"fp32": 67e12, "tf32": 495e12, "bf16": 989e12},
    "A100": {"fp32": 19.5e12, "tf32": 156e12, "bf16": 312e12},
}


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cpu_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def load_average() -> list[float] | None:
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except OSError:
        return None


def machine(device: torch.device) -> dict:
    """The result's ``machine`` section (``load_average_at_end`` is added by the driver)."""
    info = {
        "device_type": device.type,
        "device": (torch.cuda.get_device_name(device) if device.type == "cuda"
                   else f"{cpu_name()} ({cpu_cores()} cores)"),
        "cpu": f"{cpu_name()} ({cpu_cores()} cores)",
        "torch": torch.__version__,
        "python": platform.python_version(),
        "threads_default": torch.get_num_threads(),
        "load_average_at_start": load_average(),
    }
    if device.type == "cuda":
        info["cuda"] = torch.version.cuda
        info["gpu_memory_gib"] = round(torch.cuda.get_device_properties(device).total_memory / 2**30, 1)
    return info


def peak_flops(device: torch.device, precision: str) -> float | None:
    """The device's dense peak for ``precision``, or None (CPUs, unknown GPUs)."""
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    for key in ("H100 PCIe", "H200", "H100", "A100"):
        if all(part in name for part in key.split()):
            return PEAK_FLOPS[key][precision]
    return None
