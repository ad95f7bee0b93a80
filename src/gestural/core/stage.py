"""One place that turns a stage's expected failures into one line on stderr.

Every stage script ends with::

    if __name__ == "__main__":
        sys.exit(run_stage("extract", main))

Expected failures -- bad params, bad input files (the package's own error types),
a full disk, a refused permission, running out of memory, Ctrl-C -- print ONE line
``"<stage>: <message>"`` and give a non-zero exit status; anything else is a bug
and keeps its traceback.
"""

from __future__ import annotations

import errno
import logging
import sys
from collections.abc import Callable

__all__ = ["run_stage", "describe_os_error", "is_expected_error"]

_PACKAGE = __name__.split(".")[0]  # "gestural"


def is_expected_error(error: BaseException) -> bool:
    """True for the error types this package raises on purpose (ParamsError, ArchiveError,
    CorpusError...): every exception class defined inside the package names a bad input.
    Library exceptions (numpy's ValueError, a KeyError...) are bugs and are not covered."""
    return any(
        cls.__module__ == _PACKAGE or cls.__module__.startswith(_PACKAGE + ".")
        for cls in type(error).__mro__
        if issubclass(cls, Exception) and cls is not Exception
    )


def describe_os_error(stage: str, error: OSError) -> str:
    """The one-line message (without the stage prefix) for an OSError."""
    filename = error.filename if error.filename is not None else error.filename2
    where = f" {filename}" if filename is not None else ""
    if error.errno == errno.ENOSPC:
        return f"disk full while writing{where}" if where else "disk full"
    if error.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        reason = "read-only file system" if error.errno == errno.EROFS else "permission denied"
        return f"{reason}:{where}" if where else reason
    message = error.strerror or str(error)
    return f"{filename}: {message}" if filename is not None else message


def _is_out_of_memory(error: BaseException) -> bool:
    # torch.OutOfMemoryError (CUDA) is a RuntimeError; matched by name so this module
    # does not import torch for the stages that never use it.
    return isinstance(error, MemoryError) or type(error).__name__ == "OutOfMemoryError"


def run_stage(name: str, main: Callable[[], int | None]) -> int:
    """Run a stage's ``main`` and return its exit status.

    Parameters
    ----------
    name : str
        The stage name, the prefix of every line printed here.
    main : callable
        The stage body; returns an exit status or None (success).

    Returns
    -------
    status : int
        ``main``'s status (0 for None); 1 after an expected failure; 130 after Ctrl-C.
    """
    # The package logs warnings and progress (INFO); show them as "<stage>: message" lines.
    # Other libraries stay at WARNING (matplotlib, for one, chats at INFO).
    logging.basicConfig(level=logging.WARNING, format=f"{name}: %(message)s", stream=sys.stderr)
    logging.getLogger(_PACKAGE).setLevel(logging.INFO)
    try:
        status = main()
    except KeyboardInterrupt:
        print(f"{name}: interrupted", file=sys.stderr)
        return 130
    except OSError as error:
        if is_expected_error(error):  # a package error that happens to subclass OSError
            print(f"{name}: {error}", file=sys.stderr)
        else:
            print(f"{name}: {describe_os_error(name, error)}", file=sys.stderr)
        return 1
    except Exception as error:
        if _is_out_of_memory(error):
            detail = str(error).strip().splitlines()
            print(f"{name}: out of memory" + (f" ({detail[0]})" if detail else ""), file=sys.stderr)
            return 1
        if not is_expected_error(error):
            raise
        print(f"{name}: {error}", file=sys.stderr)
        return 1
    return 0 if status is None else int(status)
