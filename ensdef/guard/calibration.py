"""The detection threshold, calibrated on benign clients: the lowest score each benign stream reaches, and a
threshold below the share of them a deployment accepts to flag."""

from __future__ import annotations

import logging

import numpy as np
import torch

from ensdef.guard.stateful import DetectorSpec, StatefulDetector
from ensdef.guard.streams import StreamSpec, benign_stream

log = logging.getLogger(__name__)


def lowest_scores(spec: DetectorSpec, streams: list[torch.Tensor], batch: int = 64) -> np.ndarray:
    """The lowest score each stream ``[n, C, H, W]`` reaches when one client sends it ``batch`` images per
    request (no threshold: nothing is cleared). Returns ``[S]``, ascending."""
    lows = []
    for s in streams:
        det = StatefulDetector(spec, threshold=-np.inf)
        low = min(float(det.observe("c", s[j : j + batch], now=0.0).scores.min()) for j in range(0, len(s), batch))
        lows.append(low)
    return np.sort(np.asarray(lows))


def threshold(lows: np.ndarray, fpr: float, margin: float) -> float:
    """``margin`` times the ``fpr`` quantile of benign clients' lowest scores (the lowest one when there are
    fewer than ``1 / fpr`` clients): at most about ``fpr`` of clients like them are flagged, and ``margin`` < 1
    keeps a distance from the closest benign client."""
    if not len(lows) or not 0 <= fpr < 1 or not 0 < margin <= 1:
        raise ValueError("need benign scores, 0 <= fpr < 1 and 0 < margin <= 1")
    return float(margin * np.quantile(lows, fpr, method="lower"))


def calibrate(
    spec: DetectorSpec,
    pool: torch.Tensor,
    g: torch.Generator,
    clients: int = 40,
    queries: int = 400,
    fpr: float = 0.001,
    margin: float = 0.5,
    stream: StreamSpec | None = None,
) -> float:
    """The threshold for ``spec`` from ``clients`` benign streams of ``queries`` images drawn from ``pool``
    ``[N, C, H, W]`` (a training split: not the images a test measures on)."""
    streams = [benign_stream(pool, queries, g, stream) for _ in range(clients)]
    lows = lowest_scores(spec, streams)
    t = threshold(lows, fpr, margin)
    log.info("detection threshold %.4f (%d benign clients: lowest scores %.4f .. %.4f)", t, clients, lows[0], lows[-1])
    return t
