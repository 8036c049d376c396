"""Training for serving: the order that makes each defense servable soonest, how long each step should take,
and the progress a service reports while the rest trains.

:func:`schedule` lists the pool steps that the named defenses still need, ordered greedily: next come the
pools of the defense that is cheapest to complete, so ``target`` can answer after a minute while the
temperature networks train last. Estimates are the training cost model's (:mod:`ensdef.training.cost`)
times a calibration factor; :class:`Progress` refits the factor from every member it times, keeps members
done out of total per defense, and writes it all to the store (:data:`TRAINING_PROGRESS`) where the serving
layer reads it (:func:`training_view`).
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from tqdm.auto import tqdm

from ensdef.data import Dataset
from ensdef.presets import Preset
from ensdef.store import ArtifactStore, Manifest
from ensdef.training.cost import training_costs
from ensdef.training.pools import POST_STEPS, MemberPlan, Pool, plan_pool, stored_as_planned, train_pool

log = logging.getLogger(__name__)
POST = "(post step)"

TRAINING_PROGRESS = "training-progress"
"""The JSON artifact a scheduled training run keeps up to date (see :meth:`Progress.to_json`)."""

DEFENSE_POOLS: dict[str, tuple[Pool, ...]] = {
    "target": (Pool.TARGET,),
    "denoising": (Pool.TARGET, Pool.DENOISERS),
    "verification": (Pool.TARGET, Pool.VERIFIERS),
    "modef": (Pool.TARGET, Pool.VERIFIERS, Pool.DENOISERS),
    "modef-1tm": (Pool.TARGET, Pool.VERIFIERS, Pool.DENOISERS),
    "modef-mtm": (Pool.TARGET, Pool.VERIFIERS, Pool.DENOISERS),
    "det": (Pool.TARGET, Pool.REFORMERS),
    "rls": (Pool.RLS,),
    "noisy-vote": (Pool.TEMPNETS,),
    "adv-training": (Pool.BASELINES,),
    "distillation": (Pool.BASELINES,),
}
"""The pools each served defense is built from (with their post steps: team selection, the DeT list)."""

PRIOR_FACTOR = 2.0
"""Wall seconds per cost-model second before any member is timed: augmentation, optimiser and validation on
top of the forward and backward pass (measured on the 2-core CPU machine: 1.8 for the target, 2.8 for a
temperature network with noise augmentation)."""


@dataclass(frozen=True)
class Step:
    """One pool to train: ``cost`` (cost-model seconds) of each member still to train, and of the post step."""

    pool: Pool
    total: int  # members the pool plans
    todo: dict[str, float]
    post_cost: float
    unlocks: tuple[str, ...]  # defenses servable once this step is done

    @property
    def cost(self) -> float:
        return sum(self.todo.values()) + self.post_cost


def _post_cost(pool: Pool, preset: Preset, plans: list[MemberPlan], cost: dict[str, float], data: Dataset) -> float:
    """DeT's cross-training: every reformer is trained again with each other one for ``cross_train.epochs``;
    the team selection and the list choice are seconds."""
    if pool is not Pool.REFORMERS:
        return 0.0
    per_epoch = sum(cost[p.name] / p.train.epochs for p in plans)
    return per_epoch * preset.det.cross_train.epochs * max(len(plans) - 1, 0)


Costs = Callable[[list[MemberPlan], Dataset], dict[str, float]]


def schedule(
    preset: Preset,
    data: Dataset,
    store: ArtifactStore,
    defenses: Iterable[str],
    costs: Costs = training_costs,
) -> list[Step]:
    """The pool steps ``defenses`` still need, cheapest defense first by ``costs`` (plan name -> seconds; the
    training cost model by default). A pool is left out when every member is stored as planned and its post
    step's artifact exists. Raises KeyError for a defense without pools."""
    wanted = [d for d in defenses]
    pools = {p for d in wanted for p in DEFENSE_POOLS[d]}
    planned: dict[Pool, tuple[list[MemberPlan], list[MemberPlan], bool]] = {}
    for pool in sorted(pools, key=list(Pool).index):
        plans = plan_pool(preset, pool)
        todo = [p for p in plans if not stored_as_planned(store, p)]
        post = pool in POST_STEPS and (bool(todo) or not store.has_json(POST_STEPS[pool].artifact))
        if todo or post:
            planned[pool] = (plans, todo, post)
    # every pool's members costed in one call (timed in the same turns): a load that comes and goes while
    # they are timed cannot put a cheap pool behind an expensive one
    timed = [p for pool, (plans, todo, _) in planned.items() if todo or pool is Pool.REFORMERS for p in plans]
    cost = costs(timed, data) if timed else {}
    steps = {
        pool: Step(
            pool,
            len(plans),
            {p.name: cost[p.name] for p in todo},
            _post_cost(pool, preset, plans, cost, data) if post else 0.0,
            (),
        )
        for pool, (plans, todo, post) in planned.items()
    }
    order: list[Step] = []
    done: set[Pool] = set()
    left = set(wanted)
    while left:
        todo = {d: [p for p in DEFENSE_POOLS[d] if p in steps and p not in done] for d in left}
        best = min(sorted(left), key=lambda d: sum(steps[p].cost for p in todo[d]))
        order += [steps[p] for p in todo[best]]
        done |= set(todo[best])
        ready = {d for d in left if all(p not in steps or p in done for p in DEFENSE_POOLS[d])}
        if order:
            order[-1] = dataclasses.replace(order[-1], unlocks=order[-1].unlocks + tuple(sorted(ready)))
        left -= ready
    return order


class Progress:
    """Where a scheduled run stands: members done, seconds spent, the calibration factor, and per defense its
    members done out of total and the estimated seconds until it can be served."""

    def __init__(self, steps: list[Step], store: ArtifactStore, preset: Preset, defenses: Iterable[str]) -> None:
        self.steps, self.store = steps, store
        self.defenses = {d: DEFENSE_POOLS[d] for d in defenses}
        self.totals = {p: len(plan_pool(preset, p)) for d in self.defenses for p in self.defenses[d]}
        self.done = {p: self.totals[p] for p in self.totals}
        for s in steps:
            self.done[s.pool] = s.total - len(s.todo)
        self.finished: set[Pool] = {p for p in self.totals if p not in {s.pool for s in steps}}
        self.left = {s.pool: dict(s.todo) | {POST: s.post_cost} for s in steps}
        self.spent_cost = self.spent_s = 0.0
        self.state = "training"
        self.current: Pool | None = None  # the pool training now

    @property
    def factor(self) -> float:
        """Measured wall seconds per cost-model second, once a member has been timed; the prior before."""
        return self.spent_s / self.spent_cost if self.spent_cost > 0 else PRIOR_FACTOR

    def seconds_left(self, pool: Pool | None = None) -> float:
        """Estimated wall seconds until ``pool``'s step ends (every step when None)."""
        total = 0.0
        for s in self.steps:
            total += sum(self.left[s.pool].values())
            if s.pool is pool:
                break
        return total * self.factor

    def record(self, pool: Pool, item: str, seconds: float) -> None:
        """``item`` (a member to train, or :data:`POST`) of ``pool`` finished in ``seconds``."""
        cost = self.left[pool].pop(item, 0.0)
        if cost > 0:
            self.spent_cost += cost
            self.spent_s += seconds
        if item != POST:
            self.done[pool] += 1
        if not self.left[pool]:
            self.finished.add(pool)

    def defense_state(self, d: str) -> dict[str, Any]:
        pools = self.defenses[d]
        if all(p in self.finished for p in pools):
            return {"state": "ready"}
        last = max((s for s in self.steps if s.pool in pools), key=self.steps.index)
        return {
            "state": "training" if self.current in pools else "queued",
            "members_done": sum(self.done[p] for p in pools),
            "members_total": sum(self.totals[p] for p in pools),
            "eta_s": round(self.seconds_left(last.pool), 1),
        }

    def to_json(self) -> dict[str, Any]:
        """``{"state": training | done | interrupted | failed, "updated": unix seconds, "pid", "defenses":
        {name: {"state": ready | training | queued, "members_done", "members_total", "eta_s"}}}``."""
        return {
            "state": self.state,
            "updated": time.time(),
            "pid": os.getpid(),
            "defenses": {d: self.defense_state(d) for d in sorted(self.defenses)},
        }

    def save(self) -> None:
        self.store.save_json(TRAINING_PROGRESS, self.to_json())


DEPLOY_RETRY_S = 30
"""``Retry-After`` for a defense whose members are all trained but that is not deployed yet."""


def training_view(payload: dict[str, Any], now: float | None = None) -> dict[str, dict[str, Any]]:
    """The defenses a :data:`TRAINING_PROGRESS` payload says are training, queued or trained (``ready``: to be
    deployed next), each with ``members_done``, ``members_total`` and ``retry_after_s`` (its estimate less
    the time since the payload was written, at least 5 s; :data:`DEPLOY_RETRY_S` when ready); empty when the
    run is not training any more."""
    if payload.get("state") != "training":
        return {}
    age = (time.time() if now is None else now) - float(payload.get("updated", 0.0))
    out = {}
    for d, v in payload.get("defenses", {}).items():
        if v.get("state") == "ready":
            out[d] = {"state": "deploying", "retry_after_s": DEPLOY_RETRY_S}
        elif v.get("state") in ("training", "queued"):
            out[d] = {
                "state": v["state"],
                "members_done": int(v.get("members_done", 0)),
                "members_total": int(v.get("members_total", 0)),
                "retry_after_s": max(5, math.ceil(float(v.get("eta_s", 0.0)) - age)),
            }
    return out


def describe(steps: list[Step], factor: float = PRIOR_FACTOR) -> str:
    """The plan as the terminal shows it before training starts: each pool, its members to train, the
    estimated time, and the defenses it makes servable."""
    lines = [f"training plan ({sum(len(s.todo) for s in steps)} members; estimates from the training cost model):"]
    total = 0.0
    for i, s in enumerate(steps, 1):
        est = s.cost * factor
        total += est
        kept = s.total - len(s.todo)
        lines.append(
            f"  {i}. {s.pool.value:<10} {len(s.todo)} of {s.total} members"
            + (f" ({kept} kept)" if kept else "")
            + f", about {_duration(est)}"
            + (f"; then serves {', '.join(s.unlocks)}" if s.unlocks else "")
        )
    lines.append(f"  total about {_duration(total)}")
    return "\n".join(lines)


def _duration(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 90 else f"{seconds / 60:.1f} min"


def run_schedule(
    steps: list[Step],
    preset: Preset,
    data: Dataset,
    store: ArtifactStore,
    progress: Progress,
    on_step: Callable[[Step], None] | None = None,
) -> list[Manifest]:
    """Train ``steps`` in order (members stored as planned are kept), one progress bar per pool with the time
    left; ``progress`` is written to the store after every member. ``on_step(step)`` runs after each step
    (the serving layer deploys what the step made servable). On an exception (Ctrl-C included) the progress
    is saved as interrupted or failed and the exception propagates: finished members stay in the store."""
    out: list[Manifest] = []
    progress.save()
    try:
        for step in steps:
            out += _run_step(step, preset, data, store, progress)
            if on_step is not None:
                on_step(step)
        progress.state = "done"
    except KeyboardInterrupt:
        progress.state = "interrupted"
        raise
    except BaseException:
        progress.state = "failed"
        raise
    finally:
        progress.save()
    return out


def _run_step(step: Step, preset: Preset, data: Dataset, store: ArtifactStore, progress: Progress) -> list[Manifest]:
    bar = tqdm(
        total=max(1, round(step.cost * progress.factor)),
        desc=f"{step.pool.value} 0/{len(step.todo)}",
        unit="s",
        bar_format="{desc}: {percentage:3.0f}%|{bar}| [{elapsed}<{remaining}]",
        disable=None,
    )
    t = time.perf_counter()
    count = 0
    progress.current = step.pool
    progress.save()

    def member(plan: MemberPlan, m: Manifest, trained: bool) -> None:
        nonlocal t, count
        now = time.perf_counter()
        if plan.name not in step.todo:
            return
        count += 1
        bar.set_description_str(f"{step.pool.value} {count}/{len(step.todo)}")
        bar.update(round(step.todo[plan.name] * progress.factor))
        progress.record(step.pool, plan.name, now - t)
        progress.save()
        log.info(
            "%s: %s done (%d/%d); about %s left for %s, %s for everything",
            step.pool.value,
            plan.name,
            progress.done[step.pool],
            step.total,
            _duration(progress.seconds_left(step.pool)),
            step.pool.value,
            _duration(progress.seconds_left()),
        )
        t = time.perf_counter()

    try:
        stored, _ = train_pool(preset, data, store, step.pool, skip_existing=True, on_member=member)
    finally:
        bar.close()
    progress.record(step.pool, POST, time.perf_counter() - t)
    progress.current = None
    progress.save()
    return stored


__all__ = [
    "DEFENSE_POOLS",
    "PRIOR_FACTOR",
    "TRAINING_PROGRESS",
    "Progress",
    "Step",
    "describe",
    "run_schedule",
    "schedule",
    "training_view",
]
