"""Random layer sampling container (Lee et al. 2021): M sub-models of one backbone split into L sampling units.

A *path* ``r`` ``[L]`` picks for every unit ``l`` the sub-model ``r_l`` whose unit runs; each unit's choice
is drawn from ``Categorical(mu_l)`` (uniform by default), so M sub-models give M^L sampled networks.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from ensdef.models.layers import UnitNet
from ensdef.models.registry import CIFAR_SHAPE, MNIST_SHAPE, Kind, Shape, build, register
from ensdef.rng import seeded
from ensdef.types import Role


def sample_paths(mu: torch.Tensor, k: int, g: torch.Generator) -> torch.Tensor:
    """``[k, L]`` paths: per unit ``l`` a sub-model index drawn from ``Categorical(mu[l])`` (``mu`` ``[L, M]``),
    with one CPU generator seeded from ``g`` (so the draw is the same whatever ``g``'s device)."""
    cpu = torch.Generator().manual_seed(int(torch.randint(0, 2**62, (1,), generator=g, device=g.device)))
    return torch.stack([torch.multinomial(mu.cpu(), 1, generator=cpu).squeeze(1) for _ in range(k)])


def uniform_mu(units: int, submodels: int) -> torch.Tensor:
    """``[L, M]`` the default sampling distribution: every sub-model equally likely in every unit. ``mu`` is a
    buffer that training never changes, so a stored RLS member's plan needs only its shape."""
    return torch.full((units, submodels), 1.0 / submodels)


class RLSNet(nn.Module):
    """``forward_path(x [B, C, H, W], path [L]) -> logits [B, K]``.

    ``forward`` is deterministic: the log of the mean probability of the M unmixed sub-models (every
    parameter takes part), a valid set of logits for attacks and gray-box baselines.
    """

    def __init__(self, submodels: list[UnitNet], mu: torch.Tensor | None = None) -> None:
        super().__init__()
        lengths = {len(s.units) for s in submodels}
        if len(lengths) != 1:
            raise ValueError(f"sub-models must have the same number of units, got {sorted(lengths)}")
        self.submodels = nn.ModuleList(submodels)
        m, l = len(submodels), lengths.pop()
        self.register_buffer("mu", uniform_mu(l, m) if mu is None else mu / mu.sum(1, keepdim=True))

    @property
    def num_units(self) -> int:
        return int(self.mu.shape[0])

    @property
    def num_submodels(self) -> int:
        return len(self.submodels)

    def sample_paths(self, k: int, g: torch.Generator) -> torch.Tensor:
        """``[k, L]`` sub-model index per unit, each drawn from ``Categorical(mu_l)`` with ``g``."""
        return sample_paths(self.mu, k, g)

    def forward_path(self, x: torch.Tensor, path: torch.Tensor | list[int]) -> torch.Tensor:
        for l, r in enumerate(path.tolist() if isinstance(path, torch.Tensor) else path):
            x = self.submodels[int(r)].units[l](x)
        return x

    def forward_paths(self, x: torch.Tensor, paths: torch.Tensor) -> torch.Tensor:
        """``[N, B, K]`` logits of the sampled networks ``paths`` ``[N, L]``, equal to ``forward_path`` for each
        (the same operations on the same inputs). Paths that share their first units share that computation:
        a unit runs once per distinct prefix, at most ``M^l`` times at depth ``l``, so the early units (the
        costly full-resolution ones) of many sampled networks run only a few times."""
        out: list[torch.Tensor | None] = [None] * len(paths)
        rows = paths.tolist()

        def walk(h: torch.Tensor, idx: list[int], depth: int) -> None:
            if depth == self.num_units:
                for i in idx:
                    out[i] = h
                return
            for choice in sorted({rows[i][depth] for i in idx}):
                same = [i for i in idx if rows[i][depth] == choice]
                walk(self.submodels[choice].units[depth](h), same, depth + 1)

        walk(x, list(range(len(rows))), 0)
        return torch.stack(out)  # type: ignore[arg-type]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        probs = torch.stack([self.forward_path(x, [m] * self.num_units).softmax(1) for m in range(self.num_submodels)])
        return probs.mean(0).clamp_min(1e-12).log()

    def export(self, path: torch.Tensor | list[int]) -> UnitNet:
        """A standalone copy of the sampled network ``path`` (the gray-box attacker's model)."""
        units = [copy.deepcopy(self.submodels[int(r)].units[l]) for l, r in enumerate(list(path))]
        return UnitNet(units).eval()


def build_rls(backbone: str, shape: Shape, num_classes: int, m: int = 2, seed: int = 0) -> RLSNet:
    """M copies of ``backbone`` with different initialisations (seeds ``seed .. seed + m - 1``)."""
    subs = []
    for i in range(m):
        with seeded(seed + i):
            subs.append(build(backbone, shape, num_classes))
    return RLSNet(subs)


BACKBONES = ("vgg", "resnet8", "resnet20")
"""Zoo architectures whose units compose across copies; each gets an ``rls_<backbone>`` container."""

for _backbone in BACKBONES:
    register(
        f"rls_{_backbone}",
        Kind.CLASSIFIER,
        (Role.RLS,),
        f"random layer sampling over {_backbone} sub-models",
        (MNIST_SHAPE, CIFAR_SHAPE),
    )(
        lambda shape, k, m=2, _b=_backbone: build_rls(_b, shape, k, m=m)  # noqa: B023
    )
