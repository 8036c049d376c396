"""Query-only attackers on a defense's served decisions: ART's HopSkipJump (decision-based) and Square (score
based, here on one-hot labels) against what a client of the service sees, the label of each query with the
defense's fresh randomness (one new draw per query batch, as separate requests get). A flagged or abstained
answer counts as the true label (a refusal is no success for the attacker), so the attack searches for a
wrong, unflagged answer. The examples are projected onto the L-inf budget, so the cell belongs to the threat
model's worst case."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from art.estimators.classification import BlackBoxClassifier
from torch import nn

from ensdef.attacks.art_classifier import art_classifier
from ensdef.attacks.catalog import ATTACKS, attack_params
from ensdef.defenses.base import Defense
from ensdef.rng import make_generator, seeded_libraries

QUERY_ONLY = ("hopskipjump", "square")


class _Answers(nn.Module):
    """``[B, C, H, W] -> [B, K]`` one-hot answers from ``labels`` (numpy in, numpy out); no gradient."""

    def __init__(self, labels: Callable[[np.ndarray], np.ndarray]) -> None:
        super().__init__()
        self.labels = labels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(self.labels(x.detach().cpu().numpy())).to(x.device)


def separated_groups(x: torch.Tensor, eps: float) -> list[list[int]]:
    """Indices of ``x`` ``[N, C, H, W]`` split into groups whose images lie more than ``2 * eps`` apart in
    L-inf, so that every query within ``eps`` of one of them has exactly one nearest image in its group (the
    image it perturbs). Greedy: an image joins the first group it is far enough from."""
    flat = x.flatten(1)
    groups: list[list[int]] = []
    for i in range(len(x)):
        for grp in groups:
            if (flat[grp] - flat[i]).abs().amax(1).min() > 2 * eps:
                grp.append(i)
                break
        else:
            groups.append([i])
    return groups


@dataclass(frozen=True)
class DecisionAttack:
    """``attack`` (one of :data:`QUERY_ONLY`) with ``overrides`` of its budget, projected onto L-inf ``eps``;
    randomness from ``seed``."""

    eps: float
    overrides: dict[str, Any] | None = None
    seed: int = 0
    num_classes: int = 10
    attack: str = "hopskipjump"

    def __post_init__(self) -> None:
        if self.attack not in QUERY_ONLY:
            raise ValueError(f"query-only attack {self.attack!r}: choose from {', '.join(QUERY_ONLY)}")

    def __call__(self, defense: Defense, x: torch.Tensor, y: torch.Tensor) -> tuple[np.ndarray, dict[str, Any]]:
        """``[N, C, H, W]`` examples within the budget of ``x`` (true labels ``y``) found from decisions alone,
        and what was run (parameters, queries)."""
        budget = {"eps": self.eps} if self.attack == "square" else {}  # Square searches within the ball
        params = attack_params(self.attack, {**(self.overrides or {}), **budget})
        draws = itertools.count()
        queries = 0

        def labels_of(batch: np.ndarray, truth: Callable[[torch.Tensor], torch.Tensor]) -> np.ndarray:
            nonlocal queries
            queries += len(batch)
            b = torch.from_numpy(np.asarray(batch, dtype=np.float32))
            decisions = defense.decide(b, make_generator(self.seed * 1_000_003 + next(draws), x.device))
            true = truth(b)
            labels = [int(t) if d.flagged or d.abstained else d.label for d, t in zip(decisions, true, strict=True)]
            return np.eye(self.num_classes, dtype=np.float32)[labels]

        out = x.numpy().copy()
        with seeded_libraries(self.seed):  # ART's Square and HopSkipJump draw from numpy's global RNG
            self._run(x, y, out, params, labels_of)
        xn = x.numpy()
        out = np.clip(xn + np.clip(out - xn, -self.eps, self.eps), 0.0, 1.0).astype(np.float32)
        info = {"attack": self.attack, **params, "eps": self.eps, "queries": queries, "sees": "decisions"}
        return out, info

    def _run(
        self,
        x: torch.Tensor,
        y: torch.Tensor,
        out: np.ndarray,
        params: dict[str, Any],
        labels_of: Callable[[np.ndarray, Callable[[torch.Tensor], torch.Tensor]], np.ndarray],
    ) -> None:
        """The attack, group by group, writing its examples into ``out``."""
        for idx in self._groups(x):
            xs, ys = x[idx], y[idx]

            def truth(b: torch.Tensor, xs: torch.Tensor = xs, ys: torch.Tensor = ys) -> torch.Tensor:
                return ys[(b[:, None] - xs[None]).flatten(2).abs().amax(2).argmin(1)]  # the image a query perturbs

            clf = self._classifier(lambda b, t=truth: labels_of(b, t), tuple(x.shape[1:]), x.device)
            attack = ATTACKS[self.attack].build(clf, False, params)
            adv = attack.generate(x=xs.numpy(), y=np.eye(self.num_classes, dtype=np.float32)[ys.numpy()])
            out[idx] = adv

    def _classifier(
        self, labels: Callable[[np.ndarray], np.ndarray], shape: tuple[int, ...], device: torch.device
    ) -> Any:
        """ART's view of the one-hot answers: a black box for HopSkipJump; Square asks for a neural-network
        estimator, so it gets them as a (gradient-free) module."""
        if self.attack == "hopskipjump":
            return BlackBoxClassifier(labels, shape, self.num_classes, clip_values=(0.0, 1.0))
        return art_classifier(_Answers(labels), shape, self.num_classes, device=device)

    def _groups(self, x: torch.Tensor) -> Iterator[list[int]]:
        """HopSkipJump's queries leave the L-inf ball (it projects at the end): one image at a time. Square's
        stay within ``eps``: whole groups of well-separated images at once."""
        if self.attack == "hopskipjump":
            yield from ([i] for i in range(len(x)))
        else:
            yield from separated_groups(x, self.eps)
