"""`dvc plots show` with the project's committed config writes a page that needs no network."""

from __future__ import annotations

import re
import shutil
import subprocess

import pytest
from conftest import PROJECT_ROOT, commit_all, dvc_env, init_git_dvc, run_command

SCRIPT_SRC = re.compile(r"<script[^>]*\bsrc\s*=\s*[\"']?\s*(https?:)?//", re.IGNORECASE)


@pytest.fixture(scope="module")
def plots_repo(tmp_path_factory):
    """A git + DVC repo with the project's .dvc/config and .dvc/plots, one CSV plot and one image."""
    tmp_path = tmp_path_factory.mktemp("offline")
    repo = tmp_path / "repo"
    repo.mkdir()
    env = dvc_env(tmp_path)
    init_git_dvc(repo, env)
    shutil.copy(PROJECT_ROOT / ".dvc" / "config", repo / ".dvc" / "config")
    shutil.copytree(PROJECT_ROOT / ".dvc" / "plots", repo / ".dvc" / "plots", dirs_exist_ok=True)
    (repo / "curve.csv").write_text("epoch,loss\n0,1.0\n1,0.5\n2,0.25\n")
    (repo / "dvc.yaml").write_text("plots:\n  - curve.csv:\n      x: epoch\n      y: loss\n")
    commit_all(repo, env, "plots")
    return repo, env


def test_plain_dvc_plots_show_inlines_vega_and_loads_no_remote_script(plots_repo):
    repo, env = plots_repo
    run_command(["dvc", "plots", "show"], repo, env)
    page = (repo / "dvc_plots" / "index.html").read_text(encoding="utf-8")
    assert not SCRIPT_SRC.search(page), "the page loads a script over the network"
    assert "cdn.jsdelivr.net" not in page
    # The three libraries are inside the page, in load order, and the plot calls them.
    markers = [page.find(f"/* {name} ") for name in ("vega", "vega-lite", "vega-embed")]
    assert all(m >= 0 for m in markers) and markers == sorted(markers)
    assert "vegaEmbed('#" in page and '"epoch"' in page


def test_plots_diff_to_another_directory_is_offline_too(plots_repo, tmp_path):
    repo, env = plots_repo
    out = tmp_path / "elsewhere"
    run_command(["dvc", "plots", "diff", "HEAD", "-o", str(out)], repo, env)
    page = (out / "index.html").read_text(encoding="utf-8")
    assert not SCRIPT_SRC.search(page) and "/* vega-embed " in page


def test_template_matches_the_versions_the_installed_dvc_render_asks_for():
    from dvc_render.vega import VegaRenderer

    template = (PROJECT_ROOT / ".dvc" / "plots" / "offline.html").read_text(encoding="utf-8")
    wanted = re.findall(r"/npm/(vega(?:-lite|-embed)?)@([0-9][^\"'/]*)", VegaRenderer.SCRIPTS)
    assert len(wanted) == 3
    for name, version in wanted:
        assert f"/* {name} {version} */" in template, f"rebuild with scripts/offline_plots_template.py ({name})"
    assert "{plot_divs}" in template and "{scripts}" not in template  # no placeholder for the CDN tags


@pytest.mark.skipif(shutil.which("node") is None, reason="node is not installed")
def test_inlined_libraries_compile_and_render_a_vega_lite_spec_in_node(tmp_path):
    # The bundles must work as shipped: load them as the browser would (globals on self)
    # and render a small Vega-Lite chart to SVG headlessly.
    template = (PROJECT_ROOT / ".dvc" / "plots" / "offline.html").read_text(encoding="utf-8")
    scripts = re.findall(r"<script>(.*?)</script>", template, re.DOTALL)
    assert len(scripts) == 3
    bundle = tmp_path / "bundle.js"
    # As a browser script, not a CommonJS module: hide node's module/exports from the UMD wrappers.
    browser = "(function (module, exports, define, require) {\nvar self = globalThis;\n%s\n}).call(globalThis);"
    bundle.write_text(browser % "\n;\n".join(scripts) + """
var spec = {"$schema": "https://vega.github.io/schema/vega-lite/v5.json", "mark": "line",
  "data": {"values": [{"x": 0, "y": 1}, {"x": 1, "y": 3}]},
  "encoding": {"x": {"field": "x", "type": "quantitative"}, "y": {"field": "y", "type": "quantitative"}}};
if (typeof vegaEmbed !== "function") { throw new Error("vegaEmbed is not defined"); }
new vega.View(vega.parse(vegaLite.compile(spec).spec), {renderer: "none"}).toSVG()
  .then(function (svg) { console.log(svg.indexOf("<svg") >= 0 ? "svg ok" : "no svg"); });
""")
    result = subprocess.run(["node", str(bundle)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "svg ok"
