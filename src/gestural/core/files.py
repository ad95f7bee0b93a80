"""Atomic writes (every output appears whole or not at all) and safe reads of user-named files.

A write that fails (a full disk, a file-size limit) raises an OSError naming the output, not
its temporary, and leaves nothing behind. A file whose path comes from a user is read with
:func:`read_user_file`: regular files only (a FIFO would block, ``/dev/zero`` never ends),
up to a size cap, refused in one line naming the path otherwise.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import re
import shutil
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np

logger = logging.getLogger(__name__)


def current_umask() -> int:
    """The process umask, read without changing it where the OS allows.

    ``os.umask`` can only be read by setting it, which races with other threads
    creating files; Linux shows it in /proc/self/status instead.
    """
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


# ----------------------------------------------------------------- reading user files

MIB = 1 << 20


class UserFileError(ValueError):
    """A file named by a user cannot be read: it is not a regular file, or is over its size cap.

    Attributes
    ----------
    path : str
    reason : str
        What is wrong, in words (the message is ``"<path>: <reason>"``).
    """

    def __init__(self, path: str | os.PathLike, reason: str):
        self.path = os.fspath(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")

    def __reduce__(self):
        # Picklable, so that it survives a process pool.
        return (type(self), (self.path, self.reason))


def _file_kind(mode: int) -> str:
    kinds = ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a named pipe (FIFO)"),
             (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"))
    return next((name for test, name in kinds if test(mode)), "not a regular file")


def _size(count: int) -> str:
    return f"{count / MIB:.0f} MiB" if count >= MIB else f"{count} bytes"


def check_regular_file(path: str | os.PathLike, what: str = "file", max_bytes: int | None = None) -> os.stat_result:
    """Make sure ``path`` is a regular file (of at most ``max_bytes``) without opening it.

    ``os.stat`` never opens the file, so a FIFO cannot block here and a device is not read.

    Returns
    -------
    os.stat_result

    Raises
    ------
    FileNotFoundError
        No such path (as ``os.stat`` raises it; other OSErrors too).
    UserFileError
        A directory, FIFO, device or socket; or a file over ``max_bytes``.
    """
    info = os.stat(path)
    if not stat.S_ISREG(info.st_mode):
        raise UserFileError(path, f"is {_file_kind(info.st_mode)}, not a regular {what}")
    if max_bytes is not None and info.st_size > max_bytes:
        raise UserFileError(path, f"is {_size(info.st_size)}, over the {_size(max_bytes)} cap on a {what}")
    return info


def read_user_file(path: str | os.PathLike, what: str = "file", max_bytes: int = 256 * MIB) -> bytes:
    """The bytes of a regular file of at most ``max_bytes`` (see :func:`check_regular_file`).

    Raises
    ------
    FileNotFoundError, OSError
        The path is missing or cannot be opened.
    UserFileError
        Not a regular file, or over ``max_bytes``.
    """
    check_regular_file(path, what, max_bytes)
    # O_NONBLOCK: should the path have become a FIFO since the stat, open returns at once
    # instead of waiting for a writer; fstat then tells what was opened.
    descriptor = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    with os.fdopen(descriptor, "rb") as handle:
        mode = os.fstat(descriptor).st_mode
        if not stat.S_ISREG(mode):
            raise UserFileError(path, f"is {_file_kind(mode)}, not a regular {what}")
        data = handle.read(max_bytes + 1)  # + 1: a file that grew since the stat is caught too
    if len(data) > max_bytes:
        raise UserFileError(path, f"grew past the {_size(max_bytes)} cap on a {what} while being read")
    return data


# ------------------------------------------------------------------------ atomic writes


def _temp_prefix(path: Path) -> str:
    # The pid in the name tells a later run whether the writer is still alive.
    return f".{path.name}.{os.getpid()}."


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def clean_stale_temporaries(path: str | os.PathLike) -> list[Path]:
    """Remove the temporaries that an earlier, killed writer of ``path`` left beside it.

    A temporary is ``.<name>.<pid>.<random>.tmp`` (or ``.old``); it is removed when
    process ``<pid>`` is gone. Names without a pid come from an older version of this
    module and have no owner to wait for, so they are removed too.

    Returns
    -------
    removed : list of Path
    """
    path = Path(path)
    removed = []
    # Exactly mkstemp's names: an optional pid, then 8 random characters; so the
    # temporaries of another output ("x.y" beside "x") never match.
    pattern = re.compile(rf"^\.{re.escape(path.name)}\.(?:(\d+)\.)?[a-z0-9_]{{8}}\.(?:tmp|old)$")
    try:
        entries = list(os.scandir(path.parent))
    except FileNotFoundError:
        return removed
    for entry in entries:
        match = pattern.match(entry.name)
        if match is None:
            continue
        pid = match.group(1)
        if pid is not None and (int(pid) == os.getpid() or _pid_alive(int(pid))):
            continue
        stale = Path(entry.path)
        if entry.is_dir(follow_symlinks=False):
            shutil.rmtree(stale, ignore_errors=True)
        else:
            stale.unlink(missing_ok=True)
        removed.append(stale)
    if removed:
        logger.warning("removed %d stale temporary file(s) of %s left by an interrupted run: %s",
                       len(removed), path, ", ".join(p.name for p in removed[:3]))
    return removed


def _naming_the_output(error: OSError, tmp: Path, path: Path) -> OSError:
    """``error`` as raised while writing ``tmp`` for ``path``, naming ``path`` instead.

    A failed write(2) carries no file name at all (ENOSPC, EFBIG), and a failed rename or
    mkstemp names the temporary: either way the message would not say which output failed.
    An error naming some other file (an input read while writing) is left as it is.
    """
    name = None if error.filename is None else Path(os.fspath(error.filename))
    if name is not None and name != tmp and tmp not in name.parents:
        return error
    where = path if name is None or name == tmp else path / name.relative_to(tmp)
    cause = error.strerror or (os.strerror(error.errno) if error.errno else str(error))
    # OSError(errno, ...) gives the errno's subclass (PermissionError, IsADirectoryError...).
    return OSError(error.errno, cause, os.fspath(where))


def _temporary_beside(path: Path, make):
    """``make`` (mkstemp or mkdtemp) a temporary beside ``path``; an error names ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    clean_stale_temporaries(path)
    try:
        return make(prefix=_temp_prefix(path), suffix=".tmp", dir=path.parent)
    except OSError as error:  # names the temporary it tried to create
        raise _naming_the_output(error, Path(os.fspath(error.filename or path)), path) from error


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it over ``path`` on success.

    On an exception the temporary file is removed and ``path`` is left untouched; an OSError
    writing the temporary or renaming it is raised again naming ``path`` (a full disk,
    ``errno.ENOSPC``, or a file-size limit, ``errno.EFBIG``, say which output they stopped).
    """
    path = Path(path)
    fd, tmp = _temporary_beside(path, tempfile.mkstemp)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        # mkstemp creates 0600 whatever the umask; give the output the mode open() would.
        if tmp_path.exists():
            os.chmod(tmp_path, 0o666 & ~current_umask())
        os.replace(tmp_path, path)
    except OSError as error:
        raise _naming_the_output(error, tmp_path, path) from error
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike) -> Iterator[Path]:
    """Yield an empty temporary directory beside ``path``; swap it in on success.

    An existing ``path`` is replaced only after the new content is complete.
    """
    path = Path(path)
    tmp = Path(_temporary_beside(path, tempfile.mkdtemp))
    try:
        yield tmp
        # mkdtemp creates 0700 whatever the umask; give the output the mode mkdir() would.
        os.chmod(tmp, 0o777 & ~current_umask())
        if path.exists():
            old = Path(tempfile.mkdtemp(prefix=_temp_prefix(path), suffix=".old", dir=path.parent))
            os.replace(path, old / "content")
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
    except OSError as error:  # as atomic_path: name the output (tmp/x -> path/x), not the temporary
        raise _naming_the_output(error, tmp, path) from error
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def json_safe(value):
    """A JSON-safe copy: numpy scalars become Python numbers, NaN and inf become None
    (JSON has no NaN, and DVC's metrics reader refuses it)."""
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, np.bool_):
        return bool(value)
    return value


def write_json(path: str | os.PathLike, obj) -> None:
    """Write ``obj`` as indented JSON, atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=False) + "\n")


class _WriteOnly:
    """A file seen through its ``write`` alone. numpy writes an array to a real file with
    ``ndarray.tofile``, whose short write (a full disk, a file-size limit) raises an OSError
    without errno ("N requested and M written"); through ``write`` it keeps the cause."""

    def __init__(self, handle):
        self.write = handle.write


def save_npy(path: str | os.PathLike, array: np.ndarray) -> None:
    """Save one array (of numbers: never pickled) in .npy format, atomically."""
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as handle:
            np.save(_WriteOnly(handle), array, allow_pickle=False)


def write_text(path: str | os.PathLike, text: str) -> None:
    """Write a text file atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def save_torch(path: str | Path, obj) -> None:
    """``torch.save`` atomically, byte-stable: saved to memory first, because torch records the
    name of the file it writes (a temporary name would change the bytes on every save)."""
    import io

    import torch  # here, so that the data stages' imports stay light

    buffer = io.BytesIO()
    torch.save(obj, buffer)
    with atomic_path(path) as tmp:
        Path(tmp).write_bytes(buffer.getvalue())
