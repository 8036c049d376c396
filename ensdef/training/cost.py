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

import torch

from ensdef.data import Dataset
from ensdef.models import build
from ensdef.presets import AdvMethod, TrainConfig
from ensdef.rng import seeded
from ensdef.training.pools import MemberPlan


def step_seconds(plan: MemberPlan, data: Dataset, repeats: int = 2) -> float:
    """Seconds of one forward and backward pass of ``plan``'s model on a zero batch of its batch size
    (the best of ``repeats`` after one warm-up pass), on the CPU with this process's torch threads."""
    with seeded(0):
        model = build(plan.architecture, data.shape, data.num_classes, **plan.extra.get("build_kwargs", {}))
    x = torch.zeros(plan.train.batch_size, *data.shape)
    best = math.inf
    for i in range(repeats + 1):
        t = time.perf_counter()
        model(x).float().square().mean().backward()
        if i:  # the first pass warms up allocators and kernels
            best = min(best, time.perf_counter() - t)
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


def training_costs(plans: list[MemberPlan], data: Dataset) -> dict[str, float]:
    """Estimated training seconds per plan name (relative: for ordering, not a promise of wall time):
    :func:`planned_steps` x :func:`passes_per_step` x :func:`step_seconds`, timed once per distinct model and
    batch size (the ten temperature networks of a preset share one timing)."""
    step: dict[str, float] = {}
    cost = {}
    for p in plans:
        key = json.dumps([p.architecture, p.train.batch_size, p.extra.get("build_kwargs", {})], sort_keys=True)
        if key not in step:
            step[key] = step_seconds(p, data)
        cost[p.name] = planned_steps(p, data) * passes_per_step(p) * step[key]
    return cost


def longest_first(plans: list[MemberPlan], data: Dataset) -> list[MemberPlan]:
    """``plans`` by :func:`training_costs`, longest first (ties keep their order)."""
    cost = training_costs(plans, data)
    return sorted(plans, key=lambda p: -cost[p.name])
