"""Model selection across DVC experiments: which setting (e.g. ``num_gestures``) to keep.

A sweep (``dvc exp run --queue -S num_gestures=20,40,100 -S seed=0,1,2``) leaves one
experiment per (setting, seed); :mod:`gestural.cli.experiments` reads them from ``dvc exp show
--json``. This module groups them by setting (all params except the seed and knobs that do
not change the result, such as ``device``), and reports for each setting, across seeds:

* held-out fit, recovery and sparsity from ``metrics/eval.json`` (mean, std, min, max);
* the **stability** of the learned gestures: the mean seqNMF-style dissimilarity between
  the kernel sets of every pair of seeds (:func:`kernel_set_dissimilarity`; 0 = the same
  gestures whatever the seed).

and picks one setting (:func:`choose_setting`): among settings whose mean recovery is within
``tolerance`` of the best, the one with the fewest gestures (parsimony), ties broken by
stability. :func:`gestural.cli.compare_report.write_report` writes the comparison as JSON,
a markdown table and a figure.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping, Sequence
from itertools import combinations

import numpy as np

from gestural.cli.experiments import CompareError, Experiment
from gestural.training.config import EXECUTION_ONLY, RUN_ONLY, TOP_LEVEL

__all__ = [
    "METRICS",
    "DEFAULT_IGNORED",
    "kernel_set_dissimilarity",
    "compare_experiments",
    "choose_setting",
]

# metrics/eval.json "neural" keys reported, with a short label (higher is better for all
# but the sparsity ones, which are descriptive).
METRICS: dict[str, str] = {
    "variance_explained": "variance explained",
    "activation_auc": "activation AUC",
    "seqnmf_similarity": "seqNMF similarity",
    "kernel_cosine": "kernel cosine",
    "hoyer_across_time": "Hoyer (time)",
    "gestures_in_use": "gestures in use",
    "distinct_gestures": "distinct gestures",
}

# Params that do not define a setting: the seed (what varies *within* a setting) and knobs
# that change where or how fast a run goes, not what it learns. An entry also matches every
# key below it ("plot" covers "plot.dpi").
DEFAULT_IGNORED: tuple[str, ...] = (
    "seed", *(key if key in TOP_LEVEL else f"train.{key}" for key in RUN_ONLY + EXECUTION_ONLY),
    "evaluate.batch_size", "evaluate.examples", "plot",
)


# ----------------------------------------------------------------------- stability


def _nonzero(kernels: np.ndarray) -> np.ndarray:
    # A kernel that is all zero is no gesture (and has no defined cosine).
    return kernels[np.abs(kernels).reshape(len(kernels), -1).sum(axis=1) > 0]


def kernel_set_dissimilarity(a, b, max_lag: int | None = None) -> float:
    """seqNMF-style dissimilarity of two sets of gesture kernels (Mackevicius et al. 2019).

    With S[i, j] the lag-tolerant cosine of kernel i of ``a`` and kernel j of ``b``
    (:func:`gestural.evaluation.recovery.lag_tolerant_cosine`), each kernel's best match in the other
    set is ``max_j S[i, j]`` (for ``a``) and ``max_i S[i, j]`` (for ``b``). The similarity is
    the mean of the two directions, each averaged over ``m = min(|a|, |b|)`` kernels: every
    kernel of the smaller set, and the ``m`` best-matched ones of the larger set (spare
    kernels of a larger set are not held against it). For equal sizes this is seqNMF's
    ``1 - diss``.

    Parameters
    ----------
    a, b : array, (Ka, C, L) and (Kb, C, L)
        Kernel sets (all-zero kernels are ignored).
    max_lag : int, optional
        Largest shift considered by the cosine; default any overlap.

    Returns
    -------
    float
        ``1 - similarity`` in [0, 1]: 0 for identical sets (up to order and shifts), near 1
        for sets with nothing in common.
    """
    from gestural.evaluation.recovery import kernel_recovery

    a, b = _nonzero(np.asarray(a, dtype=np.float64)), _nonzero(np.asarray(b, dtype=np.float64))
    if len(a) == 0 or len(b) == 0:
        return 1.0
    cosine = np.asarray(kernel_recovery(a, b, max_lag)["cosine_matrix"], dtype=np.float64)
    m = min(cosine.shape)
    best_a = np.sort(cosine.max(axis=1))[::-1][:m]  # each kernel of a: best match in b
    best_b = np.sort(cosine.max(axis=0))[::-1][:m]
    similarity = 0.5 * (best_a.mean() + best_b.mean())
    return float(np.clip(1.0 - similarity, 0.0, 1.0))


def _stability(names: Sequence[str], revs: Sequence[str], kernels: Mapping[str, np.ndarray]) -> dict:
    """Pairwise dissimilarities of one setting's runs (those whose kernels are known)."""
    present = [(n, r) for n, r in zip(names, revs) if r in kernels]
    matrix = np.zeros((len(present), len(present)))
    for (i, (_, ri)), (j, (_, rj)) in combinations(enumerate(present), 2):
        matrix[i, j] = matrix[j, i] = 0.0 if ri == rj else kernel_set_dissimilarity(kernels[ri], kernels[rj])
    pairs = matrix[np.triu_indices(len(present), k=1)]
    return {
        "runs": [n for n, _ in present],
        "pairs": int(pairs.size),
        "dissimilarity_mean": float(pairs.mean()) if pairs.size else None,
        "dissimilarity_std": float(pairs.std(ddof=1)) if pairs.size > 1 else None,
        "dissimilarity_max": float(pairs.max()) if pairs.size else None,
        "matrix": matrix.round(6).tolist(),
    }


# ----------------------------------------------------------------------- grouping


def _ignored(key: str, ignore: Sequence[str]) -> bool:
    return any(key == name or key.startswith(f"{name}.") for name in ignore)


def _hashable(value):
    return json.dumps(value, sort_keys=True)


def _summary(values: Sequence[float]) -> dict | None:
    values = [v for v in values if v is not None and math.isfinite(v)]
    if not values:
        return None
    array = np.asarray(values, dtype=np.float64)
    return {
        "mean": float(array.mean()),
        # Sample std across seeds; null for a single run (no spread to speak of).
        "std": float(array.std(ddof=1)) if array.size > 1 else None,
        "min": float(array.min()),
        "max": float(array.max()),
        "n": int(array.size),
    }


def format_value(value) -> str:
    if isinstance(value, bool) or value is None:
        return json.dumps(value)
    if isinstance(value, (list, dict)):
        return json.dumps(value, separators=(",", ":"))
    return str(value)


def compare_experiments(experiments: Sequence[Experiment],
                        kernels: Mapping[str, np.ndarray] | Callable[[list[str]], tuple[dict, dict]] | None = None,
                        *, param: str = "num_gestures", ignore: Sequence[str] = DEFAULT_IGNORED,
                        tolerance: float = 0.01, skipped: Sequence[dict] = ()) -> dict:
    """Group experiments by setting, summarize them across seeds and choose a setting.

    Parameters
    ----------
    experiments : list of Experiment
        Finished experiments (:func:`gestural.cli.experiments.experiments_from_exp_show`).
    kernels : dict rev -> (K, C, L) array, or callable, optional
        Each experiment's gesture kernels, or a function of the list of revs returning
        ``(kernels, errors)`` like :func:`gestural.cli.experiments.load_kernels`. None: no stability.
    param : str
        The swept param: the x axis of the report, and the one that parsimony minimizes.
    ignore : sequence of str
        Params (or sections) that do not define a setting; default :data:`DEFAULT_IGNORED`.
    tolerance : float
        Settings whose mean recovery is within this of the best compete on parsimony.
    skipped : list of dict
        Experiments left out upstream, recorded in the report.

    Returns
    -------
    dict
        ``settings`` (one per setting, in order of ``param``), ``experiments``, ``chosen``
        (the chosen setting's label or None), ``reason``, ``rule``, ``recovery_metric``,
        ``param``, ``skipped`` and ``kernel_errors``.
    """
    if not experiments:
        raise CompareError("no finished experiment with metrics to compare"
                           + (f" (skipped: {', '.join(s['name'] + ' ' + s['reason'] for s in skipped)})"
                              if skipped else ""))
    if not any(param in exp.params for exp in experiments):
        raise CompareError(f"no experiment has the param {param!r} "
                           f"(params: {', '.join(sorted(experiments[0].params)[:12])}, ...)")
    if callable(kernels):
        kernels, kernel_errors = kernels([exp.rev for exp in experiments])
    else:
        kernels, kernel_errors = dict(kernels or {}), {}

    keys = sorted({k for exp in experiments for k in exp.params if not _ignored(k, ignore)})
    varying = [k for k in keys if len({_hashable(exp.params.get(k)) for exp in experiments}) > 1]
    label_keys = [param] + [k for k in varying if k != param]

    groups: dict[tuple, list[Experiment]] = {}
    for exp in experiments:
        setting = tuple(_hashable(exp.params.get(k)) for k in keys)
        groups.setdefault(setting, []).append(exp)

    settings = []
    for members in groups.values():
        first = members[0]
        label = ", ".join(f"{k}={format_value(first.params.get(k))}" for k in label_keys)
        members = sorted(members, key=lambda e: (_hashable(e.seed), e.name))
        summary = {
            "label": label,
            "value": first.params.get(param),
            "params": {k: first.params.get(k) for k in label_keys},
            "runs": [e.name for e in members],
            "revs": [e.rev for e in members],
            "seeds": [e.seed for e in members],
            "metrics": {key: _summary([e.metrics.get(key) for e in members]) for key in METRICS},
            "stability": _stability([e.name for e in members], [e.rev for e in members], kernels),
        }
        settings.append(summary)
    settings.sort(key=lambda s: order_key(s["value"]) + (s["label"],))

    def known(key: str) -> bool:
        return all((s["metrics"][key] or {}).get("mean") is not None for s in settings)

    # Planted activations (both synthetic corpora) first, then planted kernels, else the fit.
    recovery = next((key for key in ("activation_auc", "seqnmf_similarity") if known(key)), "variance_explained")
    chosen, reason = choose_setting(settings, recovery, tolerance, param)
    return {
        "param": param,
        "recovery_metric": recovery,
        "tolerance": tolerance,
        "rule": (f"among settings whose mean {METRICS[recovery]} is within {tolerance} of the best, the one "
                 f"with the smallest {param} (parsimony); ties broken by stability (lowest mean dissimilarity "
                 f"across seeds), then by {METRICS[recovery]}"),
        "chosen": chosen,
        "reason": reason,
        "settings": settings,
        "experiments": [{"name": e.name, "rev": e.rev, "seed": e.seed, "setting": _label_of(e, settings),
                         "metrics": {k: e.metrics.get(k) for k in METRICS}} for e in experiments],
        "ignored_params": list(ignore),
        "skipped": list(skipped),
        "kernel_errors": kernel_errors,
    }


def order_key(value) -> tuple:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return (0, float(value), "")
    return (1, 0.0, format_value(value))


def _label_of(exp: Experiment, settings: Sequence[dict]) -> str | None:
    return next((s["label"] for s in settings if exp.rev in s["revs"]), None)


def choose_setting(settings: Sequence[dict], recovery: str, tolerance: float = 0.01,
                   param: str = "num_gestures") -> tuple[str | None, str]:
    """Pick a setting: near-best recovery, then fewest gestures, then most stable.

    Parameters
    ----------
    settings : list of dict
        The ``settings`` of :func:`compare_experiments` (``label``, ``value``,
        ``metrics[recovery]["mean"]``, ``stability["dissimilarity_mean"]``).
    recovery : str
        The metric compared (higher is better).
    tolerance : float
        How far below the best mean a setting may be and still compete.
    param : str
        Name of the param minimized among the competitors (for the message).

    Returns
    -------
    (label or None, reason)
    """
    scored = [s for s in settings if (s["metrics"].get(recovery) or {}).get("mean") is not None]
    if not scored:
        return None, f"no setting has a mean {METRICS.get(recovery, recovery)}"
    best = max(scored, key=lambda s: s["metrics"][recovery]["mean"])
    best_mean = best["metrics"][recovery]["mean"]
    competitors = [s for s in scored if s["metrics"][recovery]["mean"] >= best_mean - tolerance - 1e-12]

    def stability(s):
        value = s["stability"]["dissimilarity_mean"]
        return math.inf if value is None else value

    def rank(s):
        # Non-numeric values of the param (e.g. model: ae/vae) have no "smaller": all tie.
        numeric = order_key(s["value"])
        return (numeric[1] if numeric[0] == 0 else 0.0, stability(s), -s["metrics"][recovery]["mean"])

    choice = min(competitors, key=rank)
    name = METRICS.get(recovery, recovery)
    mean = choice["metrics"][recovery]["mean"]
    stab = choice["stability"]["dissimilarity_mean"]
    stab_text = "n/a" if stab is None else f"{stab:.3f}"
    numeric = order_key(choice["value"])[0] == 0
    if len(competitors) == 1:
        why = f"the best mean {name} ({mean:.3f}), no other setting within {tolerance} of it"
    else:
        lead = (f"the best mean {name} ({mean:.3f})" if choice is best else
                f"mean {name} {mean:.3f}, within {tolerance} of the best ({best_mean:.3f}, {best['label']})")
        others = f"{len(competitors)} settings within {tolerance} of the best"
        if not numeric:
            why = f"{lead}; of {others}, the most stable gestures"
        else:
            why = f"{lead}; of {others}, the smallest {param}"
            ties = [s for s in competitors if rank(s)[0] == rank(choice)[0]]
            if len(ties) > 1:
                why += f", and of {len(ties)} with that {param}, the most stable gestures"
    return choice["label"], f"chose {choice['label']}: {why} (seed-to-seed dissimilarity {stab_text})"


# ------------------------------------------------------------------------- outputs
