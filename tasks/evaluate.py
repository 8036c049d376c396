"""One Ray task per defense row of an evaluation. Each task builds the same harness from a
:class:`~ensdef.evaluation.harness.HarnessSpec` and computes the row; the artifact store's cache is the shared
state, so a cell is computed once whichever worker runs it, and a rerun reads it. Tasks are spread over the
nodes (``SPREAD``), each asking for ``task_cpus`` CPUs (and ``task_gpus`` GPUs: its members then run on CUDA)."""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Sequence

import ray

from ensdef.evaluation.harness import DefenseResult, HarnessSpec, RowRunner, defense_result

log = logging.getLogger(__name__)


@ray.remote
def _row(spec: HarnessSpec, name: str) -> DefenseResult:
    return defense_result(spec, name)


def ray_runner(
    spec: HarnessSpec,
    address: str | None = None,
    workers: int | None = None,
    task_cpus: float = 1.0,
    task_gpus: float = 0.0,
) -> RowRunner:
    """A runner of defense rows as Ray tasks: on the cluster at ``address``, or on a new local Ray with
    ``workers`` tasks at a time."""
    if not ray.is_initialized():
        if address:
            ray.init(address=address, log_to_driver=False)
        else:
            # Ray counts a node's CPUs in whole numbers: fractional tasks may then run a few more at once
            ray.init(address="local", num_cpus=max(1, math.ceil((workers or 1) * task_cpus)), log_to_driver=False)
    device = "cuda" if task_gpus > 0 else spec.device

    def run(names: Sequence[str]) -> list[DefenseResult]:
        s = dataclasses.replace(spec, device=device)
        opts = {"num_cpus": task_cpus, "num_gpus": task_gpus, "scheduling_strategy": "SPREAD"}
        refs = [_row.options(name=f"evaluate:{n}", **opts).remote(s, n) for n in names]
        log.info("%d defense rows as Ray tasks", len(refs))
        return ray.get(refs)

    return run
