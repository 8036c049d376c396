"""MODEF verification ensemble: a team of verifiers drawn per request from the kappa-ranked list checks the
target's label by soft vote (Eq. 4) or majority vote; disagreement repairs (team label) or flags."""

from __future__ import annotations

from collections.abc import Generator, Sequence

import torch
from torch import nn

from ensdef.defenses.base import Defense, log_probs, plurality
from ensdef.defenses.plans import Job, Op, PerInputDraws, Plan, Results, decisions, present, required, stacked
from ensdef.diversity.teams import TeamSelection
from ensdef.types import OnDisagree, VoteRule


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


class VerificationEnsemble(PerInputDraws, Defense):
    name = "verification"

    def __init__(
        self,
        target: nn.Module,
        verifiers: Sequence[nn.Module],
        teams: TeamSelection,
        rule: VoteRule = VoteRule.SOFT,
        on_disagree: OnDisagree = OnDisagree.FLAG,
        target_name: str = "target",
    ) -> None:
        """``verifiers`` in the order of ``teams.members``, whose names the jobs use."""
        if len(verifiers) != len(teams.members):
            raise ValueError(f"{len(verifiers)} verifiers given, the team selection names {len(teams.members)}")
        self.target, self.verifiers, self.teams = target, list(verifiers), teams
        self.rule, self.on_disagree, self.target_name = rule, on_disagree, target_name
        self.can_flag = on_disagree is OnDisagree.FLAG

    def team(self, g: torch.Generator) -> list[nn.Module]:
        return [self.verifiers[i] for i in self.teams.draw(g)]

    def verify_plan(
        self, x: torch.Tensor, g: torch.Generator, quorum: float
    ) -> Generator[list, Results, tuple[torch.Tensor, torch.Tensor, list[str], bool]]:
        """One stage: the target's labels and a drawn team's probabilities on ``x``. Returns ``(label [B],
        flagged [B], names of the team members that answered, whether one was missing)``."""
        names = [self.teams.members[i] for i in self.teams.draw(g)]
        res = yield [Job(self.target_name, Op.LABELS, x), *(Job(n, Op.PROBS, x) for n in names)]
        target = required(res[0], self.target_name)
        idx, missing = present(res[1:], quorum, "team members")
        votes = team_vote(stacked(res[1:], idx), self.rule, g)
        label, flagged = check(target, votes, self.on_disagree)
        return label, flagged, [names[i] for i in idx], missing

    def plan_one_draw(self, x: torch.Tensor, g: torch.Generator, quorum: float = 0.5) -> Plan:
        """The decision with one team for every row of ``x``."""
        label, flagged, names, missing = yield from self.verify_plan(x, g, quorum)
        return decisions(label, flagged, missing, lambda i: {"team": names})

    def named_members(self) -> dict[str, nn.Module]:
        return {**dict(zip(self.teams.members, self.verifiers, strict=True)), self.target_name: self.target}

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
