"""Coalescing the calls that concurrent requests make to one member host.

Every actor call costs both sides a fixed amount of CPU (Serve's routing, serialisation, the raylet), which
on a small machine is comparable to a small model's forward pass. :class:`HostCalls` sends the jobs of
concurrent requests to a host together: while ``max_in_flight`` calls to the host are outstanding, further
requests' job lists queue, and the next call carries everything queued (up to ``max_images`` images, at
least one request). An idle host is called at once, so a lone request waits for nothing.

Guarantees: each request gets exactly its own results, in its jobs' order; a failed call fails every request
it carried (each request's router then degrades or refuses, as for any host failure); a call that outlives
``timeout_s`` fails too, so a hung host cannot hold the call slots; a request that stops waiting (its deadline)
is dropped from the results without disturbing the others in its call.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable

import torch

from ensdef.defenses.plans import Job

Send = Callable[[list[list[Job]]], Awaitable[list[list[torch.Tensor]]]]


class HostCalls:
    """Calls to one host through ``send`` (a bundle of job lists -> one result list per job list)."""

    def __init__(
        self, send: Send, max_in_flight: int = 2, max_images: int = 2048, timeout_s: float | None = None
    ) -> None:
        if max_in_flight < 1 or max_images < 1:
            raise ValueError("max_in_flight and max_images must be at least 1")
        self.send, self.max_in_flight, self.max_images = send, max_in_flight, max_images
        self.timeout_s = timeout_s
        self.queue: deque[tuple[list[Job], asyncio.Future]] = deque()
        self.in_flight = 0
        self.calls = 0  # calls made (for telemetry and tests)
        self._tasks: set[asyncio.Task] = set()  # the loop keeps only weak references to running tasks

    async def call(self, jobs: list[Job]) -> list[torch.Tensor]:
        """The results of ``jobs`` ``[one tensor per job]``, sent alone or with other requests' jobs."""
        fut: asyncio.Future = asyncio.get_running_loop().create_future()
        self.queue.append((jobs, fut))
        self._dispatch()
        return await fut

    def _dispatch(self) -> None:
        while self.queue and self.in_flight < self.max_in_flight:
            bundle, images = [], 0
            while self.queue:
                jobs, fut = self.queue[0]
                n = sum(len(j.x) for j in jobs)
                if bundle and images + n > self.max_images:
                    break
                self.queue.popleft()
                if not fut.done():  # a request that already gave up is not sent
                    bundle.append((jobs, fut))
                    images += n
            if bundle:
                self.in_flight += 1
                self.calls += 1
                task = asyncio.ensure_future(self._send(bundle))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)

    async def _send(self, bundle: list[tuple[list[Job], asyncio.Future]]) -> None:
        try:
            results = await asyncio.wait_for(self.send([jobs for jobs, _ in bundle]), self.timeout_s)
            if len(results) != len(bundle):
                raise RuntimeError(f"host answered {len(results)} job lists for {len(bundle)}")
            for (_, fut), res in zip(bundle, results, strict=True):
                if not fut.done():
                    fut.set_result(res)
        except Exception as e:  # noqa: BLE001  (every carried request learns of the failure)
            for _, fut in bundle:
                if not fut.done():
                    fut.set_exception(e)
        finally:
            self.in_flight -= 1
            self._dispatch()
