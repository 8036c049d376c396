"""MODEF denoising-verification cross-layer ensembles (section IV-B).

* one-to-many: the denoising ensemble's voted image goes to the target; a verifier team drawn per request
  confirms or repairs (or flags) its label. Flagged also when the denoisers reach no majority.
* many-to-many: ``P_k = mean_i V_i(D_k(x))`` for every denoised version k; the most confident k gives the
  label. **Flag rule**: flagged unless more than ``consensus`` of the Z_D versions have ``argmax P_k`` equal
  to that label (default 0.5: a strict majority). Why: a perturbation that a single denoiser fails to remove
  only moves its own ``P_k``, so disagreement across denoised versions is the signal MODEF exploits; the
  target is left out of the rule because flagging an input the ensemble already repaired would turn a
  prevention into a false positive and lower DSR.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from ensdef.defenses.base import Defense, log_probs
from ensdef.defenses.denoising import DenoisingEnsemble
from ensdef.defenses.plans import Job, Op, PerInputDraws, Plan, decisions, present
from ensdef.defenses.verification import VerificationEnsemble
from ensdef.diversity.teams import TeamSelection
from ensdef.types import CrossLayerMode, OnDisagree, VoteRule


@dataclass(frozen=True)
class ManyToManyVote:
    label: torch.Tensor  # [B]
    flagged: torch.Tensor  # [B]
    chosen: torch.Tensor  # [B] the most confident denoised version c
    per_version: torch.Tensor  # [Z_D, B] argmax P_k


def many_to_many_vote(probs: torch.Tensor, consensus: float = 0.5) -> ManyToManyVote:
    """Aggregate ``probs`` ``[Z_D, Z_V, B, K]`` = V_i(D_k(x)) (pure, deterministic)."""
    p = probs.mean(1)  # [Z_D, B, K]
    conf, per_version = p.max(2)  # [Z_D, B]
    chosen = conf.argmax(0)  # [B]
    label = per_version.gather(0, chosen[None]).squeeze(0)
    agree = (per_version == label[None]).float().mean(0)
    return ManyToManyVote(label, agree <= consensus, chosen, per_version)


class CrossLayerEnsemble(PerInputDraws, Defense):
    def __init__(
        self,
        denoisers: Sequence[nn.Module],
        target: nn.Module,
        verifiers: Sequence[nn.Module],
        teams: TeamSelection,
        mode: CrossLayerMode = CrossLayerMode.MANY_TO_MANY,
        rule: VoteRule = VoteRule.SOFT,
        on_disagree: OnDisagree = OnDisagree.REPAIR,
        consensus: float = 0.5,
        num_classes: int = 10,
        denoiser_names: Sequence[str] | None = None,
        target_name: str = "target",
    ) -> None:
        self.denoising = DenoisingEnsemble(denoisers, target, num_classes, denoiser_names, target_name)
        self.verification = VerificationEnsemble(target, verifiers, teams, rule, on_disagree, target_name)
        self.mode, self.consensus = mode, consensus
        self.name = f"modef-{mode.value}"

    def plan_one_draw(self, x: torch.Tensor, g: torch.Generator, quorum: float = 0.5) -> Plan:
        """The decision with one team for every row of ``x``."""
        if self.mode is CrossLayerMode.ONE_TO_MANY:
            dv, image, miss_d = yield from self.denoising.vote_plan(x, g, quorum)
            label, disagree, names, miss_v = yield from self.verification.verify_plan(image, g, quorum)
            return decisions(label, dv.flagged | disagree, miss_d or miss_v, lambda i: {"team": names})
        ver = self.verification
        names = [ver.teams.members[i] for i in ver.teams.draw(g)]
        den = yield [Job(n, Op.TRANSFORM, x) for n in self.denoising.names]
        di, miss_d = present(den, quorum, "denoisers")
        res = yield [Job(n, Op.PROBS, den[k]) for k in di for n in names]
        grid = [res[a * len(names) : (a + 1) * len(names)] for a in range(len(di))]  # [Z_D'][Z_V]
        answered = [None if any(row[b] is None for row in grid) else grid[0][b] for b in range(len(names))]
        vi, miss_v = present(answered, quorum, "team members")  # a verifier missing in any version is left out
        v = many_to_many_vote(torch.stack([torch.stack([row[b] for b in vi]) for row in grid]), self.consensus)  # type: ignore[misc]
        team = [names[b] for b in vi]
        return decisions(v.label, v.flagged, miss_d or miss_v, lambda i: {"team": team})

    def named_members(self) -> dict[str, nn.Module]:
        return {**self.denoising.named_members(), **self.verification.named_members()}

    def surrogate(self, x: torch.Tensor, g: torch.Generator | None = None) -> torch.Tensor:
        return self.voters(x, g).mean(0)

    def voters(self, x: torch.Tensor, g: torch.Generator | None = None) -> torch.Tensor:
        """One vote per (denoised version, team member) pair, the target's included in one-to-many."""
        ver = self.verification
        members = ver.verifiers if g is None else ver.team(g)
        if self.mode is CrossLayerMode.ONE_TO_MANY:
            members = [ver.target, *members]
        return torch.stack([log_probs(m, d(x)) for d in self.denoising.denoisers for m in members])

    def voters_many(self, x: torch.Tensor, gs: Sequence[torch.Generator]) -> list[torch.Tensor]:
        """Every (denoiser, member) pair once, then one team per draw: equal to ``voters(x, g)`` per ``g``."""
        ver = self.verification
        every = torch.stack(
            [torch.stack([log_probs(m, d(x)) for m in [ver.target, *ver.verifiers]]) for d in self.denoising.denoisers]
        )  # [D, 1 + P, B, K]
        out = []
        for g in gs:
            team = [1 + i for i in ver.teams.draw(g)]
            pick = [0, *team] if self.mode is CrossLayerMode.ONE_TO_MANY else team
            out.append(every[:, pick].flatten(0, 1))
        return out

    def surrogate_many(self, x: torch.Tensor, gs: Sequence[torch.Generator]) -> torch.Tensor:
        return torch.stack([v.mean(0) for v in self.voters_many(x, gs)])

    def members(self, g: torch.Generator | None = None) -> list[nn.Module]:
        return list(self.verification.verifiers)
