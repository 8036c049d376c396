"""One classifier as a defense: the undefended target and the MODEF Table V baselines (PGD adversarial
training, defensive distillation), so that they go through the same harness as the ensembles."""

from __future__ import annotations

import torch
from torch import nn

from ensdef.defenses.base import Defense, log_probs
from ensdef.types import Decision


class SingleModel(Defense):
    randomized = False
    can_flag = False

    def __init__(self, model: nn.Module, name: str = "target") -> None:
        self.model, self.name = model, name

    @torch.no_grad()
    def decide(self, x: torch.Tensor, g: torch.Generator) -> list[Decision]:
        """The argmax label, never flagged; ``g`` is unused."""
        return [Decision(int(k), False, {}) for k in self.model(x).argmax(1)]

    def surrogate(self, x: torch.Tensor, g: torch.Generator | None = None) -> torch.Tensor:
        return log_probs(self.model, x)

    def members(self, g: torch.Generator | None = None) -> list[nn.Module]:
        return [self.model]
