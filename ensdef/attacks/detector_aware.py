"""He et al. (2017)'s detector-aware objective: the flag as an extra class, so an attack that wins must also evade
flagging and abstention.

For a defense that aggregates V voters (``Defense.voters``), class ``k < K`` gets the probability that every
voter of one random draw says ``k`` (``prod_v p_v(k)``, averaged over ``samples`` EOT draws) and class ``K``
the rest: the chance that the voters disagree, which is when the defense flags or abstains. A targeted attack
toward a wrong class ``t < K`` on this ``K + 1``-class model therefore pushes every voter to ``t`` at once.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from ensdef.defenses.base import Defense
from ensdef.rng import make_generator


class FlagAwareSurrogate(nn.Module):
    """``[B, C, H, W] -> [B, K + 1]`` log-probabilities (agreement on each class, then the flag)."""

    def __init__(self, defense: Defense, samples: int = 20, seed: int = 0) -> None:
        super().__init__()
        self.defense, self.samples, self.seed, self.calls = defense, samples, seed, 0
        self.anchor = nn.Parameter(torch.zeros(()), requires_grad=False)  # gives ART a device to read

    def _draws(self, x: torch.Tensor) -> list[torch.Tensor]:
        if not self.defense.randomized or self.samples == 0:
            return [self.defense.voters(x, None)]
        gs = [make_generator(self.seed * 1_000_003 + self.calls + i + 1, x.device) for i in range(self.samples)]
        self.calls += self.samples
        return self.defense.voters_many(x, gs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        agree = torch.stack([v.sum(0) for v in self._draws(x)])  # [S, B, K] log prod_v p_v(k)
        agree = torch.logsumexp(agree, 0) - math.log(agree.shape[0])
        total = torch.logsumexp(agree, 1, keepdim=True).clamp(max=-1e-6)
        flag = torch.log(-torch.expm1(total)).clamp_min(-80.0)  # log(1 - sum_k agree_k)
        return torch.cat([agree.clamp_min(-80.0), flag], 1)


def flag_aware_targets(log_probs: np.ndarray, y: np.ndarray) -> np.ndarray:
    """One-hot ``[N, K + 1]`` targets: the most likely class that is neither the true label nor the flag."""
    p = log_probs.copy()
    p[np.arange(len(y)), y] = -np.inf
    p[:, -1] = -np.inf
    return np.eye(p.shape[1], dtype=np.float32)[p.argmax(1)]
