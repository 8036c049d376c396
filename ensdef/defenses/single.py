"""One classifier as a defense: the undefended target and the MODEF Table V baselines (PGD adversarial
training, defensive distillation), so that they go through the same harness as the ensembles."""

from __future__ import annotations

import torch
from torch import nn

from ensdef.defenses.base import Defense, log_probs
from ensdef.defenses.plans import Job, Op, Plan, decisions, required


class SingleModel(Defense):
    randomized = False
    can_flag = False

    def __init__(self, model: nn.Module, name: str = "target", member: str | None = None) -> None:
        self.model, self.name, self.member = model, name, member or name

    def plan(self, x: torch.Tensor, g: torch.Generator, quorum: float = 0.5) -> Plan:
        """The argmax label, never flagged; ``g`` is unused. No stand-in: a failed model fails the request."""
        (res,) = yield [Job(self.member, Op.LABELS, x)]
        return decisions(required(res, self.member), None, False, lambda i: {})

    def named_members(self) -> dict[str, nn.Module]:
        return {self.member: self.model}

    def surrogate(self, x: torch.Tensor, g: torch.Generator | None = None) -> torch.Tensor:
        return log_probs(self.model, x)

    def members(self, g: torch.Generator | None = None) -> list[nn.Module]:
        return [self.model]
