"""The headline of a report: per image, the worst case over every attack of the threat model.

An image counts as robust for a defense only when the defense answers it correctly (right label, not
abstained) under every attack cell whose perturbations stay within the L-inf budget; it counts as defended
when every such attack either fails or is flagged / abstained on. Flagging everything would make every image
defended but none robust, so both are reported, beside the flag and abstain rates on clean images. Defenses
are compared pairwise on the same images with the exact McNemar test.
"""

from __future__ import annotations

import itertools
from typing import Any

import numpy as np

from ensdef.evaluation.stats import interval, mcnemar

TOLERANCE = 1e-4  # float32 rounding of a perturbation at the budget


def _rate(name: str, ok: np.ndarray) -> dict[str, Any]:
    k, n = int(ok.sum()), len(ok)
    return {name: k / n if n else 0.0, f"{name}_count": k, f"{name}_ci": list(interval(k, n))}


def worst_case(row: dict[str, dict[str, Any]], eps: float) -> dict[str, Any] | None:
    """Worst case over the cells of ``row`` (one defense) made within L-inf ``eps`` of the attack set; None
    when no cell qualifies. ``attacks`` names the cells combined."""
    cells = {
        k: c["per_image"]
        for k, c in row.items()
        if k != "benign" and "per_image" in c and max(c["per_image"]["linf"], default=0.0) <= eps + TOLERANCE
    }
    if not cells:
        return None
    correct = np.array([c["correct"] for c in cells.values()], dtype=bool)  # [A, N]
    flagged = np.array([c["flagged"] for c in cells.values()], dtype=bool)
    robust, defended = correct.all(0), (correct | flagged).all(0)
    return {
        "eps": eps,
        "attacks": sorted(cells),
        "n": int(correct.shape[1]),
        **_rate("robust", robust),
        **_rate("defended", defended),
        "per_image": {"robust": robust.tolist(), "defended": defended.tolist()},
    }


def paired(worst: dict[str, dict[str, Any] | None], alpha: float = 0.05) -> list[dict[str, Any]]:
    """McNemar tests of worst-case robustness for every pair of defenses (same images); ``significant`` at
    ``alpha``."""
    out = []
    have = {d: w for d, w in worst.items() if w is not None}
    for a, b in itertools.combinations(sorted(have), 2):
        t = mcnemar(have[a]["per_image"]["robust"], have[b]["per_image"]["robust"])
        out.append({"a": a, "b": b, **t, "significant": t["p_value"] < alpha})
    return out
