"""Defense routing: runs a defense's decision plan (``ensdef.defenses.plans``) with its jobs fanned out to the member
deployments. :class:`Routing` is plain Python: the :class:`Router` deployment (one per defense, unpacked) wraps
it, and packed (small machines) the ingress replica routes for every defense itself, one actor hop less per
request. It holds no defense math: the plan, the aggregation functions and the random draws are the
library's, so a served answer equals ``defense.decide(x, make_generator(seed))``.

Each stage sends one call per member host (``asyncio`` tasks; concurrent requests' calls to a host are
coalesced, :mod:`deployments.coalesce`) and waits until the request's deadline; a
host that fails or misses it contributes ``None`` for its jobs, which the plan turns into a degraded vote or,
below quorum, into :class:`~ensdef.defenses.plans.QuorumLost` (answered as unavailable).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import torch
from ray import serve
from ray.serve.handle import DeploymentHandle
from ray.serve.metrics import Counter, Histogram

from deployments.coalesce import HostCalls, Send
from deployments.member import Members, batch_size_histogram, replica_device
from deployments.settings import INGRESS_HOST
from ensdef.defenses.plans import Job, Results
from ensdef.defenses.registry import describe_defense
from ensdef.errors import QuorumLost
from ensdef.presets import load_preset
from ensdef.rng import make_generator
from ensdef.store import ArtifactStore
from ensdef.types import Decision

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Verdict:
    """What a router returns: Decisions, or why there are none (``unavailable``)."""

    decisions: list[Decision]
    unavailable: str = ""


class Routing:
    """Routes requests of ``defenses`` through the member ``hosts`` (deployment name -> handle; ``host_of``
    maps a member to its host)."""

    def __init__(
        self,
        defenses: list[str],
        preset: str,
        store: str,
        hosts: dict[str, DeploymentHandle],
        host_of: dict[str, str],
        deadline_s: float,
        quorum: float,
        host_calls: int = 2,
        host_call_images: int = 2048,
        local: dict[str, Any] | None = None,
    ) -> None:
        """``local`` (``packing: ingress``): ``{"members": [...], "max_pass_images": N, "threads": N}``, members
        this replica computes itself, in one worker thread (host :data:`INGRESS_HOST`)."""
        st, pr = ArtifactStore(store), load_preset(preset)
        # weight-free: the router plans; members compute in their hosts (weights loaded there, once)
        self.defenses = {d: describe_defense(d, st, pr).defense for d in defenses}
        self.hosts = {
            h: HostCalls(handle.run.remote, host_calls, host_call_images, deadline_s) for h, handle in hosts.items()
        }
        if local:
            self.hosts[INGRESS_HOST] = HostCalls(
                self._local_host(store, local, host_calls), host_calls, host_call_images, deadline_s
            )
        self.host_of = host_of
        self.deadline_s, self.quorum = deadline_s, quorum
        tags = ("defense",)
        self.requests = Counter("ensdef_requests", description="classified images", tag_keys=tags)
        self.flagged = Counter("ensdef_flagged", description="flagged images", tag_keys=tags)
        self.abstained = Counter("ensdef_abstained", description="abstained images", tag_keys=tags)
        self.degraded = Counter("ensdef_degraded", description="images answered by a degraded vote", tag_keys=tags)
        self.unavailable = Counter("ensdef_unavailable", description="requests below quorum", tag_keys=tags)
        self.member_latency = Histogram(
            "ensdef_member_latency_ms",
            description="member host round trip per stage",
            boundaries=[1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 5000],
            tag_keys=("defense", "host"),
        )

    def _local_host(self, store: str, local: dict[str, Any], workers: int) -> Send:
        """A host in this process: the models answer bundles in ``workers`` threads (one per outstanding call;
        torch releases the GIL), so the event loop keeps parsing requests meanwhile; ``threads`` sets this
        process's torch threads."""
        if local.get("threads", 0) > 0:
            torch.set_num_threads(local["threads"])
        host = Members(store, local["members"], local["max_pass_images"], replica_device())
        worker = ThreadPoolExecutor(workers, thread_name_prefix="members")
        batch_sizes = batch_size_histogram()

        async def send(bundle: list[list[Job]]) -> list[list[torch.Tensor]]:
            out = await asyncio.get_running_loop().run_in_executor(worker, host.answer, bundle)
            batch_sizes.observe(len(bundle), tags={"host": INGRESS_HOST})
            return out

        return send

    async def classify(self, defense: str, x: torch.Tensor, seed: int) -> Verdict:
        """``defense``'s Decisions for ``x`` ``[B, C, H, W]`` with the request's randomness drawn from ``seed``."""
        plan = self.defenses[defense].plan(x, make_generator(seed), self.quorum)
        end = time.monotonic() + self.deadline_s
        tags = {"defense": defense}
        try:
            jobs = next(plan)
            while True:
                jobs = plan.send(await self._fan_out(defense, jobs, end))
        except StopIteration as done:
            out: list[Decision] = done.value
        except QuorumLost as e:
            self.unavailable.inc(1, tags=tags)
            return Verdict([], str(e))
        for counter, n in (
            (self.requests, len(out)),
            (self.flagged, sum(d.flagged for d in out)),
            (self.abstained, sum(d.abstained for d in out)),
            (self.degraded, sum(d.degraded for d in out)),
        ):
            if n:  # Ray counters refuse increments of 0
                counter.inc(n, tags=tags)
        return Verdict(out)

    async def _call(self, defense: str, host: str, jobs: list[Job]) -> list[torch.Tensor]:
        t0 = time.perf_counter()
        res = await self.hosts[host].call(jobs)
        self.member_latency.observe(1e3 * (time.perf_counter() - t0), tags={"defense": defense, "host": host})
        return res

    async def _fan_out(self, defense: str, jobs: list[Job], end: float) -> Results:
        by_host: dict[str, list[int]] = defaultdict(list)
        for i, job in enumerate(jobs):
            by_host[self.host_of[job.member]].append(i)
        tasks = {h: asyncio.ensure_future(self._call(defense, h, [jobs[i] for i in idx])) for h, idx in by_host.items()}
        done, pending = await asyncio.wait(tasks.values(), timeout=max(end - time.monotonic(), 0.0))
        for t in pending:
            t.cancel()
        results: Results = [None] * len(jobs)
        for h, t in tasks.items():
            if t in done and t.exception() is None:
                for i, r in zip(by_host[h], t.result(), strict=True):
                    results[i] = r
            elif t in done:
                log.warning("%s: host %s failed: %s", defense, h, t.exception())
            else:
                log.warning("%s: host %s missed the deadline", defense, h)
        return results

    def members(self) -> dict[str, Any]:
        return {d: sorted(x.named_members()) for d, x in self.defenses.items()}


@serve.deployment
class Router(Routing):
    """A router replica: :class:`Routing` for one defense (or several) behind its own deployment."""
