"""A query-only attacker on a defense's served decisions: ART's HopSkipJump (decision-based) against what a
client of the service sees, the label of each query with the defense's fresh randomness (one new draw per
query batch, as separate requests get). A flagged or abstained answer counts as the true label (a refusal is
no success for the attacker), so the attack searches for a wrong, unflagged answer. The examples are
projected onto the L-inf budget, so the cell belongs to the threat model's worst case."""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from art.estimators.classification import BlackBoxClassifier

from ensdef.attacks.catalog import ATTACKS, attack_params
from ensdef.defenses.base import Defense
from ensdef.rng import make_generator


@dataclass(frozen=True)
class DecisionAttack:
    """HopSkipJump with ``overrides`` of its budget, projected onto L-inf ``eps``; randomness from ``seed``."""

    eps: float
    overrides: dict[str, Any] | None = None
    seed: int = 0
    num_classes: int = 10

    def __call__(self, defense: Defense, x: torch.Tensor, y: torch.Tensor) -> tuple[np.ndarray, dict[str, Any]]:
        """``[N, C, H, W]`` examples within the budget of ``x`` (true labels ``y``) found from decisions alone,
        and what was run (parameters, queries)."""
        eps, num_classes, seed = self.eps, self.num_classes, self.seed
        params = attack_params("hopskipjump", self.overrides)
        draws = itertools.count()
        queries = 0
        out = []
        for xi, yi in zip(x.numpy(), y.tolist(), strict=True):

            def predict(batch: np.ndarray, yi: int = yi) -> np.ndarray:
                nonlocal queries
                queries += len(batch)
                g = make_generator(seed * 1_000_003 + next(draws), x.device)
                decisions = defense.decide(torch.from_numpy(np.asarray(batch, dtype=np.float32)), g)
                labels = [yi if d.flagged or d.abstained else d.label for d in decisions]
                return np.eye(num_classes, dtype=np.float32)[labels]

            clf = BlackBoxClassifier(predict, tuple(x.shape[1:]), num_classes, clip_values=(0.0, 1.0))
            attack = ATTACKS["hopskipjump"].build(clf, False, params)
            adv = attack.generate(x=xi[None], y=np.eye(num_classes, dtype=np.float32)[[yi]])
            out.append(np.clip(xi + np.clip(adv[0] - xi, -eps, eps), 0.0, 1.0))
        info = {"attack": "hopskipjump", **params, "eps": eps, "queries": queries, "sees": "decisions"}
        return np.stack(out).astype(np.float32), info
