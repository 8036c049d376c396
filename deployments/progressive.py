"""Progressive serving for ``ensdef serve --train-missing``: serve what the store can build, train the rest
cheapest defense first (:func:`ensdef.training.schedule.schedule`), and deploy each defense as soon as its pools
are trained, while the ingress reports the others as training (``training-progress`` in the store)."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import ray
from ray import serve

from deployments.app import survey
from deployments.drain import drain, start_control
from deployments.launch import Endpoints, connect, deploy, wait_for_ports
from deployments.modes import IngressMode
from deployments.settings import ServeSettings
from ensdef.data import Dataset
from ensdef.errors import ConfigError, NotTrained
from ensdef.presets import Preset, load_preset
from ensdef.store import ArtifactStore
from ensdef.training.schedule import DEFENSE_POOLS, Progress, Step, describe, run_schedule, schedule

log = logging.getLogger(__name__)


@dataclass
class MissingTraining:
    """What ``ensdef serve --train-missing`` still has to train for the defenses it serves: the schedule
    (cheapest defense first) and its progress, which the ingress reads from the store."""

    preset: Preset
    data: Dataset
    store: ArtifactStore
    steps: list[Step]
    progress: Progress

    def run(self, on_step: Callable[[Step], None] | None = None) -> None:
        run_schedule(self.steps, self.preset, self.data, self.store, self.progress, on_step)


@dataclass(frozen=True)
class Target:
    """Where and how to deploy: the Ray to join (``address``; None or ``local`` may start one with
    ``num_cpus``, ``env`` and Prometheus metrics on ``metrics_port``), the ports clients use, the proxies'
    location and the ingress mode (None: the mode the cluster was started with)."""

    address: str | None
    num_cpus: float | None
    host: str
    http_port: int
    grpc_port: int
    proxy_location: str
    ingress: IngressMode | None
    env: dict[str, str] | None = None
    metrics_port: int | None = None

    @property
    def starts_ray(self) -> bool:
        return self.address == "local" or not (self.address or os.environ.get("RAY_ADDRESS"))


REDEPLOY_AFTER_S = 60.0
"""A defense made servable by a step waits for the next step when that one should take less than this."""


class Progressive:
    """Serve what the store can build, train the rest, and deploy each defense as soon as its pools complete:
    the first deployment starts Ray (or joins it), every later one replaces the application in place."""

    def __init__(self, settings: ServeSettings, target: Target) -> None:
        self.settings, self.target = settings, target
        self.endpoints: Endpoints | None = None
        self.pending: set[str] = set()
        self.control: ray.actor.ActorHandle | None = None  # the drain flag (deployments.drain)

    def deploy(self, defenses: dict[str, list[str]]) -> Endpoints:
        t = self.target
        if self.endpoints is None:
            if t.starts_ray:
                wait_for_ports(t.host, [t.http_port, t.grpc_port])  # a Ray this process starts binds them
            connect(t.address, t.num_cpus, t.env, t.metrics_port)
            self.control = start_control()
        first = self.endpoints is None
        self.endpoints = deploy(self.settings, t.host, t.http_port, t.grpc_port, t.proxy_location, t.ingress, defenses)
        if first:
            log.info(
                "serving %s at %s and %s", ", ".join(self.endpoints.defenses), self.endpoints.http, self.endpoints.grpc
            )
        else:
            log.info("now serving %s", ", ".join(self.endpoints.defenses))
        return self.endpoints

    def after_step(self, job: MissingTraining, step: Step) -> None:
        """Deploy what ``step`` made servable, unless the next step is short: then after that one (each
        deployment starts the new pools' replicas and a new ingress, which costs time the training waits for;
        the other hosts keep running, :mod:`deployments.versions`)."""
        self.pending.update(step.unlocks)
        rest = job.steps[job.steps.index(step) + 1 :]
        soon = bool(rest) and rest[0].cost * job.progress.factor < REDEPLOY_AFTER_S
        if self.pending and not (soon and self.endpoints is not None):
            self.deploy(survey(self.settings)[0])
            self.pending.clear()

    def stop(self) -> None:
        """Graceful shutdown: refuse new requests, let admitted ones finish (at most the request deadline and
        a margin), then delete the application from a cluster this process joined."""
        if self.endpoints is None or self.control is None:
            return
        t0 = time.monotonic()
        finished = drain(self.control, self.settings.deadline_s + 5)
        log.info("drained in %.1f s%s; stopping", time.monotonic() - t0, "" if finished else " (timed out)")
        if not self.target.starts_ray:  # a Ray this process started ends with it, still refusing until then
            serve.delete(self.settings.application)

    def run(self, servable: dict[str, list[str]], job: MissingTraining | None) -> Endpoints:
        """Deploy ``servable`` (when any), then train ``job``'s steps, deploying as they complete; logs the
        plan first and a summary at the end. Returns the last deployment's endpoints."""
        t0 = time.monotonic()
        if job is not None:
            log.info("%s", describe(job.steps, job.progress.factor))
        if servable:
            self.deploy(servable)
        if job is not None:
            job.run(lambda step: self.after_step(job, step))
            log.info(
                "trained %d members in %.1f min; serving %s",
                sum(len(s.todo) for s in job.steps),
                (time.monotonic() - t0) / 60,
                ", ".join(sorted(survey(self.settings)[0])),
            )
        if self.endpoints is None:
            raise NotTrained(f"no defense can be built from store {self.settings.store}")
        return self.endpoints


def plan_missing(s: ServeSettings, defenses: Iterable[str], data_root: str | None = None) -> MissingTraining:
    """The training schedule of ``defenses`` (their missing members and post steps) on the preset's data."""
    from ensdef.data import load_dataset

    preset, store = load_preset(s.preset), ArtifactStore(s.store)
    data = load_dataset(preset.dataset, data_root or preset.data_root)
    wanted = sorted(defenses)
    unknown = [d for d in wanted if d not in DEFENSE_POOLS]
    if unknown:
        raise ConfigError(f"cannot train for {', '.join(unknown)}: no pools known (ensdef.training.schedule)")
    steps = schedule(preset, data, store, wanted)
    return MissingTraining(preset, data, store, steps, Progress(steps, store, preset, wanted))
