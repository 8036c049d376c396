"""``ensdef tune --pool P --sweep``: an ASHA search over training hyper-parameters for every member of a pool.

The preset's ``tune.sweeps[P]`` gives the space (TrainConfig fields to ranges) and the sample count. Each
trial trains one member with one draw into a private store inside its Tune checkpoint; ASHA stops the weak
ones on their per-epoch validation score. Per member, the finished trial with the best score is copied into
the artifact store under the member's own name, with the chosen values in its manifest.
"""

from __future__ import annotations

import dataclasses
import logging
import tempfile
from collections.abc import Callable
from typing import Any

from ray import tune
from ray.tune.schedulers import ASHAScheduler

from ensdef.attacks.cache import cache_key
from ensdef.config import to_plain
from ensdef.data import Dataset, load_dataset
from ensdef.errors import ConfigError, EnsdefError
from ensdef.presets import Preset, SweepConfig, TrainConfig
from ensdef.store import ArtifactStore
from ensdef.training.pools import MemberPlan, Pool, plan_pool, starts_from, train_member
from tune.pools import TuneRun, storage_path, tuner
from tune.resources import trial_resources, use_trial_cpus

log = logging.getLogger(__name__)

SPACES: dict[str, Callable[..., Any]] = {
    "loguniform": tune.loguniform,
    "uniform": tune.uniform,
    "choice": lambda *values: tune.choice(list(values)),
}
TRAIN_FIELDS = frozenset(f.name for f in dataclasses.fields(TrainConfig))
# Settings of a plan beyond its TrainConfig that a sweep may vary (their validation scores stay comparable:
# RLS's is the accuracy of N sampled networks whatever M and K). A denoiser's noise level is not one: its
# validation MSE is measured under its own noise, so levels are members of the pool, not a sweep axis.
PLAN_KNOBS: dict[str, Callable[[MemberPlan, Any], MemberPlan]] = {
    "m": lambda p, v: dataclasses.replace(
        p, extra={**p.extra, "build_kwargs": {**p.extra["build_kwargs"], "m": int(v)}}
    ),
    "k": lambda p, v: dataclasses.replace(p, extra={**p.extra, "k": int(v)}),
}


def search_space(sweep: SweepConfig) -> dict[str, Any]:
    """Tune distributions for ``sweep.space``: each key a TrainConfig field or a ``PLAN_KNOBS`` name, each
    value ``{kind: args}``."""
    out = {}
    for name, spec in sweep.space.items():
        if name not in TRAIN_FIELDS | PLAN_KNOBS.keys():
            known = ", ".join(sorted(TRAIN_FIELDS | PLAN_KNOBS.keys()))
            raise ConfigError(f"sweep field {name!r} is not a training setting or plan knob ({known})")
        if len(spec) != 1 or next(iter(spec)) not in SPACES:
            raise ConfigError(f"sweep field {name!r}: give one of {sorted(SPACES)}, got {spec}")
        kind, args = next(iter(spec.items()))
        out[name] = SPACES[kind](*args)
    return out


def swept(plan: MemberPlan, values: dict[str, Any]) -> MemberPlan:
    """``plan`` with the trial's values (training settings and plan knobs) and a record of them in
    ``extra["sweep"]``."""
    train = {k: v for k, v in values.items() if k in TRAIN_FIELDS}
    plan = dataclasses.replace(plan, train=dataclasses.replace(plan.train, **train))
    for k, v in values.items():
        if k not in TRAIN_FIELDS:
            plan = PLAN_KNOBS[k](plan, v)
    return dataclasses.replace(plan, extra={**plan.extra, "sweep": dict(values)})


def sweep_trial(config: dict[str, Any], *, plans: dict[str, MemberPlan], data: Dataset) -> None:
    """Train ``plans[config["member"]]`` with the sampled values into a store inside the trial checkpoint."""
    use_trial_cpus()
    values = {k: v for k, v in config.items() if k != "member"}
    plan = swept(plans[config["member"]], values)
    with tempfile.TemporaryDirectory() as d:
        m = train_member(plan, data, ArtifactStore(d), lambda e, s: tune.report({"score": s, "epoch": e}))
        best = m.metrics.get("val_accuracy", -m.metrics.get("val_mse", 0.0))
        tune.report({"score": best, "final": True, **values}, checkpoint=tune.Checkpoint.from_directory(d))


def sweep_pool(preset: Preset, store: ArtifactStore, pool: Pool, run: TuneRun | None = None) -> dict[str, Any]:
    """ASHA sweep of ``preset.tune.sweeps[pool]`` over every member of ``pool``; the winners go to ``store``."""
    run = run or TuneRun()
    if pool.value not in preset.tune.sweeps:
        raise ConfigError(f"preset {preset.name} has no tune.sweeps.{pool.value}; sweeps: {sorted(preset.tune.sweeps)}")
    sweep = preset.tune.sweeps[pool.value]
    plans = {p.name: p for p in plan_pool(preset, pool)}
    if any(starts_from(p) for p in plans.values()):
        raise ConfigError(f"preset {preset.name}: {pool.value} has a warm start; sweep it without one")
    base = run.name or f"{preset.name}-sweep-{pool.value}-{cache_key(to_plain([plans, sweep]))[:8]}"
    data = load_dataset(preset.dataset, preset.data_root)  # once, into the object store for every trial
    trainable = tune.with_resources(
        tune.with_parameters(sweep_trial, plans=plans, data=data), trial_resources(preset.tune, run.gpu_as)
    )
    chosen, trials = {}, 0
    for member in sorted(plans):
        # one experiment (and one ASHA) per member: validation scores of different members (e.g. MSE under
        # different noise types) are not comparable, and a shared ASHA stopped every trial of the harder member
        grid = tuner(
            trainable,
            {"member": member, **search_space(sweep)},
            storage_path(store, run),
            f"{base}-{member}",
            run.resume,
            num_samples=sweep.samples,
            scheduler=ASHAScheduler(
                metric="score",
                mode="max",
                grace_period=sweep.grace_period,
                reduction_factor=sweep.reduction_factor,
                max_t=plans[member].train.epochs + 1,
            ),
            max_concurrent_trials=preset.tune.max_concurrent or None,
            reuse_actors=True,  # a finished trial's worker (torch imported) takes the next trial
        ).fit()
        trials += len(grid)
        done = [r for r in grid if r.checkpoint and r.metrics.get("final")]
        if not done:
            raise EnsdefError(f"{member}: no sweep trial finished (errors: {[str(r.error) for r in grid if r.error]})")
        best = max(done, key=lambda r: r.metrics["score"])
        with best.checkpoint.as_directory() as d:
            src = ArtifactStore(d)
            model, manifest = src.load_model(member)
            store.save_model(model, manifest)
        chosen[member] = {
            "score": best.metrics["score"],
            "values": manifest.extra["sweep"],
            "finished_scores": sorted(r.metrics["score"] for r in done),
            "trials": len(grid),
        }
    return {"store": store.root, "pool": pool.value, "experiment": base, "chosen": chosen, "trials": trials}
