"""Defense outcome metrics (MODEF section II): per example one of four outcomes, and their rates.

An abstention (label ``ABSTAIN``) counts as flagged and not correct: the defense declined to answer.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum

import numpy as np

from ensdef.types import ABSTAIN, Decision


class Outcome(str, Enum):
    CORRECT_UNFLAGGED = "correct_unflagged"  # prevented (PSR)
    CORRECT_FLAGGED = "correct_flagged"  # false positive (FP)
    WRONG_FLAGGED = "wrong_flagged"  # detected (TSR)
    WRONG_UNFLAGGED = "wrong_unflagged"  # the attack got through


def outcomes(decisions: Sequence[Decision], y: Sequence[int] | np.ndarray) -> list[Outcome]:
    y = np.asarray(y)
    if len(decisions) != len(y):
        raise ValueError(f"{len(decisions)} decisions for {len(y)} labels")
    out = []
    for d, t in zip(decisions, y, strict=True):
        correct = d.label != ABSTAIN and d.label == int(t)
        flagged = d.flagged or d.label == ABSTAIN
        out.append(
            (Outcome.CORRECT_FLAGGED if flagged else Outcome.CORRECT_UNFLAGGED)
            if correct
            else (Outcome.WRONG_FLAGGED if flagged else Outcome.WRONG_UNFLAGGED)
        )
    return out


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
        return {
            "n": self.n,
            "psr": self.psr,
            "tsr": self.tsr,
            "dsr": self.dsr,
            "fp": self.fp,
            "wrong_unflagged": self.wrong_unflagged,
            "accuracy": self.accuracy,
            "flag_rate": self.flag_rate,
            "abstain": self.abstain,
        }


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
