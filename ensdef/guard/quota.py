"""Per-client quotas: requests and images per moving window, over the ``limits`` library.

A request is admitted only when both its request and its images fit; a refused request consumes nothing.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

from limits import RateLimitItem, parse
from limits.storage import MemoryStorage
from limits.strategies import MovingWindowRateLimiter

from ensdef.errors import ConfigError, RetryLater


@dataclass(frozen=True)
class QuotaSpec:
    """Rates in the ``limits`` notation (``"600/minute"``, ``"20000 per hour"``); empty: no bound."""

    requests: str = ""
    images: str = ""


class QuotaExceeded(RetryLater):
    """A client over its quota; ``retry_after_s`` is when the window lets it in again."""


def _item(rate: str, what: str) -> RateLimitItem | None:
    if not rate:
        return None
    try:
        return parse(rate)
    except ValueError:
        raise ConfigError(f"quota {what}: {rate[:60]!r} is not a rate such as '600/minute'") from None


class Quotas:
    """Moving-window quotas per client name, with per-client overrides; memory held only for clients seen
    within a window (the storage expires them)."""

    def __init__(self, default: QuotaSpec, overrides: dict[str, QuotaSpec] | None = None) -> None:
        self._items = {None: (_item(default.requests, "requests"), _item(default.images, "images"))}
        for client, spec in (overrides or {}).items():
            self._items[client] = (_item(spec.requests, "requests"), _item(spec.images, "images"))
        self._limiter = MovingWindowRateLimiter(MemoryStorage())

    @property
    def enabled(self) -> bool:
        return any(i is not None for pair in self._items.values() for i in pair)

    def admit(self, client: str, images: int) -> None:
        """Count one request of ``images`` images for ``client``, or raise :class:`QuotaExceeded` (nothing counted)."""
        requests_item, images_item = self._items.get(client) or self._items[None]
        checks = [(requests_item, 1, "requests"), (images_item, images, "images")]
        for item, cost, what in checks:
            if item is None:
                continue
            if cost > item.amount:
                message = f"{cost} {what} in one request exceed the quota of {item.amount} per {_window(item)}"
                raise QuotaExceeded(message, item.get_expiry())
            if not self._limiter.test(item, client, cost=cost):
                reset = self._limiter.get_window_stats(item, client).reset_time
                wait = math.ceil(reset - time.time())
                raise QuotaExceeded(f"quota of {item.amount} {what} per {_window(item)} reached", wait)
        for item, cost, _ in checks:
            if item is not None:
                self._limiter.hit(item, client, cost=cost)


def _window(item: RateLimitItem) -> str:
    unit = item.GRANULARITY.name
    return unit if item.multiples == 1 else f"{item.multiples} {unit}s"
