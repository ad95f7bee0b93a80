"""Read and write the file formats of CMU's EMA corpus (emadata.tgz).

The corpus holds, per utterance, articulator trajectories (as plain-ASCII
"nema" files or as Edinburgh Speech Tools "EST Track" files), a 16 kHz wav,
a Festival ``.lab`` phone segmentation, and per corpus a ``txt.done.data``
prompt list and per-channel ``mean std`` statistics.

Every reader raises :class:`EmaFormatError` (a ``ValueError``) naming the file,
the line where one applies, and the problem, so that one bad file among
thousands is easy to find.  Every writer is atomic (:mod:`gestural.io`).
"""

from __future__ import annotations

import io
import os
import re
import wave
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from gestural.io import atomic_path

CHANNELS: tuple[str, ...] = (
    "td_x", "td_y",
    "tb_x", "tb_y",
    "tt_x", "tt_y",
    "li_x", "li_y",
    "ul_x", "ul_y",
    "ll_x", "ll_y",
)
NUM_CHANNELS = 12
ARTICULATORS: tuple[str, ...] = (
    "tongue dorsum",
    "tongue blade",
    "tongue tip",
    "jaw (lower incisor)",
    "upper lip",
    "lower lip",
)
FRAME_RATE = 200  # Hz, EMA frames
WAV_RATE = 16000  # Hz, audio samples
SAMPLES_PER_FRAME = WAV_RATE // FRAME_RATE  # 80

PathLike = str | os.PathLike


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


@dataclass
class EstTrack:
    """Contents of an EST Track file.

    Attributes
    ----------
    times : ndarray of shape (frames,), float64
        Frame times in seconds.
    values : ndarray of shape (frames, channels), float32
        Channel values.
    channel_names : list of str
        One name per channel (``channel_<i>`` where the header names none).
    breaks : ndarray of shape (frames,), float32, or None
        The break column as stored (EST: non-zero = frame present), or None
        when the file has no breaks.
    """

    times: np.ndarray
    values: np.ndarray
    channel_names: list[str]
    breaks: np.ndarray | None = None


# --------------------------------------------------------------------------
# Helpers shared by the ASCII readers
# --------------------------------------------------------------------------


def _read_bytes(path: PathLike) -> bytes:
    with open(path, "rb") as handle:
        return handle.read()


def _decode_ascii(path: PathLike, data: bytes) -> str:
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


def _parse_float(token: str) -> float:
    # Python's float() accepts "1_000"; numpy's fast parser does not: stay consistent.
    if "_" in token:
        raise ValueError(token)
    return float(token)


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
    if num_channels < 1:
        raise ValueError(f"num_channels must be at least 1, got {num_channels}")
    text = _decode_ascii(path, _read_bytes(path))
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
        rows.append(_parse_row(path, number, tokens))
    return np.array(rows, dtype=np.float64)


def _parse_row(path: PathLike, number: int, tokens: list[str]) -> list[float]:
    row = []
    for column, token in enumerate(tokens, 1):
        try:
            row.append(_parse_float(token))
        except ValueError:
            raise EmaFormatError(
                path, number, f"column {column}: {token!r} is not a number"
            ) from None
    return row


def write_nema(path: PathLike, values: np.ndarray) -> None:
    """Write a nema file (ASCII, one frame per line, 6 decimals, NaN as ``nan``).

    Parameters
    ----------
    path : path-like
        Destination; written atomically.
    values : array-like of shape (frames, channels)
    """
    values = np.asarray(values, dtype=np.float64)
    if values.ndim != 2 or values.shape[0] == 0 or values.shape[1] == 0:
        raise ValueError(f"values must be a non-empty 2-D array, got shape {values.shape}")
    frames, channels = values.shape
    # One %-format over the whole array is ~10x faster than np.savetxt's row loop.
    row_format = " ".join(["%.6f"] * channels) + "\n"
    text = (row_format * frames) % tuple(values.ravel().tolist())
    with atomic_path(path) as tmp:
        tmp.write_bytes(text.encode("ascii"))


# --------------------------------------------------------------------------
# EST Track
# --------------------------------------------------------------------------

_HEADER_END = re.compile(rb"^EST_Header_End[ \t]*(?:\r?\n|$)", re.MULTILINE)
_BYTE_ORDERS = {"01": "<", "10": ">"}  # 01 = little-endian (LSB first)


def read_est_track(path: PathLike) -> EstTrack:
    """Read an Edinburgh Speech Tools Track file (binary or ASCII).

    Parameters
    ----------
    path : path-like
        The track file.  Each frame holds a time, a break value when the
        header says ``BreaksPresent true``, then ``NumChannels`` values.

    Returns
    -------
    track : EstTrack

    Raises
    ------
    EmaFormatError
        Missing ``EST_Header_End``, a missing or invalid ``NumFrames``,
        ``NumChannels``, ``DataType`` or ``ByteOrder``, truncated binary data,
        or an ASCII row with the wrong number of columns.
    """
    data = _read_bytes(path)
    match = _HEADER_END.search(data)
    if match is None:
        if not data.startswith(b"EST_File"):
            raise EmaFormatError(path, 1, "not an EST file (expected 'EST_File Track')")
        raise EmaFormatError(path, None, "no 'EST_Header_End' line ending the header")
    header_lines = _decode_ascii(path, data[: match.start()]).splitlines()
    header_line_count = len(header_lines) + 1  # + the EST_Header_End line
    if not header_lines or header_lines[0].split() != ["EST_File", "Track"]:
        raise EmaFormatError(path, 1, "not an EST Track file (expected 'EST_File Track')")

    fields: dict[str, tuple[int, str]] = {}
    comment_char = None
    for number, line in enumerate(header_lines[1:], 2):
        stripped = line.strip()
        if not stripped or (comment_char and stripped.startswith(comment_char)):
            continue
        key, _, value = stripped.partition(" ")
        fields[key] = (number, value.strip())
        if key == "CommentChar":
            comment_char = value.strip() or None

    num_frames = _header_int(path, fields, "NumFrames")
    num_channels = _header_int(path, fields, "NumChannels")
    data_type = _header_choice(path, fields, "DataType", ("binary", "ascii"))
    breaks_present = fields.get("BreaksPresent", (0, "false"))[1].lower() == "true"

    channel_names = [f"channel_{i}" for i in range(num_channels)]
    for key, (number, value) in fields.items():
        if key.startswith("Channel_") and key[8:].isdigit():
            index = int(key[8:])
            if index >= num_channels:
                raise EmaFormatError(
                    path, number, f"{key} given but NumChannels is {num_channels}"
                )
            channel_names[index] = value

    width = 1 + int(breaks_present) + num_channels
    if data_type == "binary":
        byte_order = _header_choice(path, fields, "ByteOrder", tuple(_BYTE_ORDERS))
        table = _read_est_binary(
            path, data[match.end():], num_frames, width, _BYTE_ORDERS[byte_order]
        )
    else:
        body = _decode_ascii(path, data[match.end():])
        table = _read_est_ascii(
            path, body, header_line_count, num_frames, width, breaks_present, comment_char
        )

    times = table[:, 0].astype(np.float64)
    breaks = table[:, 1].astype(np.float32) if breaks_present else None
    values = np.ascontiguousarray(table[:, width - num_channels:], dtype=np.float32)
    return EstTrack(times=times, values=values, channel_names=channel_names, breaks=breaks)


def _header_int(path: PathLike, fields: dict, key: str) -> int:
    if key not in fields:
        raise EmaFormatError(path, None, f"header has no {key}")
    number, value = fields[key]
    if not value.isdigit():
        raise EmaFormatError(
            path, number, f"{key} must be a non-negative integer, got {value!r}"
        )
    return int(value)


def _header_choice(path: PathLike, fields: dict, key: str, choices: tuple[str, ...]) -> str:
    if key not in fields:
        raise EmaFormatError(path, None, f"header has no {key}")
    number, value = fields[key]
    if value not in choices:
        allowed = " or ".join(choices)
        raise EmaFormatError(path, number, f"{key} must be {allowed}, got {value!r}")
    return value


def _read_est_binary(
    path: PathLike, body: bytes, num_frames: int, width: int, endian: str
) -> np.ndarray:
    frame_bytes = 4 * width
    expected = num_frames * frame_bytes
    if len(body) < expected:
        found = len(body) // frame_bytes
        raise EmaFormatError(
            path,
            None,
            f"truncated binary data: {len(body)} bytes hold {found} complete frames, "
            f"header says NumFrames {num_frames} ({expected} bytes)",
        )
    # A trailing newline is harmless; any other surplus means the header lies.
    surplus = body[expected:]
    if surplus.strip(b"\r\n"):
        raise EmaFormatError(
            path,
            None,
            f"{len(surplus)} bytes after the {num_frames} frames the header announces",
        )
    flat = np.frombuffer(body, dtype=f"{endian}f4", count=num_frames * width)
    return flat.astype(np.float64).reshape(num_frames, width)


def _read_est_ascii(
    path: PathLike,
    body: str,
    header_line_count: int,
    num_frames: int,
    width: int,
    breaks_present: bool,
    comment_char: str | None,
) -> np.ndarray:
    rows: list[list[float]] = []
    for number, line in enumerate(body.splitlines(), header_line_count + 1):
        stripped = line.strip()
        if not stripped or (comment_char and stripped.startswith(comment_char)):
            continue
        tokens = stripped.split()
        if len(tokens) != width:
            layout = "time, break" if breaks_present else "time"
            raise EmaFormatError(
                path,
                number,
                f"expected {width} columns ({layout} and {width - 1 - breaks_present} "
                f"channels), found {len(tokens)}",
            )
        rows.append(_parse_row(path, number, tokens))
    if len(rows) != num_frames:
        raise EmaFormatError(
            path, None, f"found {len(rows)} frames, header says NumFrames {num_frames}"
        )
    return np.array(rows, dtype=np.float64).reshape(num_frames, width)


def write_est_track(
    path: PathLike,
    values: np.ndarray,
    *,
    times: np.ndarray | None = None,
    binary: bool = True,
    byte_order: str = "01",
    breaks: np.ndarray | None = None,
    channel_names: list[str] | None = None,
) -> None:
    """Write an EST Track file.

    Parameters
    ----------
    path : path-like
        Destination; written atomically.
    values : array-like of shape (frames, channels)
    times : array-like of shape (frames,), optional
        Frame times in seconds; default ``arange(frames) / FRAME_RATE``.
    binary : bool, default True
        float32 binary data, else ASCII rows.
    byte_order : {"01", "10"}, default "01"
        Binary byte order: "01" little-endian, "10" big-endian.
    breaks : array-like of shape (frames,), optional
        Break column; written (with ``BreaksPresent true``) only when given.
    channel_names : list of str, optional
        Default: :data:`CHANNELS` when there are 12 channels, else ``channel_<i>``.
    """
    values = np.asarray(values, dtype=np.float32)
    if values.ndim != 2:
        raise ValueError(f"values must be 2-D (frames, channels), got shape {values.shape}")
    frames, channels = values.shape
    if byte_order not in _BYTE_ORDERS:
        raise ValueError(f"byte_order must be '01' or '10', got {byte_order!r}")
    times = (
        np.arange(frames, dtype=np.float64) / FRAME_RATE
        if times is None
        else np.asarray(times, dtype=np.float64)
    )
    columns = [times.reshape(-1)]
    if breaks is not None:
        columns.append(np.asarray(breaks, dtype=np.float64).reshape(-1))
    for name, column in zip(("times", "breaks"), columns):
        if column.shape != (frames,):
            raise ValueError(f"{name} must have {frames} entries, got {column.shape[0]}")
    if channel_names is None:
        if channels == NUM_CHANNELS:
            channel_names = list(CHANNELS)
        else:
            channel_names = [f"channel_{i}" for i in range(channels)]
    if len(channel_names) != channels or any(not n or n.split() != [n] for n in channel_names):
        raise ValueError(f"need {channels} channel names without spaces, got {channel_names!r}")

    header = [
        "EST_File Track",
        f"DataType {'binary' if binary else 'ascii'}",
    ]
    if binary:
        header.append(f"ByteOrder {byte_order}")
    header += [f"NumFrames {frames}", f"NumChannels {channels}", "NumAuxChannels 0"]
    if breaks is not None:
        header.append("BreaksPresent true")
    header.append("CommentChar ;")
    header += [f"Channel_{i} {name}" for i, name in enumerate(channel_names)]
    header.append("EST_Header_End")
    head = ("\n".join(header) + "\n").encode("ascii")

    table = np.column_stack(columns + [values.astype(np.float64)])
    if binary:
        endian = _BYTE_ORDERS[byte_order]
        body = table.astype(f"{endian}f4").tobytes()
    else:
        # %.9g round-trips float32 exactly.
        row_format = " ".join(["%.9g"] * table.shape[1]) + "\n"
        body = ((row_format * frames) % tuple(table.ravel().tolist())).encode("ascii")
    with atomic_path(path) as tmp:
        tmp.write_bytes(head + body)


# --------------------------------------------------------------------------
# Auto-detection
# --------------------------------------------------------------------------


def read_ema(path: PathLike, num_channels: int = NUM_CHANNELS) -> np.ndarray:
    """Read articulator trajectories from an EST Track or a nema file.

    The format is detected from the content: EST files begin with ``EST_File``.

    Parameters
    ----------
    path : path-like
    num_channels : int, default 12
        Keep the first ``num_channels`` channels (after time and break columns).

    Returns
    -------
    values : ndarray of shape (frames, num_channels), float32
    """
    with open(path, "rb") as handle:
        magic = handle.read(8)
    if magic != b"EST_File":
        return read_nema(path, num_channels)
    track = read_est_track(path)
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
    text = _decode_ascii(path, _read_bytes(path))
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
            end_time = _parse_float(parts[0])
            _parse_float(parts[1])
        except ValueError:
            raise EmaFormatError(
                path, number, f"expected numeric end time and color, got {line.strip()!r}"
            ) from None
        if not np.isfinite(end_time):
            raise EmaFormatError(path, number, f"end time {parts[0]!r} is not finite")
        segments.append((end_time, label))
    return segments


def write_lab(path: PathLike, segments: list[tuple[float, str]]) -> None:
    """Write a Festival ``.lab`` file (end times to 0.1 ms, color 125).

    Parameters
    ----------
    path : path-like
        Destination; written atomically.
    segments : list of (end_time, label)
        Labels must be single tokens (no whitespace).
    """
    out = ["separator ;\nnfields 1\n#\n"]
    for end_time, label in segments:
        if not label or label.split() != [label] or ";" in label:
            raise ValueError(f"label must be one token without ';', got {label!r}")
        out.append(f"{float(end_time):9.4f} 125 {label}\n")
    with atomic_path(path) as tmp:
        tmp.write_text("".join(out))


# --------------------------------------------------------------------------
# Per-channel statistics
# --------------------------------------------------------------------------


def read_ema_stats(path: PathLike) -> np.ndarray:
    """Read per-channel statistics: one ``mean std`` line per channel.

    Returns
    -------
    stats : ndarray of shape (channels, 2), float64
    """
    text = _decode_ascii(path, _read_bytes(path))
    rows = []
    for number, line in enumerate(text.splitlines(), 1):
        tokens = line.split()
        if not tokens:
            continue
        if len(tokens) != 2:
            raise EmaFormatError(path, number, f"expected 'mean std', found {len(tokens)} columns")
        rows.append(_parse_row(path, number, tokens))
    if not rows:
        raise EmaFormatError(path, None, "file is empty")
    return np.array(rows, dtype=np.float64)


def write_ema_stats(path: PathLike, stats: np.ndarray) -> None:
    """Write per-channel statistics, one ``mean std`` line per channel, atomically."""
    stats = np.asarray(stats, dtype=np.float64)
    if stats.ndim != 2 or stats.shape[1] != 2:
        raise ValueError(f"stats must have shape (channels, 2), got {stats.shape}")
    text = "".join(f"{mean!r} {std!r}\n" for mean, std in stats.tolist())
    with atomic_path(path) as tmp:
        tmp.write_text(text)


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
    text = _decode_ascii(path, _read_bytes(path))
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


def write_txt_done_data(path: PathLike, mapping: dict[str, str]) -> None:
    """Write a festvox prompt list, escaping quotes and backslashes, atomically."""
    out = []
    for utt_id, text in mapping.items():
        if not utt_id or utt_id.split() != [utt_id] or "\n" in text:
            raise ValueError(f"bad prompt entry {utt_id!r}: {text!r}")
        escaped = text.replace("\\", "\\\\").replace('"', '\\"')
        out.append(f'( {utt_id} "{escaped}" )\n')
    with atomic_path(path) as tmp:
        tmp.write_text("".join(out))


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
