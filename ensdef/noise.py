"""Input corruptions for denoiser/reformer training and query-time noise: a registry keyed by NoiseKind.

Every function maps ``x`` ``[B, C, H, W]`` in [0, 1] to a corrupted copy in [0, 1] using generator ``g``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum

import torch

from ensdef.rng import rand_like, randn_like


class NoiseKind(str, Enum):
    GAUSSIAN = "gaussian"  # level = standard deviation
    SALT_PEPPER = "salt_pepper"  # level = fraction of pixels set to 0 or 1
    MASKING = "masking"  # level = fraction of pixels set to 0


@dataclass(frozen=True)
class NoiseSpec:
    kind: NoiseKind
    level: float

    @property
    def tag(self) -> str:
        return f"{self.kind.value}-{self.level:g}"


def gaussian(x: torch.Tensor, level: float, g: torch.Generator) -> torch.Tensor:
    return (x + level * randn_like(x, g)).clamp(0.0, 1.0)


def salt_pepper(x: torch.Tensor, level: float, g: torch.Generator) -> torch.Tensor:
    u = rand_like(x, g)
    out = torch.where(u < level / 2, torch.zeros_like(x), x)
    return torch.where((u >= level / 2) & (u < level), torch.ones_like(x), out)


def masking(x: torch.Tensor, level: float, g: torch.Generator) -> torch.Tensor:
    return torch.where(rand_like(x, g) < level, torch.zeros_like(x), x)


NOISES: dict[NoiseKind, Callable[[torch.Tensor, float, torch.Generator], torch.Tensor]] = {
    NoiseKind.GAUSSIAN: gaussian,
    NoiseKind.SALT_PEPPER: salt_pepper,
    NoiseKind.MASKING: masking,
}


def corrupt(x: torch.Tensor, spec: NoiseSpec, g: torch.Generator) -> torch.Tensor:
    """Apply the corruption ``spec`` to ``x`` with generator ``g``."""
    return NOISES[spec.kind](x, spec.level, g)
