"""Team selection for MODEF's verifier pool: kappa matrix, kappa-ranked list, and the three policies
(Rand, Rand-kappa, Best-kappa). A selection is saved as a JSON artifact that serving loads."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ensdef.diversity.kappa import kappa_matrix, rank_teams
from ensdef.errors import ConfigError
from ensdef.rng import randint
from ensdef.types import TeamPolicy


@dataclass(frozen=True)
class TeamSelection:
    """``members``: verifier artifact names; ``ranked``: kappa-ranked teams (member indices), ascending
    mean kappa; ``all_teams``: every team of an allowed size (for Rand); ``best``: Best-kappa's team."""

    members: tuple[str, ...]
    ranked: tuple[tuple[int, ...], ...]
    ranked_kappa: tuple[float, ...]
    all_teams: tuple[tuple[int, ...], ...]
    best: tuple[int, ...]
    best_accuracy: float
    policy: TeamPolicy
    threshold: float
    kappa: tuple[tuple[float, ...], ...]

    def draw(self, g: torch.Generator) -> tuple[int, ...]:
        """One team under :attr:`policy`, drawn with ``g`` (the per-request runtime randomisation)."""
        return DRAWS[self.policy](self, g)

    def to_json(self) -> dict[str, Any]:
        return {
            "members": list(self.members),
            "ranked": [list(t) for t in self.ranked],
            "ranked_kappa": list(self.ranked_kappa),
            "all_teams": [list(t) for t in self.all_teams],
            "best": list(self.best),
            "best_accuracy": self.best_accuracy,
            "policy": self.policy.value,
            "threshold": self.threshold,
            "kappa": [list(r) for r in self.kappa],
        }

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> TeamSelection:
        return cls(
            tuple(d["members"]),
            tuple(tuple(t) for t in d["ranked"]),
            tuple(d["ranked_kappa"]),
            tuple(tuple(t) for t in d["all_teams"]),
            tuple(d["best"]),
            float(d["best_accuracy"]),
            TeamPolicy(d["policy"]),
            float(d["threshold"]),
            tuple(tuple(r) for r in d["kappa"]),
        )

    def with_policy(self, policy: TeamPolicy) -> TeamSelection:
        return TeamSelection(**{**self.__dict__, "policy": policy})


DRAWS: dict[TeamPolicy, Callable[[TeamSelection, torch.Generator], tuple[int, ...]]] = {
    TeamPolicy.RAND: lambda s, g: s.all_teams[randint(len(s.all_teams), g)],
    TeamPolicy.RAND_KAPPA: lambda s, g: s.ranked[randint(len(s.ranked), g)],
    TeamPolicy.BEST_KAPPA: lambda s, g: s.best,
}


def soft_vote_accuracy(probs: np.ndarray, y: np.ndarray, teams: list[tuple[int, ...]]) -> np.ndarray:
    """Accuracy of each team's soft vote (MODEF Eq. 4); ``probs`` ``[M, N, K]``."""
    return np.array([(probs[list(t)].mean(0).argmax(1) == y).mean() for t in teams])


def select_teams(
    members: list[str],
    probs: np.ndarray,
    y: np.ndarray,
    min_size: int,
    max_size: int,
    threshold: float,
    policy: TeamPolicy,
    max_best_candidates: int = 5000,
) -> TeamSelection:
    """Build a :class:`TeamSelection` from member probabilities ``[M, N, K]`` on a held-out split.

    Raises ``ValueError`` when no team falls below ``threshold`` (the message gives the lowest mean kappa).
    """
    preds = probs.argmax(2)
    kap = kappa_matrix(preds, y)
    everything = rank_teams(kap, min_size, max_size, threshold=math.inf)
    ranked = rank_teams(kap, min_size, max_size, threshold)
    if len(ranked) == 0:
        raise ConfigError(f"no team has mean kappa below {threshold}; the lowest is {everything.mean_kappa[0]:.3f}")
    candidates = [ranked.team(i) for i in range(min(len(ranked), max_best_candidates))]
    acc = soft_vote_accuracy(probs, y, candidates)
    best = int(np.argmax(acc))
    return TeamSelection(
        tuple(members),
        tuple(ranked.team(i) for i in range(len(ranked))),
        tuple(float(v) for v in ranked.mean_kappa),
        tuple(everything.team(i) for i in range(len(everything))),
        candidates[best],
        float(acc[best]),
        policy,
        float(threshold),
        tuple(tuple(float(v) for v in r) for r in kap),
    )
