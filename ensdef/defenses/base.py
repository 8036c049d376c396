"""The Defense contract: ``decide`` returns one Decision per input; ``surrogate`` is a differentiable path
through the same members for attacks (mean member log-probabilities)."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from ensdef.defenses.plans import Plan, run_local
from ensdef.rng import make_generator, randint
from ensdef.types import Decision


class Defense(ABC):
    """Members plus an aggregation. Inputs ``x``: ``[B, C, H, W]`` in [0, 1] on the members' device."""

    name: str = "defense"
    randomized: bool = True  # decisions depend on the generator (attack it with EOT)
    can_flag: bool = True  # may flag or abstain (attack it with the detector-aware objective)

    @abstractmethod
    def plan(self, x: torch.Tensor, g: torch.Generator, quorum: float = 0.5) -> Plan:
        """The decision as stages of member jobs (:mod:`ensdef.defenses.plans`); randomness only from ``g``."""

    @abstractmethod
    def named_members(self) -> dict[str, nn.Module]:
        """Every member the plan calls, by the name its jobs use (the artifact name when built from a store)."""

    def decide(self, x: torch.Tensor, g: torch.Generator) -> list[Decision]:
        """One Decision per input. Replaying with an equally seeded ``g`` gives equal Decisions, in process
        or served (the same plan with remote members)."""
        return run_local(self.plan(x, g), self.named_members())

    @abstractmethod
    def surrogate(self, x: torch.Tensor, g: torch.Generator | None = None) -> torch.Tensor:
        """Differentiable ``[B, K]`` log-probabilities of the defended classifier; with ``g`` the defense's
        random choices are drawn from it (one EOT sample), without it every member is used."""

    def voters(self, x: torch.Tensor, g: torch.Generator | None = None) -> torch.Tensor:
        """Differentiable ``[V, B, K]`` log-probabilities of the V votes the defense aggregates (one EOT sample
        with ``g``). A detector-aware attack needs every voter to agree on its label so that nothing is
        flagged; the default is the surrogate as a single voter."""
        return self.surrogate(x, g).unsqueeze(0)

    def surrogate_many(self, x: torch.Tensor, gs: Sequence[torch.Generator]) -> torch.Tensor:
        """``[S, B, K]``: ``surrogate(x, g)`` for every generator (one EOT draw each), equal to the loop;
        defenses override it to share the work that does not depend on the draw."""
        return torch.stack([self.surrogate(x, g) for g in gs])

    def voters_many(self, x: torch.Tensor, gs: Sequence[torch.Generator]) -> list[torch.Tensor]:
        """``voters(x, g)`` for every generator (draws may differ in their number of voters)."""
        return [self.voters(x, g) for g in gs]

    def members(self, g: torch.Generator | None = None) -> list[nn.Module]:
        """Standalone ``[B, C, H, W] -> [B, K]`` logit models, one per member the gray-box attacker may hold
        (with ``g``: the randomly drawn ones, e.g. sampled RLS networks)."""
        raise NotImplementedError(f"{self.name} exposes no members")


def bpda_clip(x: torch.Tensor) -> torch.Tensor:
    """Clip to [0, 1] in the forward pass, identity in the backward pass (BPDA, Athalye et al.): clipping's
    zero gradient outside the box would otherwise hide the direction an attacker needs."""
    return x + (x.clamp(0, 1) - x).detach()


def log_probs(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    return F.log_softmax(model(x), dim=1)


def probs_of(models: list[nn.Module], x: torch.Tensor) -> torch.Tensor:
    """``[M, B, K]`` softmax outputs of ``models`` on ``x``."""
    return torch.stack([F.softmax(m(x), dim=1) for m in models])


def mean_log_probs(models: list[nn.Module], x: torch.Tensor) -> torch.Tensor:
    """``[B, K]`` mean over members of log-softmax outputs (the surrogate every ensemble exposes)."""
    return torch.stack([log_probs(m, x) for m in models]).mean(0)


def plurality(labels: torch.Tensor, num_classes: int, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Per column of ``labels`` ``[Z, B]`` the most voted class (ties broken uniformly with ``g``) and its
    count. Returns ``(label [B], count [B])``."""
    z, b = labels.shape
    counts = torch.zeros(b, num_classes, dtype=torch.long, device=labels.device)
    counts.scatter_add_(1, labels.T.long(), torch.ones_like(labels.T, dtype=torch.long))
    top = counts.max(1).values
    out = torch.empty(b, dtype=torch.long, device=labels.device)
    for i in range(b):
        tied = (counts[i] == top[i]).nonzero().flatten()
        out[i] = tied[randint(len(tied), g)] if len(tied) > 1 else tied[0]
    return out, top


def decide_all(defense: Defense, x: torch.Tensor, seed: int, batch_size: int = 50, desc: str = "") -> list[Decision]:
    """Decisions for every row of ``x``; one generator seeded with ``seed`` drives all batches in order."""
    g = make_generator(seed)
    out: list[Decision] = []
    for i in tqdm(range(0, len(x), batch_size), desc=desc or defense.name, leave=False, disable=None):
        out += defense.decide(x[i : i + batch_size], g)
    return out
