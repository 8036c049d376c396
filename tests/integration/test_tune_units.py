"""The Tune layer's pure parts: trial resources, sweep spaces, the team grid and plan matching (no Ray
cluster is started here; importing ``ray.tune`` is enough)."""

from __future__ import annotations

import dataclasses

import pytest

from ensdef.cli.library import POOL_NAMES
from ensdef.data import Dataset
from ensdef.presets import SweepConfig, TuneResources, load_preset
from ensdef.training.pools import Pool, manifest_extra, member_manifest, plan_pool, same_plan
from ensdef.training.team_sweep import TeamTrial, grid
from ensdef.types import Checkpoint, CrossLayerMode, DataShare, TeamPolicy
from tests.conftest import FIXTURES

pytest.importorskip("ray.tune")
from tune.resources import threads_for, trial_resources  # noqa: E402
from tune.sweeps import search_space, swept  # noqa: E402


def test_trial_resources_are_fractional_and_gpus_can_be_a_custom_resource() -> None:
    t = TuneResources(cpus_per_trial=0.5, gpus_per_trial=0.1, resources_per_trial={"worker": 0.01})
    assert trial_resources(t) == {"cpu": 0.5, "gpu": 0.1, "worker": 0.01}
    assert trial_resources(t, gpu_as="fake_gpu") == {"cpu": 0.5, "fake_gpu": 0.1, "worker": 0.01}
    assert trial_resources(TuneResources()) == {"cpu": 1.0}
    assert [threads_for(c) for c in (0.25, 1.0, 2.0, 3.5)] == [1, 1, 2, 3]


def test_search_space_checks_fields_and_kinds() -> None:
    space = search_space(SweepConfig({"weight_decay": {"loguniform": [1e-9, 1e-4]}, "lr": {"choice": [1, 2]}}))
    assert set(space) == {"weight_decay", "lr"}
    assert 1e-9 <= space["weight_decay"].sample() <= 1e-4 and space["lr"].sample() in (1, 2)
    with pytest.raises(ValueError, match="not a training setting or plan knob"):
        search_space(SweepConfig({"level": {"uniform": [0.1, 0.5]}}))
    with pytest.raises(ValueError, match="give one of"):
        search_space(SweepConfig({"lr": {"normal": [0, 1]}}))


def test_swept_plan_records_its_values_and_matches_only_itself() -> None:
    preset = load_preset(FIXTURES / "tiny.yaml")
    plan = plan_pool(preset, Pool.DENOISERS)[0]
    s = swept(plan, {"weight_decay": 1e-5})
    assert s.train.weight_decay == 1e-5 and s.extra["sweep"] == {"weight_decay": 1e-5} and s.name == plan.name
    from ensdef.config import to_plain
    from ensdef.store import Manifest
    from ensdef.types import Role

    m = Manifest(plan.name, Role.DENOISER, plan.architecture, "mnist5k", (1, 28, 28), 10, "", "state_dict",
                 to_plain(plan.train), {}, to_plain(plan.extra))  # fmt: skip
    assert same_plan(m, plan) and not same_plan(m, s)
    assert not same_plan(m, dataclasses.replace(plan, train=dataclasses.replace(plan.train, epochs=99)))


def test_a_manifest_from_before_a_new_training_field_takes_its_default() -> None:
    """A member stored before ``checkpoint`` existed was trained as ``best``: it matches a plan with the default,
    not one asking for ``last``; a config that no longer parses matches nothing."""
    plan = plan_pool(load_preset(FIXTURES / "tiny.yaml"), Pool.TEMPNETS)[0]
    from ensdef.config import to_plain
    from ensdef.store import Manifest

    def stored(train: dict) -> Manifest:
        return Manifest(plan.name, plan.role, plan.architecture, "mnist5k", (1, 28, 28), 10, "", "state_dict",
                        train, {}, to_plain(manifest_extra(plan)))  # fmt: skip

    before = {k: v for k, v in to_plain(plan.train).items() if k != "checkpoint"}
    assert plan.train.checkpoint is Checkpoint.BEST and same_plan(stored(before), plan)
    last = dataclasses.replace(plan, train=dataclasses.replace(plan.train, checkpoint=Checkpoint.LAST))
    assert not same_plan(stored(before), last) and same_plan(stored(to_plain(last.train)), last)
    assert not same_plan(stored({**before, "retired_field": 1}), plan)


@pytest.mark.parametrize("share", [DataShare.PARTITION, DataShare.HOLDOUT])
def test_a_member_trained_on_other_data_is_not_the_same_plan(share: DataShare, mnist5k: Dataset) -> None:
    """Switching ``tempnets.data`` retrains: the manifest of a whole-split member does not match a sliced plan."""
    preset = load_preset(FIXTURES / "tiny.yaml")
    plans = {  # the first temperature network (the warm start's init before it trains on the whole split)
        s: plan_pool(dataclasses.replace(preset, tempnets=dataclasses.replace(preset.tempnets, data=s)), Pool.TEMPNETS)[
            1
        ]
        for s in (DataShare.ALL, share)
    }
    assert {p.name for p in plans.values()} == {"tempnet-01"}
    stored = {s: member_manifest(pl, mnist5k, {}) for s, pl in plans.items()}
    assert same_plan(stored[DataShare.ALL], plans[DataShare.ALL]) and same_plan(stored[share], plans[share])
    assert not same_plan(stored[DataShare.ALL], plans[share]) and not same_plan(stored[share], plans[DataShare.ALL])


def test_swept_rls_plan_changes_m_and_k() -> None:
    plan = plan_pool(load_preset(FIXTURES / "tiny.yaml"), Pool.RLS)[0]
    s = swept(plan, {"m": 3, "k": 1, "lr": 0.05})
    assert s.extra["build_kwargs"]["m"] == 3 and s.extra["k"] == 1 and s.train.lr == 0.05
    assert plan.extra["build_kwargs"]["m"] == 2  # the original plan is untouched
    from ensdef.models import build

    net = build(s.architecture, (1, 28, 28), 10, **s.extra["build_kwargs"])
    assert net.num_submodels == 3


def test_team_grid_is_the_product_and_round_trips() -> None:
    t = load_preset(FIXTURES / "tiny.yaml").tune.teams
    g = grid(t)
    assert len(g) == len(t.sizes) * len(t.thresholds) * len(t.policies) * len(t.modes) == 4
    assert {x.policy for x in g} == {TeamPolicy.RAND_KAPPA, TeamPolicy.BEST_KAPPA}
    assert all(TeamTrial.from_json(x.to_json()) == x for x in g)
    assert g[0] == TeamTrial(2, 3, 1.01, TeamPolicy.RAND_KAPPA, CrossLayerMode.ONE_TO_MANY)


@pytest.mark.parametrize("preset", ["mnist5k", "cifar10", str(FIXTURES / "tiny.yaml")])
def test_every_preset_sweep_is_a_valid_space_over_a_pool(preset: str) -> None:
    p = load_preset(preset)
    for pool, sweep in p.tune.sweeps.items():
        plans = plan_pool(p, Pool(pool))
        space = search_space(sweep)
        assert swept(plans[0], {k: v.sample() for k, v in space.items()}).extra["sweep"].keys() == space.keys()
    assert grid(p.tune.teams)


def test_cli_pool_names_are_the_pools() -> None:
    assert set(POOL_NAMES) == {p.value for p in Pool}
