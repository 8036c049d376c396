"""Decision plans (the protocol a Serve router runs): a member that does not answer degrades the vote or fails
the request, never silently; the quorum rule against hand-worked counts."""

from __future__ import annotations

import pytest
import torch

from ensdef.defenses.noisy_vote import NoisyVoteEnsemble, rank_verify, vote_counts
from ensdef.defenses.plans import Job, Op, per_input, present, run_job, run_local
from ensdef.defenses.registry import DEFENSES, build_defense
from ensdef.errors import QuorumLost
from ensdef.rng import make_generator, spawn_seeds


@pytest.mark.parametrize("name", sorted(DEFENSES))
def test_every_missing_member_degrades_or_fails(name: str, random_store, mnist5k) -> None:
    store, preset = random_store
    d = build_defense(name, store, preset)
    x = mnist5k.test.x[::100][:4]
    full = d.decide(x, make_generator(3))
    assert not any(dd.degraded for dd in full)
    assert run_local(d.plan(x, make_generator(3)), d.named_members()) == full
    for member in d.named_members():
        called: list[Job] = []

        def fail(job: Job, member: str = member, called: list[Job] = called) -> bool:
            called.append(job)
            return job.member == member

        try:
            out = run_local(d.plan(x, make_generator(3)), d.named_members(), fail)
        except QuorumLost as e:
            assert "answer" in str(e)
            continue
        if any(j.member == member for j in called):  # inputs whose draw used it are degraded, the rest exact
            assert any(dd.degraded for dd in out), f"{name}: {member} missing but no answer is degraded"
            assert all(a == b for a, b in zip(out, full, strict=True) if not a.degraded), name
        else:
            assert out == full


@pytest.mark.parametrize("name", ["verification", "modef", "modef-1tm", "rls"])
def test_per_input_draws_equal_row_by_row_plans_with_one_call_per_member_job(name: str, random_store, mnist5k) -> None:
    """Each row gets the plan of its own spawned generator; jobs differing only in rows are merged."""
    store, preset = random_store
    d = build_defense(name, store, preset)
    x = mnist5k.test.x[::50][:7]
    seeds = spawn_seeds(make_generator(3), len(x))
    rows = [run_local(d.plan_one_draw(x[i : i + 1], make_generator(s)), d.named_members()) for i, s in enumerate(seeds)]
    plan, members, stages = d.plan(x, make_generator(3)), d.named_members(), []
    jobs = next(plan)
    while True:
        stages.append(jobs)
        try:
            jobs = plan.send([run_job(members[j.member], j) for j in jobs])
        except StopIteration as done:
            out = done.value
            break
    assert out == [r for rr in rows for r in rr]
    for jobs in stages:  # one job per distinct member call and stage, most of them on several rows
        keys = [(j.member, j.op, j.seed, j.sigma, j.path) for j in jobs]
        assert len(keys) == len(set(keys))
        assert sum(len(j.x) for j in jobs) > len(jobs)


def test_per_input_splits_results_and_missing_members_back_to_rows() -> None:
    """Hand-worked: two rows whose plans call member m alike are one job of two rows; their calls that differ
    (a path per row) stay two jobs; a missing result reaches both rows' plans as ``None``."""

    def one(x: torch.Tensor, g: torch.Generator):
        a, b = yield [Job("m", Op.LABELS, x), Job("p", Op.PATH_PROBS, x, path=(int(x.item()),))]
        return [(a, None if b is None else b.tolist())]

    x = torch.arange(2.0).view(2, 1, 1, 1)
    plan = per_input(x, make_generator(0), one)
    jobs = next(plan)
    assert [(j.member, j.path, len(j.x)) for j in jobs] == [("m", (), 2), ("p", (0,), 1), ("p", (1,), 1)]
    try:
        plan.send([None, torch.tensor([[0.25]]), torch.tensor([[0.75]])])
    except StopIteration as done:
        assert done.value == [(None, [[0.25]]), (None, [[0.75]])]
    else:
        raise AssertionError("the plan did not finish after its one stage")


def test_quorum_is_a_strict_majority_of_voters() -> None:
    t = torch.zeros(2)
    assert present([t, None, t], 0.5, "members") == ([0, 2], True)
    assert present([t, t], 0.5, "members") == ([0, 1], False)
    with pytest.raises(QuorumLost, match="2 of 4 members answered"):
        present([t, None, t, None], 0.5, "members")
    with pytest.raises(QuorumLost):
        present([None], 0.0, "members")


def test_degraded_noisy_vote_counts_only_the_members_that_answered() -> None:
    """Three constant members (labels 1, 1, 2 under any noise); the vote without member 0 is 1:1."""

    class Const(torch.nn.Module):
        def __init__(self, k: int) -> None:
            super().__init__()
            self.k = k

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.nn.functional.one_hot(torch.full((len(x),), self.k), 10).float()

    ens = NoisyVoteEnsemble([Const(1), Const(1), Const(2)], sigma=0.5, alpha_rv=None)
    x = torch.rand(2, 1, 28, 28)
    full = ens.decide(x, make_generator(0))
    assert [dd.label for dd in full] == [1, 1] and full[0].diagnostics["votes"][1:3] == [2, 1]
    out = run_local(ens.plan(x, make_generator(0)), ens.named_members(), lambda j: j.member == ens.names[0])
    assert all(dd.degraded for dd in out) and out[0].diagnostics["votes"][1:3] == [1, 1]
    assert rank_verify(vote_counts(torch.tensor([[1], [2]]), 10), 0.05).label.tolist() == [-1]


def test_noisy_labels_job_draws_its_own_noise_and_never_returns_logits() -> None:
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 3))
    x = torch.rand(5, 1, 2, 2)
    a = run_job(net, Job("m", Op.NOISY_LABELS, x, seed=7, sigma=0.5))
    assert a.dtype == torch.long and a.shape == (5,)
    assert torch.equal(a, run_job(net, Job("m", Op.NOISY_LABELS, x, seed=7, sigma=0.5)))
    with torch.no_grad():
        noise = torch.randn(x.shape, generator=make_generator(7))
        assert torch.equal(a, net(x + 0.5 * noise).argmax(1))
