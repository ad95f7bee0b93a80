"""What the EMA corpus's readers share: the error they raise and the ASCII parsing helpers.

Both trajectory formats (:mod:`gestural.data.ema`'s nema and :mod:`gestural.data.est_track`)
and the label readers build on these, so a bad file is reported the same way whichever
reader met it.
"""

from __future__ import annotations

import os

from gestural.core.files import MIB, UserFileError, read_user_file

PathLike = str | os.PathLike

# Far above any file of the corpus (its EMA files are tens of KB, its largest wav a few hundred
# KB), and low enough that a mistaken path (a disk image, a log) is refused before it is parsed.
MAX_FILE_BYTES = 256 * MIB


class EmaFormatError(ValueError):
    """A corpus file is not in the format expected of it.

    Attributes
    ----------
    path : str
        The offending file.
    line : int or None
        1-based line number of the problem, or None when it is not tied to a line.
    reason : str
        What is wrong, in words.
    """

    def __init__(self, path: PathLike, line: int | None, reason: str):
        self.path = os.fspath(path)
        self.line = line
        self.reason = reason
        where = self.path if line is None else f"{self.path}, line {line}"
        super().__init__(f"{where}: {reason}")

    def __reduce__(self):
        # Keeps the error picklable, so it survives a multiprocessing pool.
        return (type(self), (self.path, self.line, self.reason))


def read_bytes(path: PathLike, max_bytes: int = MAX_FILE_BYTES) -> bytes:
    """The bytes of a regular file of at most ``max_bytes``.

    Raises
    ------
    EmaFormatError
        A FIFO, device or directory (never opened, so never blocking), or a file over the cap.
    OSError
        The file is missing or cannot be read.
    """
    try:
        return read_user_file(path, "file", max_bytes)
    except UserFileError as error:
        raise EmaFormatError(path, None, error.reason) from None


def decode_ascii(path: PathLike, data: bytes) -> str:
    """Decode ASCII text, refusing binary content with the line where it starts."""
    nul = data.find(b"\x00")
    try:
        text = data.decode("ascii")
    except UnicodeDecodeError as err:
        bad = err.start if nul < 0 else min(err.start, nul)
    else:
        if nul < 0:
            return text
        bad = nul
    line = data.count(b"\n", 0, bad) + 1
    raise EmaFormatError(
        path, line, f"binary or non-ASCII content (byte 0x{data[bad]:02x} at offset {bad})"
    )


def parse_float(token: str) -> float:
    # Python's float() accepts "1_000"; numpy's fast parser does not: stay consistent.
    if "_" in token:
        raise ValueError(token)
    return float(token)


def parse_row(path: PathLike, number: int, tokens: list[str]) -> list[float]:
    row = []
    for column, token in enumerate(tokens, 1):
        try:
            row.append(parse_float(token))
        except ValueError:
            raise EmaFormatError(
                path, number, f"column {column}: {token!r} is not a number"
            ) from None
    return row
