"""Hard inputs to the data stages: each is refused with ONE line naming the file or key, exit status 1.

The table runs each adversarial case through :func:`gestural.core.stage.run_stage`, as the
stage scripts do; the tests after it cover run_stage itself, the umask of outputs,
params checks and safe model loading.
"""

from __future__ import annotations

import dataclasses
import errno
import io
import os
import re
import tarfile

import numpy as np
import pytest
import torch
import yaml
from conftest import PROJECT_ROOT, model_config, project_params, the_one_line, train_config

from gestural.core.files import atomic_dir, atomic_path, current_umask
from gestural.core.params import KNOWN_TOP_LEVEL, DataParams, ExtractLimits, check_top_level, load_params
from gestural.core.stage import run_stage
from gestural.data.archive import safe_extract
from gestural.data.normalize import normalize_corpus
from gestural.model.file import read_model_file, save_model
from gestural.model.network import GesturalAutoEncoder
from gestural.synthetic.generator import SyntheticConfig, synthetic_config

# --------------------------------------------------------------------------
# Builders: each makes the hard input under tmp_path and returns the stage body
# --------------------------------------------------------------------------


def _params_file(tmp_path, change):
    params = project_params()
    change(params)
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(params, sort_keys=False))
    return path


def unknown_top_level_key(tmp_path):
    path = _params_file(tmp_path, lambda p: p.update(num_gesturez=40))
    return lambda: load_params(path)


def missing_data_key(tmp_path):
    path = _params_file(tmp_path, lambda p: p["data"].pop("seed"))
    return lambda: DataParams.from_params(load_params(path))


def misspelt_data_key(tmp_path):
    path = _params_file(tmp_path, lambda p: p["data"].update(percentile=[1, 99]))
    return lambda: DataParams.from_params(load_params(path))


def missing_synthetic_key(tmp_path):
    def change(params):
        params["synthetic"] = dataclasses.asdict(SyntheticConfig())  # every key spelt out ...
        params["synthetic"]["amplitude_range"] = list(params["synthetic"]["amplitude_range"])
        del params["synthetic"]["jitter"]  # ... but one, which must not silently take its default

    path = _params_file(tmp_path, change)
    return lambda: synthetic_config(load_params(path))


def zero_member_cap(tmp_path):
    path = _params_file(tmp_path, lambda p: p["data"]["extract"].update(max_members=0))
    return lambda: ExtractLimits.from_params(load_params(path))


def _tar(path, members: dict[str, bytes]):
    with tarfile.open(path, "w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def archive_with_a_huge_member(tmp_path):
    # 8 MiB of zeros gzip to 8 KB: the shape of the 1.2 MB tgz that became 256 MiB.
    archive = _tar(tmp_path / "emadata.tgz", {"emadata/a.wav": bytes(8 << 20)})
    return lambda: safe_extract(archive, tmp_path / "extracted", ExtractLimits(max_member_mib=4))


def archive_with_too_many_members(tmp_path):
    archive = _tar(tmp_path / "emadata.tgz", {f"emadata/{i}.lab": b"" for i in range(50)})
    return lambda: safe_extract(archive, tmp_path / "extracted", ExtractLimits(max_members=20))


def archive_too_big_in_total(tmp_path):
    archive = _tar(tmp_path / "emadata.tgz", {f"emadata/{i}.wav": bytes(1 << 20) for i in range(5)})
    return lambda: safe_extract(archive, tmp_path / "extracted", ExtractLimits(max_total_mib=3))


def nan_left_in_frames(tmp_path):
    npy = tmp_path / "npy"
    npy.mkdir()
    frames = np.zeros((30, 12), np.float32)
    frames[17, 2] = np.nan
    np.save(npy / "frames.npy", frames)
    (npy / "index.csv").write_text(
        "utterance_id,speaker,start,frames,ema,wav,lab\n"
        "spk_001,spk,0,10,a.ema,a.wav,\nspk_002,spk,10,20,b.ema,b.wav,\n")
    (npy / "speakers.json").write_text('{"spk": {"dir": "emadata/cin_us_spk"}}')
    data = DataParams.from_params(project_params())
    return lambda: normalize_corpus(npy, tmp_path / "normalized", data)


class _RunsCode:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def model_file_that_runs_code(tmp_path):
    path = tmp_path / "model.pt"
    torch.save({"state_dict": {}, "model_config": {}, "payload": _RunsCode(tmp_path / "pwned")}, path)
    return lambda: read_model_file(path)


def truncated_model_file(tmp_path):
    path = tmp_path / "model.pt"
    torch.save({"state_dict": {"w": torch.zeros(100)}, "model_config": {}}, path)
    path.write_bytes(path.read_bytes()[:300])
    return lambda: read_model_file(path)


def _raises(error):
    def main():
        raise error
    return lambda tmp_path: main


HARD_INPUTS = [
    # (id, stage, builder, the one line expected after "<stage>: ")
    ("unknown-top-level-key", "train", unknown_top_level_key,
     r"params.yaml: unknown key 'num_gesturez' \(did you mean 'num_gestures'\?\)"),
    ("missing-data-key", "normalize", missing_data_key, r"params.yaml data.seed: missing"),
    ("misspelt-data-key", "normalize", misspelt_data_key,
     r"params.yaml data: unknown key\(s\) \['percentile'\] \(did you mean 'percentiles'\?\); known: .*"),
    ("missing-synthetic-key", "download", missing_synthetic_key, r"params.yaml synthetic.jitter: missing"),
    ("zero-member-cap", "extract", zero_member_cap,
     r"params.yaml data.extract.max_members: must be >= 1 \(got 0\)"),
    ("tar-bomb-member", "extract", archive_with_a_huge_member,
     r".*emadata.tgz: member 'emadata/a.wav' would unpack to 8 MiB, over data.extract.max_member_mib \(4 MiB\)"),
    ("tar-bomb-count", "extract", archive_with_too_many_members,
     r".*emadata.tgz: holds more than 20 members \(data.extract.max_members in params.yaml\)"),
    ("tar-bomb-total", "extract", archive_too_big_in_total,
     r".*emadata.tgz: would unpack to more than 3 MiB \(data.extract.max_total_mib; stopped reading at member 4\)"),
    ("nan-in-frames", "normalize", nan_left_in_frames,
     r".*frames.npy: 1 missing sample\(s\) \(NaN or inf\), the first in utterance spk_002 channel tb_x frame 8 .*"),
    ("model-pickle-runs-code", "train", model_file_that_runs_code,
     r".*model.pt: refused: it holds Python objects, not only tensors and plain data \(.*GLOBAL posix.system.*\); "
     r"loading it could run code from the file"),
    ("model-truncated", "evaluate", truncated_model_file, r".*model.pt: not a readable model file, or truncated .*"),
    ("disk-full", "extract", _raises(OSError(errno.ENOSPC, "No space left on device", "data/extracted/x.wav")),
     r"disk full while writing data/extracted/x.wav"),
    ("permission", "nema2npy", _raises(PermissionError(errno.EACCES, "Permission denied", "data/npy")),
     r"permission denied: data/npy"),
    ("read-only", "normalize", _raises(OSError(errno.EROFS, "Read-only file system", "data/normalized")),
     r"read-only file system: data/normalized"),
    ("other-os-error", "download", _raises(IsADirectoryError(errno.EISDIR, "Is a directory", "data/raw")),
     r"data/raw: Is a directory"),
    ("out-of-memory", "nema2npy", _raises(MemoryError()), r"out of memory"),
]


@pytest.mark.parametrize("stage, build, expected", [row[1:] for row in HARD_INPUTS],
                         ids=[row[0] for row in HARD_INPUTS])
def test_a_hard_input_is_refused_with_one_line(tmp_path, capsys, stage, build, expected):
    main = build(tmp_path)
    status = run_stage(stage, main)
    err = capsys.readouterr().err
    assert status == 1
    the_one_line(err)
    assert re.fullmatch(rf"{stage}: {expected}\n", err), err
    assert not (tmp_path / "pwned").exists()  # the model file's code never ran
    assert not any(p.name.startswith((".extracted", "extracted", "normalized")) for p in tmp_path.iterdir())


# --------------------------------------------------------------------------
# run_stage
# --------------------------------------------------------------------------


def test_ctrl_c_prints_interrupted_and_returns_130(capsys):
    def main():
        raise KeyboardInterrupt

    assert run_stage("extract", main) == 130
    assert capsys.readouterr().err == "extract: interrupted\n"


def test_a_genuine_bug_keeps_its_traceback():
    def main():
        return {}["missing"]

    with pytest.raises(KeyError):
        run_stage("normalize", main)
    with pytest.raises(ValueError, match="operands could not be broadcast"):
        run_stage("normalize", lambda: np.zeros(2) + np.zeros(3))  # a library's ValueError is a bug too


@pytest.mark.parametrize("returned, status", [(None, 0), (0, 0), (3, 3)])
def test_the_status_of_main_is_passed_on(returned, status):
    assert run_stage("download", lambda: returned) == status


@pytest.mark.parametrize("name", ["download", "extract", "nema2npy", "normalize"])
def test_data_stage_scripts_go_through_run_stage_and_stay_thin(name):
    text = (PROJECT_ROOT / "stages" / f"{name}.py").read_text()
    assert f'sys.exit(run_stage("{name}", main))' in text
    assert "except" not in text


# --------------------------------------------------------------------------
# Outputs respect the umask
# --------------------------------------------------------------------------


@pytest.fixture
def umask():
    def set_umask(mask):
        os.umask(mask)
        return mask

    saved = os.umask(0o022)
    os.umask(saved)
    yield set_umask
    os.umask(saved)


@pytest.mark.parametrize("mask", [0o022, 0o002, 0o077])
def test_outputs_get_the_mode_the_umask_allows(tmp_path, umask, mask):
    umask(mask)
    assert current_umask() == mask
    with atomic_path(tmp_path / "out.json") as tmp:
        tmp.write_text("{}")
    with atomic_dir(tmp_path / "outdir") as tmp:
        (tmp / "inner.txt").write_text("x")
    assert (tmp_path / "out.json").stat().st_mode & 0o777 == 0o666 & ~mask
    assert (tmp_path / "outdir").stat().st_mode & 0o777 == 0o777 & ~mask
    assert current_umask() == mask  # reading it did not change it


# --------------------------------------------------------------------------
# params.yaml: top-level keys; model files
# --------------------------------------------------------------------------


def test_every_top_level_key_of_the_project_params_is_known():
    params = project_params()
    check_top_level(params)
    assert set(params) <= KNOWN_TOP_LEVEL


def test_an_unknown_key_without_a_close_match_gets_no_suggestion(tmp_path):
    from gestural.core.params import ParamsError

    with pytest.raises(ParamsError) as caught:
        check_top_level({"data": {}, "zzzz": 1})
    assert str(caught.value) == "params.yaml: unknown key 'zzzz'"


def test_a_model_written_by_the_train_stage_loads_with_weights_only(tmp_path):
    model = GesturalAutoEncoder(model_config(num_gestures=4, win_size=5, hidden=8, peak_window=5,
                                                    kernels="nonnegative", response_frames=0))
    stats = {"channels": ["td_x"] * 12, "low": [0.0] * 12, "high": [1.0] * 12, "percentiles": [0.0, 100.0]}
    save_model(tmp_path / "model.pt", model, dataclasses.asdict(train_config()), stats)
    payload = read_model_file(tmp_path / "model.pt")
    assert payload["model_config"]["num_gestures"] == 4 and payload["normalization"] == stats
    for key, value in model.state_dict().items():
        assert torch.equal(payload["state_dict"][key], value)
