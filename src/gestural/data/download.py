"""Fetch the EMA data archive: from a URL (resumable, verified) or a local copy.

Both sources end the same way: the archive appears at ``dest`` whole or not at
all, and its sha256 is returned so the caller can record it.
"""

from __future__ import annotations

import errno
import hashlib
import http.client
import os
import shutil
import time
import urllib.error
import urllib.request
from pathlib import Path

from gestural.core.files import atomic_path
from gestural.core.progress import Progress

# Seconds to wait before retry n (n = 1, 2, ...): RETRY_BACKOFF_S * 2 ** (n - 1).
RETRY_BACKOFF_S = 1.0

_CHUNK_BYTES = 1 << 20

# Errors that mean "the network or server let us down"; worth a retry.
_TRANSIENT_ERRORS = (urllib.error.URLError, http.client.HTTPException, ConnectionError, TimeoutError)

_ALTERNATIVES = (
    "If this machine cannot download it, either\n"
    "  - download emadata.tgz elsewhere and use that copy: set `data.source: archive` and\n"
    "    `data.archive: /path/to/emadata.tgz` in params.yaml (or run\n"
    "    `dvc exp run -S data.source=archive -S data.archive=/path/to/emadata.tgz`), or\n"
    "  - use generated data instead: set `data.source: synthetic`."
)


class DownloadError(RuntimeError):
    """The archive could not be fetched, copied or verified."""


def sha256_of(path: str | os.PathLike) -> str:
    """Hex sha256 digest of a file, read in chunks.

    Parameters
    ----------
    path : path-like
        File to hash.

    Returns
    -------
    digest : str
        64 lowercase hex digits.
    """
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def _check_sha256(path: Path, expected: str | None, what: str) -> str:
    """Hash ``path``; raise DownloadError when it differs from ``expected``."""
    actual = sha256_of(path)
    if expected is not None and actual != expected.strip().lower():
        raise DownloadError(
            f"{what}: sha256 mismatch: expected {expected.strip().lower()}, got {actual}. "
            "The file is damaged or is not the expected archive."
        )
    return actual


class _RetryableError(Exception):
    """One attempt failed in a way that another attempt may fix."""


def _content_range_total(header: str | None) -> int | None:
    """The total size from a ``Content-Range: bytes a-b/N`` or ``bytes */N`` header."""
    if not header or "/" not in header:
        return None
    total = header.rsplit("/", 1)[1].strip()
    return int(total) if total.isdigit() else None


def _attempt(url: str, part: Path, timeout: float) -> None:
    """One download attempt into ``part``, resuming from its current length if possible.

    Returns when ``part`` holds the whole body; raises ``_RetryableError``,
    ``DownloadError`` or one of ``_TRANSIENT_ERRORS`` otherwise.
    """
    offset = part.stat().st_size if part.exists() else 0
    request = urllib.request.Request(url)
    if offset:
        request.add_header("Range", f"bytes={offset}-")
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as error:
        if error.code == 416 and offset:
            # Range beyond the end: the partial is either complete or junk.
            total = _content_range_total(error.headers.get("Content-Range"))
            error.close()
            if total == offset:
                return
            part.unlink()
            return _attempt(url, part, timeout)  # offset is now 0: no second 416
        error.close()
        if error.code >= 500 or error.code in (408, 429):
            raise
        raise DownloadError(f"{url}: the server answered {error.code} {error.reason}.\n{_ALTERNATIVES}") from error
    except urllib.error.URLError as error:
        if isinstance(error.reason, FileNotFoundError):
            raise DownloadError(f"{url}: no such file.\n{_ALTERNATIVES}") from error
        raise

    with response:
        resumed = offset > 0 and getattr(response, "status", None) == 206
        if resumed:
            start = response.headers.get("Content-Range", "")
            resumed = start.startswith(f"bytes {offset}-")
        if not resumed:
            offset = 0  # server sent the whole body (200, or file://): start over
        length = response.headers.get("Content-Length")
        total = offset + int(length) if length and length.isdigit() else None

        received = offset
        with open(part, "ab" if resumed else "wb") as out, Progress(
            total, f"downloading {Path(part.name).stem}", "B", initial=offset
        ) as progress:
            while chunk := response.read(_CHUNK_BYTES):
                try:
                    out.write(chunk)
                except OSError as error:
                    raise DownloadError(f"could not write {part}: {error}") from error
                received += len(chunk)
                progress.update(len(chunk))

    if total is not None and received < total:
        raise _RetryableError(f"connection closed after {received} of {total} bytes")


def _move_into_place(part: Path, dest: Path) -> None:
    """Rename ``part`` to ``dest``; copy atomically when they are on different filesystems."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.replace(part, dest)
    except OSError as error:
        if error.errno != errno.EXDEV:
            raise
        with atomic_path(dest) as tmp:
            shutil.copyfile(part, tmp)
        part.unlink()


def fetch_url(
    url: str,
    dest: str | os.PathLike,
    *,
    sha256: str | None = None,
    retries: int = 3,
    timeout: float = 60,
    partial_dir: str | os.PathLike | None = None,
) -> str:
    """Download ``url`` to ``dest``, resuming an earlier partial download.

    Parameters
    ----------
    url : str
        http(s):// or file:// URL.
    dest : path-like
        Where the file ends up; written only once complete (and verified).
    sha256 : str, optional
        Expected hex digest. On a mismatch the download is deleted.
    retries : int
        Number of attempts before giving up; waits grow exponentially between them.
    timeout : float
        Socket timeout in seconds for each attempt.
    partial_dir : path-like, optional
        Where to keep the partial download ``<dest name>.part``; beside
        ``dest`` by default. A partial found there is resumed with an HTTP
        ``Range`` request (or restarted if the server does not support it).

    Returns
    -------
    digest : str
        sha256 of the downloaded file.

    Raises
    ------
    DownloadError
        If the URL cannot be reached after ``retries`` attempts, the server
        refuses the request, or the sha256 does not match. The message says
        how to use a local archive or synthetic data instead.
    """
    dest = Path(dest)
    part_dir = Path(partial_dir) if partial_dir is not None else dest.parent
    part_dir.mkdir(parents=True, exist_ok=True)
    part = part_dir / (dest.name + ".part")

    last_error: BaseException | None = None
    for attempt in range(1, max(retries, 1) + 1):
        if attempt > 1:
            time.sleep(RETRY_BACKOFF_S * 2 ** (attempt - 2))
        try:
            _attempt(url, part, timeout)
            break
        except (_RetryableError, *_TRANSIENT_ERRORS) as error:
            last_error = error
    else:
        reason = getattr(last_error, "reason", last_error)
        raise DownloadError(
            f"Could not download {url} after {max(retries, 1)} attempt(s): the URL could not be "
            f"reached ({reason}).\n{_ALTERNATIVES}"
        ) from last_error

    try:
        digest = _check_sha256(part, sha256, url)
    except DownloadError:
        part.unlink()  # a complete but wrong file cannot be resumed into a right one
        raise
    _move_into_place(part, dest)
    return digest


def copy_archive(src: str | os.PathLike, dest: str | os.PathLike, *, sha256: str | None = None) -> str:
    """Copy a local archive (``data.source: archive``) to ``dest``, atomically.

    Parameters
    ----------
    src : path-like
        The archive named by ``data.archive`` in params.yaml.
    dest : path-like
        Where the copy ends up.
    sha256 : str, optional
        Expected hex digest of the archive.

    Returns
    -------
    digest : str
        sha256 of the copied file.

    Raises
    ------
    DownloadError
        If ``src`` is not an existing file or its sha256 does not match;
        ``dest`` is then left untouched.
    """
    src = Path(src)
    if not src.is_file():
        problem = "is a directory, not a file" if src.is_dir() else "does not exist"
        raise DownloadError(
            f"data.archive is {str(src)!r}, which {problem}. Set `data.archive` in params.yaml "
            "to the path of the downloaded emadata.tgz (or use `data.source: synthetic`)."
        )
    with atomic_path(dest) as tmp:
        try:
            shutil.copyfile(src, tmp)
        except OSError as error:
            raise DownloadError(f"could not copy {src} to {dest}: {error}") from error
        # Hash the copy, not the source: it is what the pipeline will read.
        return _check_sha256(tmp, sha256, str(src))
