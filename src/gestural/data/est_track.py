"""Read and write Edinburgh Speech Tools "EST Track" files, one of the two trajectory formats.

CMU's EMA corpus stores articulator trajectories either as plain-ASCII nema files
(:mod:`gestural.data.ema`) or as EST Track files: a text header up to ``EST_Header_End``, then
one frame per row (time, an optional break value, the channels), as float32 binary in
either byte order or as ASCII. :func:`gestural.data.ema.read_ema` tells the two apart.

Errors are :class:`gestural.data.ema.EmaFormatError`, naming the file and line as every
reader of the corpus does; the writer is atomic (:mod:`gestural.core.files`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from gestural.core.files import atomic_path
from gestural.core.units import CHANNELS, FRAME_RATE, NUM_CHANNELS
from gestural.data.parsing import EmaFormatError, PathLike, decode_ascii, parse_row, read_bytes


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


_HEADER_END = re.compile(rb"^EST_Header_End[ \t]*(?:\r?\n|$)", re.MULTILINE)
_BYTE_ORDERS = {"01": "<", "10": ">"}  # 01 = little-endian (LSB first)
# EMA tracks have tens of channels; a header claiming more is refused before a name is made
# for each (a 6 KB file claiming a billion would otherwise exhaust memory).
MAX_CHANNELS = 10_000


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
    return parse_est_track(path, read_bytes(path))


def parse_est_track(path: PathLike, data: bytes) -> EstTrack:
    """:func:`read_est_track` of the file's ``data``, already read (``path`` names it in errors)."""
    match = _HEADER_END.search(data)
    if match is None:
        if not data.startswith(b"EST_File"):
            raise EmaFormatError(path, 1, "not an EST file (expected 'EST_File Track')")
        raise EmaFormatError(path, None, "no 'EST_Header_End' line ending the header")
    header_lines = decode_ascii(path, data[: match.start()]).splitlines()
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

    width = 1 + int(breaks_present) + num_channels
    # Before anything of the header's sizes is allocated: do the data hold what it claims?
    _check_header_sizes(path, fields, num_frames, width, data_type == "binary", len(data) - match.end())
    channel_names = _channel_names(path, fields, num_channels)
    if data_type == "binary":
        byte_order = _header_choice(path, fields, "ByteOrder", tuple(_BYTE_ORDERS))
        table = _read_est_binary(
            path, data[match.end():], num_frames, width, _BYTE_ORDERS[byte_order]
        )
    else:
        body = decode_ascii(path, data[match.end():])
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


def _check_header_sizes(path: PathLike, fields: dict, num_frames: int, width: int, binary: bool,
                        body_bytes: int) -> None:
    """Refuse NumChannels over :data:`MAX_CHANNELS`, and binary data shorter than NumFrames x
    the columns (4 bytes a value). ASCII data need no size check: they are parsed row by row,
    and a row of the wrong width stops the reading."""
    line, channels = fields["NumChannels"]
    if int(channels) > MAX_CHANNELS:
        raise EmaFormatError(path, line, f"NumChannels {channels} is over the {MAX_CHANNELS} channels this "
                                         "reader accepts")
    needed = num_frames * width * 4
    if binary and needed > body_bytes:
        raise EmaFormatError(
            path, None,
            f"truncated binary data: {body_bytes} bytes hold {body_bytes // (4 * width)} complete frames, "
            f"header says NumFrames {num_frames} x {width} columns ({needed} bytes)")


def _channel_names(path: PathLike, fields: dict, num_channels: int) -> list[str]:
    names = [f"channel_{i}" for i in range(num_channels)]
    for key, (number, value) in fields.items():
        if key.startswith("Channel_") and key[8:].isdigit():
            index = int(key[8:])
            if index >= num_channels:
                raise EmaFormatError(path, number, f"{key} given but NumChannels is {num_channels}")
            names[index] = value
    return names


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
    expected = num_frames * width * 4  # the body holds that many (_check_header_sizes)
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
        rows.append(parse_row(path, number, tokens))
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
        Default: :data:`gestural.ema.CHANNELS` when there are 12 channels, else ``channel_<i>``.
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
