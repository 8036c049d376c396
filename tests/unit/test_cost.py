"""Training-cost estimates (longest-first scheduling of parallel trials): every planned member of every pool
gets a finite positive cost, and the ordering follows planned work."""

from __future__ import annotations

import dataclasses
import itertools
import math
import time
from dataclasses import replace

import pytest

from ensdef.data import Dataset
from ensdef.presets import AdversarialConfig, AdvMethod, load_preset
from ensdef.training.cost import longest_first, passes_per_step, step_seconds, training_costs
from ensdef.training.pools import DataSlice, Pool, plan_pool
from ensdef.types import DataShare
from tests.conftest import FIXTURES


@pytest.mark.parametrize("pool", list(Pool))
def test_every_planned_member_has_a_positive_cost(pool: Pool, mnist5k: Dataset) -> None:
    plans = plan_pool(load_preset(FIXTURES / "tiny.yaml"), pool)
    assert plans
    costs = training_costs(plans, mnist5k)
    assert sorted(costs) == sorted(p.name for p in plans)
    for name, c in costs.items():
        assert math.isfinite(c) and c > 0, name


def test_longest_first_follows_planned_work(mnist5k: Dataset) -> None:
    (mlp,) = [p for p in plan_pool(load_preset("mnist5k"), Pool.VERIFIERS) if p.architecture == "mlp"]
    short = dataclasses.replace(mlp, name="short", train=dataclasses.replace(mlp.train, epochs=1))
    long = dataclasses.replace(mlp, name="long", train=dataclasses.replace(mlp.train, epochs=50))
    part = dataclasses.replace(long, name="partitioned", data=DataSlice(0, 10, DataShare.PARTITION))  # a tenth
    assert [p.name for p in longest_first([part, short, long], mnist5k)] == ["long", "partitioned", "short"]


def test_a_load_that_slows_one_turn_does_not_change_the_timing(mnist5k: Dataset) -> None:
    """Models are timed in turns and each keeps its best: a pass slowed by 5 s (a load that came and went) is
    dropped; with a single turn, nothing can drop it."""
    plans = [p for p in plan_pool(load_preset("mnist5k"), Pool.VERIFIERS) if p.architecture in ("mlp", "lenet")]
    assert len(plans) == 2

    def slowed_clock():  # noqa: ANN202  (calls 1-4: the warm-up turn; calls 5 and 6 time the first model)
        calls = itertools.count(1)
        return lambda: time.perf_counter() + (5.0 if next(calls) == 6 else 0.0)

    assert max(step_seconds(plans, mnist5k, rounds=2, clock=slowed_clock())) < 1.0
    first, second = step_seconds(plans, mnist5k, rounds=1, clock=slowed_clock())
    assert first >= 5.0 and second < 1.0


def test_passes_per_step_count_sampled_networks_and_attack_passes() -> None:
    p = load_preset("mnist5k")
    (rls,) = plan_pool(p, Pool.RLS)
    assert passes_per_step(rls) == p.rls.k / p.rls.m  # K sampled paths against the M that forward() runs
    adv, distill = plan_pool(p, Pool.BASELINES)
    assert passes_per_step(adv) == 1 + p.baselines.adv_ratio * p.baselines.adv_max_iter
    assert passes_per_step(distill) == 2.0
    assert {passes_per_step(t) for t in plan_pool(p, Pool.TEMPNETS)} == {1.0}
    pgd, trades = AdversarialConfig(steps=7), AdversarialConfig(method=AdvMethod.TRADES, steps=5)
    assert passes_per_step(replace(rls, train=replace(rls.train, adversarial=pgd))) == 8 * p.rls.k / p.rls.m
    (target,) = plan_pool(p, Pool.TARGET)
    assert passes_per_step(replace(target, train=replace(target.train, adversarial=trades))) == 7.0
    half = AdversarialConfig(steps=5, ratio=0.5)  # the attack runs on half of every batch
    assert passes_per_step(replace(target, train=replace(target.train, adversarial=half))) == 3.5
