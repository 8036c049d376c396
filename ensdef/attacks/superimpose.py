"""The superimposition attack of Liang and Samavi (2021): minimal-perturbation examples made on single
members, the k with the smallest perturbations superimposed (``x + sum_i (a_i - x)``, clipped to [0, 1]), so
that perturbations which transfer to many members add up."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import nn


def superimpose(x: np.ndarray, per_member: Sequence[np.ndarray], fooled: np.ndarray, k: int) -> np.ndarray:
    """``x`` ``[N, ...]``; ``per_member`` M arrays like ``x``; ``fooled`` ``[M, N]`` bool (the example fools
    its own member). Per image, the k successful examples with the smallest L2 perturbation are summed (all
    successful ones when fewer than k; the clean image when none)."""
    adv = np.stack(per_member)  # [M, N, ...]
    delta = adv - x[None]
    norms = np.linalg.norm(delta.reshape(len(adv), len(x), -1), axis=2)
    norms = np.where(fooled, norms, np.inf)
    out = x.copy()
    for i in range(len(x)):
        pick = [m for m in np.argsort(norms[:, i])[:k] if np.isfinite(norms[m, i])]
        out[i] = np.clip(x[i] + delta[pick, i].sum(0), 0.0, 1.0)
    return out.astype(np.float32)


@torch.no_grad()
def fooled_mask(members: Sequence[nn.Module], advs: Sequence[torch.Tensor], y: torch.Tensor) -> np.ndarray:
    """``[M, N]``: whether member m misclassifies its own examples ``advs[m]`` ``[N, C, H, W]``."""
    return np.stack([(m(a).argmax(1) != y).numpy() for m, a in zip(members, advs, strict=True)])
