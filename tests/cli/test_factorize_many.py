"""`gestural factorize` over a directory with worker processes: the same outputs, messages and
exit status as one process, in the same order."""

from __future__ import annotations

import numpy as np
import pytest
from test_factorize import HIGH, corpus_file, model_path, run, z_values  # noqa: F401 (model_path: a fixture)

FILES = 6  # above factorize_many.MIN_FILES_FOR_WORKERS


def make_directory(root):
    for n in range(FILES):
        values = z_values(seed=n)
        if n == 2:
            values[:, 0] = HIGH[0] + 5.0  # every sample of a channel outside the training range: a warning
        corpus_file(root, f"u{n}", values, lab=False)
    (root / "nema" / "bad.ema").write_text("1 2 3\n4 5 x\n")
    return root / "nema"


@pytest.mark.parametrize("workers", ["1", "2"])
def test_workers_give_the_outputs_messages_and_status_of_one_process(tmp_path, model_path, capsys, workers):  # noqa: F811
    directory = make_directory(tmp_path)
    code, out, err = run(capsys, "--model", model_path, "--ema", directory, "--out", tmp_path / "out",
                         "--no-figures", "--quiet", "--workers", workers)
    assert code == 1 and f"factorized {FILES} of {FILES + 1} files" in out
    ok = [line.split()[1] for line in out.splitlines() if line.startswith("  ok ")]
    assert ok == sorted(ok) and len(ok) == FILES  # the input order, whatever finished first
    assert sum("FAILED" in line and "bad.ema" in line for line in out.splitlines()) == 1
    assert "u2.ema" in err and "outside the training range" in err and "Traceback" not in err
    reference = tmp_path / "reference"
    run(capsys, "--model", model_path, "--ema", directory, "--out", reference, "--no-figures", "--quiet",
        "--workers", "1")
    for n in range(FILES):
        with np.load(tmp_path / "out" / f"u{n}" / "scores.npz") as got, \
                np.load(reference / f"u{n}" / "scores.npz") as want:
            np.testing.assert_array_equal(got["scores"], want["scores"])


def test_workers_must_be_positive(tmp_path, model_path, capsys):  # noqa: F811
    code, _, err = run(capsys, "--model", model_path, "--ema", make_directory(tmp_path), "--out", tmp_path / "out",
                       "--workers", "0")
    assert code == 2 and "--workers must be >= 1 (got 0)" in err
