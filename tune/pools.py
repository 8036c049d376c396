"""``ensdef tune --pool``: train a preset's pools with one Tune trial per member, in parallel, resumable.

The experiment lives under ``storage`` (a local folder by default, any URI Ray Tune accepts on a cluster);
running the same command again restores it with ``Tuner.restore``: finished trials are not run again, and
unfinished or errored ones are. Members are written to the artifact store as they finish; the pools' post
steps (DeT's reformer list) run in the driver afterwards, as in ``ensdef train``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ray import tune

from ensdef.attacks.cache import cache_key
from ensdef.config import to_plain
from ensdef.data import load_dataset
from ensdef.errors import ConfigError, EnsdefError
from ensdef.presets import Preset
from ensdef.store import ArtifactStore
from ensdef.training.cost import longest_first
from ensdef.training.pools import POST_STEPS, MemberPlan, Pool, plan_pool, stages
from tune.resources import trial_resources
from tune.trainables import train_member_trial

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TuneRun:
    """Where and how a Tune experiment runs. ``storage``: None = ``<store>/_tune`` for a local store."""

    storage: str | None = None
    name: str | None = None
    gpu_as: str | None = None  # request this custom resource instead of GPUs (CPU-only placement tests)
    resume: bool = True


def storage_path(store: ArtifactStore, run: TuneRun) -> str:
    if run.storage:
        return run.storage
    if "://" in store.root:
        raise ConfigError(f"store {store.root} is remote: give a Tune storage path every node can reach")
    return str((Path(store.root) / "_tune").resolve())


def tuner(
    trainable: Any, param_space: dict[str, Any], storage: str, name: str, resume: bool, **tune_config: Any
) -> tune.Tuner:
    """A new Tuner, or the experiment at ``storage/name`` restored (finished trials kept) when ``resume``."""
    path = f"{storage.rstrip('/')}/{name}"
    if resume and tune.Tuner.can_restore(path):
        log.info("restoring Tune experiment %s", path)
        return tune.Tuner.restore(path, trainable, resume_errored=True, param_space=param_space)
    return tune.Tuner(
        trainable,
        param_space=param_space,
        tune_config=tune.TuneConfig(**tune_config),
        run_config=tune.RunConfig(name=name, storage_path=storage, verbose=0),
    )


def tune_pools(preset: Preset, store: ArtifactStore, pools: list[Pool], run: TuneRun | None = None) -> dict[str, Any]:
    """Train every member of ``pools`` as parallel Tune trials into ``store``; returns what was stored."""
    run = run or TuneRun()
    plans: dict[str, MemberPlan] = {}
    pool_of: dict[str, Pool] = {}
    for pool in pools:
        for p in plan_pool(preset, pool):
            plans[p.name], pool_of[p.name] = p, pool
    data = load_dataset(preset.dataset, preset.data_root)  # once, into the object store for every trial
    trainable = tune.with_resources(
        tune.with_parameters(train_member_trial, plans=plans, preset=preset, store=store.root, data=data),
        trial_resources(preset.tune, run.gpu_as),
    )
    # the plans' digest names the experiment: a changed preset starts a new one (the store still skips members
    # trained with an unchanged plan), an unchanged one restores
    digest = cache_key(to_plain(sorted(plans.values(), key=lambda p: p.name)))[:8]
    name = run.name or f"{preset.name}-pools-{'-'.join(p.value for p in pools)}-{digest}"
    out: list[dict[str, Any]] = []
    parts = stages(list(plans.values()))  # a warm start's shared member trains before the members it starts
    for i, stage in enumerate(parts):
        t = tuner(
            trainable,
            # longest first (measured cost): a long member started last would run alone while the other slots idle
            {"member": tune.grid_search([p.name for p in longest_first(stage, data)])},
            storage_path(store, run),
            name if len(parts) == 1 else f"{name}-stage{i + 1}",
            run.resume,
            max_concurrent_trials=preset.tune.max_concurrent or None,
            reuse_actors=True,  # a finished trial's worker (torch imported) takes the next trial
        )
        errors = []
        for r in t.fit():
            if r.error is not None:
                errors.append(f"{r.config.get('member')}: {r.error}")
                continue
            m = r.metrics
            out.append(
                {"name": m["member"], "pool": pool_of[m["member"]].value, "skipped": m["skipped"], "path": r.path}
            )
        if errors:
            raise EnsdefError(f"{len(errors)} Tune trials failed: " + "; ".join(errors))
        lost = [p.name for p in stage if not store.verify(p.name).ok]  # this stage's members, each read once
        if lost:  # a trial wrote where this process cannot read (a node's own disk): nothing may vanish silently
            raise EnsdefError(
                f"Tune trained {', '.join(lost)} but store {store.root} does not hold them as this process sees it; "
                "on a cluster the store must be a folder every node shares or a URI (s3://, gs://)"
            )
    post = {}
    for pool in pools:
        if pool in POST_STEPS:
            post[pool.value] = POST_STEPS[pool].run(preset, data, store, True)
    return {"store": store.root, "preset": preset.name, "experiment": name, "artifacts": out, "post": post}
