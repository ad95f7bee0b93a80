"""Hard inputs, second battery (issue 24, part B): lying EST headers, faults while writing, and
the command line given paths that are no regular files. Each case ends in ONE line naming the
file or flag and the real cause, a non-zero exit, no traceback, no hang and nothing half-written.

The cases that would hang or read forever before the fix (a FIFO, /dev/zero) run under an
alarm and a memory cap, so that a regression fails instead of hanging. A full disk is simulated
by a write that stores half its data and fails as write(2) does (errno ENOSPC, no file name); a
file-size limit is real (RLIMIT_FSIZE in a subprocess; Python ignores SIGXFSZ, so the write
fails with EFBIG).
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import resource
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import PROJECT_ROOT, CorpusBuilder, project_params, src_env, the_one_line
from test_train_stage import make_project, run_train

from gestural.cli import main as cli
from gestural.core.params import DataParams
from gestural.core.stage import run_stage
from gestural.data import est_track
from gestural.data.corpus import build_npy
from gestural.data.normalize import normalize_corpus

TIMEOUT_S = 120  # a regression hangs; the fixed code answers in seconds


def leftovers(directory: Path) -> list[str]:
    """Temporaries or partial outputs of an atomic write under ``directory``."""
    return sorted(p.name for p in directory.rglob("*") if p.name.startswith(".") and ".tmp" in p.name)


@contextlib.contextmanager
def memory_cap(extra_bytes: int = 2 << 30):
    """Address space capped at what the process uses now plus ``extra_bytes``: a regression
    that allocates what a header claims ends in MemoryError, not in a swapping machine."""
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    with open("/proc/self/statm") as statm:
        used = int(statm.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
    cap = used + extra_bytes if hard == resource.RLIM_INFINITY else min(hard, used + extra_bytes)
    resource.setrlimit(resource.RLIMIT_AS, (cap, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


@contextlib.contextmanager
def no_hang(seconds: int = TIMEOUT_S):
    """Interrupt the test after ``seconds``: an open() blocked on a FIFO is a regression to report,
    not a suite that never ends."""
    def interrupt(signum, frame):
        raise TimeoutError(f"still blocked after {seconds} s")

    previous = signal.signal(signal.SIGALRM, interrupt)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def fail_writes(monkeypatch, code: int, where):
    """Writes of ``Path.write_bytes``/``write_text`` to a path for which ``where(path)`` holds store
    half their data, then fail as write(2) does: an OSError with ``code`` and no file name."""
    originals = {"write_bytes": Path.write_bytes, "write_text": Path.write_text}

    def patched(name):
        def write(self, data, *args, **kwargs):
            if not where(self):
                return originals[name](self, data, *args, **kwargs)
            originals[name](self, data[: len(data) // 2], *args, **kwargs)
            raise OSError(code, os.strerror(code))
        return write

    for name in originals:
        monkeypatch.setattr(Path, name, patched(name))


# --------------------------------------------------------------------------
# EST headers that claim more than the file holds
# --------------------------------------------------------------------------


def lying_est(path: Path, key: str, value: str, *, binary: bool) -> Path:
    """A small, valid EST track (100 frames, 14 channels) whose header then claims ``key value``."""
    est_track.write_est_track(path, np.zeros((100, 14), np.float32), binary=binary)
    data = re.sub(rf"^{key} \d+".encode(), f"{key} {value}".encode(), path.read_bytes(), count=1, flags=re.M)
    path.write_bytes(data)
    assert len(data) < 8 << 10  # a few KB claiming gigabytes
    return path


def _corpus_with(tmp_path: Path, key: str, value: str, binary: bool) -> tuple[Path, Path]:
    corpus = CorpusBuilder(tmp_path / "extracted")
    corpus.add("spk", "spk_001")
    corpus.add("spk", "spk_002", est=True)
    bad = lying_est(corpus.speaker_dir("spk") / "nema" / "spk_002.ema", key, value, binary=binary)
    return corpus.root, bad


EST_HEADERS = [
    # (id, header key, claimed value, binary, the reason after "<file>, line N: " or "<file>: ")
    ("channels-binary", "NumChannels", "1000000000", True,
     r", line \d+: NumChannels 1000000000 is over the 10000 channels this reader accepts"),
    ("channels-ascii", "NumChannels", "1000000000", False,
     r", line \d+: NumChannels 1000000000 is over the 10000 channels this reader accepts"),
    ("frames-binary", "NumFrames", "100000000000000", True,
     r": truncated binary data: 6000 bytes hold 100 complete frames, header says NumFrames 100000000000000 x 15 "
     r"columns \(6000000000000000 bytes\)"),
]


@pytest.mark.parametrize("key, value, binary, reason", [row[1:] for row in EST_HEADERS],
                         ids=[row[0] for row in EST_HEADERS])
def test_nema2npy_refuses_an_est_header_the_file_cannot_hold(tmp_path, capsys, key, value, binary, reason):
    extracted, bad = _corpus_with(tmp_path, key, value, binary)
    data = DataParams.from_params(project_params())
    with memory_cap():
        status = run_stage("nema2npy", lambda: build_npy(extracted, tmp_path / "npy", data, workers=1))
    assert status == 1
    assert re.fullmatch(rf"nema2npy: {re.escape(str(bad))}{reason}; set data.skip_bad_files: true to skip such files",
                        the_one_line(capsys.readouterr().err))
    assert not (tmp_path / "npy").exists() and not leftovers(tmp_path)


@pytest.mark.parametrize("key, value, binary, reason", [row[1:] for row in EST_HEADERS],
                         ids=[row[0] for row in EST_HEADERS])
def test_factorize_refuses_an_est_header_the_file_cannot_hold(tmp_path, model_file, capsys, key, value, binary,
                                                              reason):
    bad = lying_est(tmp_path / "utt.ema", key, value, binary=binary)
    with memory_cap():
        status = cli.main(["factorize", "--model", str(model_file), "--ema", str(bad), "--out",
                           str(tmp_path / "out"), "--device", "cpu", "--no-figures"])
    assert status == 2
    assert re.fullmatch(rf"gestural factorize: error: {re.escape(str(bad))}{reason}",
                        the_one_line(capsys.readouterr().err))
    assert not (tmp_path / "out").exists()


# --------------------------------------------------------------------------
# Faults: checkpoints, a full disk, a file-size limit, an object array
# --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    """A small trained-model file, as the train stage writes it."""
    import dataclasses

    import torch
    from conftest import model_config, train_config

    from gestural.core import units
    from gestural.model.file import save_model
    from gestural.model.network import GesturalAutoEncoder

    torch.manual_seed(0)
    model = GesturalAutoEncoder(model_config(num_gestures=3, win_size=4, hidden=8, peak_window=5,
                                             kernels="nonnegative", response_frames=0))
    normalization = {"channels": list(units.CHANNELS), "low": [-3.0] * 12, "high": [3.0] * 12,
                     "percentiles": [0.0, 100.0]}
    path = tmp_path_factory.mktemp("model") / "model.pt"
    save_model(path, model, dataclasses.asdict(train_config(num_gestures=3, win_size=4, hidden=8)), normalization)
    return path


def test_an_empty_checkpoint_is_ignored_and_training_starts_fresh(tmp_path, monkeypatch, capsys, caplog):
    make_project(tmp_path)
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / "train.pt").write_bytes(b"")
    assert run_train(tmp_path, monkeypatch) == 0
    assert "checkpoint checkpoints/train.pt is unreadable (EOFError); starting fresh" in caplog.text
    assert "Traceback" not in capsys.readouterr().err
    assert (tmp_path / "models" / "model.pt").is_file()


@pytest.mark.parametrize("make", [os.mkdir, os.mkfifo], ids=["directory", "fifo"])
def test_a_checkpoint_path_that_is_no_file_is_one_line_before_training(tmp_path, monkeypatch, capsys, make):
    make_project(tmp_path)
    (tmp_path / "checkpoints").mkdir()
    make(tmp_path / "checkpoints" / "train.pt")
    kind = "a directory" if make is os.mkdir else r"a named pipe \(FIFO\)"
    with no_hang():
        assert run_train(tmp_path, monkeypatch) == 1
    assert re.fullmatch(rf"train: checkpoints/train.pt: is {kind}, not a regular checkpoint file; move it away "
                        r"\(the train stage writes its checkpoint there\)", the_one_line(capsys.readouterr().err))
    assert not (tmp_path / "models" / "model.pt").exists() and not leftovers(tmp_path)


@pytest.mark.parametrize("code, cause", [(errno.ENOSPC, "disk full while writing models/model.pt"),
                                         (errno.EFBIG, "models/model.pt: File too large")],
                         ids=["no-space", "file-too-large"])
def test_a_write_failing_under_models_names_the_model_file(tmp_path, monkeypatch, capsys, code, cause):
    make_project(tmp_path)
    fail_writes(monkeypatch, code, lambda path: path.parent.name == "models")
    assert run_train(tmp_path, monkeypatch) == 1
    assert the_one_line(capsys.readouterr().err) == f"train: {cause}"
    assert list((tmp_path / "models").iterdir()) == []  # the half-written temporary is gone


def test_a_file_size_limit_under_data_npy_names_the_file(tmp_path):
    corpus = CorpusBuilder(tmp_path / "data" / "extracted")
    for i in range(4):
        corpus.add("spk", f"spk_{i:03d}", corpus.values(frames=400))  # frames.npy: 1600 x 12 float32, 75 KiB
    shutil.copy(PROJECT_ROOT / "params.yaml", tmp_path / "params.yaml")
    limit = 48 << 10  # every input and the small outputs fit; frames.npy does not

    def limit_file_size():
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    result = subprocess.run([sys.executable, str(PROJECT_ROOT / "stages" / "nema2npy.py")], cwd=tmp_path,
                            env=src_env(), capture_output=True, text=True, timeout=TIMEOUT_S,
                            preexec_fn=limit_file_size)
    assert result.returncode == 1
    assert the_one_line(result.stderr) == "nema2npy: data/npy/frames.npy: File too large"
    assert not (tmp_path / "data" / "npy").exists() and not leftovers(tmp_path / "data")


def test_an_object_array_in_frames_npy_is_one_line(tmp_path, capsys):
    npy = tmp_path / "npy"
    npy.mkdir()
    np.save(npy / "frames.npy", np.array([{"frames": 1}, None], dtype=object), allow_pickle=True)
    (npy / "index.csv").write_text("utterance_id,speaker,start,frames,ema,wav,lab\nspk_001,spk,0,2,a.ema,a.wav,\n")
    data = DataParams.from_params(project_params())
    assert run_stage("normalize", lambda: normalize_corpus(npy, tmp_path / "normalized", data)) == 1
    assert the_one_line(capsys.readouterr().err) == (
        f"normalize: {npy / 'frames.npy'}: not a readable .npy file of numbers (Object arrays cannot be loaded "
        "when allow_pickle=False)")
    assert not (tmp_path / "normalized").exists()


# --------------------------------------------------------------------------
# The command line: paths that are no regular files, bad JSON, --repo, a full disk under --out
# --------------------------------------------------------------------------


def gestural(capsys, *args) -> tuple[int, str]:
    """``gestural ARGS`` run here, guarded: a regression that blocks on a FIFO is interrupted,
    one that reads /dev/zero stops at the memory cap. Returns the status and stderr."""
    with no_hang(), memory_cap():
        status = cli.main([str(arg) for arg in args])
    return status, capsys.readouterr().err


def _fifo(tmp_path: Path) -> Path:
    os.mkfifo(tmp_path / "show.json")
    return tmp_path / "show.json"


def _garbage(tmp_path: Path) -> Path:
    (tmp_path / "show.json").write_bytes(bytes(range(256)) * 8)
    return tmp_path / "show.json"


def _deep(tmp_path: Path) -> Path:
    (tmp_path / "show.json").write_text("[" * 200_000 + "]" * 200_000)
    return tmp_path / "show.json"


EXP_SHOW_FILES = [
    # (id, builder, the message after "<path>: ")
    ("fifo", _fifo, r"is a named pipe \(FIFO\), not a regular dvc exp show --json output"),
    ("dev-zero", lambda tmp_path: Path("/dev/zero"),
     r"is a character device, not a regular dvc exp show --json output"),
    ("binary", _garbage, r"not JSON \(binary or not UTF-8: byte 0x80 at offset 128\)"),
    ("deep", _deep, r"JSON nested too deeply to be a dvc exp show output"),
]


@pytest.mark.parametrize("build, message", [row[1:] for row in EXP_SHOW_FILES], ids=[row[0] for row in EXP_SHOW_FILES])
def test_compare_refuses_an_exp_show_json_that_is_no_json_file(tmp_path, capsys, build, message):
    path = build(tmp_path)
    status, err = gestural(capsys, "compare", "--exp-show-json", path, "--out", tmp_path / "out", "--no-stability")
    assert status == 2
    assert re.fullmatch(rf"gestural compare: error: {re.escape(str(path))}: {message}", the_one_line(err))
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("where", ["outside", "inside"])
def test_compare_says_when_repo_is_no_dvc_project(tmp_path, capsys, where):
    # Outside any project dvc fails; inside one (a mistyped subdirectory) it would list the
    # enclosing project's experiments, read as "no finished experiment".
    repo = tmp_path / "repo"
    (repo / "sub").mkdir(parents=True)
    if where == "inside":
        (repo / ".dvc").mkdir()
        repo = repo / "sub"
    hint = f"the project holding it is {tmp_path / 'repo'}" if where == "inside" else "`dvc init` makes one"
    assert cli.main(["compare", "--repo", str(repo), "--out", str(tmp_path / "out"), "--no-stability"]) == 2
    assert the_one_line(capsys.readouterr().err) == (
        f"gestural compare: error: {repo}: not a DVC project (no .dvc directory); {hint}")
    assert not (tmp_path / "out").exists()


MODEL_PATHS = [
    # (id, builder, the message after "<path>: ")
    ("directory", lambda tmp_path: tmp_path / "models", "is a directory, not a regular model file"),
    ("fifo", lambda tmp_path: tmp_path / "model.pt", r"is a named pipe \(FIFO\), not a regular model file"),
    ("dev-zero", lambda tmp_path: Path("/dev/zero"), "is a character device, not a regular model file"),
]


@pytest.mark.parametrize("build, message", [row[1:] for row in MODEL_PATHS], ids=[row[0] for row in MODEL_PATHS])
def test_factorize_says_what_a_model_path_that_is_no_file_is(tmp_path, capsys, build, message):
    (tmp_path / "models").mkdir()
    os.mkfifo(tmp_path / "model.pt")
    est_track.write_est_track(tmp_path / "utt.ema", np.zeros((50, 14), np.float32))
    model = build(tmp_path)
    status, err = gestural(capsys, "factorize", "--model", model, "--ema", tmp_path / "utt.ema", "--out",
                           tmp_path / "out", "--device", "cpu", "--no-figures")
    assert status == 2
    assert re.fullmatch(rf"gestural factorize: error: {re.escape(str(model))}: {message}", the_one_line(err))
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("code, cause", [(errno.ENOSPC, "No space left on device"), (errno.EFBIG, "File too large")],
                         ids=["no-space", "file-too-large"])
def test_factorize_names_the_output_when_the_disk_under_out_is_full(tmp_path, model_file, monkeypatch, capsys,
                                                                    code, cause):
    ema = tmp_path / "in" / "utt.ema"
    est_track.write_est_track(ema, np.zeros((50, 14), np.float32))
    out = tmp_path / "out"
    fail_writes(monkeypatch, code, lambda path: out in path.parents)
    status = cli.main(["factorize", "--model", str(model_file), "--ema", str(ema), "--out", str(out),
                       "--device", "cpu", "--no-figures"])
    assert status == 2
    line = the_one_line(capsys.readouterr().err)
    assert re.fullmatch(rf"gestural factorize: error: {re.escape(str(out / 'utt'))}/[\w.]+: {cause}", line), line
    assert str(ema) not in line  # the input is not to blame
    assert not (out / "utt").exists() and not leftovers(out)


@pytest.mark.parametrize("size, refused", [(1000, False), (1001, True)], ids=["at-cap", "over-cap"])
def test_a_user_file_over_its_cap_is_refused_before_it_is_read(tmp_path, size, refused):
    from gestural.core.files import UserFileError, read_user_file

    (tmp_path / "big.json").write_bytes(b" " * size)
    if not refused:
        assert read_user_file(tmp_path / "big.json", "JSON file", max_bytes=1000) == b" " * size
        return
    with pytest.raises(UserFileError) as caught:
        read_user_file(tmp_path / "big.json", "JSON file", max_bytes=1000)
    assert str(caught.value) == f"{tmp_path / 'big.json'}: is 1001 bytes, over the 1000 bytes cap on a JSON file"


def test_the_exp_show_reader_still_reads_a_regular_json_file(tmp_path):
    from gestural.cli.experiments import read_exp_show

    (tmp_path / "show.json").write_text(json.dumps([{"rev": "workspace", "experiments": None}]))
    assert read_exp_show(tmp_path / "show.json") == [{"rev": "workspace", "experiments": None}]
