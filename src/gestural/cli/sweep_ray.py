"""The Ray side of ``gestural sweep``: join a cluster (or start a local instance), and run
each trial (:func:`gestural.cli.sweep_trial.run_trial`) as a Ray task, a bounded number at a
time, hearing of each as it ends.

``ray`` is passed in, never imported at the top: it is an optional dependency, and the module
that runs on the workers (this one, for :func:`_ray_task`) must import without it.
"""

from __future__ import annotations

import logging
import os
import signal
import time
from collections.abc import Callable, Sequence

from gestural.cli.sweep_trial import TrialResult, TrialSpec, run_trial

__all__ = ["SweepError", "import_ray", "connect", "check_resources", "run_on_ray"]

CANCEL_WAIT_S = 10  # for cancelled trials to end their processes before Ray shuts down
# A cluster's Ray Client server starts a server process per client; on a busy or cold node it
# can fail the first connection ("Initialization failure from server") and accept the next.
CLIENT_RETRY_WAITS_S = (2.0, 5.0)

logger = logging.getLogger(__name__)


class SweepError(RuntimeError):
    """A sweep that cannot start (one line: what and why)."""


def import_ray():
    """The ray module, or a one-line SweepError saying how to install it."""
    try:
        import ray
    except ImportError:
        raise SweepError("Ray is not installed: pip install 'gestural[sweep]' (or pip install 'ray[client]')") from None
    return ray


def connect(ray, address: str | None) -> str:
    """Join the cluster at ``address`` (``ray://host:port``, ``host:port``, ``auto``), else at
    $RAY_ADDRESS, else start a local instance on this machine; returns what it joined."""
    target = address or os.environ.get("RAY_ADDRESS") or "local"
    # Options for a new instance only: Ray refuses them when joining a running cluster.
    own = dict(include_dashboard=False) if target == "local" else {}
    waits = CLIENT_RETRY_WAITS_S if target.startswith("ray://") else ()
    for attempt in range(len(waits) + 1):
        try:
            ray.init(address=target, log_to_driver=False, logging_level=logging.WARNING, **own)
            break
        except Exception as error:  # Ray raises ConnectionError, ValueError, RuntimeError, ...
            message = (str(error).strip().splitlines() or [type(error).__name__])[0]
            if attempt == len(waits):
                raise SweepError(f"cannot connect to Ray at {target}: {message}") from None
            logger.warning("cannot connect to Ray at %s (%s); trying again in %g s", target, message, waits[attempt])
            ray.shutdown()
            time.sleep(waits[attempt])
    # ray.init made SIGTERM exit at once, which would orphan the running trials' processes:
    # make it a Ctrl-C instead, which cancels them (run_on_ray).
    signal.signal(signal.SIGTERM, _interrupt)
    return "a local Ray instance" if target == "local" else f"the Ray cluster at {target}"


def _interrupt(signum, frame):
    raise KeyboardInterrupt


def check_resources(ray, cpus: float, gpus: float) -> None:
    """Refuse per-trial resources that no node of the cluster has (the trials would wait forever)."""
    nodes = [node.get("Resources", {}) for node in ray.nodes() if node.get("Alive")]
    if not any(node.get("CPU", 0) >= cpus and node.get("GPU", 0) >= gpus for node in nodes):
        most = max(nodes, key=lambda node: (node.get("GPU", 0), node.get("CPU", 0)), default={})
        raise SweepError(f"no Ray node has {cpus:g} CPUs and {gpus:g} GPUs for a trial (the largest: "
                         f"{most.get('CPU', 0):g} CPUs, {most.get('GPU', 0):g} GPUs)")


def _ray_task(spec: TrialSpec) -> TrialResult:
    """The Ray task: one trial, with the node that ran it."""
    import ray

    result = run_trial(spec)
    result.node = ray.get_runtime_context().get_node_id()
    return result


def run_on_ray(ray, specs: Sequence[TrialSpec], *, cpus: float, gpus: float, max_concurrent: int | None,
               on_result: Callable[[TrialResult], None]) -> list[TrialResult]:
    """Run the trials as Ray tasks, at most ``max_concurrent`` at a time (None: as many as the
    cluster's resources allow); ``on_result`` hears of each as it ends. A task that Ray itself
    loses (a node gone, a worker killed) is a failed trial, not an error of the sweep."""
    task = ray.remote(_ray_task)
    waiting, running, results = list(specs), {}, []
    try:
        while waiting or running:
            while waiting and (max_concurrent is None or len(running) < max_concurrent):
                spec = waiting.pop(0)
                options = dict(num_cpus=cpus, num_gpus=gpus, name=f"sweep:{spec.name}")
                running[task.options(**options).remote(spec)] = spec
            done, _ = ray.wait(list(running), num_returns=1)
            for ref in done:
                spec = running.pop(ref)
                try:
                    result = ray.get(ref)
                except ray.exceptions.RayError as error:
                    result = TrialResult(spec.name, "ray task", 0.0, f"{type(error).__name__}: {error}\n")
                results.append(result)
                on_result(result)
    except KeyboardInterrupt:
        # A cancelled task gets a KeyboardInterrupt and ends its steps' processes (a forced
        # cancel would kill the worker and orphan them); give it a moment to do so.
        for ref in running:
            ray.cancel(ref)
        if running:
            ray.wait(list(running), num_returns=len(running), timeout=CANCEL_WAIT_S)
        raise
    return results
