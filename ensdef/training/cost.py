"""Relative training cost of planned pool members, for scheduling the longest first.

Parallel trainers (Ray Tune) start members in the order given; when a long member (a ResNet) starts last it
runs alone at the end while the other cores idle. Ordering by cost, longest first (LPT scheduling), keeps
the tail short. The cost is measured, not guessed: one timed forward and backward pass of a training batch
of the built model, times the planned optimisation steps.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable

import torch

from ensdef.data import Dataset
from ensdef.models import build
from ensdef.presets import AdvMethod, TrainConfig
from ensdef.rng import seeded
from ensdef.training.pools import MemberPlan


def _timed_pass(model: torch.nn.Module, x: torch.Tensor, clock: Callable[[], float]) -> float:
    """Seconds of one forward and backward pass of ``model`` on ``x``."""
    t = clock()
    model(x).float().square().mean().backward()
    return clock() - t


def step_seconds(
    plans: list[MemberPlan], data: Dataset, rounds: int = 5, clock: Callable[[], float] = time.perf_counter
) -> list[float]:
    """Seconds of one forward and backward pass of each plan's model on a zero batch of its batch size, on the
    CPU with this process's torch threads. The models are timed in turns, ``rounds`` times after a warm-up
    round (allocators, kernels), and each keeps its best: a load that comes and goes while they are timed
    (a test run, another training) slows one turn of one model, not the order of the costs."""
    built = []
    for p in plans:
        with seeded(0):
            model = build(p.architecture, data.shape, data.num_classes, **p.extra.get("build_kwargs", {}))
        built.append((model, torch.zeros(p.train.batch_size, *data.shape)))
    best = [math.inf] * len(plans)
    for r in range(rounds + 1):
        for i, (model, x) in enumerate(built):
            seconds = _timed_pass(model, x, clock)
            if r:
                best[i] = min(best[i], seconds)
    return best


def passes_per_step(plan: MemberPlan) -> float:
    """Forward and backward passes of the built model per optimisation step, relative to the one that
    :func:`step_seconds` times: an RLS network's forward runs its M sub-model paths but a training step
    samples K; PGD adversarial training adds ``adv_ratio x adv_max_iter`` attack passes; distillation trains a
    teacher and then a student; ``train.adversarial`` multiplies by its attack steps on its ``ratio`` of the
    batch plus the training pass (TRADES: every image, plus its clean pass)."""
    return _base_passes(plan) * _adversarial_passes(plan.train)


def _base_passes(plan: MemberPlan) -> float:
    if "k" in plan.extra:
        return plan.extra["k"] / plan.extra.get("build_kwargs", {}).get("m", 1)
    method = plan.extra.get("method")
    if method == "adv-training":
        return 1.0 + plan.extra["adv_ratio"] * plan.extra["adv_max_iter"]
    return 2.0 if method == "distillation" else 1.0


def _adversarial_passes(train: TrainConfig) -> float:
    adv = train.adversarial
    if adv is None:
        return 1.0
    if adv.method is AdvMethod.TRADES:
        return 2.0 + adv.steps
    return 1.0 + adv.ratio * adv.steps


def planned_steps(plan: MemberPlan, data: Dataset) -> int:
    """Optimisation steps ``plan`` asks for: epochs x batches per epoch of its share of the training set."""
    n = len(plan.data.indices(len(data.train))) if plan.data else len(data.train)
    return plan.train.epochs * math.ceil(n / plan.train.batch_size)


def training_costs(
    plans: list[MemberPlan], data: Dataset, clock: Callable[[], float] = time.perf_counter
) -> dict[str, float]:
    """Estimated training seconds per plan name (relative: for ordering, not a promise of wall time):
    :func:`planned_steps` x :func:`passes_per_step` x :func:`step_seconds`, timed once per distinct model and
    batch size (the ten temperature networks of a preset share one timing), all of them in the same turns."""
    distinct: dict[str, MemberPlan] = {}
    for p in plans:
        distinct.setdefault(_model_key(p), p)
    step = dict(zip(distinct, step_seconds(list(distinct.values()), data, clock=clock), strict=True))
    return {p.name: planned_steps(p, data) * passes_per_step(p) * step[_model_key(p)] for p in plans}


def _model_key(p: MemberPlan) -> str:
    return json.dumps([p.architecture, p.train.batch_size, p.extra.get("build_kwargs", {})], sort_keys=True)


def longest_first(plans: list[MemberPlan], data: Dataset) -> list[MemberPlan]:
    """``plans`` by :func:`training_costs`, longest first (ties keep their order)."""
    cost = training_costs(plans, data)
    return sorted(plans, key=lambda p: -cost[p.name])
