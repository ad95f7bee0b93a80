"""Tests for gestural.ema and gestural.est_track: the CMU EMA corpus file formats."""

from __future__ import annotations

import io
import pickle
import struct
import wave

import numpy as np
import pytest

from gestural.core import units
from gestural.data import ema, est_track
from gestural.data.ema import EmaFormatError


def _table(frames=30, columns=20, seed=0):
    rng = np.random.default_rng(seed)
    return (rng.normal(size=(frames, columns)) * 20).astype(np.float32)


def test_constants_are_consistent():
    assert len(units.CHANNELS) == units.NUM_CHANNELS == 12
    assert len(units.ARTICULATORS) * 2 == units.NUM_CHANNELS
    assert units.SAMPLES_PER_FRAME * units.FRAME_RATE == units.WAV_RATE


# ---------------------------------------------------------------- nema


def test_nema_round_trip_keeps_nan_and_drops_extra_columns(tmp_path):
    values = _table(columns=20)
    values[3, 2] = np.nan
    values[7, 15] = np.nan  # beyond the kept columns
    path = tmp_path / "utt.ema"
    ema.write_nema(path, values)

    got = ema.read_nema(path)
    assert got.dtype == np.float32 and got.shape == (30, 12)
    np.testing.assert_allclose(got, values[:, :12], atol=1e-5)
    assert np.isnan(got[3, 2]) and np.isnan(got).sum() == 1

    assert ema.read_nema(path, num_channels=20).shape == (30, 20)
    assert not list(tmp_path.glob(".*.tmp"))  # the atomic writer left nothing behind


def test_nema_accepts_mixed_case_nan_and_blank_lines(tmp_path):
    path = tmp_path / "utt.ema"
    path.write_text("1 NaN 3\n\n4 5 nan\r\n")
    got = ema.read_nema(path, num_channels=3)
    np.testing.assert_array_equal(np.isnan(got), [[False, True, False], [False, False, True]])
    assert got[1, 0] == 4


@pytest.mark.parametrize(
    "content, line, words",
    [
        (b"", None, "file is empty"),
        (b"  \n\n", None, "file is empty"),
        (b"1 2 3 4\n1 2 3 4\n\n1 2 3\n1 2 3 4\n", 4, "expected 4 columns, found 3"),
        (b"1 2 3 4\n1 2 3 4 5\n", 2, "expected 4 columns, found 5"),
        (b"1 2 3 4\n1 2 3 4\n1 2 x7 4\n", 3, "'x7' is not a number"),
        (b"1 2\n3 4\n", 1, "expected at least 3 columns, found 2"),
        (b"1 2 3\n4 5 6\n\x00\x9f\xff\x10garbage", 3, "binary"),
        (b"1 2 3\n4 \xe9 6\n", 2, "non-ASCII"),
    ],
)
def test_nema_errors_name_file_and_line(tmp_path, content, line, words):
    path = tmp_path / "bad_utt.ema"
    path.write_bytes(content)
    with pytest.raises(EmaFormatError) as info:
        ema.read_nema(path, num_channels=3)
    err = info.value
    assert err.line == line
    assert words in err.reason
    assert "bad_utt.ema" in str(err)
    if line is not None:
        assert f"bad_utt.ema, line {line}: " in str(err)


def test_format_error_message_and_pickle():
    err = EmaFormatError("a/b.ema", 17, "expected 14 columns, found 13")
    assert str(err) == "a/b.ema, line 17: expected 14 columns, found 13"
    assert str(EmaFormatError("a/b.ema", None, "file is empty")) == "a/b.ema: file is empty"
    assert isinstance(err, ValueError)
    copy = pickle.loads(pickle.dumps(err))  # must survive a multiprocessing pool
    assert (copy.path, copy.line, copy.reason, str(copy)) == (err.path, 17, err.reason, str(err))


# ---------------------------------------------------------------- EST Track


@pytest.mark.parametrize("byte_order", ["01", "10"])
@pytest.mark.parametrize("with_breaks", [False, True])
def test_est_binary_round_trip(tmp_path, byte_order, with_breaks):
    values = _table(frames=25, columns=14)
    values[4, 1] = np.nan
    times = np.arange(25) * 0.005 + 0.0025
    breaks = np.ones(25) if with_breaks else None
    names = [f"ch{i}" for i in range(14)]
    path = tmp_path / "utt.est"
    est_track.write_est_track(
        path, values, times=times, byte_order=byte_order, breaks=breaks, channel_names=names
    )
    track = est_track.read_est_track(path)
    np.testing.assert_array_equal(track.values, values)  # float32 stored exactly
    np.testing.assert_allclose(track.times, times, rtol=1e-6)
    assert track.channel_names == names
    assert (track.breaks is None) == (not with_breaks)
    if with_breaks:
        np.testing.assert_array_equal(track.breaks, 1)


def test_est_binary_byte_order_is_as_declared(tmp_path):
    """A hand-built big-endian file, independent of our writer."""
    header = (
        b"EST_File Track\nDataType binary\nByteOrder 10\nNumFrames 2\nNumChannels 2\n"
        b"BreaksPresent true\nCommentChar ;\n\nChannel_0 tt_x\nChannel_1 tt_y\nEST_Header_End\n"
    )
    body = struct.pack(">8f", 0.0, 1, 1.5, -2.0, 0.005, 0, 3.25, 4.0)
    path = tmp_path / "big.est"
    path.write_bytes(header + body)
    track = est_track.read_est_track(path)
    np.testing.assert_array_equal(track.values, [[1.5, -2.0], [3.25, 4.0]])
    np.testing.assert_array_equal(track.breaks, [1, 0])
    np.testing.assert_allclose(track.times, [0.0, 0.005])
    assert track.channel_names == ["tt_x", "tt_y"]


@pytest.mark.parametrize("with_breaks", [False, True])
def test_est_ascii_round_trip(tmp_path, with_breaks):
    values = _table(frames=10, columns=12)
    path = tmp_path / "utt.est"
    breaks = np.ones(10) if with_breaks else None
    est_track.write_est_track(path, values, binary=False, breaks=breaks)
    assert b"DataType ascii" in path.read_bytes()
    track = est_track.read_est_track(path)
    np.testing.assert_array_equal(track.values, values)
    np.testing.assert_allclose(track.times, np.arange(10) / units.FRAME_RATE)
    assert track.channel_names == list(units.CHANNELS)


def test_est_truncated_binary_refused(tmp_path):
    path = tmp_path / "short.est"
    est_track.write_est_track(path, _table(frames=10, columns=12))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 3 * 13 * 4 - 5])  # 3 frames and a bit missing
    with pytest.raises(EmaFormatError) as info:
        est_track.read_est_track(path)
    message = str(info.value)
    assert "short.est" in message and "truncated" in message
    assert "6 complete frames" in message and "NumFrames 10" in message


def test_est_surplus_binary_refused(tmp_path):
    path = tmp_path / "long.est"
    est_track.write_est_track(path, _table(frames=4, columns=12))
    path.write_bytes(path.read_bytes() + b"\x00" * 52)
    with pytest.raises(EmaFormatError, match="after the 4 frames"):
        est_track.read_est_track(path)


def test_est_missing_header_end_refused(tmp_path):
    path = tmp_path / "nohead.est"
    path.write_bytes(b"EST_File Track\nDataType ascii\nNumFrames 1\nNumChannels 1\n0 1\n")
    with pytest.raises(EmaFormatError, match=r"nohead\.est: .*EST_Header_End"):
        est_track.read_est_track(path)


@pytest.mark.parametrize(
    "replace, words",
    [
        ("NumFrames 2\n", "no NumFrames"),
        ("NumChannels 2\n", "no NumChannels"),
        ("DataType binary\n", "no DataType"),
        ("ByteOrder 01\n", "no ByteOrder"),
    ],
)
def test_est_missing_header_fields_refused(tmp_path, replace, words):
    header = (
        "EST_File Track\nDataType binary\nByteOrder 01\nNumFrames 2\nNumChannels 2\n"
        "EST_Header_End\n"
    )
    path = tmp_path / "fields.est"
    path.write_bytes(header.replace(replace, "").encode() + np.zeros(6, "<f4").tobytes())
    with pytest.raises(EmaFormatError, match=words):
        est_track.read_est_track(path)


@pytest.mark.parametrize(
    "line, words",
    [
        ("NumFrames two", "NumFrames must be a non-negative integer"),
        ("NumChannels -1", "NumChannels must be a non-negative integer"),
        ("DataType float", "DataType must be binary or ascii"),
        ("ByteOrder LE", "ByteOrder must be 01 or 10"),
    ],
)
def test_est_invalid_header_fields_refused(tmp_path, line, words):
    fields = {"DataType": "binary", "ByteOrder": "01", "NumFrames": "2", "NumChannels": "2"}
    key, value = line.split(" ", 1)
    fields[key] = value
    header = "EST_File Track\n" + "".join(f"{k} {v}\n" for k, v in fields.items())
    path = tmp_path / "fields.est"
    path.write_bytes((header + "EST_Header_End\n").encode() + np.zeros(6, "<f4").tobytes())
    with pytest.raises(EmaFormatError) as info:
        est_track.read_est_track(path)
    assert words in info.value.reason
    assert info.value.line == 2 + list(fields).index(key)


def test_est_ascii_bad_row_names_line(tmp_path):
    path = tmp_path / "rows.est"
    path.write_text(
        "EST_File Track\nDataType ascii\nNumFrames 3\nNumChannels 2\nEST_Header_End\n"
        "0.000 1 2\n0.005 3 4\n0.010 5\n"
    )
    with pytest.raises(EmaFormatError) as info:
        est_track.read_est_track(path)
    assert info.value.line == 8
    assert "expected 3 columns" in info.value.reason and "found 2" in info.value.reason


def test_est_ascii_wrong_frame_count_refused(tmp_path):
    path = tmp_path / "rows.est"
    path.write_text(
        "EST_File Track\nDataType ascii\nNumFrames 3\nNumChannels 1\nEST_Header_End\n0 1\n"
    )
    with pytest.raises(EmaFormatError, match="found 1 frames, header says NumFrames 3"):
        est_track.read_est_track(path)


# ---------------------------------------------------------------- read_ema


def test_read_ema_detects_both_formats(tmp_path):
    values = _table(frames=12, columns=14)
    nema_path, est_path = tmp_path / "a.ema", tmp_path / "b.ema"
    ema.write_nema(nema_path, values)
    est_track.write_est_track(est_path, values, breaks=np.ones(12))
    from_nema = ema.read_ema(nema_path)
    from_est = ema.read_ema(est_path)
    assert from_nema.shape == from_est.shape == (12, 12)
    assert from_nema.dtype == from_est.dtype == np.float32
    np.testing.assert_array_equal(from_est, values[:, :12])
    np.testing.assert_allclose(from_nema, values[:, :12], atol=1e-5)


def test_read_ema_refuses_est_with_too_few_channels(tmp_path):
    path = tmp_path / "few.est"
    est_track.write_est_track(path, _table(frames=5, columns=6))
    with pytest.raises(EmaFormatError, match="6 channels, need at least 12"):
        ema.read_ema(path)


# ---------------------------------------------------------------- labels, stats, prompts


def test_lab_round_trip(tmp_path):
    segments = [(0.12, "pau"), (0.2345, "dh"), (0.31, "ax"), (12.5, "pau")]
    path = tmp_path / "utt.lab"
    ema.write_lab(path, segments)
    assert path.read_text().startswith("separator ;\nnfields 1\n#\n    0.1200 125 pau\n")
    assert ema.read_lab(path) == segments


def test_lab_reads_festival_extras(tmp_path):
    path = tmp_path / "utt.lab"
    path.write_text("signal utt\ntype 0\ncolor 121\n#\n 0.100000 121 pau ; score 1\n\n 0.2 26 k\n")
    assert ema.read_lab(path) == [(0.1, "pau"), (0.2, "k")]


@pytest.mark.parametrize(
    "body, line", [("0.1 125 pau\n0.2 125\n", 5), ("0.1 125 pau\nabc 125 k\n", 5)]
)
def test_lab_malformed_line_refused(tmp_path, body, line):
    path = tmp_path / "bad.lab"
    path.write_text("separator ;\nnfields 1\n#\n" + body)
    with pytest.raises(EmaFormatError) as info:
        ema.read_lab(path)
    assert info.value.line == line and "bad.lab" in str(info.value)


def test_lab_without_header_end_refused(tmp_path):
    path = tmp_path / "bad.lab"
    path.write_text("0.1 125 pau\n")
    with pytest.raises(EmaFormatError, match="'#'"):
        ema.read_lab(path)


def test_stats_round_trip_and_errors(tmp_path):
    stats = np.column_stack([np.linspace(-30, 30, 12), np.linspace(0.5, 9.1, 12)])
    path = tmp_path / "ema.stats"
    ema.write_ema_stats(path, stats)
    got = ema.read_ema_stats(path)
    assert got.dtype == np.float64
    np.testing.assert_array_equal(got, stats)

    path.write_text("1.0 2.0\n3.0\n")
    with pytest.raises(EmaFormatError) as info:
        ema.read_ema_stats(path)
    assert info.value.line == 2


def test_txt_done_data_round_trip(tmp_path):
    prompts = {
        "fjmw0_175": "The text here.",
        "fjmw0_176": 'She said "no" \\ twice.',
    }
    path = tmp_path / "txt.done.data"
    ema.write_txt_done_data(path, prompts)
    assert path.read_text().splitlines()[0] == '( fjmw0_175 "The text here." )'
    assert ema.read_txt_done_data(path) == prompts

    path.write_text('( a_1 "ok" )\n a_2 "missing parens"\n')
    with pytest.raises(EmaFormatError) as info:
        ema.read_txt_done_data(path)
    assert info.value.line == 2


def test_writers_write_their_formatters_bytes(tmp_path):
    """One formatter per format: the write_* functions and the synthetic archive share them."""
    values = _table(frames=6, columns=14).astype(np.float64)
    values[2, 3] = np.nan
    segments = [(0.12, "pau"), (12.5, "k")]
    stats = np.column_stack([np.linspace(-3, 3, 14), np.linspace(0.5, 9.1, 14)])
    prompts = {"a_1": 'Say "so".'}
    for write, text, content in ((ema.write_nema, ema.nema_text, values), (ema.write_lab, ema.lab_text, segments),
                                 (ema.write_ema_stats, ema.ema_stats_text, stats),
                                 (ema.write_txt_done_data, ema.txt_done_data_text, prompts)):
        path = tmp_path / write.__name__
        write(path, content)
        assert path.read_bytes() == text(content)
    # The synthetic archive's nema files were written by np.savetxt: the same bytes.
    expected = io.BytesIO()
    np.savetxt(expected, values, fmt="%.6f")
    assert ema.nema_text(values) == expected.getvalue()
    assert ema.ema_stats_text([[1.5, 0.25]], decimals=6) == b"1.500000 0.250000\n"


# ---------------------------------------------------------------- wav


def test_wav_num_frames(tmp_path):
    path = tmp_path / "utt.wav"
    with wave.open(str(path), "wb") as handle:
        handle.setnchannels(1)
        handle.setsampwidth(2)
        handle.setframerate(units.WAV_RATE)
        handle.writeframes(np.zeros(1234, "<i2").tobytes())
    assert ema.wav_num_frames(path) == 1234

    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"not a wav at all")
    with pytest.raises(EmaFormatError, match=r"bad\.wav: not a readable WAV"):
        ema.wav_num_frames(bad)
