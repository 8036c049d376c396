"""Explicit random generators. Nothing in ensdef touches torch's or numpy's global RNG."""

from __future__ import annotations

import contextlib
import random
from collections.abc import Iterator

import numpy as np
import torch


def make_generator(seed: int, device: torch.device | str = "cpu") -> torch.Generator:
    """A fresh ``torch.Generator`` on ``device`` seeded with ``seed``."""
    g = torch.Generator(device=torch.device(device))
    g.manual_seed(int(seed))
    return g


def generator_like(g: torch.Generator, x: torch.Tensor) -> torch.Generator:
    """``g`` if it lives on ``x``'s device, else a generator on that device seeded from ``g``.

    Keeps replays deterministic when a CPU generator drives CUDA tensors.
    """
    if _same_device(g.device, x.device):
        return g
    seed = int(torch.randint(0, 2**62, (1,), generator=g, device=g.device).item())
    return make_generator(seed, x.device)


def _same_device(a: torch.device, b: torch.device) -> bool:
    """``cuda`` (a generator made for the current device) and ``cuda:0`` are one device when 0 is current."""
    if a.type != b.type:
        return False
    if a.type != "cuda":
        return True
    current = torch.cuda.current_device()
    return (current if a.index is None else a.index) == (current if b.index is None else b.index)


def randn_like(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """Standard normal noise with ``x``'s shape, dtype and device, drawn from ``g``."""
    return torch.randn(x.shape, generator=generator_like(g, x), device=x.device, dtype=x.dtype)


def rand_like(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """Uniform [0, 1) noise with ``x``'s shape, dtype and device, drawn from ``g``."""
    return torch.rand(x.shape, generator=generator_like(g, x), device=x.device, dtype=x.dtype)


def choice(n: int, k: int, g: torch.Generator) -> list[int]:
    """``k`` distinct indices out of ``range(n)`` drawn from ``g``."""
    return torch.randperm(n, generator=g, device=g.device)[:k].tolist()


def randint(high: int, g: torch.Generator) -> int:
    """One integer in ``[0, high)`` drawn from ``g``."""
    return int(torch.randint(0, high, (1,), generator=g, device=g.device).item())


@contextlib.contextmanager
def seeded(seed: int, device: torch.device | str = "cpu") -> Iterator[None]:
    """Run a block with torch's default RNG seeded to ``seed`` and restore the caller's state after.

    For code that cannot take a generator (weight initialisation, dropout masks): the block is
    reproducible and the process-wide RNG is left exactly as it was.
    """
    dev = torch.device(device)
    cuda = [dev.index or 0] if dev.type == "cuda" else []
    with torch.random.fork_rng(devices=cuda):
        torch.manual_seed(int(seed))
        yield


@contextlib.contextmanager
def seeded_libraries(seed: int) -> Iterator[None]:
    """Run a block with torch's, numpy's and Python's process-wide RNGs seeded from ``seed``, restoring all
    three after.

    For library code that draws from them and takes no generator (ART's random starts and restarts use
    ``np.random``, its L2 Square attack ``random``): the block gives the same result whatever ran before it,
    in this process or another."""
    state, py_state = np.random.get_state(), random.getstate()
    np.random.seed(int(seed) % 2**32)
    random.seed(int(seed))
    try:
        with seeded(int(seed) % 2**63):
            yield
    finally:
        np.random.set_state(state)
        random.setstate(py_state)


def spawn_seeds(g: torch.Generator, k: int) -> list[int]:
    """``k`` child seeds drawn from ``g``: one per member, so that a member can draw its own noise locally
    (in process or in a remote replica) and the results are identical either way."""
    return torch.randint(0, 2**62, (k,), generator=g, device=g.device).tolist()
