"""Wall time and peak resident memory of a command and every process it starts.

Two peaks, because a stage may be one process or several at once (DVC, then the stage's own
Python, then its worker processes):

* ``peak_rss_mib``: the largest single process (the kernel's own ``ru_maxrss`` of the command
  and the descendants it waited for; exact). A child's high-water mark starts from its
  parent's resident size at fork (and survives exec), so the command runs under a small
  launcher (:data:`LAUNCHER`), not straight from the bench's own process, which holds torch;
* ``peak_tree_rss_mib``: the largest sum over the process tree at one moment (sampled from
  ``/proc`` every :data:`SAMPLE_S` seconds; what the machine must hold, to within the
  sampling). Without ``/proc`` (not Linux) it is None.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

SAMPLE_S = 0.1
_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096
_MIB = 1 << 20
# Runs argv[2:] and writes its children's largest ru_maxrss (KiB on Linux) and CPU seconds to argv[1].
LAUNCHER = """import json, resource, subprocess, sys
code = subprocess.call(sys.argv[2:])
usage = resource.getrusage(resource.RUSAGE_CHILDREN)
with open(sys.argv[1], "w") as out:
    json.dump({"maxrss_kib": usage.ru_maxrss, "user": usage.ru_utime, "system": usage.ru_stime}, out)
sys.exit(code)
"""


def _children() -> dict[int, list[int]]:
    """Parent pid -> child pids, of every process /proc shows."""
    tree: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            stat = Path(entry.path, "stat").read_text()
        except OSError:  # it ended meanwhile
            continue
        # The command name (field 2) may hold spaces and parentheses: split after its last ')'.
        ppid = int(stat[stat.rindex(")") + 2:].split()[1])
        tree.setdefault(ppid, []).append(int(entry.name))
    return tree


def tree_rss_bytes(root: int) -> int:
    """Resident bytes of ``root`` and all its descendants now (0 once it is gone)."""
    tree, total, stack = _children(), 0, [root]
    while stack:
        pid = stack.pop()
        try:
            resident_pages = int(Path(f"/proc/{pid}/statm").read_text().split()[1])
        except (OSError, IndexError, ValueError):
            resident_pages = 0
        total += resident_pages * _PAGE
        stack.extend(tree.get(pid, ()))
    return total


class _TreeSampler(threading.Thread):
    """Samples :func:`tree_rss_bytes` of one process until stopped; keeps the largest."""

    def __init__(self, pid: int):
        super().__init__(daemon=True)
        self.pid, self.peak = pid, 0
        self._stop_event = threading.Event()

    def run(self) -> None:
        while not self._stop_event.is_set():
            self.peak = max(self.peak, tree_rss_bytes(self.pid))
            self._stop_event.wait(SAMPLE_S)

    def stop(self) -> int:
        self._stop_event.set()
        self.join()
        return self.peak


def measured_run(command: list[str], *, cwd: Path, env: dict, log: Path) -> dict:
    """Run ``command`` (stdout and stderr to ``log``) and measure it.

    Returns ``seconds`` (wall), ``returncode``, ``peak_rss_mib`` and ``peak_tree_rss_mib``
    (see the module's docstring), ``user_seconds`` and ``system_seconds`` (CPU time of the
    command and its reaped descendants).
    """
    sampling = Path("/proc/self/statm").exists()
    usage_file = log.with_suffix(".rusage.json")
    with open(log, "ab") as out:
        started = time.perf_counter()
        process = subprocess.Popen([sys.executable, "-c", LAUNCHER, str(usage_file), *command], cwd=cwd, env=env,
                                   stdout=out, stderr=subprocess.STDOUT)
        sampler = _TreeSampler(process.pid) if sampling else None
        if sampler is not None:
            sampler.start()
        returncode = process.wait()
        seconds = time.perf_counter() - started
        tree_peak = sampler.stop() if sampler is not None else None
    usage = json.loads(usage_file.read_text())
    return {
        "seconds": seconds,
        "returncode": returncode,
        "peak_rss_mib": usage["maxrss_kib"] / 1024,
        "peak_tree_rss_mib": None if tree_peak is None else tree_peak / _MIB,
        "user_seconds": usage["user"],
        "system_seconds": usage["system"],
    }
