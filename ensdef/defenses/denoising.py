"""MODEF denoising ensemble: Z_D denoisers, the target labels each denoised version, majority vote.

A strict majority (more than Z_D / 2 votes) gives that label and one of the majority's denoised images,
chosen with the generator; no strict majority flags the input (the label is then the plurality).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from ensdef.defenses.base import Defense, log_probs, plurality
from ensdef.rng import randint
from ensdef.types import Decision


@dataclass(frozen=True)
class DenoiseVote:
    label: torch.Tensor  # [B] plurality label
    flagged: torch.Tensor  # [B] bool, no strict majority
    chosen: torch.Tensor  # [B] index of the denoiser whose output is passed on
    votes: torch.Tensor  # [Z, B] target labels per denoised version


def denoise_vote(labels: torch.Tensor, num_classes: int, g: torch.Generator) -> DenoiseVote:
    """Aggregate target labels ``[Z, B]`` of Z denoised versions (pure; randomness only from ``g``)."""
    z = labels.shape[0]
    label, count = plurality(labels, num_classes, g)
    chosen = torch.empty_like(label)
    for i in range(labels.shape[1]):
        agree = (labels[:, i] == label[i]).nonzero().flatten()
        chosen[i] = agree[randint(len(agree), g)]
    return DenoiseVote(label, count * 2 <= z, chosen, labels)


class DenoisingEnsemble(Defense):
    name = "denoising"
    randomized = False  # the generator only breaks ties

    def __init__(self, denoisers: Sequence[nn.Module], target: nn.Module, num_classes: int = 10) -> None:
        self.denoisers, self.target, self.num_classes = list(denoisers), target, num_classes

    def denoise(self, x: torch.Tensor) -> torch.Tensor:
        """``[Z, B, C, H, W]`` denoised versions of ``x``."""
        return torch.stack([d(x) for d in self.denoisers])

    @torch.no_grad()
    def vote(self, x: torch.Tensor, g: torch.Generator) -> tuple[DenoiseVote, torch.Tensor]:
        """The vote and the chosen denoised image per input ``[B, C, H, W]``."""
        den = self.denoise(x)
        labels = torch.stack([self.target(d).argmax(1) for d in den])
        v = denoise_vote(labels, self.num_classes, g)
        return v, den[v.chosen, torch.arange(x.shape[0], device=x.device)]

    def decide(self, x: torch.Tensor, g: torch.Generator) -> list[Decision]:
        v, _ = self.vote(x, g)
        return [Decision(int(v.label[i]), bool(v.flagged[i]), {"votes": v.votes[:, i].tolist()}) for i in range(len(x))]

    def surrogate(self, x: torch.Tensor, g: torch.Generator | None = None) -> torch.Tensor:
        return self.voters(x, g).mean(0)

    def voters(self, x: torch.Tensor, g: torch.Generator | None = None) -> torch.Tensor:
        return torch.stack([log_probs(self.target, d(x)) for d in self.denoisers])

    def members(self, g: torch.Generator | None = None) -> list[nn.Module]:
        return [nn.Sequential(d, self.target) for d in self.denoisers]
