"""Shared vocabulary: member roles, the per-input Decision every defense returns and its Outcome against the
true label, and every enum a preset or a command line names (strings at the boundary, enums inside)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

import numpy as np

ABSTAIN: int = -1
"""Label returned when a defense declines to answer (rank verification, certification)."""


class Role(str, Enum):
    """What a trained member does inside a defense."""

    TARGET = "target"
    VERIFIER = "verifier"
    DENOISER = "denoiser"
    REFORMER = "reformer"
    TEMPNET = "tempnet"
    RLS = "rls"
    BASELINE = "baseline"  # MODEF Table V: adversarial training, defensive distillation
    INIT = "init"  # a shared starting point a pool's members train from (a warm start); serves in no defense

    @property
    def is_classifier(self) -> bool:
        return self in (Role.TARGET, Role.VERIFIER, Role.TEMPNET, Role.RLS, Role.BASELINE)


@dataclass(frozen=True)
class Decision:
    """A defense's answer for one input.

    ``label`` is a class index or :data:`ABSTAIN`; ``flagged`` says the defense believes the input is
    adversarial. ``diagnostics`` (votes, team, p-value, radius, ...) is for operators only and must never
    carry clean logits. ``degraded`` says some members did not answer and the vote went on without them.
    """

    label: int
    flagged: bool
    diagnostics: Mapping[str, Any] = field(default_factory=dict)
    degraded: bool = False

    @property
    def abstained(self) -> bool:
        return self.label == ABSTAIN

    def to_json(self, diagnostics: bool = False) -> dict[str, Any]:
        """The served answer: ``label`` (None when abstained), ``flagged``, ``abstained``, ``degraded``, and
        the diagnostics only when asked (operators)."""
        out: dict[str, Any] = {
            "label": None if self.abstained else self.label,
            "flagged": self.flagged,
            "abstained": self.abstained,
            "degraded": self.degraded,
        }
        if diagnostics:
            out["diagnostics"] = dict(self.diagnostics)
        return out


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


# --- configuration enums (presets, command line) ---


class Optim(str, Enum):
    ADAM = "adam"
    SGD = "sgd"


class AdvMethod(str, Enum):
    """The inner maximisation of adversarial training (``train.adversarial.method``)."""

    PGD = "pgd"  # Madry et al. 2018: L-inf PGD from a uniform random start, train on its examples
    TRADES = "trades"  # Zhang et al. 2019: clean cross-entropy + beta KL(f(x) || f(x')), x' maximising the KL
    FGSM_RS = "fgsm-rs"  # Wong, Rice and Kolter 2020: one FGSM step of 1.25 eps from a uniform random start


class Checkpoint(str, Enum):
    """Which weights training keeps."""

    BEST = "best"  # the first epoch with the best validation score (early stopping)
    LAST = "last"  # the weights after the last epoch run (a cosine schedule annealed to zero)


class DataShare(str, Enum):
    """What member l of m trains on, the training split cut into m interleaved slices."""

    ALL = "all"  # the whole split
    PARTITION = "partition"  # slice l only: disjoint training sets (the paper's MNIST setting)
    HOLDOUT = "holdout"  # every slice but l: each member leaves out its own tenth (for m = 10)


class GroupLossKind(str, Enum):
    CE_MEAN = "ce_mean"
    MSE = "mse"


class TeamPolicy(str, Enum):
    RAND = "rand"  # any team of an allowed size
    RAND_KAPPA = "rand_kappa"  # a random team from the kappa-ranked list
    BEST_KAPPA = "best_kappa"  # the most accurate team of the kappa-ranked list (fixed)


class VoteRule(str, Enum):
    SOFT = "soft"  # argmax of the mean probability (MODEF Eq. 4)
    MAJORITY = "majority"  # plurality of member labels, ties broken by the generator


class OnDisagree(str, Enum):
    REPAIR = "repair"  # answer the team's label, unflagged
    FLAG = "flag"  # answer the team's label, flagged


class CrossLayerMode(str, Enum):
    ONE_TO_MANY = "one_to_many"
    MANY_TO_MANY = "many_to_many"
