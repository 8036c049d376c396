"""Certification loop throughput against raw batched forward passes of the same number of noisy samples,
measured side by side in one run (goal: overhead under 15%).

    .venv/bin/python benchmarks/certify_overhead.py [--store DIR] [--images 5] [--n 1000]

With --store the stored temperature networks are used, otherwise ten freshly built ones (same cost).
"""

from __future__ import annotations

import argparse
import time

import torch

from ensdef.defenses.noisy_vote import NoisyVoteEnsemble
from ensdef.evaluation.certify import certify
from ensdef.models import build
from ensdef.rng import make_generator, randn_like, seeded


def members(store: str | None) -> list[torch.nn.Module]:
    if store:
        from ensdef.defenses.registry import load_role
        from ensdef.store import ArtifactStore
        from ensdef.types import Role

        return load_role(ArtifactStore(store), Role.TEMPNET, torch.device("cpu"))[1]
    with seeded(0):
        return [build("tempnet", (1, 28, 28)).eval() for _ in range(10)]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--store", default=None)
    ap.add_argument("--images", type=int, default=5)
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--n0", type=int, default=100)
    ap.add_argument("--batch", type=int, default=500)
    a = ap.parse_args()
    torch.set_num_threads(2)
    ens = NoisyVoteEnsemble(members(a.store), sigma=0.5, alpha_rv=None)
    xs = torch.rand(a.images, 1, 28, 28, generator=make_generator(0))
    g = make_generator(1)
    samples = a.images * (a.n + a.n0)

    @torch.no_grad()
    def raw() -> None:
        left = samples
        while left:
            b = min(a.batch, left)
            batch = xs[0].expand(b, 1, 28, 28)
            for m in ens.nets:
                m(batch + 0.5 * randn_like(batch, g)).argmax(1)
            left -= b

    def loop() -> None:
        for x in xs:
            certify(ens.base_vote, x, 0.5, a.n0, a.n, 0.001, 10, g, a.batch)

    raw()  # warm-up
    timings = {}
    for name, fn in (("raw", raw), ("certify", loop), ("raw2", raw), ("certify2", loop)):
        t0 = time.perf_counter()
        fn()
        timings[name] = time.perf_counter() - t0
    r = min(timings["raw"], timings["raw2"])
    c = min(timings["certify"], timings["certify2"])
    print(f"{samples:,} noisy samples x {len(ens.nets)} members")
    print(f"raw batched forward: {samples / r:,.0f} samples/s; certification loop: {samples / c:,.0f} samples/s")
    print(f"certification overhead: {100 * (c / r - 1):.1f}% (ratio {c / r:.3f})")


if __name__ == "__main__":
    main()
