"""Trial resources from a preset's ``tune`` section: fractional CPUs and GPUs, custom resources, and the
GPU-to-custom-resource substitution that lets the same placement run on machines without GPUs."""

from __future__ import annotations

import torch

from ensdef.presets import TuneResources


def trial_resources(t: TuneResources, gpu_as: str | None = None) -> dict[str, float]:
    """``{"cpu": ..., "gpu": ..., **custom}`` for ``tune.with_resources``. With ``gpu_as``, the GPU request
    is made for that custom resource instead (a CPU-only machine exercising a GPU placement)."""
    out: dict[str, float] = {"cpu": t.cpus_per_trial, **t.resources_per_trial}
    if t.gpus_per_trial > 0:
        out[gpu_as or "gpu"] = t.gpus_per_trial
    return out


def threads_for(cpus: float) -> int:
    """Torch intra-op threads for a trial holding ``cpus`` CPUs (at least one)."""
    return max(1, int(cpus))


def use_trial_cpus() -> None:
    """Inside a trial: as many torch threads as the trial holds CPUs."""
    from ray import tune

    torch.set_num_threads(threads_for(tune.get_context().get_trial_resources().required_resources.get("CPU", 1.0)))
