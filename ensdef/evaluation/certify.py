"""Randomized-smoothing certification of a base classifier (Cohen et al.; Liang and Samavi (2021)'s adaptation).

``n0`` noisy samples select the top class (and give the rank-verification p-value of the top two counts),
``n`` fresh samples estimate ``p_A``; its one-sided Clopper-Pearson lower bound at ``alpha`` gives the L2
radius ``sigma * Phi^-1(p_A_lower)`` when above 1/2, otherwise the input abstains.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from scipy.stats import beta, binomtest, norm

from ensdef.rng import randn_like
from ensdef.types import ABSTAIN

VoteFn = Callable[[torch.Tensor], torch.Tensor]  # [N, C, H, W] -> labels [N]


@dataclass(frozen=True)
class Certificate:
    label: int  # ABSTAIN when p_A_lower <= 1/2
    radius: float  # 0 when abstained
    p_value: float  # rank verification of the selection counts
    p_a_lower: float
    n_a: int


def clopper_pearson_lower(k: int, n: int, alpha: float) -> float:
    """One-sided ``1 - alpha`` lower confidence bound on a binomial proportion (exact, via the beta law)."""
    return 0.0 if k == 0 else float(beta.ppf(alpha, k, n - k + 1))


@torch.no_grad()
def sample_counts(
    vote: VoteFn, x: torch.Tensor, sigma: float, n: int, num_classes: int, batch_size: int, g: torch.Generator
) -> np.ndarray:
    """``[K]`` counts of ``vote(x + sigma * eps)`` over ``n`` Gaussian samples, ``batch_size`` at a time."""
    counts = torch.zeros(num_classes, dtype=torch.long, device=x.device)
    left = n
    while left > 0:
        b = min(batch_size, left)
        batch = x.unsqueeze(0).expand(b, *x.shape)
        labels = vote(batch + sigma * randn_like(batch, g))
        counts += torch.bincount(labels, minlength=num_classes)
        left -= b
    return counts.cpu().numpy()


def certify(
    vote: VoteFn,
    x: torch.Tensor,
    sigma: float,
    n0: int,
    n: int,
    alpha: float,
    num_classes: int,
    g: torch.Generator,
    batch_size: int = 500,
) -> Certificate:
    """Certify one input ``x`` ``[C, H, W]``."""
    c0 = sample_counts(vote, x, sigma, n0, num_classes, batch_size, g)
    order = np.argsort(-c0, kind="stable")
    top, n_top, n_second = int(order[0]), int(c0[order[0]]), int(c0[order[1]])
    p_value = binomtest(n_top, n_top + n_second, 0.5).pvalue
    c = sample_counts(vote, x, sigma, n, num_classes, batch_size, g)
    n_a = int(c[top])
    p_lower = clopper_pearson_lower(n_a, n, alpha)
    if p_lower <= 0.5:
        return Certificate(ABSTAIN, 0.0, float(p_value), p_lower, n_a)
    return Certificate(top, float(sigma * norm.ppf(p_lower)), float(p_value), p_lower, n_a)


def certified_accuracy(certs: list[Certificate], y: np.ndarray, radii: list[float]) -> dict[float, float]:
    """Fraction of inputs certified correct with radius at least r, for each r in ``radii``."""
    return {
        r: float(np.mean([c.label == int(t) and c.radius >= r for c, t in zip(certs, y, strict=True)])) for r in radii
    }
