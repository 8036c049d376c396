"""Training of the temperature networks: every member's share of the training split under each ``DataShare``
(the paper's disjoint partitions, all of it, or all but the member's own slice), and the warm start."""

from __future__ import annotations

import dataclasses
from collections import Counter
from pathlib import Path

import pytest
import torch

from ensdef.data import Dataset
from ensdef.errors import ConfigError, NotTrained
from ensdef.presets import Preset, load_preset
from ensdef.store import ArtifactStore
from ensdef.training.cost import planned_steps
from ensdef.training.pools import (
    TEMPNET_INIT,
    Pool,
    manifest_extra,
    plan_pool,
    stages,
    starts_from,
    stored_as_planned,
    train_member,
)
from ensdef.types import DataShare, Optim, Role
from tests.conftest import FIXTURES


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


def _warm() -> Preset:
    p = load_preset("mnist5k")
    init = dataclasses.replace(p.tempnets.train, epochs=1, seed=7)
    return dataclasses.replace(p, tempnets=dataclasses.replace(p.tempnets, warm_start=init))


def test_a_warm_start_plans_the_shared_network_first_and_every_member_names_it() -> None:
    cold = plan_pool(load_preset("mnist5k"), Pool.TEMPNETS)
    assert [s == cold for s in stages(cold)] == [True] and all(starts_from(p) is None for p in cold)
    p = _warm()
    plans = plan_pool(p, Pool.TEMPNETS)
    assert [(x.name, x.role) for x in plans[:1]] == [(TEMPNET_INIT, Role.INIT)] and len(plans) == 11
    assert plans[0].train == p.tempnets.warm_start and plans[0].data is None
    assert [m.name for m in plans[1:]] == [m.name for m in cold]
    assert all(starts_from(m) == TEMPNET_INIT and m.extra["init"]["train"]["seed"] == 7 for m in plans[1:])
    assert stages(list(reversed(plans))) == [[plans[0]], list(reversed(plans[1:]))]


def _small(data: Dataset) -> Dataset:
    return dataclasses.replace(
        data, train=data.train.subset(range(256)), val=data.val.subset(range(64)), test=data.test.subset(range(64))
    )


def test_a_member_trains_from_the_stored_init_and_refuses_a_missing_or_other_one(
    mnist5k: Dataset, tmp_path: Path
) -> None:
    p = load_preset(FIXTURES / "tiny.yaml")
    init = dataclasses.replace(p.tempnets.train, seed=11)
    frozen = dataclasses.replace(p.tempnets.train, lr=0.0)  # SGD at rate 0: the member keeps its start
    p = dataclasses.replace(p, tempnets=dataclasses.replace(p.tempnets, warm_start=init, train=frozen))
    data, store = _small(mnist5k), ArtifactStore(str(tmp_path))
    plans = plan_pool(p, Pool.TEMPNETS)
    with pytest.raises(NotTrained, match="starts from tempnet-init, which is not in store"):
        train_member(plans[1], data, store)
    train_member(plans[0], data, store)
    train_member(plans[1], data, store)
    start, member = store.load_model(TEMPNET_INIT)[0], store.load_model(plans[1].name)[0]
    assert store.manifest(TEMPNET_INIT).role is Role.INIT
    for a, b in zip(start.parameters(), member.parameters(), strict=True):
        assert torch.equal(a, b)
    scratch = plan_pool(
        dataclasses.replace(p, tempnets=dataclasses.replace(p.tempnets, warm_start=None)), Pool.TEMPNETS
    )
    cold = ArtifactStore(str(tmp_path / "cold"))
    alone = cold.load_model(train_member(scratch[0], data, cold).name)[0]  # the same member from scratch
    assert any(not torch.equal(a, b) for a, b in zip(start.parameters(), alone.parameters(), strict=True))
    changed = dataclasses.replace(
        p, tempnets=dataclasses.replace(p.tempnets, warm_start=dataclasses.replace(init, seed=12))
    )
    with pytest.raises(NotTrained, match="was trained with another config"):
        train_member(plan_pool(changed, Pool.TEMPNETS)[1], data, store)


def test_members_finetune_from_their_namesakes_in_another_store(random_store, mnist5k: Dataset, tmp_path: Path) -> None:
    """``finetune_from``: a member starts from the weights of its namesake in another store (SGD at rate 0
    keeps them), the source's sha256 in its plan and manifest; warm starts and baselines keep their plans."""
    src, p = random_store
    frozen = dataclasses.replace(p.target.train, lr=0.0, optimizer=Optim.SGD)
    p = dataclasses.replace(p, target=dataclasses.replace(p.target, train=frozen), finetune_from=src.root)
    (plan,) = plan_pool(p, Pool.TARGET)
    assert plan.extra["init"] == {"name": "target", "sha256": src.manifest("target").sha256}
    assert plan.source == src.root and starts_from(plan) is None  # no Tune stage waits on another store
    store = ArtifactStore(str(tmp_path))
    stored = train_member(plan, _small(mnist5k), store)
    for a, b in zip(src.load_model("target")[0].parameters(), store.load_model("target")[0].parameters(), strict=True):
        assert torch.equal(a, b)
    assert stored.extra["init"] == plan.extra["init"] and stored_as_planned(store, plan)
    assert not stored_as_planned(store, plan_pool(dataclasses.replace(p, finetune_from=None), Pool.TARGET)[0])
    assert all("init" not in b.extra for b in plan_pool(p, Pool.BASELINES))
    temps = plan_pool(p, Pool.TEMPNETS)  # the init is fine-tuned, the members still start from it
    assert temps[0].name == TEMPNET_INIT and temps[0].source == src.root
    assert {starts_from(t) for t in temps[1:]} == {TEMPNET_INIT}
    moved = dataclasses.replace(plan, extra={**plan.extra, "init": {"name": "target", "sha256": "0" * 64}})
    with pytest.raises(NotTrained, match="changed since it was planned"):
        train_member(moved, _small(mnist5k), store)
    with pytest.raises(ConfigError, match="holds no members"):
        plan_pool(dataclasses.replace(p, finetune_from=str(tmp_path / "typo")), Pool.TARGET)
