"""Per-client counts that a flood of client names can neither blind nor inflate without bound.

Every client's images and requests are counted exactly while it is tracked (up to ``max_tracked`` clients; when
full, the least recently seen client without a series of its own is forgotten). A client gets a metrics series of
its own once it has sent ``series_min_images`` images and fewer than ``max_series`` clients have one; its series
then starts at its exact count so far. Everything else is reported under one ``other`` series. A flood of
one-query names therefore stays in ``other`` and cannot push a heavy client out of its series.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

OTHER = "other"


@dataclass
class ClientCount:
    images: int = 0
    requests: int = 0
    series: bool = False  # has a series of its own
    detections: int = 0  # stateful detections of a query-based attack
    first_detection: int | None = None  # 1-based number of the image (among the client's) first detected


class ClientCounts:
    def __init__(self, max_series: int = 50, series_min_images: int = 100, max_tracked: int = 100_000) -> None:
        if max_series < 0 or series_min_images < 1 or max_tracked < max_series + 1:
            raise ValueError("need max_series >= 0, series_min_images >= 1 and max_tracked > max_series")
        self.max_series, self.series_min_images, self.max_tracked = max_series, series_min_images, max_tracked
        self._counts: OrderedDict[str, ClientCount] = OrderedDict()  # least recently seen first
        self.n_series = 0

    def add(self, client: str, images: int) -> tuple[str, int]:
        """Count one request of ``images`` images. Returns ``(series, increment)``: the series to add
        ``increment`` images to (the client's own one, or ``other``). When the client has just got its own series,
        ``increment`` is its whole count so far; earlier increments stay in ``other``."""
        c = self._counts.pop(client, None) or ClientCount()
        c.images += images
        c.requests += 1
        self._counts[client] = c
        if len(self._counts) > self.max_tracked:
            self._forget_one()
        if c.series:
            return client, images
        if c.images >= self.series_min_images and self.n_series < self.max_series:
            c.series = True
            self.n_series += 1
            return client, c.images
        return OTHER, images

    def get(self, client: str) -> ClientCount | None:
        return self._counts.get(client)

    def top(self, n: int) -> list[tuple[str, ClientCount]]:
        """The ``n`` tracked clients with the most images."""
        return sorted(self._counts.items(), key=lambda kv: -kv[1].images)[:n]

    def __len__(self) -> int:
        return len(self._counts)

    def _forget_one(self) -> None:
        for name, c in self._counts.items():  # oldest first; clients with a series are never forgotten
            if not c.series:
                del self._counts[name]
                return
