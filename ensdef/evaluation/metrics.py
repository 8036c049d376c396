"""Defense outcome metrics (MODEF section II): per example one of four outcomes, and their rates.

An abstention (label ``ABSTAIN``) counts as flagged and not correct: the defense declined to answer.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ensdef.types import ABSTAIN, Decision, Outcome, outcomes


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

    def as_dict(self) -> dict[str, float]:
        """Every rate by name (the report's columns), with ``n``."""
        keys = ("n", "psr", "tsr", "dsr", "fp", "wrong_unflagged", "accuracy", "flag_rate", "abstain")
        return {k: getattr(self, k) for k in keys}


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
