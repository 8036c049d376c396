"""Benign query streams, as a legitimate client sends them: distinct images in random order, with now and then
an image sent again and a lightly changed copy of an earlier one (shifted by a pixel or two, brightness scaled,
a little noise). Used to calibrate and to measure the false-positive rate of stateful detection."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class StreamSpec:
    """``repeat``: share of queries that resend an earlier image unchanged; ``augment``: share that send a
    lightly changed copy of an earlier image (shift up to ``max_shift`` pixels, brightness x [1 - b, 1 + b],
    Gaussian noise of standard deviation ``noise``)."""

    repeat: float = 0.05
    augment: float = 0.10
    max_shift: int = 2
    brightness: float = 0.1
    noise: float = 0.02


def benign_stream(pool: torch.Tensor, n: int, g: torch.Generator, spec: StreamSpec | None = None) -> torch.Tensor:
    """``n`` queries ``[n, C, H, W]`` in [0, 1] drawn from ``pool`` ``[N, C, H, W]`` (fresh images in random
    order, without replacement while the pool lasts)."""
    spec = spec or StreamSpec()
    order = torch.randperm(len(pool), generator=g)
    kind = torch.rand(n, generator=g)
    out, fresh = [], 0
    for i in range(n):
        if i and kind[i] < spec.repeat:
            out.append(out[int(torch.randint(0, i, (1,), generator=g))])
        elif i and kind[i] < spec.repeat + spec.augment:
            out.append(light_change(out[int(torch.randint(0, i, (1,), generator=g))], g, spec))
        else:
            out.append(pool[order[fresh % len(pool)]])
            fresh += 1
    return torch.stack(out)


def light_change(x: torch.Tensor, g: torch.Generator, spec: StreamSpec) -> torch.Tensor:
    """One image ``[C, H, W]`` shifted, brightness-scaled and noised, clipped to [0, 1]."""
    dy, dx = (int(v) for v in torch.randint(-spec.max_shift, spec.max_shift + 1, (2,), generator=g))
    y = torch.roll(x, shifts=(dy, dx), dims=(1, 2))
    scale = 1 + spec.brightness * (2 * torch.rand((), generator=g) - 1)
    y = y * scale + spec.noise * torch.randn(y.shape, generator=g)
    return y.clamp(0, 1)
