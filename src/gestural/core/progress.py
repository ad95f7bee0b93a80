"""Progress of long data steps, readable on a terminal and in a log file.

On a terminal this is a tqdm bar. When stderr is not a terminal (DVC piping the
output, a batch job's log), tqdm's carriage-return redraws would flood the log,
so one line is logged every ~10 % of the work, and at least every
:data:`LOG_EVERY_S` seconds while it goes on (the only rule when the total is unknown);
work that ends within :data:`QUIET_FOR_S` seconds logs nothing.
"""

from __future__ import annotations

import logging
import sys
import time

from tqdm import tqdm

logger = logging.getLogger(__name__)

LOG_EVERY_S = 10.0  # at most this many seconds between lines
QUIET_FOR_S = 2.0  # no lines for work done within this many seconds (the stage's summary says enough)
LOG_STEP = 0.1  # fraction of the total between lines


def _format(amount: float, unit: str) -> str:
    if unit == "B":
        for scale, name in ((1 << 30, "GiB"), (1 << 20, "MiB"), (1 << 10, "KiB")):
            if amount >= scale:
                return f"{amount / scale:.1f} {name}"
        return f"{amount:.0f} B"
    return f"{amount:.0f} {unit}"


class Progress:
    """``update(n)`` as work is done, ``close()`` at the end (or use it as a context manager).

    Parameters
    ----------
    total : float or None
        Expected amount of work; None when unknown.
    desc : str
        What is being done, e.g. ``"extracting emadata.tgz"``.
    unit : str
        ``"B"`` (shown in KiB/MiB/GiB) or a count unit such as ``"file"``.
    initial : float
        Work already done (a resumed download).
    enabled : bool
        False shows nothing (small jobs).
    """

    def __init__(self, total: float | None, desc: str, unit: str = "B", *, initial: float = 0,
                 enabled: bool = True, stream=None):
        self.total, self.desc, self.unit = total, desc, unit
        self.done = initial
        stream = stream if stream is not None else sys.stderr
        self._bar = None
        self._logging = False
        if not enabled:
            return
        if getattr(stream, "isatty", lambda: False)():
            self._bar = tqdm(total=total, initial=initial, desc=desc, unit=unit, file=stream,
                             unit_scale=unit == "B", unit_divisor=1024)
        else:
            self._logging = True
            self._start = self._last_time = time.monotonic()
            self._last_step = self._step(initial)

    def _step(self, done: float) -> int:
        return int(done / self.total / LOG_STEP) if self.total else 0

    def update(self, amount: float) -> None:
        self.done += amount
        if self._bar is not None:
            self._bar.update(amount)
        elif self._logging:
            now = time.monotonic()
            step = self._step(self.done)
            if step > self._last_step or now - self._last_time >= LOG_EVERY_S:
                self._last_step, self._last_time = step, now
                if now - self._start >= QUIET_FOR_S:
                    self._log(now)

    def _log(self, now: float) -> None:
        of = f" of {_format(self.total, self.unit)} ({100 * self.done / self.total:.0f} %)" if self.total else ""
        logger.info("%s: %s%s, %.0f s", self.desc, _format(self.done, self.unit), of, now - self._start)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
