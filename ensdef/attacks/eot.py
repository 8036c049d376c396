"""Expectation over Transformation: a module whose output averages a defense's surrogate over its randomness,
so that a gradient attack (ART PGD / APGD) differentiates the expected log-probabilities."""

from __future__ import annotations

import torch
from torch import nn

from ensdef.defenses.base import Defense
from ensdef.rng import make_generator


class EOTSurrogate(nn.Module):
    """``[B, C, H, W] -> [B, K]``: mean of ``defense.surrogate(x, g_s)`` over ``samples`` fresh generators.

    Each call draws new generators from a counter seeded by ``seed``, so successive attack steps see new
    randomness and a rerun with the same seed replays exactly. ``samples=0`` uses the deterministic
    surrogate (``g=None``: every member, no noise), as does a defense that is not randomized.
    """

    def __init__(self, defense: Defense, samples: int = 20, seed: int = 0) -> None:
        super().__init__()
        self.defense, self.samples, self.seed = defense, samples, seed
        self.calls = 0
        self.anchor = nn.Parameter(torch.zeros(()), requires_grad=False)  # gives ART a device to read

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.samples == 0 or not self.defense.randomized:
            return self.defense.surrogate(x, None)
        gs = [make_generator(self.seed * 1_000_003 + self.calls + i + 1, x.device) for i in range(self.samples)]
        self.calls += self.samples
        if len(gs) == 1:  # one draw: the plain path computes only the drawn members
            return self.defense.surrogate(x, gs[0])
        return self.defense.surrogate_many(x, gs).mean(0)
