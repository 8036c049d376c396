"""The training schedule of ``ensdef serve --train-missing``: which pools each defense needs (checked against
the defense builders themselves), the cheapest-defense-first order, and the progress the service reports,
against hand-worked figures."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from ensdef.data import Dataset
from ensdef.defenses.registry import DEFENSES, describe_defense
from ensdef.errors import NotTrained
from ensdef.presets import Preset
from ensdef.store import ArtifactStore
from ensdef.training.cost import planned_steps
from ensdef.training.pools import POST_STEPS, Pool, plan_pool
from ensdef.training.schedule import (
    DEFENSE_POOLS,
    DEPLOY_RETRY_S,
    POST,
    PRIOR_FACTOR,
    TRAINING_PROGRESS,
    Progress,
    Step,
    describe,
    schedule,
    training_view,
)


def _subset(src: ArtifactStore, preset: Preset, pools: set[Pool], root: Path) -> ArtifactStore:
    """A copy of ``src`` with only the members of ``pools`` (by role) and their post steps' artifacts."""
    roles = {p.role for pool in pools for p in plan_pool(preset, pool)}
    keep = {m for m in src.names() if src.manifest(m).role in roles}
    keep |= {POST_STEPS[p].artifact for p in pools if p in POST_STEPS}
    for name in keep:
        shutil.copytree(Path(src.root) / name, root / name)
    return ArtifactStore(root)


def test_every_served_defense_says_which_pools_it_needs() -> None:
    assert set(DEFENSE_POOLS) == set(DEFENSES)


@pytest.mark.parametrize("defense", list(DEFENSES))
def test_a_defense_is_buildable_from_exactly_its_pools(defense: str, random_store, tmp_path: Path) -> None:
    store, preset = random_store
    pools = set(DEFENSE_POOLS[defense])
    describe_defense(defense, _subset(store, preset, pools, tmp_path / "all"), preset)
    for drop in pools:
        short = _subset(store, preset, pools - {drop}, tmp_path / drop.value)
        with pytest.raises(NotTrained):
            describe_defense(defense, short, preset)


def test_an_empty_store_serves_the_cheapest_defense_first_and_unlocks_every_defense_once(
    random_store, mnist5k: Dataset, tmp_path: Path
) -> None:
    _, preset = random_store

    calls = []

    def work(plans, data):  # planned optimisation steps: what the cost model scales by a timed pass
        calls.append([p.name for p in plans])
        return {p.name: float(planned_steps(p, data)) for p in plans}

    steps = schedule(preset, mnist5k, ArtifactStore(tmp_path), list(DEFENSES), work)
    # every pool costed in one call, so that one timing covers them all (a passing load cannot reorder them)
    assert len(calls) == 1 and sorted(calls[0]) == sorted(p.name for pool in Pool for p in plan_pool(preset, pool))
    calls.clear()
    assert steps[0].todo == work(plan_pool(preset, steps[0].pool), mnist5k)
    cost = {s.pool: s.cost for s in steps}
    whole = {d: sum(cost[p] for p in DEFENSE_POOLS[d]) for d in DEFENSES}
    assert steps[0].unlocks and all(whole[d] == min(whole.values()) for d in steps[0].unlocks)
    assert sorted(s.pool for s in steps) == sorted({p for d in DEFENSES for p in DEFENSE_POOLS[d]})
    unlocked = [d for s in steps for d in s.unlocks]
    assert sorted(unlocked) == sorted(DEFENSES)
    for i, s in enumerate(steps):  # a defense is unlocked by the step that completes its pools
        before = {t.pool for t in steps[: i + 1]}
        for d in s.unlocks:
            assert set(DEFENSE_POOLS[d]) <= before
            assert DEFENSE_POOLS[d] == (s.pool,) or s.pool in DEFENSE_POOLS[d]
    assert all(len(s.todo) == s.total == len(plan_pool(preset, s.pool)) for s in steps)


def test_a_full_store_needs_nothing_and_a_missing_pool_only_itself(random_store, mnist5k: Dataset, tmp_path) -> None:
    store, preset = random_store
    assert schedule(preset, mnist5k, store, list(DEFENSES)) == []
    short = _subset(store, preset, set(Pool) - {Pool.TEMPNETS}, tmp_path / "s")
    (step,) = schedule(preset, mnist5k, short, list(DEFENSES))
    assert step.pool is Pool.TEMPNETS and step.unlocks == ("noisy-vote",)
    no_teams = _subset(store, preset, set(Pool), tmp_path / "t")
    shutil.rmtree(tmp_path / "t" / POST_STEPS[Pool.VERIFIERS].artifact)
    (step,) = schedule(preset, mnist5k, no_teams, ["verification"])
    assert step.pool is Pool.VERIFIERS and step.todo == {} and step.unlocks == ("verification",)


def _steps() -> list[Step]:
    # hand-made costs: target 10, then verifiers 20 + 30 with a post step of 0, then tempnets 100
    return [
        Step(Pool.TARGET, 1, {"target": 10.0}, 0.0, ("target",)),
        Step(Pool.VERIFIERS, 2, {"v-a": 20.0, "v-b": 30.0}, 0.0, ("verification",)),
        Step(Pool.TEMPNETS, 2, {"t-1": 50.0, "t-2": 50.0}, 0.0, ("noisy-vote",)),
    ]


def test_progress_refits_its_factor_and_counts_members(random_store, tmp_path: Path) -> None:
    _, preset = random_store
    defenses = ["target", "verification", "noisy-vote"]
    p = Progress(_steps(), ArtifactStore(tmp_path), preset, defenses)
    assert p.factor == PRIOR_FACTOR and p.seconds_left() == pytest.approx(160 * PRIOR_FACTOR)
    p.current = Pool.TARGET
    p.record(Pool.TARGET, "target", 30.0)  # 30 s for 10 cost-model seconds: factor 3
    p.record(Pool.TARGET, POST, 1.0)  # a zero-cost post step does not move the factor
    assert p.factor == pytest.approx(3.0)
    p.current = Pool.VERIFIERS
    p.record(Pool.VERIFIERS, "v-a", 50.0)  # (30 + 50) / (10 + 20)
    assert p.factor == pytest.approx(80 / 30)
    assert p.seconds_left(Pool.VERIFIERS) == pytest.approx(30 * 80 / 30)
    assert p.seconds_left() == pytest.approx(130 * 80 / 30)
    verifiers = len(plan_pool(preset, Pool.VERIFIERS))
    assert p.defense_state("target") == {"state": "ready"}
    assert p.defense_state("verification") == {
        "state": "training",
        "members_done": 1 + 1,  # the target, and v-a (the tiny preset plans more verifiers than these two)
        "members_total": 1 + verifiers,
        "eta_s": pytest.approx(80.0, abs=0.1),
    }
    assert p.defense_state("noisy-vote")["state"] == "queued"
    assert p.defense_state("noisy-vote")["eta_s"] == pytest.approx(130 * 80 / 30, abs=0.1)
    p.save()
    saved = ArtifactStore(tmp_path).load_json(TRAINING_PROGRESS)
    assert saved["state"] == "training" and set(saved["defenses"]) == set(defenses)


def test_the_service_view_subtracts_the_time_since_the_progress_was_written() -> None:
    payload = {
        "state": "training",
        "updated": 1000.0,
        "defenses": {
            "target": {"state": "ready"},
            "rls": {"state": "training", "members_done": 0, "members_total": 1, "eta_s": 100.0},
            "det": {"state": "queued", "members_done": 1, "members_total": 4, "eta_s": 12.0},
        },
    }
    view = training_view(payload, now=1040.0)
    assert view == {
        "target": {"state": "deploying", "retry_after_s": DEPLOY_RETRY_S},  # trained, not deployed yet
        "rls": {"state": "training", "members_done": 0, "members_total": 1, "retry_after_s": 60},
        "det": {"state": "queued", "members_done": 1, "members_total": 4, "retry_after_s": 5},  # floor: 5 s
    }
    assert training_view({**payload, "state": "interrupted"}, now=1040.0) == {}
    assert training_view({}, now=0.0) == {}


def test_the_plan_names_every_pool_with_its_estimate_and_what_it_serves() -> None:
    text = describe(_steps(), factor=2.0)
    assert "5 members" in text and "total about 320 s" not in text  # 320 s is shown in minutes
    assert "1. target     1 of 1 members, about 20 s; then serves target" in text
    assert "3. tempnets   2 of 2 members, about 200 s" not in text and "about 3.3 min; then serves noisy-vote" in text
    assert "total about 5.3 min" in text
