"""The data half of the DVC pipeline: params.yaml, dvc.yaml, the synthetic source, and end-to-end runs."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from conftest import (
    PROJECT_ROOT,
    CorpusBuilder,
    commit_all,
    dvc_env,
    init_git_dvc,
    project_params,
    run_command,
    src_env,
    tiny_synthetic_config,
)

from gestural.core.params import DataParams, ParamsError, load_params
from gestural.data.dataset import NormalizedCorpus, read_index
from gestural.synthetic.generator import SyntheticConfig, synthetic_config, write_corpus

DATA_STAGES = ("check", "download", "extract", "nema2npy", "normalize")  # check: of params.yaml, first


# --------------------------------------------------------------------------
# params.yaml
# --------------------------------------------------------------------------


def test_project_params_are_valid_and_spell_out_the_generator():
    params = project_params()
    data = DataParams.from_params(params)
    assert (data.source, data.speakers, data.test_fraction, data.nan_policy) == ("synthetic", None, 0.2, "interpolate")
    assert data.percentiles == (0.0, 100.0) and data.max_nan_run == 20 and data.skip_bad_files is False
    assert set(params["synthetic"]) == {f.name for f in dataclasses.fields(SyntheticConfig)}
    assert synthetic_config(params) == SyntheticConfig(kind="articulatory")


@pytest.mark.parametrize(
    "key, value, message",
    [
        ("test_fraction", 1.5, "params.yaml data.test_fraction: must be in (0, 1) (got 1.5)"),
        ("test_fraction", 0, "params.yaml data.test_fraction: must be in (0, 1) (got 0)"),
        ("test_fraction", "0.2", "params.yaml data.test_fraction: must be a number in (0, 1) (got '0.2')"),
        ("source", "ftp", "params.yaml data.source: must be one of synthetic | url | archive (got 'ftp')"),
        ("nan_policy", "fill", "params.yaml data.nan_policy: must be one of interpolate | drop | error (got 'fill')"),
        ("max_nan_run", -1, "params.yaml data.max_nan_run: must be >= 0 (got -1)"),
        ("seed", True, "params.yaml data.seed: must be an integer (got True)"),
        ("skip_bad_files", "yes", "params.yaml data.skip_bad_files: must be true or false (got 'yes')"),
        ("percentiles", [60, 40], "params.yaml data.percentiles: low must be below high (got [60, 40])"),
        ("percentiles", [0, 101], "params.yaml data.percentiles: must be in [0, 100] (got 101)"),
        ("percentiles", 5, "params.yaml data.percentiles: must be a list [low, high] of two percentiles (got 5)"),
        ("speakers", [], "params.yaml data.speakers: must be 'all' or a list of distinct speaker names of "
                         "letters, digits, '_' and '-' (got [])"),
        ("speakers", ["a", "a"], "params.yaml data.speakers: must be 'all' or a list of distinct speaker names"),
        ("sha256", "abc", "params.yaml data.sha256: must be 64 hex digits or null (got 'abc')"),
    ],
)
def test_invalid_data_values_name_the_key(key, value, message):
    params = project_params()
    params["data"][key] = value
    with pytest.raises(ParamsError) as caught:
        DataParams.from_params(params)
    assert str(caught.value).startswith(message)


def test_source_needs_its_location_and_keys_are_checked():
    params = project_params()
    params["data"].update(source="archive", archive=None)
    with pytest.raises(ParamsError, match=r"data\.archive: must be the path of emadata.tgz"):
        DataParams.from_params(params)
    params["data"].update(source="url", url="tts.speech.cs.cmu.edu/x.tgz")
    with pytest.raises(ParamsError, match=r"data\.url: must start with http://"):
        DataParams.from_params(params)
    params = project_params()
    params["data"]["test_fracton"] = 0.1
    with pytest.raises(ParamsError, match=r"data: unknown key\(s\) \['test_fracton'\]"):
        DataParams.from_params(params)
    params = project_params()
    del params["data"]["seed"]
    with pytest.raises(ParamsError, match=r"data\.seed: missing"):
        DataParams.from_params(params)
    params["data"] = None
    with pytest.raises(ParamsError, match="params.yaml data: must be a mapping"):
        DataParams.from_params(params)
    params = project_params()
    params["data"]["speakers"] = "mngu0"
    assert DataParams.from_params(params).speakers == ("mngu0",)
    params["synthetic"]["num_gestures"] = 0
    with pytest.raises(ParamsError, match=r"synthetic\.num_gestures: must be an integer >= 1"):
        synthetic_config(params)


def test_load_params_explains_missing_and_broken_files(tmp_path):
    with pytest.raises(ParamsError, match="no such file"):
        load_params(tmp_path / "params.yaml")
    (tmp_path / "params.yaml").write_text("data:\n  seed: [1, 2\n")
    with pytest.raises(ParamsError, match=r"(?s)params.yaml: not valid YAML: .*line 2, column 9"):
        load_params(tmp_path / "params.yaml")
    (tmp_path / "params.yaml").write_text("- a list\n")
    with pytest.raises(ParamsError, match="expected a mapping"):
        load_params(tmp_path / "params.yaml")


def data_stages() -> dict:
    stages = yaml.safe_load((PROJECT_ROOT / "dvc.yaml").read_text())["stages"]
    return {name: stages[name] for name in DATA_STAGES}


def test_dvc_yaml_data_stages_name_existing_files_and_params():
    params = project_params()
    for name, stage in data_stages().items():
        assert stage["cmd"] == f"PYTHONPATH=src python stages/{name}.py"
        for dep in stage["deps"]:
            if not dep.startswith("data/"):
                assert (PROJECT_ROOT / dep).is_file(), f"{name}: dep {dep} does not exist"
        for key in stage.get("params", []):
            if isinstance(key, dict):  # a whole file: the check stage's params.yaml
                assert key == {"params.yaml": None}, f"{name}: param {key}"
                continue
            section, _, field = key.partition(".")
            assert section in params and (not field or field in params[section]), f"{name}: param {key}"


# --------------------------------------------------------------------------
# The synthetic source
# --------------------------------------------------------------------------


def test_synthetic_archive_is_deterministic(tmp_path):
    config = tiny_synthetic_config(utterances_per_speaker=3, missing_wav=1, short_nan_runs=1)
    outputs = []
    for name, seed in (("a", 0), ("b", 0), ("c", 1)):
        archive, truth = tmp_path / f"{name}.tgz", tmp_path / f"{name}.npz"
        write_corpus(dataclasses.replace(config, seed=seed), archive, truth)
        outputs.append(tuple(hashlib.sha256(p.read_bytes()).hexdigest() for p in (archive, truth)))
    # (A gzip header carrying the temporary file's name or the time breaks the first one.)
    assert outputs[0] == outputs[1], "same seed, different bytes"
    assert outputs[0][0] != outputs[2][0] and outputs[0][1] != outputs[2][1]


# --------------------------------------------------------------------------
# End to end: `dvc repro normalize` in a scratch git + DVC repository
# --------------------------------------------------------------------------


def make_repo(tmp_path: Path, data: dict, synthetic: dict | None = None) -> tuple[Path, dict]:
    """A git + DVC repository holding the project's data stages, with params overridden."""
    repo = tmp_path / "repo"
    repo.mkdir()
    shutil.copytree(PROJECT_ROOT / "src", repo / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    (repo / "stages").mkdir()
    for name in DATA_STAGES:
        shutil.copy(PROJECT_ROOT / "stages" / f"{name}.py", repo / "stages")
    (repo / "dvc.yaml").write_text(yaml.safe_dump({"stages": data_stages()}, sort_keys=False))
    params = project_params()
    params["data"].update(data)
    params["synthetic"].update(synthetic or {})
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    (repo / ".gitignore").write_text("/data/\n__pycache__/\n")

    env = dvc_env(tmp_path, PYTHONPATH=str(repo / "src"))  # the copied package, not the checkout's
    init_git_dvc(repo, env)
    commit_all(repo, env, "data pipeline")
    return repo, env


run = run_command


def assert_nothing_to_do(repo: Path, env: dict) -> None:
    status = json.loads(run(["dvc", "status", "--json"], repo, env))
    assert status == {}, status


@pytest.mark.slow
def test_synthetic_pipeline_end_to_end(tmp_path):
    synthetic = dataclasses.asdict(tiny_synthetic_config())
    repo, env = make_repo(tmp_path, {"source": "synthetic"}, synthetic)
    run(["dvc", "repro", "normalize"], repo, env)

    config = SyntheticConfig.from_params(synthetic)
    source = json.loads((repo / "data/raw/source.json").read_text())
    raw = repo / "data/raw/emadata.tgz"
    assert source["sha256"] == hashlib.sha256(raw.read_bytes()).hexdigest()
    assert source["config"] == json.loads(json.dumps(dataclasses.asdict(config)))
    assert (repo / "data/raw/ground_truth.npz").is_file()
    assert (repo / "data/extracted/emadata/cin_us_msyn0/ema.stats").is_file()

    summary = source["synthetic"]
    metrics = json.loads((repo / "metrics/data.json").read_text())
    kept = summary["utterances"] - summary["wav_without_ema"] - summary["ema_without_wav"] - summary["long_nan_runs"]
    assert metrics["utterances_kept"] == kept and metrics["speakers"] == 2
    assert metrics["dropped_by_reason"]["no_wav"] == summary["ema_without_wav"]
    assert metrics["dropped_by_reason"]["nan_run_too_long"] == summary["long_nan_runs"]

    corpus = NormalizedCorpus.load(repo / "data/normalized")
    assert len(corpus.index) == kept and corpus.frames.shape == (metrics["frames"], 12)
    assert 0.0 <= corpus.frames.min() and corpus.frames.max() <= 1.0
    assert corpus.stats["counts"]["train"]["utterances"] + corpus.stats["counts"]["test"]["utterances"] == kept
    assert len(read_index(repo / "data/npy/index.csv")) == kept

    assert_nothing_to_do(repo, env)
    # A split parameter changes only the normalize stage (and the check of the whole params.yaml,
    # whose output stays the same bytes, so nothing between them reruns).
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["data"]["seed"] = 1
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    assert set(json.loads(run(["dvc", "status", "--json"], repo, env))) == {"check", "normalize"}
    log = run(["dvc", "repro", "normalize"], repo, env)
    assert [name for name in DATA_STAGES if f"Running stage '{name}'" in log] == ["check", "normalize"], log


def real_like_archive(root: Path) -> Path:
    """A tarball laid out like CMU's emadata.tgz: mngu0 (EST tracks, official split) and msak0 (nema)."""
    builder = CorpusBuilder(root / "corpus")
    rng = np.random.default_rng(7)
    mngu = [f"mngu0_s1_{i:04d}" for i in range(1, 7)]
    for utt_id in mngu:
        builder.add("mngu0", utt_id, rng.standard_normal((80, 14)), est=True)
    builder.write_stats("mngu0")
    builder.write_prompts("mngu0", mngu)
    builder.write_prompts("mngu0", mngu[:4], suffix=".train")
    builder.write_prompts("mngu0", mngu[4:], suffix=".test")
    holed = rng.standard_normal((90, 18))
    holed[20:23, 2] = np.nan
    builder.add("msak0", "msak0_001", holed)
    for i in range(2, 9):
        builder.add("msak0", f"msak0_{i:03d}", rng.standard_normal((60 + i, 18)), lab=i != 3)
    builder.add("msak0", "msak0_009", wav=False)
    builder.add_wav_only("msak0", "msak0_010")
    builder.write_stats("msak0", columns=18)
    builder.write_prompts("msak0", [f"msak0_{i:03d}" for i in range(1, 11)])
    return builder.tar(root / "downloaded emadata.tgz")


@pytest.mark.slow
def test_archive_source_with_real_layout_end_to_end(tmp_path):
    archive = real_like_archive(tmp_path)
    repo, env = make_repo(tmp_path, {"source": "archive", "archive": str(archive), "test_fraction": 0.3})
    run(["dvc", "repro", "normalize"], repo, env)

    source = json.loads((repo / "data/raw/source.json").read_text())
    assert source == {"source": "archive", "archive": str(archive),
                      "sha256": hashlib.sha256(archive.read_bytes()).hexdigest()}
    assert sorted(p.name for p in (repo / "data/raw").iterdir()) == ["emadata.tgz", "source.json"]

    report = json.loads((repo / "data/npy/report.json").read_text())
    assert report["speakers"] == ["mngu0", "msak0"] and report["kept"] == 6 + 8
    assert [(d["utterance_id"], d["reason"]) for d in report["dropped"]] == [("msak0_009", "no_wav")]
    assert report["wav_without_ema"] == {"mngu0": [], "msak0": ["msak0_010"]}
    assert [i["utterance_id"] for i in report["interpolated"]] == ["msak0_001"]

    corpus = NormalizedCorpus.load(repo / "data/normalized")
    splits = {row["utterance_id"]: row["split"] for row in corpus.index}
    assert [splits[f"mngu0_s1_{i:04d}"] for i in range(1, 7)] == ["train"] * 4 + ["test"] * 2
    assert corpus.stats["split_method"] == {"mngu0": "official", "msak0": "hash"}
    assert set(corpus.stats["ema_stats"]) == {"mngu0", "msak0"}
    lab = {row["utterance_id"]: row["lab"] for row in corpus.index}
    assert lab["msak0_003"] == "" and lab["msak0_004"] == "emadata/cin_us_msak0/lab/msak0_004.lab"
    assert_nothing_to_do(repo, env)


# --------------------------------------------------------------------------
# Stage scripts on their own (no DVC): url source, clean failures
# --------------------------------------------------------------------------


def run_stage(name: str, workdir: Path, params: dict) -> subprocess.CompletedProcess:
    (workdir / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    env = src_env()
    return subprocess.run([sys.executable, str(PROJECT_ROOT / "stages" / f"{name}.py")],
                          cwd=workdir, env=env, capture_output=True, text=True)


def test_download_stage_url_source_and_clean_failure(tmp_path, synthetic_archive):
    archive = synthetic_archive[0]
    params = project_params()
    params["data"].update(source="url", url=archive.as_uri())
    result = run_stage("download", tmp_path, params)
    assert result.returncode == 0, result.stderr
    digest = hashlib.sha256(archive.read_bytes()).hexdigest()
    assert json.loads((tmp_path / "data/raw/source.json").read_text()) == {
        "source": "url", "url": archive.as_uri(), "sha256": digest}
    assert (tmp_path / "data/raw/emadata.tgz").read_bytes() == archive.read_bytes()
    assert sorted(p.name for p in (tmp_path / "data").iterdir()) == ["raw"]  # no partial, no temporary

    params["data"]["sha256"] = "0" * 64
    result = run_stage("download", tmp_path, params)
    assert result.returncode == 1
    assert "sha256 mismatch" in result.stderr and "Traceback" not in result.stderr
    assert json.loads((tmp_path / "data/raw/source.json").read_text())["sha256"] == digest  # untouched


def test_stage_errors_are_one_message_not_a_traceback(tmp_path):
    params = project_params()
    params["data"]["test_fraction"] = 2
    result = run_stage("nema2npy", tmp_path, params)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "params.yaml data.test_fraction: must be in (0, 1) (got 2)" in result.stderr
    params["data"]["test_fraction"] = 0.2
    result = run_stage("nema2npy", tmp_path, params)
    assert result.returncode == 1 and "no speaker directories" in result.stderr
    result = run_stage("normalize", tmp_path, params)
    assert result.returncode == 1 and "run `dvc repro nema2npy` first" in result.stderr
    result = run_stage("extract", tmp_path, params)
    assert result.returncode == 1 and "emadata.tgz: no such file" in result.stderr


def _many_file_archive(path: Path, count: int, size: int) -> Path:
    import io
    import tarfile

    with tarfile.open(path, "w:gz") as tar:
        for i in range(count):
            info = tarfile.TarInfo(f"emadata/cin_us_spk/wav/spk_{i:05d}.wav")
            info.size = size
            tar.addfile(info, io.BytesIO(bytes(size)))
    return path


def test_a_killed_extract_leaves_a_temporary_that_the_next_run_removes(tmp_path):
    import signal
    import time

    (tmp_path / "data/raw").mkdir(parents=True)
    _many_file_archive(tmp_path / "data/raw/emadata.tgz", 1000, 8192)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(project_params(), sort_keys=False))
    env = src_env()
    command = [sys.executable, str(PROJECT_ROOT / "stages" / "extract.py")]

    process = subprocess.Popen(command, cwd=tmp_path, env=env, stderr=subprocess.PIPE)
    temporaries = []
    while process.poll() is None and not temporaries:
        temporaries = list((tmp_path / "data").glob(".extracted.*.tmp"))
        time.sleep(0.002)
    process.send_signal(signal.SIGKILL)  # kill -9 mid-extraction
    process.wait()
    assert process.returncode == -signal.SIGKILL, "extract finished before it could be killed"
    assert temporaries and temporaries[0].exists()  # what the killed run leaves behind

    result = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in (tmp_path / "data").iterdir()) == ["extracted", "raw"]
    assert "removed 1 stale temporary file(s) of data/extracted" in result.stderr
    assert len(list((tmp_path / "data/extracted/emadata/cin_us_spk/wav").iterdir())) == 1000


def test_the_extract_stage_refuses_an_archive_over_its_caps_in_one_line(tmp_path):
    (tmp_path / "data/raw").mkdir(parents=True)
    _many_file_archive(tmp_path / "data/raw/emadata.tgz", 30, 10)
    params = project_params()
    params["data"]["extract"]["max_members"] = 20
    result = run_stage("extract", tmp_path, params)
    assert result.returncode == 1
    assert result.stderr == ("extract: data/raw/emadata.tgz: holds more than 20 members "
                             "(data.extract.max_members in params.yaml)\n")
    assert sorted(p.name for p in (tmp_path / "data").iterdir()) == ["raw"]
