"""DVC stage ``download``: put the corpus tarball into ``data/raw/``.

Reads ``data.source`` from params.yaml:

- ``synthetic``: generate the corpus (``synthetic:`` section) and its ground truth;
- ``url``: download ``data.url`` (resumable: the partial file lives in
  ``data/.partial/``, outside the stage output, so it survives DVC removing
  ``data/raw`` before a rerun);
- ``archive``: copy the local tarball ``data.archive``.

Writes ``data/raw/emadata.tgz``, ``data/raw/source.json`` (where it came from and
its sha256) and, for synthetic data, ``data/raw/ground_truth.npz``; the directory
appears whole or not at all.
"""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

from gestural.core.files import atomic_dir, write_json
from gestural.core.params import DataParams, load_params
from gestural.core.stage import run_stage
from gestural.data.download import copy_archive, fetch_url, sha256_of
from gestural.synthetic.generator import synthetic_config, write_corpus

OUT_DIR = Path("data/raw")
PARTIAL_DIR = Path("data/.partial")
ARCHIVE_NAME = "emadata.tgz"


def main() -> int:
    params = load_params()
    data = DataParams.from_params(params)
    config = synthetic_config(params) if data.source == "synthetic" else None  # checked before writing
    source = {"source": data.source}
    with atomic_dir(OUT_DIR) as tmp:
        archive = tmp / ARCHIVE_NAME
        if config is not None:
            summary = write_corpus(config, archive, tmp / "ground_truth.npz")
            source.update(sha256=sha256_of(archive), synthetic=summary,
                          config=dataclasses.asdict(config))
        elif data.source == "url":
            digest = fetch_url(data.url, archive, sha256=data.sha256, partial_dir=PARTIAL_DIR)
            source.update(url=data.url, sha256=digest)
        else:
            # DVC sees data.archive (the path), not the file behind it: after replacing
            # the tarball at the same path, run `dvc repro -f download`.
            digest = copy_archive(data.archive, archive, sha256=data.sha256)
            source.update(archive=str(Path(data.archive).resolve()), sha256=digest)
        write_json(tmp / "source.json", source)
    if PARTIAL_DIR.is_dir() and not any(PARTIAL_DIR.iterdir()):
        PARTIAL_DIR.rmdir()
    print(f"download: {OUT_DIR / ARCHIVE_NAME} from {data.source} (sha256 {source['sha256']})")
    return 0


if __name__ == "__main__":
    sys.exit(run_stage("download", main))
