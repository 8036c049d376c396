"""Shared vocabulary: member roles and the per-input Decision every defense returns."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

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
