"""Decision plans: a defense's ``decide`` as stages of member calls and the aggregation between them.

A plan is a generator. It yields a list of :class:`Job` (what each member must compute), receives one result
per job (``None`` for a member that failed or missed its deadline), draws its randomness from the request's
generator between stages, and returns the Decisions. Run in process (:func:`run_local`) it *is* the defense's
``decide``; a Serve router runs the same plan with the jobs fanned out to member replicas, so served and
in-process answers are equal for equal seeds by construction, and the router holds no defense math.

Missing results: voters that did not answer are left out and every Decision says ``degraded``; a plan raises
:class:`QuorumLost` when a member without a stand-in fails (the target, DeT's classifier) or when no more than
``quorum`` of a stage's voters answered. A missing member never yields an undegraded answer.
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Mapping, Sequence
from dataclasses import dataclass
from enum import Enum

import torch
from torch import nn

from ensdef.errors import QuorumLost
from ensdef.models.layers import model_device
from ensdef.rng import make_generator, randn_like, spawn_seeds
from ensdef.types import Decision


class Op(str, Enum):
    """What a member computes for a job; the only tensors that ever leave a member."""

    PROBS = "probs"  # softmax [B, K]
    LABELS = "labels"  # argmax [B]
    NOISY_LABELS = "noisy_labels"  # argmax [B] of the logits on x + sigma N(0, 1), noise seeded by the job
    TRANSFORM = "transform"  # image to image [B, C, H, W] (denoisers, reformers)
    PATH_PROBS = "path_probs"  # softmax [B, K] of one sampled RLS network


@dataclass(frozen=True)
class Job:
    """One member call: ``member`` (artifact name) applies ``op`` to ``x`` ``[B, C, H, W]``."""

    member: str
    op: Op
    x: torch.Tensor
    seed: int = 0  # NOISY_LABELS: the member draws its own noise from this seed
    sigma: float = 0.0  # NOISY_LABELS: noise scale
    path: tuple[int, ...] = ()  # PATH_PROBS: one sub-model index per layer


Results = list[torch.Tensor | None]
Plan = Generator[list[Job], Results, list[Decision]]


def noisy_input(job: Job) -> torch.Tensor:
    """``x + sigma N(0, 1)`` with the noise drawn from the job's own seed on ``x``'s device (NOISY_LABELS)."""
    x = job.x
    return x + job.sigma * randn_like(x, make_generator(job.seed, x.device)) if job.sigma > 0 else x


@torch.no_grad()
def run_job(model: nn.Module, job: Job) -> torch.Tensor:
    """What a member returns for ``job``, on ``job.x``'s device. The member computes on its own device, where a
    noisy job also draws its noise (as a served member replica does). Clean logits are never returned."""
    dev = model_device(model, job.x.device)
    if job.x.device != dev:
        return _answer(model, Job(job.member, job.op, job.x.to(dev), job.seed, job.sigma, job.path)).to(job.x.device)
    return _answer(model, job)


def _answer(model: nn.Module, job: Job) -> torch.Tensor:
    x = job.x
    if job.op is Op.PROBS:
        return model(x).softmax(1)
    if job.op is Op.LABELS:
        return model(x).argmax(1)
    if job.op is Op.NOISY_LABELS:
        return model(noisy_input(job)).argmax(1)
    if job.op is Op.TRANSFORM:
        return model(x)
    if job.op is Op.PATH_PROBS:
        return model.forward_path(x, list(job.path)).softmax(1)  # type: ignore[operator]
    raise ValueError(f"unknown op {job.op!r}")


def run_local(
    plan: Plan, members: Mapping[str, nn.Module], fail: Callable[[Job], bool] | None = None
) -> list[Decision]:
    """Drive ``plan`` with in-process members; ``fail(job)`` true simulates a member that did not answer."""
    try:
        jobs = next(plan)
        while True:
            jobs = plan.send([None if fail and fail(j) else run_job(members[j.member], j) for j in jobs])
    except StopIteration as done:
        return done.value


def present(results: Results, quorum: float, what: str) -> tuple[list[int], bool]:
    """Indices of the results that arrived and whether any is missing; raises :class:`QuorumLost` when no
    more than ``quorum`` of them arrived."""
    idx = [i for i, r in enumerate(results) if r is not None]
    if len(idx) <= quorum * len(results) or not idx:
        raise QuorumLost(f"{len(idx)} of {len(results)} {what} answered (need more than {quorum:.0%})")
    return idx, len(idx) < len(results)


def required(result: torch.Tensor | None, member: str) -> torch.Tensor:
    if result is None:
        raise QuorumLost(f"{member} did not answer and has no stand-in")
    return result


def stacked(results: Results, idx: Sequence[int]) -> torch.Tensor:
    return torch.stack([results[i] for i in idx])  # type: ignore[misc]


def decisions(
    label: torch.Tensor, flagged: torch.Tensor | None, degraded: bool, diag: Callable[[int], dict]
) -> list[Decision]:
    """One Decision per row of ``label`` ``[B]``; ``diag(i)`` gives row i's diagnostics."""
    labels = label.tolist()  # one conversion, not one tensor index per row
    flags = flagged.bool().tolist() if flagged is not None else [False] * len(labels)
    return [
        Decision(int(lab), bool(f), diag(i), degraded) for i, (lab, f) in enumerate(zip(labels, flags, strict=True))
    ]


class PerInputDraws:
    """Mixin for defenses whose randomness is a draw (a team, sampled networks): ``plan`` runs
    ``plan_one_draw`` once per input through :func:`per_input`."""

    def plan_one_draw(self, x: torch.Tensor, g: torch.Generator, quorum: float = 0.5) -> Plan:
        """The decision with one draw shared by every row of ``x``."""
        raise NotImplementedError

    def plan(self, x: torch.Tensor, g: torch.Generator, quorum: float = 0.5) -> Plan:
        """One draw for every input (:func:`per_input`)."""
        return per_input(x, g, lambda xi, gi: self.plan_one_draw(xi, gi, quorum))


def per_input(x: torch.Tensor, g: torch.Generator, plan_one: Callable[[torch.Tensor, torch.Generator], Plan]) -> Plan:
    """One plan per row of ``x`` ``[B, C, H, W]``, each with its own generator spawned from ``g``, run as one plan.

    Every input gets an independent draw (team, sampled networks), so an attacker who batches copies of an image
    sees as many draws as requests would give. The rows' plans advance together; at each stage, jobs that differ
    only in their rows (same member, op, seed, sigma and path) are merged into one job on the concatenated rows,
    so a request still makes one call per distinct member job. Returns the rows' Decisions in order."""
    seeds = spawn_seeds(g, len(x))
    plans = [plan_one(x[i : i + 1], make_generator(s, g.device)) for i, s in enumerate(seeds)]
    out: list[list[Decision]] = [[] for _ in plans]
    pending: dict[int, list[Job]] = {}
    for i, p in enumerate(plans):
        try:
            pending[i] = next(p)
        except StopIteration as done:
            out[i] = done.value
    while pending:
        groups: dict[tuple, list[tuple[int, int]]] = {}
        for i, jobs in pending.items():
            for k, j in enumerate(jobs):
                groups.setdefault((j.member, j.op, j.seed, j.sigma, j.path), []).append((i, k))
        merged = [
            Job(m, op, torch.cat([pending[i][k].x for i, k in where]), seed, sigma, path)
            for (m, op, seed, sigma, path), where in groups.items()
        ]
        res = yield merged
        back: dict[int, Results] = {i: [None] * len(jobs) for i, jobs in pending.items()}
        for r, where in zip(res, groups.values(), strict=True):
            rows = [len(pending[i][k].x) for i, k in where]
            parts = [None] * len(where) if r is None else r.split(rows)
            for (i, k), part in zip(where, parts, strict=True):
                back[i][k] = part
        for i in list(pending):
            try:
                pending[i] = plans[i].send(back[i])
            except StopIteration as done:
                out[i] = done.value
                del pending[i]
    return [d for ds in out for d in ds]
