"""Liang and Samavi 2021: an ensemble of temperature-trained networks with noisy logits, plurality vote and rank
verification.

Each member answers only for its own freshly noised input ``x + N(0, sigma^2)``: clean logits never leave a
member (:func:`noisy_labels` returns labels of noisy logits, nothing else). Rank verification tests the top
two vote counts with ``binomtest(n_A, n_A + n_B, 0.5)`` and abstains when ``p >= alpha``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from scipy.stats import binomtest
from torch import nn

from ensdef.defenses.base import Defense, log_probs
from ensdef.defenses.plans import Job, Op, Plan, decisions, present, run_job, stacked
from ensdef.rng import randn_like, spawn_seeds
from ensdef.types import ABSTAIN


def noisy_logits(member: nn.Module, x: torch.Tensor, sigma: float, g: torch.Generator) -> torch.Tensor:
    """Logits ``[B, K]`` of ``member`` on ``x + sigma * N(0, 1)`` with fresh noise from ``g``."""
    return member(x + sigma * randn_like(x, g)) if sigma > 0 else member(x)


def member_noisy_labels(member: nn.Module, x: torch.Tensor, sigma: float, seed: int) -> torch.Tensor:
    """What a member returns to the aggregator: labels ``[B]`` of its noisy logits, noise seeded by ``seed``."""
    return run_job(member, Job("member", Op.NOISY_LABELS, x, seed=seed, sigma=sigma))


def vote_counts(labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """``[B, K]`` vote counts from member labels ``[M, B]``."""
    counts = torch.zeros(labels.shape[1], num_classes, dtype=torch.long, device=labels.device)
    return counts.scatter_add_(1, labels.T.long(), torch.ones_like(labels.T, dtype=torch.long))


@dataclass(frozen=True)
class RankVerified:
    label: torch.Tensor  # [B] plurality label (lowest class index on ties), ABSTAIN where rejected
    p_value: torch.Tensor  # [B] binomtest p of the top two counts
    counts: torch.Tensor  # [B, K]


def rank_verify(counts: torch.Tensor, alpha: float | None) -> RankVerified:
    """Plurality label and rank-verification p-value per row of ``counts`` ``[B, K]``; abstain when
    ``p >= alpha`` (``alpha=None`` never abstains)."""
    top2 = counts.topk(2, dim=1)
    n_a, n_b = top2.values[:, 0].tolist(), top2.values[:, 1].tolist()
    p = torch.tensor([binomtest(a, a + b, 0.5).pvalue for a, b in zip(n_a, n_b, strict=True)], dtype=torch.float64)
    label = counts.argmax(1).cpu()
    if alpha is not None:
        label = torch.where(p >= alpha, torch.full_like(label, ABSTAIN), label)
    return RankVerified(label, p, counts)


class NoisyVoteEnsemble(Defense):
    name = "noisy-vote"

    def __init__(
        self,
        members: Sequence[nn.Module],
        sigma: float = 0.5,
        alpha_rv: float | None = 0.05,
        num_classes: int = 10,
        names: Sequence[str] | None = None,
    ) -> None:
        self.nets, self.sigma, self.alpha_rv, self.num_classes = list(members), sigma, alpha_rv, num_classes
        self.names = list(names) if names is not None else [f"tempnet-{i + 1:02d}" for i in range(len(self.nets))]

    @torch.no_grad()
    def member_labels(self, x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        """``[M, B]``: each member's label for its own noisy copy of ``x`` (member i draws from the i-th
        seed spawned from ``g``, exactly as a remote member replica does)."""
        seeds = spawn_seeds(g, len(self.nets))
        return torch.stack([member_noisy_labels(m, x, self.sigma, s) for m, s in zip(self.nets, seeds, strict=True)])

    @torch.no_grad()
    def base_vote(self, x: torch.Tensor) -> torch.Tensor:
        """``[B]`` plurality of the members on ``x`` itself (no member noise): the deterministic base
        classifier F* that certification smooths."""
        labels = torch.stack([m(x).argmax(1) for m in self.nets])
        return vote_counts(labels, self.num_classes).argmax(1)

    def plan(self, x: torch.Tensor, g: torch.Generator, quorum: float = 0.5) -> Plan:
        """One stage: every member labels its own noisy copy (seeds spawned from ``g``, as in
        :meth:`member_labels`); plurality and rank verification over the members that answered."""
        seeds = spawn_seeds(g, len(self.nets))
        res = yield [
            Job(n, Op.NOISY_LABELS, x, seed=s, sigma=self.sigma) for n, s in zip(self.names, seeds, strict=True)
        ]
        idx, missing = present(res, quorum, "members")
        rv = rank_verify(vote_counts(stacked(res, idx), self.num_classes), self.alpha_rv)
        return decisions(
            rv.label, None, missing, lambda i: {"votes": rv.counts[i].tolist(), "p_value": float(rv.p_value[i])}
        )

    def named_members(self) -> dict[str, nn.Module]:
        return dict(zip(self.names, self.nets, strict=True))

    def surrogate(self, x: torch.Tensor, g: torch.Generator | None = None) -> torch.Tensor:
        return self.voters(x, g).mean(0)

    def voters(self, x: torch.Tensor, g: torch.Generator | None = None) -> torch.Tensor:
        if g is None:
            return torch.stack([log_probs(m, x) for m in self.nets])
        return torch.stack([torch.log_softmax(noisy_logits(m, x, self.sigma, g), 1) for m in self.nets])

    def voters_many(self, x: torch.Tensor, gs: Sequence[torch.Generator]) -> list[torch.Tensor]:
        """Noise drawn in the order of ``voters(x, g)``, then one batched pass per member over all draws."""
        if self.sigma <= 0:
            return [self.voters(x, None)] * len(gs)
        noise = [[randn_like(x, g) for _ in self.nets] for g in gs]  # [S][M] like x
        outs = [
            torch.log_softmax(m(torch.cat([x + self.sigma * noise[s][j] for s in range(len(gs))])), 1).view(
                len(gs), len(x), -1
            )
            for j, m in enumerate(self.nets)
        ]  # [M] of [S, B, K]
        return list(torch.stack(outs, 1))

    def surrogate_many(self, x: torch.Tensor, gs: Sequence[torch.Generator]) -> torch.Tensor:
        return torch.stack([v.mean(0) for v in self.voters_many(x, gs)])

    def members(self, g: torch.Generator | None = None) -> list[nn.Module]:
        return list(self.nets)
