"""Safe, atomic extraction of the EMA data tarball.

The archive comes from the network or from a path the user typed, so every
member is checked before anything is written: no absolute names, no ``..``,
no links, no device files, and no more members or bytes than the
``data.extract`` caps allow (the headers are read one by one, so a tar bomb is
refused without being unpacked or even listed in full). Extraction goes into a
temporary directory beside the destination, which replaces the destination only
once it is complete.
"""

from __future__ import annotations

import gzip
import os
import shutil
import tarfile
import zlib
from pathlib import Path, PurePosixPath

from gestural.core.files import atomic_dir
from gestural.core.params import MIB, ExtractLimits
from gestural.core.progress import Progress

# Show a progress bar only for archives with at least this many members.
PROGRESS_MIN_MEMBERS = 200

# Errors that reading a damaged .tar/.tgz can raise (BadGzipFile is an OSError).
_CORRUPT_ERRORS = (tarfile.ReadError, EOFError, zlib.error, gzip.BadGzipFile)

# tarfile's "data" filter exists from Python 3.11.4; our own checks below are
# strict enough on their own, the filter is a second line of defence.
_EXTRACT_FILTER = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
_FILTER_ERRORS = (tarfile.FilterError,) if hasattr(tarfile, "FilterError") else ()


class ArchiveError(RuntimeError):
    """The archive is unsafe, corrupt or could not be extracted."""

    def __init__(self, archive_path: str | os.PathLike, problem: str):
        self.archive_path = Path(archive_path)
        self.problem = problem
        super().__init__(f"{archive_path}: {problem}")


def _corrupt(archive_path: Path, error: BaseException) -> ArchiveError:
    return ArchiveError(
        archive_path,
        f"the archive is corrupt or truncated ({type(error).__name__}: {error}); "
        "delete it and download it again",
    )


def _member_problem(member: tarfile.TarInfo) -> str | None:
    """Why ``member`` must not be extracted, or None when it is safe."""
    name = member.name
    if name.startswith("/") or os.path.isabs(name):
        return "has an absolute path"
    if ".." in PurePosixPath(name).parts:
        return "has a '..' path component"
    if member.issym() or member.islnk():
        kind = "symlink" if member.issym() else "hardlink"
        return f"is a {kind} (to {member.linkname!r}); links are not allowed in the data archive"
    if member.ischr() or member.isblk():
        return "is a device file"
    if member.isfifo():
        return "is a FIFO"
    if not (member.isreg() or member.isdir()):
        return f"has unsupported tar type {member.type!r}"
    return None


def _read_members(tar: tarfile.TarFile, archive_path: Path, limits: ExtractLimits) -> list[tarfile.TarInfo]:
    """Read the headers one by one, within ``limits``; make sure the archive ends where a tar file should.

    tarfile stops silently at a truncated or garbled header that is not the
    first one, so we also require the block after the last member to be the
    end-of-archive marker (a block of zeros).
    """
    members: list[tarfile.TarInfo] = []
    total = 0
    while (member := tar.next()) is not None:
        members.append(member)
        if len(members) > limits.max_members:
            raise ArchiveError(archive_path, f"holds more than {limits.max_members} members "
                               "(data.extract.max_members in params.yaml)")
        if member.size > limits.max_member_bytes:
            raise ArchiveError(archive_path, f"member {member.name!r} would unpack to {member.size / MIB:.0f} MiB, "
                               f"over data.extract.max_member_mib ({limits.max_member_mib} MiB)")
        total += member.size
        if total > limits.max_total_bytes:
            raise ArchiveError(archive_path, f"would unpack to more than {limits.max_total_mib} MiB "
                               f"(data.extract.max_total_mib; stopped reading at member {len(members)})")
    tar.fileobj.seek(tar.offset)
    end_block = tar.fileobj.read(tarfile.BLOCKSIZE)
    if len(end_block) < tarfile.BLOCKSIZE or end_block.count(0) != tarfile.BLOCKSIZE:
        raise tarfile.ReadError(
            f"no end-of-archive marker after member {len(members)} at byte {tar.offset}"
        )
    return members


def _check_free_space(archive_path: Path, dest_dir: Path, needed: int) -> None:
    """Refuse up front when the unpacked size cannot fit (rather than fail half-way)."""
    parent = dest_dir.absolute().parent
    while not parent.exists():
        parent = parent.parent
    free = shutil.disk_usage(parent).free
    if needed > free:
        raise ArchiveError(archive_path, f"unpacks to {needed / MIB:.0f} MiB but {parent} has only "
                           f"{free / MIB:.0f} MiB free")


def safe_extract(
    archive_path: str | os.PathLike,
    dest_dir: str | os.PathLike,
    limits: ExtractLimits | None = None,
) -> list[str]:
    """Extract a .tar, .tar.gz or .tgz archive into ``dest_dir``, safely and atomically.

    Parameters
    ----------
    archive_path : path-like
        The tarball (compression is detected from the content).
    dest_dir : path-like
        Directory to create. An existing ``dest_dir`` is replaced, but only
        after the new content has been extracted completely.
    limits : ExtractLimits, optional
        Caps on the member count, total and per-member size (``data.extract``);
        the defaults of :class:`gestural.core.params.ExtractLimits` when None.

    Returns
    -------
    names : list of str
        Member names of the extracted regular files, in archive order.

    Raises
    ------
    ArchiveError
        If the archive is missing, corrupt or truncated, or contains a member
        that is unsafe to extract (absolute path, ``..``, link, device, FIFO),
        or exceeds ``limits`` or the free disk space.
        Nothing is left at ``dest_dir`` (an existing one is untouched) and no
        temporary directory remains.
    """
    archive_path = Path(archive_path)
    dest_dir = Path(dest_dir)
    limits = limits if limits is not None else ExtractLimits()
    if not archive_path.is_file():
        raise ArchiveError(archive_path, "no such file")

    try:
        tar = tarfile.open(archive_path, mode="r:*")
    except _CORRUPT_ERRORS as error:
        raise _corrupt(archive_path, error) from error
    except OSError as error:
        raise ArchiveError(archive_path, f"could not be opened: {error}") from error

    with tar:
        # Check everything before writing anything.
        try:
            members = _read_members(tar, archive_path, limits)
        except _CORRUPT_ERRORS as error:
            raise _corrupt(archive_path, error) from error
        for member in members:
            problem = _member_problem(member)
            if problem is not None:
                raise ArchiveError(archive_path, f"refusing to extract member {member.name!r}: it {problem}")

        total = sum(member.size for member in members)
        _check_free_space(archive_path, dest_dir, total)
        progress = Progress(total, f"extracting {archive_path.name}", "B",
                            enabled=len(members) >= PROGRESS_MIN_MEMBERS)
        current = None
        with atomic_dir(dest_dir) as tmp_dir:
            try:
                for current in members:
                    tar.extract(current, tmp_dir, **_EXTRACT_FILTER)
                    progress.update(current.size)
                # Read to the end so gzip checks its CRC and length trailer.
                while tar.fileobj.read(1 << 20):
                    pass
            except _FILTER_ERRORS as error:
                raise ArchiveError(
                    archive_path, f"refusing to extract member {error.tarinfo.name!r}: {error}"
                ) from error
            except _CORRUPT_ERRORS as error:
                raise _corrupt(archive_path, error) from error
            except OSError as error:
                where = f"member {current.name!r}" if current is not None else "the archive"
                raise ArchiveError(
                    archive_path, f"could not extract {where} into {dest_dir}: {error}"
                ) from error
            finally:
                progress.close()

    return [member.name for member in members if member.isreg()]
