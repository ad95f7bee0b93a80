"""Read and write the file formats of CMU's EMA corpus (emadata.tgz).

The corpus holds, per utterance, articulator trajectories (as plain-ASCII
"nema" files or as Edinburgh Speech Tools "EST Track" files), a 16 kHz wav,
a Festival ``.lab`` phone segmentation, and per corpus a ``txt.done.data``
prompt list and per-channel ``mean std`` statistics.  The EST Track reader and
writer are in :mod:`gestural.data.est_track`; :func:`read_ema` reads either format.

Every reader raises :class:`EmaFormatError` (a ``ValueError``) naming the file,
the line where one applies, and the problem, so that one bad file among
thousands is easy to find.  Every writer is atomic (:mod:`gestural.core.files`).  Each
text format has one formatter (``nema_text``, ``lab_text``, ...) giving the
bytes of a file, used by its ``write_*`` function and by the synthetic corpus's
archive writer (:mod:`gestural.synthetic.generator`), so that both write the same format.
"""

from __future__ import annotations

import io
import os
import re
import wave
from pathlib import Path

import numpy as np

from gestural.core.files import atomic_path
from gestural.core.units import NUM_CHANNELS
from gestural.data.est_track import parse_est_track
from gestural.data.parsing import EmaFormatError, PathLike, decode_ascii, parse_float, parse_row, read_bytes

# --------------------------------------------------------------------------
# nema (plain ASCII, one frame per line)
# --------------------------------------------------------------------------


def read_nema(path: PathLike, num_channels: int = NUM_CHANNELS) -> np.ndarray:
    """Read a nema file: ASCII, no header, one frame per line.

    Parameters
    ----------
    path : path-like
        The nema file.
    num_channels : int, default 12
        Keep this many leading columns (real files carry more columns than
        the 12 articulator coordinates).

    Returns
    -------
    values : ndarray of shape (frames, num_channels), float32
        NaN tokens are kept as NaN.

    Raises
    ------
    EmaFormatError
        Empty file, binary content, a ragged line, a non-numeric token, or
        fewer than ``num_channels`` columns.
    """
    return _parse_nema(path, read_bytes(path), num_channels)


def _parse_nema(path: PathLike, data: bytes, num_channels: int) -> np.ndarray:
    """:func:`read_nema` of the file's ``data``, already read."""
    if num_channels < 1:
        raise ValueError(f"num_channels must be at least 1, got {num_channels}")
    text = decode_ascii(path, data)
    if not text.strip():
        raise EmaFormatError(path, None, "file is empty")
    try:
        # numpy's C parser is the fast path; it refuses ragged rows and bad tokens.
        table = np.loadtxt(io.StringIO(text), dtype=np.float64, ndmin=2, comments=None)
    except ValueError:
        table = _parse_nema_lines(path, text.splitlines())  # raises naming the line
    if table.shape[1] < num_channels:
        first = next(i for i, line in enumerate(text.splitlines(), 1) if line.strip())
        raise EmaFormatError(
            path, first, f"expected at least {num_channels} columns, found {table.shape[1]}"
        )
    return np.ascontiguousarray(table[:, :num_channels], dtype=np.float32)


def _parse_nema_lines(path: PathLike, lines: list[str]) -> np.ndarray:
    """Slow path: parse line by line, raising at the first bad line."""
    rows: list[list[float]] = []
    num_columns = None
    for number, line in enumerate(lines, 1):
        tokens = line.split()
        if not tokens:
            continue
        if num_columns is None:
            num_columns = len(tokens)
        elif len(tokens) != num_columns:
            raise EmaFormatError(
                path, number, f"expected {num_columns} columns, found {len(tokens)}"
            )
        rows.append(parse_row(path, number, tokens))
    return np.array(rows, dtype=np.float64)


def nema_text(values: np.ndarray) -> bytes:
    """The bytes of a nema file holding ``values``, (frames, channels): ASCII, one frame
    per line, 6 decimals, NaN as ``nan``."""
    values = np.asarray(values, dtype=np.float64)
    if values.ndim != 2 or values.shape[0] == 0 or values.shape[1] == 0:
        raise ValueError(f"values must be a non-empty 2-D array, got shape {values.shape}")
    frames, channels = values.shape
    # One %-format over the whole array is ~10x faster than np.savetxt's row loop.
    row_format = " ".join(["%.6f"] * channels) + "\n"
    text = (row_format * frames) % tuple(values.ravel().tolist())
    return text.encode("ascii")


def write_nema(path: PathLike, values: np.ndarray) -> None:
    """Write ``values``, (frames, channels), as a nema file (:func:`nema_text`), atomically."""
    text = nema_text(values)
    with atomic_path(path) as tmp:
        tmp.write_bytes(text)


# --------------------------------------------------------------------------
# Auto-detection
# --------------------------------------------------------------------------


def read_ema(path: PathLike, num_channels: int = NUM_CHANNELS) -> np.ndarray:
    """Read articulator trajectories from an EST Track or a nema file.

    The format is detected from the content: EST files begin with ``EST_File``. The file is
    read once, as a regular file of at most :data:`gestural.data.parsing.MAX_FILE_BYTES`
    (a FIFO or a device is refused, never opened).

    Parameters
    ----------
    path : path-like
    num_channels : int, default 12
        Keep the first ``num_channels`` channels (after time and break columns).

    Returns
    -------
    values : ndarray of shape (frames, num_channels), float32
    """
    data = read_bytes(path)
    if not data.startswith(b"EST_File"):
        return _parse_nema(path, data, num_channels)
    track = parse_est_track(path, data)
    if track.values.shape[1] < num_channels:
        raise EmaFormatError(
            path, None,
            f"EST track has {track.values.shape[1]} channels, need at least {num_channels}",
        )
    return np.ascontiguousarray(track.values[:, :num_channels])


# --------------------------------------------------------------------------
# Festival label files
# --------------------------------------------------------------------------


def read_lab(path: PathLike) -> list[tuple[float, str]]:
    """Read a Festival ``.lab`` segmentation.

    Header lines run up to a line holding only ``#``; then each line is
    ``end_time color label`` (end time in seconds, a numeric color field).

    Returns
    -------
    segments : list of (end_time, label)
    """
    text = decode_ascii(path, read_bytes(path))
    lines = text.splitlines()
    try:
        start = next(i for i, line in enumerate(lines) if line.strip() == "#") + 1
    except StopIteration:
        raise EmaFormatError(path, None, "no '#' line ending the header") from None
    separator = ";"  # Festival's default field separator
    for line in lines[: start - 1]:
        key, _, value = line.strip().partition(" ")
        if key == "separator" and value.strip():
            separator = value.strip()

    segments = []
    for number, line in enumerate(lines[start:], start + 1):
        if not line.strip():
            continue
        parts = line.split(None, 2)
        label = parts[2].strip() if len(parts) == 3 else ""
        if separator in label:
            label = label.split(separator, 1)[0].strip()  # drop extra fields
        if not label:
            raise EmaFormatError(
                path, number, f"expected 'end_time color label', got {line.strip()!r}"
            )
        try:
            end_time = parse_float(parts[0])
            parse_float(parts[1])
        except ValueError:
            raise EmaFormatError(
                path, number, f"expected numeric end time and color, got {line.strip()!r}"
            ) from None
        if not np.isfinite(end_time):
            raise EmaFormatError(path, number, f"end time {parts[0]!r} is not finite")
        segments.append((end_time, label))
    return segments


def lab_text(segments: list[tuple[float, str]]) -> bytes:
    """The bytes of a Festival ``.lab`` file (end times to 0.1 ms, color 125).

    ``segments`` are (end_time, label) pairs; labels must be single tokens (no
    whitespace, no ``;``).
    """
    out = ["separator ;\nnfields 1\n#\n"]
    for end_time, label in segments:
        if not label or label.split() != [label] or ";" in label:
            raise ValueError(f"label must be one token without ';', got {label!r}")
        out.append(f"{float(end_time):10.4f} 125 {label}\n")
    return "".join(out).encode()


def write_lab(path: PathLike, segments: list[tuple[float, str]]) -> None:
    """Write (end_time, label) ``segments`` as a Festival ``.lab`` file (:func:`lab_text`), atomically."""
    text = lab_text(segments)
    with atomic_path(path) as tmp:
        tmp.write_bytes(text)


# --------------------------------------------------------------------------
# Per-channel statistics
# --------------------------------------------------------------------------


def read_ema_stats(path: PathLike) -> np.ndarray:
    """Read per-channel statistics: one ``mean std`` line per channel.

    Returns
    -------
    stats : ndarray of shape (channels, 2), float64
    """
    text = decode_ascii(path, read_bytes(path))
    rows = []
    for number, line in enumerate(text.splitlines(), 1):
        tokens = line.split()
        if not tokens:
            continue
        if len(tokens) != 2:
            raise EmaFormatError(path, number, f"expected 'mean std', found {len(tokens)} columns")
        rows.append(parse_row(path, number, tokens))
    if not rows:
        raise EmaFormatError(path, None, "file is empty")
    return np.array(rows, dtype=np.float64)


def ema_stats_text(stats: np.ndarray, decimals: int | None = None) -> bytes:
    """The bytes of an ``ema.stats`` file: one ``mean std`` line per row of ``stats``,
    (channels, 2), with ``decimals`` decimals, or exactly (shortest repr) when None."""
    stats = np.asarray(stats, dtype=np.float64)
    if stats.ndim != 2 or stats.shape[1] != 2:
        raise ValueError(f"stats must have shape (channels, 2), got {stats.shape}")
    if decimals is None:
        text = "".join(f"{mean!r} {std!r}\n" for mean, std in stats.tolist())
    else:
        text = "".join(f"{mean:.{decimals}f} {std:.{decimals}f}\n" for mean, std in stats.tolist())
    return text.encode()


def write_ema_stats(path: PathLike, stats: np.ndarray) -> None:
    """Write per-channel statistics exactly (:func:`ema_stats_text`), atomically."""
    text = ema_stats_text(stats)
    with atomic_path(path) as tmp:
        tmp.write_bytes(text)


# --------------------------------------------------------------------------
# Prompt list (txt.done.data)
# --------------------------------------------------------------------------

_PROMPT = re.compile(r'^\(\s*(\S+)\s+"((?:[^"\\]|\\.)*)"\s*\)$')
_UNESCAPE = re.compile(r"\\(.)")


def read_txt_done_data(path: PathLike) -> dict[str, str]:
    """Read a festvox prompt list: lines ``( utt_id "Text." )``.

    Returns
    -------
    prompts : dict of utterance id -> text, in file order
    """
    text = decode_ascii(path, read_bytes(path))
    prompts: dict[str, str] = {}
    for number, line in enumerate(text.splitlines(), 1):
        stripped = line.strip()
        if not stripped:
            continue
        match = _PROMPT.match(stripped)
        if match is None:
            raise EmaFormatError(
                path, number, f'expected ( utt_id "text" ), got {stripped[:80]!r}'
            )
        utt_id, quoted = match.groups()
        if utt_id in prompts:
            raise EmaFormatError(path, number, f"utterance {utt_id!r} listed twice")
        prompts[utt_id] = _UNESCAPE.sub(r"\1", quoted)
    return prompts


def txt_done_data_text(mapping: dict[str, str]) -> bytes:
    """The bytes of a festvox prompt list, quotes and backslashes escaped.

    ``mapping`` (utterance id -> text) is written in its order; ids must be single
    tokens, texts one line.
    """
    out = []
    for utt_id, text in mapping.items():
        if not utt_id or utt_id.split() != [utt_id] or "\n" in text:
            raise ValueError(f"bad prompt entry {utt_id!r}: {text!r}")
        escaped = text.replace("\\", "\\\\").replace('"', '\\"')
        out.append(f'( {utt_id} "{escaped}" )\n')
    return "".join(out).encode()


def write_txt_done_data(path: PathLike, mapping: dict[str, str]) -> None:
    """Write a festvox prompt list (:func:`txt_done_data_text`), atomically."""
    text = txt_done_data_text(mapping)
    with atomic_path(path) as tmp:
        tmp.write_bytes(text)


# --------------------------------------------------------------------------
# Audio
# --------------------------------------------------------------------------


def wav_num_frames(path: PathLike) -> int:
    """Number of samples (per channel) in a wav file.

    Raises
    ------
    EmaFormatError
        The file is not a readable PCM wav.
    """
    Path(path).stat()  # a missing file is a FileNotFoundError, not a format error
    try:
        with wave.open(os.fspath(path), "rb") as handle:
            return handle.getnframes()
    except (wave.Error, EOFError) as err:
        raise EmaFormatError(path, None, f"not a readable WAV file ({err})") from None
