"""Training data of the temperature networks: every member's share of the training split under each
``DataShare`` (the paper's disjoint partitions, all of it, or all but the member's own slice)."""

from __future__ import annotations

import dataclasses
from collections import Counter

import pytest

from ensdef.data import Dataset
from ensdef.presets import load_preset
from ensdef.training.cost import planned_steps
from ensdef.training.pools import Pool, manifest_extra, plan_pool
from ensdef.types import DataShare


def _shares(share: DataShare, n: int) -> list[set[int]]:
    p = load_preset("mnist5k")
    p = dataclasses.replace(p, tempnets=dataclasses.replace(p.tempnets, data=share))
    plans = plan_pool(p, Pool.TEMPNETS)
    assert len(plans) == p.tempnets.count == 10
    return [set(plan.data.indices(n) if plan.data else range(n)) for plan in plans]


def test_partitions_are_disjoint_and_cover_the_split() -> None:
    parts = _shares(DataShare.PARTITION, 3503)
    assert sum(map(len, parts)) == 3503 and set().union(*parts) == set(range(3503))
    assert sorted(map(len, parts)) == [350] * 7 + [351] * 3


def test_holdout_leaves_out_exactly_the_members_own_partition() -> None:
    parts, held = _shares(DataShare.PARTITION, 3503), _shares(DataShare.HOLDOUT, 3503)
    for own, seen in zip(parts, held, strict=True):
        assert seen.isdisjoint(own) and seen | own == set(range(3503))
    assert Counter(i for s in held for i in s) == Counter({i: 9 for i in range(3503)})  # every image: 9 of 10


@pytest.mark.parametrize("share", list(DataShare))
def test_members_train_on_their_share_and_cost_follows_it(share: DataShare, mnist5k: Dataset) -> None:
    n = len(mnist5k.train)
    sizes = [len(s) for s in _shares(share, n)]
    expected = {DataShare.ALL: n, DataShare.PARTITION: n // 10, DataShare.HOLDOUT: n - n // 10}[share]
    assert all(abs(s - expected) <= 1 for s in sizes)
    p = load_preset("mnist5k")
    plan = plan_pool(dataclasses.replace(p, tempnets=dataclasses.replace(p.tempnets, data=share)), Pool.TEMPNETS)[0]
    assert (plan.data is None) == (share is DataShare.ALL)  # the whole split is written one way: no slice
    assert len(plan.data.apply(mnist5k.train) if plan.data else mnist5k.train) == sizes[0]
    assert planned_steps(plan, mnist5k) == plan.train.epochs * -(-sizes[0] // plan.train.batch_size)


def test_manifest_records_the_data_slice_a_member_was_trained_on() -> None:
    p = load_preset("mnist5k")
    for share in DataShare:
        plan = plan_pool(dataclasses.replace(p, tempnets=dataclasses.replace(p.tempnets, data=share)), Pool.TEMPNETS)[2]
        extra = manifest_extra(plan)
        assert {k: extra[k] for k in plan.extra} == plan.extra
        if share is DataShare.ALL:
            assert "data" not in extra
        else:
            assert extra["data"] == {"index": 2, "count": 10, "share": share.value}
