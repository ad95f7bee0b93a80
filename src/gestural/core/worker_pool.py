"""An ordered map over a process pool whose workers die with the stage that started them.

Used by the ``nema2npy`` stage (:mod:`gestural.data.corpus`) to read thousands of files in
parallel. Below a given number of tasks, or with one worker, the map runs in this process:
a pool costs more than it saves there. Progress is shown with tqdm.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from typing import Any

from tqdm import tqdm

_PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>


def _init_worker(parent_pid: int) -> None:
    """Pool worker set-up: die with the parent, leave Ctrl-C to the parent.

    A ``kill -9`` of the stage gives the workers no chance to be shut down, and they
    would live on as orphans; on Linux the kernel sends them SIGKILL when the
    process that started them dies (PR_SET_PDEATHSIG; the stage itself, or the
    forkserver that exits with it). The stage may have died before this runs, so
    check once too.
    """
    if sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        except (OSError, AttributeError):
            pass
    try:
        os.kill(parent_pid, 0)
    except ProcessLookupError:
        os._exit(1)
    except PermissionError:
        pass
    # Ctrl-C reaches the whole process group; the parent handles it and shuts the
    # pool down, so the workers should not each print a KeyboardInterrupt traceback.
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def pool_map(function: Callable[[Any], Any], tasks: Sequence, workers: int | None, *, min_tasks: int,
             desc: str, unit: str, progress: bool = True) -> Iterator:
    """``function`` over ``tasks``, in order; a process pool when there are many.

    Parameters
    ----------
    function : callable
        Picklable (a module-level function): it runs in the workers.
    tasks : sequence
        Its arguments, one call each.
    workers : int or None
        Worker processes; None: the CPUs available.
    min_tasks : int
        Fewer tasks than this (or one worker) run in this process.
    desc, unit : str
        The progress bar's label and unit.
    progress : bool
        False: no progress bar (else one on a terminal).

    Yields
    ------
    The results, in the order of ``tasks``. An error in a call is raised here, and the
    tasks not yet started are cancelled.
    """
    workers = workers or len(os.sched_getaffinity(0))
    bar = dict(total=len(tasks), desc=desc, unit=unit, disable=None if progress else True, mininterval=1.0)
    if workers <= 1 or len(tasks) < min_tasks:
        yield from tqdm(map(function, tasks), **bar)
        return
    executor = ProcessPoolExecutor(max_workers=workers, initializer=_init_worker, initargs=(os.getpid(),))
    try:
        chunksize = max(1, len(tasks) // (workers * 16))
        yield from tqdm(executor.map(function, tasks, chunksize=chunksize), **bar)
    finally:
        # On an error, stop at once rather than run the rest of the tasks (parse the rest of the corpus).
        executor.shutdown(wait=True, cancel_futures=True)
