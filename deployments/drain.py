"""Graceful shutdown. ``ensdef serve`` drains the application before it stops: a named control actor holds the
flag; every ingress replica polls it every ``POLL_S`` seconds and reports its requests in flight. While draining,
an ingress refuses new classify calls (503 with ``Retry-After`` / gRPC UNAVAILABLE) and ``/healthz`` says so, so
load balancers move away; requests already admitted finish. The command waits until every live replica has
reported nothing in flight (at most the request deadline plus a margin), then shuts Serve down.

Without the control actor (an application deployed with ``serve deploy``) the ingress never drains and polls
rarely."""

from __future__ import annotations

import asyncio
import logging
import time

import ray

log = logging.getLogger(__name__)
CONTROL, NAMESPACE = "ensdef-control", "ensdef"
POLL_S = 0.25  # how often an ingress replica reports and reads the flag
ABSENT_POLL_S = 5.0  # how often it looks for a control actor that does not exist
STALE_S = 20 * POLL_S  # a replica silent this long is gone (killed) and has nothing left to finish


class Draining(RuntimeError):
    """The service is shutting down: new requests are refused, admitted ones finish."""


@ray.remote(num_cpus=0)
class Control:
    """The drain flag and each ingress replica's last report ``(time, requests in flight)``."""

    def __init__(self) -> None:
        self.drain_at: float | None = None
        self.reports: dict[str, tuple[float, int]] = {}

    def drain(self) -> None:
        self.drain_at = self.drain_at or time.monotonic()

    def report(self, replica: str, active: int) -> bool:
        self.reports[replica] = (time.monotonic(), active)
        return self.drain_at is not None

    def drained(self) -> bool:
        """Every replica heard from recently has reported, after the drain began, nothing in flight."""
        if self.drain_at is None:
            return False
        now, since = time.monotonic(), self.drain_at + POLL_S
        live = [(t, n) for t, n in self.reports.values() if now - t < STALE_S]
        return now > since + POLL_S and all(t > since and n == 0 for t, n in live)


def start_control() -> ray.actor.ActorHandle:
    """The control actor of this driver (it ends with the driver); replaces one a previous run left."""
    try:
        ray.kill(ray.get_actor(CONTROL, namespace=NAMESPACE))
    except ValueError:
        pass
    return Control.options(name=CONTROL, namespace=NAMESPACE).remote()  # type: ignore[attr-defined]


def drain(control: ray.actor.ActorHandle, timeout_s: float) -> bool:
    """Set the flag and wait until every ingress replica has finished its requests (False after ``timeout_s``)."""
    ray.get(control.drain.remote())
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        if ray.get(control.drained.remote()):
            return True
        time.sleep(POLL_S / 2)
    log.warning("requests still in flight after %.0f s; stopping anyway", timeout_s)
    return False


class DrainWatch:
    """An ingress replica's side: counts its requests in flight, reports them, learns when to refuse."""

    def __init__(self, replica: str) -> None:
        self.replica, self.active, self.draining = replica, 0, False
        self._control: ray.actor.ActorHandle | None = None
        self._next_lookup = 0.0
        self._task: asyncio.Task | None = None

    async def _poll(self) -> None:
        """One report (and the flag in return); looks the control actor up at most every ABSENT_POLL_S."""
        if self._control is None:
            if time.monotonic() < self._next_lookup:
                return
            try:
                self._control = ray.get_actor(CONTROL, namespace=NAMESPACE)
            except ValueError:
                self._next_lookup = time.monotonic() + ABSENT_POLL_S
                return
        try:
            self.draining = await self._control.report.remote(self.replica, self.active)
        except ray.exceptions.RayActorError:  # the driver that owned it is gone
            self._control = None

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(POLL_S)
            await self._poll()

    async def admit(self) -> None:
        """Raises :class:`Draining` while the service drains; otherwise counts one request in (pair with
        :meth:`done`). The first call reports before admitting, so a replica learns the flag before it answers."""
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run())
            await self._poll()
        if self.draining:
            raise Draining("the service is shutting down; retry on another instance or shortly")
        self.active += 1

    def done(self) -> None:
        self.active -= 1
