"""The ingress's guard against query-based attackers: who the client is (API keys, or its own declaration in
open mode), whether it is within its quota, and whether its recent queries look like a black-box attack
(stateful detection, :mod:`ensdef.guard.stateful`). Counts per client are exported with a bounded number of
series (:mod:`ensdef.guard.clients`).

Scope: each ingress replica keeps its own quotas, counts and query memory (nothing is shared between replicas).
With ``R`` ingress replicas a client's requests are spread over them, so a quota admits up to ``R`` times its
rate and detection needs up to ``R`` times as many queries; the default is one ingress replica.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import replace
from typing import Any

import torch
from ray.serve.metrics import Counter

from deployments.settings import Action, GuardSettings
from ensdef.errors import RetryLater
from ensdef.guard.clients import OTHER, ClientCounts
from ensdef.guard.keys import ApiKeys
from ensdef.guard.quota import QuotaExceeded, Quotas
from ensdef.guard.stateful import StatefulDetector

log = logging.getLogger(__name__)


class Unauthenticated(Exception):
    """No valid API key (HTTP 401 / gRPC UNAUTHENTICATED)."""


class Refused(RetryLater):
    """A client refused after a detection, until its cooldown ends (HTTP 403 / gRPC PERMISSION_DENIED)."""


class Guard:
    def __init__(self, s: GuardSettings) -> None:
        """``s.detection.threshold`` must be set (calibrated) unless detection is off."""
        self.s, self.keys = s, ApiKeys(s.api_keys)
        self.quotas = Quotas(s.quota, s.quota_overrides)
        self.counts = ClientCounts(s.max_client_series, s.series_min_images, s.max_tracked_clients)
        det = s.detection
        self.detector = None if det.action is Action.OFF else StatefulDetector(det.spec(), det.threshold)
        self.suspect_until: dict[str, float] = {}
        self.m_queries = Counter("ensdef_client_queries", description="images per client", tag_keys=("client",))
        self.m_quota = Counter("ensdef_quota_refusals", description="requests over quota", tag_keys=("client",))
        self.m_detections = Counter(
            "ensdef_detections", description="query-based attack detections", tag_keys=("client", "action")
        )

    def identify(self, key: str | None, declared: str) -> str:
        """The client: the key's owner when keys are configured (401 otherwise), else the declared name."""
        if not self.keys.enabled:
            return declared
        client = self.keys.client(key)
        if client is None:
            raise Unauthenticated("a valid API key is required (header 'Authorization: Bearer <key>' or 'X-API-Key')")
        return client

    def series(self, client: str) -> str:
        c = self.counts.get(client)
        return client if c is not None and c.series else OTHER

    async def admit(self, client: str, x: torch.Tensor) -> bool:
        """Quota, then counting, then detection, for images ``x`` ``[B, C, H, W]`` from ``client``. Raises
        :class:`QuotaExceeded` or :class:`Refused`; sleeps when the client is throttled. Returns whether every
        answer is to be flagged (the client is under a ``flag`` detection's cooldown)."""
        try:
            self.quotas.admit(client, len(x))
        except QuotaExceeded:
            self.m_quota.inc(1, tags={"client": self.series(client)})
            raise
        series, n = self.counts.add(client, len(x))
        self.m_queries.inc(n, tags={"client": series})
        if self.detector is None:
            return False
        now, det = time.monotonic(), self.s.detection
        obs = self.detector.observe(client, x, now)
        hits = int(obs.detected.sum())
        if hits:
            c = self.counts.get(client)  # just counted, so tracked; it outlives the detector's memory of the client
            assert c is not None
            c.detections += hits
            if c.first_detection is None:
                c.first_detection = c.images - len(x) + int(obs.detected.argmax()) + 1
            if self.suspect_until.get(client, 0.0) <= now:
                log.warning(
                    "client %s: query-based attack detected (image %d; action %s)", client, c.images, det.action.value
                )
            if len(self.suspect_until) >= det.max_clients:  # bounded: cooled-down clients are dropped first
                self.suspect_until = {k: t for k, t in self.suspect_until.items() if t > now}
            self.suspect_until[client] = now + det.cooldown_s
            self.m_detections.inc(hits, tags={"client": series, "action": det.action.value})
        left = self.suspect_until.get(client, 0.0) - now
        if left <= 0:
            self.suspect_until.pop(client, None)
            return False
        if det.action is Action.REFUSE:
            raise Refused("refused: this client's queries look like a black-box attack", int(left) + 1)
        if det.action is Action.THROTTLE:
            await asyncio.sleep(det.throttle_s)
        return det.action is Action.FLAG

    def clients(self, top: int) -> list[dict[str, Any]]:
        """The ``top`` clients by images: counts, series, detections (operators' view)."""
        return [
            {
                "client": name,
                "images": c.images,
                "requests": c.requests,
                "series": name if c.series else OTHER,
                "detections": c.detections,
                "first_detection_query": c.first_detection,
            }
            for name, c in self.counts.top(top)
        ]


def with_threshold(s: GuardSettings, threshold: float) -> GuardSettings:
    return replace(s, detection=replace(s.detection, threshold=threshold))
