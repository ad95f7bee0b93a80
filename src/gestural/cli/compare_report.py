"""The files ``gestural compare`` writes: ``compare.json``, ``compare.md`` (the table) and
``model_selection.png`` (fit, recovery, sparsity and stability against the swept param)."""

from __future__ import annotations

import os
from pathlib import Path

from gestural.cli.compare import METRICS, format_value, order_key
from gestural.core.files import write_json, write_text


def _cell(summary: dict | None) -> str:
    if summary is None:
        return "n/a"
    if summary["std"] is None:
        return f"{summary['mean']:.3f}"
    return f"{summary['mean']:.3f} ± {summary['std']:.3f}"


def markdown_table(report: dict) -> str:
    """The report as a small markdown document: one row per setting, mean ± std across seeds."""
    # Only the metrics some setting has (a corpus without planted kernels has no seqNMF column).
    keys = [k for k in METRICS if any((s["metrics"][k] or {}).get("mean") is not None for s in report["settings"])]
    header = ["setting", "runs"] + [METRICS[k] for k in keys] + ["dissimilarity"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for s in report["settings"]:
        stab = s["stability"]
        diss = "n/a" if stab["dissimilarity_mean"] is None else (
            f"{stab['dissimilarity_mean']:.3f} (max {stab['dissimilarity_max']:.3f})")
        label = f"**{s['label']}** ✓" if s["label"] == report["chosen"] else s["label"]
        cells = [label, str(len(s["runs"]))] + [_cell(s["metrics"][k]) for k in keys] + [diss]
        lines.append("| " + " | ".join(cells) + " |")
    text = [f"# Model selection over {report['param']}", "", "\n".join(lines), "",
            "Values: mean ± sample std across seeds (held-out, `metrics/eval.json` neural). "
            "Dissimilarity: seqNMF-style 1 − mean best-match lag-tolerant cosine between the gesture "
            "kernels of two seeds, mean (max) over pairs; 0 = the same gestures whatever the seed.", "",
            f"Rule: {report['rule']}.", "", f"**{report['reason']}**", ""]
    if report["skipped"]:
        text += ["Skipped: " + ", ".join(f"{s['name']} ({s['reason']})" for s in report["skipped"]), ""]
    if report["kernel_errors"]:
        text += ["Kernels not read (no stability for these runs): "
                 + "; ".join(report["kernel_errors"].values()), ""]
    return "\n".join(text)


def model_selection_figure(report: dict):
    """Metrics and stability against the swept param, with error bars (std across seeds)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    settings = report["settings"]
    numeric = all(order_key(s["value"])[0] == 0 for s in settings)
    # One series per combination of the other varying params.
    series: dict[str, list[dict]] = {}
    for s in settings:
        rest = ", ".join(f"{k}={format_value(v)}" for k, v in s["params"].items() if k != report["param"])
        series.setdefault(rest, []).append(s)
    categories = sorted({format_value(s["value"]) for s in settings}, key=lambda v: v)

    def x_of(s):
        return float(s["value"]) if numeric else categories.index(format_value(s["value"]))

    panels = [("fit", ["variance_explained"]), ("recovery", ["activation_auc", "seqnmf_similarity", "kernel_cosine"]),
              ("sparsity", ["hoyer_across_time", "gestures_in_use"]), ("stability", ["dissimilarity"])]
    figure = Figure(figsize=(13, 3.6), layout="constrained")
    FigureCanvasAgg(figure)  # Agg whatever pyplot's backend is
    axes = figure.subplots(1, len(panels), squeeze=False)[0]
    markers = "osD^v<>"
    for ax, (title, keys) in zip(axes, panels):
        for n, (rest, members) in enumerate(series.items()):
            for key in keys:
                xs, ys, errs = [], [], []
                for s in members:
                    if key == "dissimilarity":
                        stab = s["stability"]
                        mean = stab["dissimilarity_mean"]
                        err = stab["dissimilarity_std"] or 0.0
                    else:
                        summary = s["metrics"].get(key)
                        mean = None if summary is None else summary["mean"]
                        err = 0.0 if summary is None or summary["std"] is None else summary["std"]
                    if mean is not None:
                        xs.append(x_of(s)), ys.append(mean), errs.append(err)
                if xs:
                    name = METRICS.get(key, "seed-to-seed dissimilarity")
                    label = name if not rest else f"{name} ({rest})"
                    ax.errorbar(xs, ys, yerr=errs, marker=markers[n % len(markers)], capsize=3, label=label)
        chosen = next((s for s in settings if s["label"] == report["chosen"]), None)
        if chosen is not None:
            ax.axvline(x_of(chosen), color="0.5", linestyle=":", linewidth=1)
        ax.set_title(title)
        ax.set_xlabel(report["param"])
        if numeric and all(float(s["value"]) > 0 for s in settings) and \
                max(float(s["value"]) for s in settings) > 4 * min(float(s["value"]) for s in settings):
            ax.set_xscale("log")
            ax.set_xticks([float(v) for v in sorted({s["value"] for s in settings})])
            ax.set_xticklabels([format_value(v) for v in sorted({s["value"] for s in settings})])
            ax.minorticks_off()
        elif not numeric:
            ax.set_xticks(range(len(categories)))
            ax.set_xticklabels(categories)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7)
        else:
            ax.text(0.5, 0.5, "n/a", ha="center", va="center", transform=ax.transAxes, color="0.5")
    axes[-1].set_ylabel("1 − mean best-match cosine (lower = stable)", fontsize=8)
    figure.suptitle(report["reason"], fontsize=8)
    return figure


def write_report(report: dict, out_dir: str | os.PathLike, dpi: int = 110) -> dict[str, Path]:
    """Write ``compare.json``, ``compare.md`` and ``model_selection.png`` into ``out_dir``.

    Each file is written atomically; returns their paths.
    """
    from gestural.figures.style import save_figure

    out_dir = Path(out_dir)
    paths = {"json": out_dir / "compare.json", "markdown": out_dir / "compare.md",
             "figure": out_dir / "model_selection.png"}
    figure = model_selection_figure(report)  # drawn first: a drawing error writes nothing
    write_json(paths["json"], report)
    write_text(paths["markdown"], markdown_table(report))
    save_figure(figure, paths["figure"], dpi=dpi)
    return paths
