"""safe_extract: refuses unsafe or damaged archives and never leaves partial output."""

from __future__ import annotations

import io
import logging
import os
import shutil
import subprocess
import sys
import tarfile

import pytest

from gestural.core import progress as progress_module
from gestural.core.params import MIB, ExtractLimits
from gestural.data import archive as archive_module
from gestural.data.archive import ArchiveError, safe_extract

FILES = {
    "emadata/README.txt": b"EMA data\n",
    "emadata/speaker1/utt001.ema": os.urandom(20_000),
    "emadata/speaker1/utt002.ema": os.urandom(20_000),
}


def _write_tar(path, entries, mode="w:gz"):
    """Write a tarball; ``entries`` are (TarInfo, bytes or None) pairs."""
    with tarfile.open(path, mode) as tar:
        for info, data in entries:
            if data is not None:
                info.size = len(data)
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return path


def _file(name, data):
    return tarfile.TarInfo(name), data


def _dir(name):
    info = tarfile.TarInfo(name)
    info.type = tarfile.DIRTYPE
    info.mode = 0o755
    return info, None


def _special(name, tar_type, linkname=""):
    info = tarfile.TarInfo(name)
    info.type = tar_type
    info.linkname = linkname
    return info, None


def _valid_entries():
    return [_dir("emadata"), _dir("emadata/speaker1")] + [_file(n, d) for n, d in FILES.items()]


def _only_archive_left(tmp_path, archive):
    """No destination and no temporary directory beside it."""
    return sorted(p.name for p in tmp_path.iterdir()) == [archive.name]


@pytest.mark.parametrize(
    "bad_entry, member",
    [
        (_file("/tmp/gestural-evil.txt", b"x"), "/tmp/gestural-evil.txt"),
        (_file("emadata/../../escape.txt", b"x"), "emadata/../../escape.txt"),
        (_special("emadata/link", tarfile.SYMTYPE, "../../outside"), "emadata/link"),
        (_special("emadata/abs_link", tarfile.SYMTYPE, "/etc/passwd"), "emadata/abs_link"),
        (_special("emadata/hard", tarfile.LNKTYPE, "emadata/README.txt"), "emadata/hard"),
        (_special("emadata/fifo", tarfile.FIFOTYPE), "emadata/fifo"),
        (_special("emadata/tty", tarfile.CHRTYPE), "emadata/tty"),
    ],
    ids=["absolute", "dotdot", "symlink-relative", "symlink-absolute", "hardlink", "fifo", "chardev"],
)
def test_unsafe_member_is_refused_and_nothing_is_left(tmp_path, bad_entry, member):
    # The bad member comes last, so a naive extractor would already have written the rest.
    archive = _write_tar(tmp_path / "bad.tgz", _valid_entries() + [bad_entry])
    with tarfile.open(archive) as tar:
        assert tar.getnames()[-1] == member  # tarfile kept the name as written

    with pytest.raises(ArchiveError, match="refusing") as excinfo:
        safe_extract(archive, tmp_path / "dest")
    assert repr(member) in str(excinfo.value)
    assert str(archive) in str(excinfo.value)
    assert _only_archive_left(tmp_path, archive)
    assert not (tmp_path.parent / "escape.txt").exists()


def test_unsafe_archive_leaves_existing_dest_untouched(tmp_path):
    dest = tmp_path / "dest"
    dest.mkdir()
    (dest / "keep.txt").write_text("old")
    archive = _write_tar(tmp_path / "bad.tgz", _valid_entries() + [_file("../escape", b"x")])

    with pytest.raises(ArchiveError):
        safe_extract(archive, dest)
    assert sorted(p.name for p in dest.iterdir()) == ["keep.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.tgz", "dest"]


def _cut_points(path):
    """Truncation lengths that lose archive content, keyed by a description."""
    size = path.stat().st_size
    if path.suffix == ".tgz":
        # Half, and everything but the gzip length trailer.
        return {"half": size // 2, "no-trailer": size - 4}
    with tarfile.open(path) as tar:
        last = tar.getmembers()[-1]
    data_end = last.offset_data + -(-last.size // tarfile.BLOCKSIZE) * tarfile.BLOCKSIZE
    # Half, and exactly at a header boundary, where tarfile itself would stop silently.
    return {"half": size // 2, "header-boundary": data_end}


@pytest.mark.parametrize("suffix, cut", [(".tgz", "half"), (".tgz", "no-trailer"), (".tar", "half"),
                                        (".tar", "header-boundary")])
def test_truncated_archive_is_corrupt(tmp_path, suffix, cut):
    whole_path = _write_tar(tmp_path / f"whole{suffix}", _valid_entries(), "w:gz" if suffix == ".tgz" else "w")
    keep = _cut_points(whole_path)[cut]
    archive = tmp_path / f"cut{suffix}"
    archive.write_bytes(whole_path.read_bytes()[:keep])
    whole_path.unlink()

    with pytest.raises(ArchiveError, match="corrupt or truncated") as excinfo:
        safe_extract(archive, tmp_path / "dest")
    assert "download it again" in str(excinfo.value)
    assert _only_archive_left(tmp_path, archive)


def test_garbage_file_is_corrupt(tmp_path):
    archive = tmp_path / "garbage.tgz"
    archive.write_bytes(os.urandom(5000))
    with pytest.raises(ArchiveError, match="corrupt or truncated"):
        safe_extract(archive, tmp_path / "dest")
    assert _only_archive_left(tmp_path, archive)


def test_bad_gzip_checksum_is_corrupt(tmp_path):
    # The tar content is intact; only the gzip CRC trailer is wrong, which is
    # noticed only after the last member has been written.
    archive = _write_tar(tmp_path / "crc.tgz", _valid_entries())
    data = bytearray(archive.read_bytes())
    data[-8] ^= 0xFF
    archive.write_bytes(bytes(data))
    with pytest.raises(ArchiveError, match="corrupt or truncated"):
        safe_extract(archive, tmp_path / "dest")
    assert _only_archive_left(tmp_path, archive)


def test_missing_archive_is_named(tmp_path):
    with pytest.raises(ArchiveError, match="no such file") as excinfo:
        safe_extract(tmp_path / "absent.tgz", tmp_path / "dest")
    assert "absent.tgz" in str(excinfo.value)


@pytest.mark.parametrize("mode, suffix", [("w:gz", ".tgz"), ("w", ".tar")])
def test_valid_archive_extracts_every_file(tmp_path, mode, suffix):
    archive = _write_tar(tmp_path / f"ok{suffix}", _valid_entries(), mode)
    dest = tmp_path / "dest"

    names = safe_extract(archive, dest)

    assert names == list(FILES)
    for name, data in FILES.items():
        assert (dest / name).read_bytes() == data
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dest", archive.name]


def test_reextracting_replaces_existing_dest(tmp_path):
    dest = tmp_path / "dest"
    dest.mkdir()
    (dest / "stale.txt").write_text("from an older archive")
    archive = _write_tar(tmp_path / "ok.tgz", _valid_entries())

    safe_extract(archive, dest)
    safe_extract(archive, dest)  # and again over its own output

    assert sorted(p.name for p in dest.iterdir()) == ["emadata"]
    assert (dest / "emadata/speaker1/utt002.ema").read_bytes() == FILES["emadata/speaker1/utt002.ema"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dest", "ok.tgz"]


# --------------------------------------------------------------------------
# Caps on what an archive may unpack to (data.extract), stale temporaries, progress
# --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "limits, entries, message",
    [
        (ExtractLimits(max_members=4), _valid_entries(), r"more than 4 members \(data.extract.max_members"),
        (ExtractLimits(max_member_mib=1), [_file("emadata/big.wav", bytes(MIB + 1))],
         r"member 'emadata/big.wav' would unpack to 1 MiB, over data.extract.max_member_mib \(1 MiB\)"),
        (ExtractLimits(max_total_mib=1), [_file(f"emadata/{i}.wav", bytes(MIB // 3)) for i in range(4)],
         r"would unpack to more than 1 MiB \(data.extract.max_total_mib; stopped reading at member 4\)"),
    ],
    ids=["members", "member-size", "total-size"],
)
def test_an_archive_over_a_cap_is_refused_and_nothing_is_written(tmp_path, limits, entries, message):
    archive = _write_tar(tmp_path / "bomb.tgz", entries)
    with pytest.raises(ArchiveError, match=message):
        safe_extract(archive, tmp_path / "dest", limits)
    assert _only_archive_left(tmp_path, archive)


def test_a_member_count_bomb_is_refused_after_reading_only_the_allowed_headers(tmp_path, monkeypatch):
    archive = _write_tar(tmp_path / "many.tgz", [_file(f"f{i:05d}", b"") for i in range(5000)])
    headers = []
    real_next = tarfile.TarFile.next
    monkeypatch.setattr(tarfile.TarFile, "next", lambda self: headers.append(1) or real_next(self))
    with pytest.raises(ArchiveError, match="more than 10 members"):
        safe_extract(archive, tmp_path / "dest", ExtractLimits(max_members=10))
    assert len(headers) <= 12  # tarfile.open reads the first one to recognize the format; not all 5000


def test_the_default_caps_fit_the_real_corpus():
    # CMU emadata.tgz: ~4409 utterances x (ema, wav, lab) + directories, ~2-3 GB, wavs of a few hundred KB.
    limits = ExtractLimits()
    assert limits.max_members >= 3 * 4409 * 2 and limits.max_total_bytes >= 3 * 3e9
    assert limits.max_member_bytes >= 50 * 500e3


def test_an_archive_larger_than_the_free_space_is_refused_up_front(tmp_path, monkeypatch):
    archive = _write_tar(tmp_path / "ok.tgz", _valid_entries())
    monkeypatch.setattr(shutil, "disk_usage", lambda path: shutil._ntuple_diskusage(10**9, 10**9 - 1000, 1000))
    with pytest.raises(ArchiveError, match=r"unpacks to 0 MiB but .* has only 0 MiB free"):
        safe_extract(archive, tmp_path / "dest")
    assert _only_archive_left(tmp_path, archive)


def test_temporaries_of_a_killed_extract_are_removed_by_the_next_run(tmp_path):
    archive = _write_tar(tmp_path / "ok.tgz", _valid_entries())
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = [tmp_path / ".dest.abcd1234.tmp", tmp_path / f".dest.{dead.pid}.abcd1234.tmp",
             tmp_path / f".dest.{dead.pid}.wxyz9876.old"]
    alive = [tmp_path / f".dest.{os.getppid()}.abcd1234.tmp",  # a writer still running
             tmp_path / f".dest2.{dead.pid}.abcd1234.tmp"]  # another output's
    for path in stale + alive:
        (path / "emadata").mkdir(parents=True)
        (path / "emadata" / "partial.ema").write_bytes(bytes(1000))

    safe_extract(archive, tmp_path / "dest")

    left = sorted(p.name for p in tmp_path.iterdir())
    assert left == sorted(["dest", "ok.tgz"] + [p.name for p in alive])


def test_progress_is_a_few_log_lines_when_not_on_a_terminal(tmp_path, monkeypatch, caplog):
    monkeypatch.setattr(archive_module, "PROGRESS_MIN_MEMBERS", 1)
    monkeypatch.setattr(progress_module, "QUIET_FOR_S", 0.0)  # as if the disk were slow
    archive = _write_tar(tmp_path / "ok.tgz", [_file(f"emadata/{i:03d}.ema", bytes(1000)) for i in range(300)])
    with caplog.at_level(logging.INFO, logger="gestural.core.progress"):
        safe_extract(archive, tmp_path / "dest")
    lines = [r.getMessage() for r in caplog.records if r.name == "gestural.core.progress"]
    assert 5 <= len(lines) <= 11 and all("\r" not in line for line in lines)
    assert lines[-1].startswith("extracting ok.tgz: 293.0 KiB of 293.0 KiB (100 %)")
