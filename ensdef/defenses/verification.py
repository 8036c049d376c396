"""MODEF verification ensemble: a team of verifiers drawn per request from the kappa-ranked list checks the
target's label by soft vote (Eq. 4) or majority vote; disagreement repairs (team label) or flags."""

from __future__ import annotations

from collections.abc import Sequence
from enum import Enum

import torch
from torch import nn

from ensdef.defenses.base import Defense, log_probs, plurality, probs_of
from ensdef.teams import TeamSelection
from ensdef.types import Decision


class VoteRule(str, Enum):
    SOFT = "soft"  # argmax of the mean probability (MODEF Eq. 4)
    MAJORITY = "majority"  # plurality of member labels, ties broken by the generator


class OnDisagree(str, Enum):
    REPAIR = "repair"  # answer the team's label, unflagged
    FLAG = "flag"  # answer the team's label, flagged


def team_vote(probs: torch.Tensor, rule: VoteRule, g: torch.Generator) -> torch.Tensor:
    """Team label ``[B]`` from member probabilities ``[Z, B, K]``."""
    if rule is VoteRule.SOFT:
        return probs.mean(0).argmax(1)
    return plurality(probs.argmax(2), probs.shape[2], g)[0]


def check(target: torch.Tensor, team: torch.Tensor, on_disagree: OnDisagree) -> tuple[torch.Tensor, torch.Tensor]:
    """Confirm or repair the target's labels ``[B]`` with the team's ``[B]``: returns ``(label, flagged)``."""
    disagree = target != team
    flagged = disagree if on_disagree is OnDisagree.FLAG else torch.zeros_like(disagree)
    return torch.where(disagree, team, target), flagged


class VerificationEnsemble(Defense):
    name = "verification"

    def __init__(
        self,
        target: nn.Module,
        verifiers: Sequence[nn.Module],
        teams: TeamSelection,
        rule: VoteRule = VoteRule.SOFT,
        on_disagree: OnDisagree = OnDisagree.FLAG,
    ) -> None:
        if len(verifiers) != len(teams.members):
            raise ValueError(f"{len(verifiers)} verifiers given, the team selection names {len(teams.members)}")
        self.target, self.verifiers, self.teams = target, list(verifiers), teams
        self.rule, self.on_disagree = rule, on_disagree
        self.can_flag = on_disagree is OnDisagree.FLAG

    def team(self, g: torch.Generator) -> list[nn.Module]:
        return [self.verifiers[i] for i in self.teams.draw(g)]

    @torch.no_grad()
    def verify(
        self, x: torch.Tensor, g: torch.Generator, team: tuple[int, ...] | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, tuple[int, ...]]:
        """``(label [B], flagged [B], team)`` for inputs ``x`` checked by one drawn team."""
        team = self.teams.draw(g) if team is None else team
        votes = team_vote(probs_of([self.verifiers[i] for i in team], x), self.rule, g)
        label, flagged = check(self.target(x).argmax(1), votes, self.on_disagree)
        return label, flagged, team

    def decide(self, x: torch.Tensor, g: torch.Generator) -> list[Decision]:
        label, flagged, team = self.verify(x, g)
        names = [self.teams.members[i] for i in team]
        return [Decision(int(label[i]), bool(flagged[i]), {"team": names}) for i in range(len(x))]

    def surrogate(self, x: torch.Tensor, g: torch.Generator | None = None) -> torch.Tensor:
        return self.voters(x, g).mean(0)

    def voters(self, x: torch.Tensor, g: torch.Generator | None = None) -> torch.Tensor:
        members = self.verifiers if g is None else self.team(g)
        return torch.stack([log_probs(m, x) for m in [self.target, *members]])

    def voters_many(self, x: torch.Tensor, gs: Sequence[torch.Generator]) -> list[torch.Tensor]:
        """Every member once, then one team per draw: equal to ``voters(x, g)`` for each ``g``."""
        every = torch.stack([log_probs(m, x) for m in [self.target, *self.verifiers]])
        return [every[[0, *(1 + i for i in self.teams.draw(g))]] for g in gs]

    def surrogate_many(self, x: torch.Tensor, gs: Sequence[torch.Generator]) -> torch.Tensor:
        return torch.stack([v.mean(0) for v in self.voters_many(x, gs)])

    def members(self, g: torch.Generator | None = None) -> list[nn.Module]:
        return list(self.verifiers)
