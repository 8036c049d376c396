"""MODEF denoising ensemble: Z_D denoisers, the target labels each denoised version, majority vote.

A strict majority (more than Z_D / 2 votes) gives that label and one of the majority's denoised images,
chosen with the generator; no strict majority flags the input (the label is then the plurality).
"""

from __future__ import annotations

from collections.abc import Generator, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from ensdef.defenses.base import Defense, log_probs, plurality
from ensdef.defenses.plans import Job, Op, Plan, Results, decisions, present, required
from ensdef.rng import randint


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

    def __init__(
        self,
        denoisers: Sequence[nn.Module],
        target: nn.Module,
        num_classes: int = 10,
        names: Sequence[str] | None = None,
        target_name: str = "target",
    ) -> None:
        self.denoisers, self.target, self.num_classes = list(denoisers), target, num_classes
        self.names = list(names) if names is not None else [f"denoiser-{i}" for i in range(len(self.denoisers))]
        self.target_name = target_name

    def denoise(self, x: torch.Tensor) -> torch.Tensor:
        """``[Z, B, C, H, W]`` denoised versions of ``x``."""
        return torch.stack([d(x) for d in self.denoisers])

    def vote_plan(
        self, x: torch.Tensor, g: torch.Generator, quorum: float
    ) -> Generator[list, Results, tuple[DenoiseVote, torch.Tensor, bool]]:
        """Stages: every denoiser on ``x``, then the target on every denoised version. Returns the vote, the
        chosen denoised image per input ``[B, C, H, W]`` and whether a denoiser was missing."""
        den = yield [Job(n, Op.TRANSFORM, x) for n in self.names]
        idx, missing = present(den, quorum, "denoisers")
        labels = yield [Job(self.target_name, Op.LABELS, den[i]) for i in idx]
        v = denoise_vote(torch.stack([required(r, self.target_name) for r in labels]), self.num_classes, g)
        images = torch.stack([den[i] for i in idx])  # type: ignore[misc]
        return v, images[v.chosen, torch.arange(x.shape[0], device=x.device)], missing

    def plan(self, x: torch.Tensor, g: torch.Generator, quorum: float = 0.5) -> Plan:
        v, _, missing = yield from self.vote_plan(x, g, quorum)
        return decisions(v.label, v.flagged, missing, lambda i: {"votes": v.votes[:, i].tolist()})

    def named_members(self) -> dict[str, nn.Module]:
        return {**dict(zip(self.names, self.denoisers, strict=True)), self.target_name: self.target}

    def surrogate(self, x: torch.Tensor, g: torch.Generator | None = None) -> torch.Tensor:
        return self.voters(x, g).mean(0)

    def voters(self, x: torch.Tensor, g: torch.Generator | None = None) -> torch.Tensor:
        return torch.stack([log_probs(self.target, d(x)) for d in self.denoisers])

    def members(self, g: torch.Generator | None = None) -> list[nn.Module]:
        return [nn.Sequential(d, self.target) for d in self.denoisers]
