"""Defense outcome metrics (MODEF section II): per example one of four outcomes, and their rates, each with
its count and a 95% Clopper-Pearson interval (:mod:`ensdef.evaluation.stats`).

An abstention (label ``ABSTAIN``) counts as flagged and not correct: the defense declined to answer.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ensdef.evaluation.stats import interval
from ensdef.types import ABSTAIN, Decision, Outcome, outcomes

RATE_KEYS = ("psr", "tsr", "dsr", "fp", "wrong_unflagged", "accuracy", "flag_rate", "abstain")


@dataclass(frozen=True)
class Rates:
    """Fractions of all examples. ``psr + fp + tsr + wrong_unflagged == 1``; ``dsr = psr + tsr``;
    ``accuracy`` = correct regardless of flag; ``flag_rate`` = flagged or abstained."""

    n: int
    psr: float
    tsr: float
    fp: float
    wrong_unflagged: float
    abstain: float

    @property
    def dsr(self) -> float:
        return self.psr + self.tsr

    @property
    def accuracy(self) -> float:
        return self.psr + self.fp

    @property
    def flag_rate(self) -> float:
        return self.fp + self.tsr

    def as_dict(self) -> dict[str, Any]:
        """``n``, then every rate by name (the report's columns) with ``<rate>_count`` (images) and
        ``<rate>_ci`` (its 95% Clopper-Pearson interval)."""
        out: dict[str, Any] = {"n": self.n}
        for k in RATE_KEYS:
            count = round(getattr(self, k) * self.n)
            out.update({k: getattr(self, k), f"{k}_count": count, f"{k}_ci": list(interval(count, self.n))})
        return out


def rates(decisions: Sequence[Decision], y: Sequence[int] | np.ndarray) -> Rates:
    oc = outcomes(decisions, y)
    n = len(oc)
    if n == 0:
        raise ValueError("no decisions to score")
    frac = {o: sum(x is o for x in oc) / n for o in Outcome}
    return Rates(
        n,
        frac[Outcome.CORRECT_UNFLAGGED],
        frac[Outcome.WRONG_FLAGGED],
        frac[Outcome.CORRECT_FLAGGED],
        frac[Outcome.WRONG_UNFLAGGED],
        sum(d.label == ABSTAIN for d in decisions) / n,
    )
