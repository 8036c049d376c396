"""How sure a figure is: exact (Clopper-Pearson) intervals for a rate from its count, and the exact McNemar
test for two defenses scored on the same images (only the images one gets right and the other wrong count).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy.stats import binomtest

LEVEL = 0.95


def interval(k: int, n: int, level: float = LEVEL) -> tuple[float, float]:
    """Clopper-Pearson ``level`` interval of a rate of ``k`` in ``n`` (exact: its coverage is at least
    ``level`` for every true rate). ``(0, 1)`` when ``n`` is 0."""
    if n == 0:
        return 0.0, 1.0
    ci = binomtest(int(k), int(n)).proportion_ci(confidence_level=level, method="exact")
    return float(ci.low), float(ci.high)


def mcnemar(a: Sequence[bool] | np.ndarray, b: Sequence[bool] | np.ndarray) -> dict[str, float | int]:
    """Exact McNemar test of per-image successes ``a`` and ``b`` (same images, same order): ``only_a`` images
    only ``a`` gets right, ``only_b`` the reverse, and the two-sided p-value of ``binomtest(only_a,
    only_a + only_b, 0.5)`` (1.0 when they never disagree)."""
    a, b = np.asarray(a, dtype=bool), np.asarray(b, dtype=bool)
    if a.shape != b.shape:
        raise ValueError(f"paired results differ in length: {a.shape} and {b.shape}")
    only_a, only_b = int((a & ~b).sum()), int((~a & b).sum())
    p = binomtest(only_a, only_a + only_b, 0.5).pvalue if only_a + only_b else 1.0
    return {"only_a": only_a, "only_b": only_b, "p_value": float(p)}
