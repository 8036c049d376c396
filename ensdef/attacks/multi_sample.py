"""Lee et al. 2021 Table 4: attack the mean prediction of n sampled RLS networks fixed by the attacker, then
evaluate the RLS defense, which samples its own networks per query."""

from __future__ import annotations

import torch
from torch import nn


class MeanOfNetworks(nn.Module):
    """``[B, C, H, W] -> [B, K]`` log of the mean softmax of fixed networks."""

    def __init__(self, nets: list[nn.Module]) -> None:
        super().__init__()
        self.nets = nn.ModuleList(nets)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.stack([n(x).softmax(1) for n in self.nets]).mean(0).clamp_min(1e-12).log()
