#!/usr/bin/env python3
"""Build ``.dvc/plots/offline.html``: DVC's plots page with Vega inlined, so it renders offline.

``dvc plots show`` / ``dvc plots diff`` fill an HTML page whose ``{scripts}`` placeholder
receives ``<script src="https://cdn.jsdelivr.net/npm/vega@...">`` tags: without a network
the page stays blank. This template has no ``{scripts}`` placeholder; instead it carries the
minified vega, vega-lite and vega-embed builds (the versions the installed dvc-render asks
for) inside ``<script>`` elements, with their BSD-3 licences. Inlined rather than linked, the
page works from any ``-o`` directory and can be mailed as one file. ``.dvc/config`` points
``plots.html_template`` at it (relative to ``.dvc/``).

Usage (from the repository root; needs ``npm`` to fetch the packages, or ``--packages DIR``
holding the ``npm pack`` tarballs)::

    .venv/bin/python scripts/offline_plots_template.py [--packages DIR]

Rerun it after upgrading dvc-render: the versions are read from it.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / ".dvc" / "plots" / "offline.html"
PACKAGES = ("vega", "vega-lite", "vega-embed")  # load order: vega-lite and vega-embed need vega

PAGE = """<!DOCTYPE html>
<html>
<head>
    <meta charset="utf-8">
    {{refresh_tag}}
    <title>DVC Plot</title>
    <!-- {versions}: inlined from their npm packages by scripts/offline_plots_template.py so
         that the page renders without a network (DVC's default page loads them from a CDN).
         Licences at the end of this file. -->
{scripts}
    <style>
        table {{
            border-spacing: 15px;
        }}
    </style>
</head>
<body>
    {{plot_divs}}
</body>
</html>
<!--
{licences}
-->
"""


def dvc_render_versions() -> dict[str, str]:
    """The package versions dvc-render's Vega renderer loads from the CDN."""
    from dvc_render.vega import VegaRenderer

    found = dict(re.findall(r"/npm/(vega(?:-lite|-embed)?)@([0-9][^\"'/]*)", VegaRenderer.SCRIPTS))
    missing = [name for name in PACKAGES if name not in found]
    if missing:
        sys.exit(f"offline_plots_template: dvc_render.vega.VegaRenderer.SCRIPTS names no version of {missing}")
    return found


def fetch(versions: dict[str, str], directory: Path) -> None:
    specs = [f"{name}@{versions[name]}" for name in PACKAGES]
    subprocess.run(["npm", "pack", "--silent", *specs], cwd=directory, check=True, stdout=subprocess.DEVNULL)


def member(tarball: Path, name: str) -> str:
    with tarfile.open(tarball) as tar:
        handle = tar.extractfile(f"package/{name}")
        if handle is None:
            sys.exit(f"offline_plots_template: {tarball}: no package/{name}")
        return handle.read().decode("utf-8")


def build(versions: dict[str, str], packages: Path) -> str:
    scripts, licences = [], []
    for name in PACKAGES:
        tarball = packages / f"{name}-{versions[name]}.tgz"
        if not tarball.is_file():
            sys.exit(f"offline_plots_template: {tarball}: no such file (npm pack {name}@{versions[name]})")
        code = member(tarball, f"build/{name}.min.js")
        # Inside <script>, only "</script" ends the element and the page's placeholders would be
        # replaced by DVC: neither may occur in the code.
        for forbidden in ("</script", "{plot_divs}", "{scripts}", "{refresh_tag}"):
            if forbidden in code:
                sys.exit(f"offline_plots_template: {tarball}: build/{name}.min.js contains {forbidden!r}")
        scripts.append(f"    <script>/* {name} {versions[name]} */\n{code.strip()}\n    </script>")
        licence = member(tarball, "LICENSE").strip()
        if "-->" in licence:
            sys.exit(f"offline_plots_template: {tarball}: LICENSE contains '-->'")
        licences.append(f"{name} {versions[name]}\n\n{licence}")
    return PAGE.format(versions=", ".join(f"{n} {versions[n]}" for n in PACKAGES),
                       scripts="\n".join(scripts), licences="\n\n\n".join(licences))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--packages", type=Path, help="directory with the npm pack tarballs (default: run npm pack)")
    parser.add_argument("--out", type=Path, default=OUT, help=f"template to write (default {OUT.relative_to(ROOT)})")
    args = parser.parse_args()
    versions = dvc_render_versions()
    with tempfile.TemporaryDirectory() as scratch:
        packages = args.packages
        if packages is None:
            packages = Path(scratch)
            fetch(versions, packages)
        page = build(versions, packages)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_name(f".{args.out.name}.tmp")
    tmp.write_text(page, encoding="utf-8")
    tmp.replace(args.out)  # atomic: the old template stays until the new one is whole
    print(f"offline_plots_template: {args.out} ({len(page) // 1024} KiB; "
          f"{', '.join(f'{n} {versions[n]}' for n in PACKAGES)})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
