"""Member deployment: a replica hosts one trained model (or, packed, several members of one pool), loaded from
the artifact store by name with its hash checked, and answers batches of plan jobs.

``@serve.batch`` gathers concurrent calls, each carrying the job lists of one or more requests; jobs for the
same member and operation run as one forward pass. A NOISY_LABELS job draws its noise from its own seed before
batching, so the answer does not depend on which requests happened to share the batch. CUDA when the replica
was given a GPU.
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict

import ray
import torch
from ray import serve
from ray.serve.metrics import Histogram

from ensdef.defenses.plans import Job, Op, noisy_input, run_job
from ensdef.models.inference import resolve_device
from ensdef.store import ArtifactStore

log = logging.getLogger(__name__)


def replica_device() -> torch.device:
    """The replica's device, from its Ray resource grant: CUDA when Ray gave it a GPU share (Ray then makes
    only the granted GPUs visible), the CPU otherwise. Ray leaves a replica without a share seeing every GPU
    of its node, so the grant, not ``torch.cuda.is_available()``, decides."""
    return resolve_device("auto" if ray.get_gpu_ids() else "cpu")


def _prepared(job: Job, device: torch.device) -> Job:
    """The job on ``device``; noisy jobs get their noise now (from their seed) and become clean label jobs."""
    job = Job(job.member, job.op, job.x.to(device), job.seed, job.sigma, job.path)
    if job.op is Op.NOISY_LABELS:
        return Job(job.member, Op.LABELS, noisy_input(job))
    return job


class Members:
    """The models of one host and how they answer bundles of job lists; plain Python: a :class:`MemberHost`
    replica wraps it, and with ``packing: ingress`` the ingress replica runs it itself."""

    def __init__(self, store: str, members: list[str], max_pass_images: int, device: torch.device) -> None:
        self.device, self.max_pass_images = device, max_pass_images
        s = ArtifactStore(store)
        self.models = {n: s.load_model(n, self.device)[0] for n in members}
        self.name = "+".join(members) if len(members) <= 3 else f"{members[0]}+{len(members) - 1}"

    def answer(self, requests: list[list[Job]]) -> list[list[torch.Tensor]]:
        """Per request, one result per job (on CPU). Jobs with the same member, op and path share a pass of at
        most ``max_pass_images`` images."""
        t0 = time.perf_counter()
        jobs = [(r, j, _prepared(job, self.device)) for r, req in enumerate(requests) for j, job in enumerate(req)]
        groups: dict[tuple, list[int]] = defaultdict(list)
        for k, (_, _, job) in enumerate(jobs):
            groups[(job.member, job.op, job.path)].append(k)
        out: list[list[torch.Tensor]] = [[None] * len(req) for req in requests]  # type: ignore[list-item]
        for (member, op, path), ks in groups.items():
            xs = [jobs[k][2].x for k in ks]
            chunks = torch.cat(xs).split(self.max_pass_images)  # bounds activation memory of merged batches
            res = torch.cat([run_job(self.models[member], Job(member, op, c, path=path)).cpu() for c in chunks])
            for k, part in zip(ks, res.split([len(x) for x in xs]), strict=True):
                out[jobs[k][0]][jobs[k][1]] = part
        log.debug("batch of %d requests in %.1f ms", len(requests), 1e3 * (time.perf_counter() - t0))
        return out


def batch_size_histogram() -> Histogram:
    return Histogram(
        "ensdef_member_batch_size",
        description="requests per member batch",
        boundaries=[1, 2, 4, 8, 16, 32, 64, 128],
        tag_keys=("host",),
    )


@serve.deployment
class MemberHost:
    def __init__(
        self,
        store: str,
        members: list[str],
        max_batch_size: int,
        batch_wait_timeout_s: float,
        max_pass_images: int,
        threads: int = 0,
    ) -> None:
        if threads > 0:  # else Ray's OMP_NUM_THREADS (the replica's num_cpus, at least 1)
            torch.set_num_threads(threads)
        self.host = Members(store, members, max_pass_images, replica_device())
        self.run.set_max_batch_size(max_batch_size)
        self.run.set_batch_wait_timeout_s(batch_wait_timeout_s)
        self.batch_sizes = batch_size_histogram()
        log.info("member host %s on %s, %d torch threads", members, self.host.device, torch.get_num_threads())

    @serve.batch(max_batch_size=64, batch_wait_timeout_s=0.0)
    async def run(self, calls: list[list[list[Job]]]) -> list[list[list[torch.Tensor]]]:
        """One call carries the job lists of one or more requests (the router coalesces them); per call, per
        request, one result per job (on CPU). Jobs with the same member, op and path share a pass."""
        requests = [req for call in calls for req in call]
        out = iter(self.host.answer(requests))
        self.batch_sizes.observe(len(requests), tags={"host": self.host.name})
        return [[next(out) for _ in call] for call in calls]

    def members(self) -> list[str]:
        return sorted(self.host.models)
