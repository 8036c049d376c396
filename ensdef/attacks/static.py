"""Attack registry: names to ART attack builders with the budgets of the seeds, and ML / LL targets.

``ML`` targets the most likely wrong class of the attacked model, ``LL`` the least likely (MODEF II).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from typing import Any

import numpy as np
from art.attacks.evasion import BasicIterativeMethod, FastGradientMethod, ProjectedGradientDescent


class Target(str, Enum):
    UNTARGETED = "ua"
    MOST_LIKELY = "ml"
    LEAST_LIKELY = "ll"


@dataclass(frozen=True)
class AttackSpec:
    name: str
    norm: str  # "linf" | "l2" | "l0"
    target: Target
    build: Callable[[Any, bool, dict[str, Any]], Any]  # (art classifier, targeted, params) -> attack
    params: dict[str, Any]


ATTACKS: dict[str, AttackSpec] = {}


def register_attack(spec: AttackSpec) -> AttackSpec:
    ATTACKS[spec.name] = spec
    return spec


def _fgsm(c: Any, targeted: bool, p: dict[str, Any]) -> Any:
    return FastGradientMethod(c, eps=p["eps"], eps_step=p["eps"], targeted=targeted, batch_size=p.get("batch", 100))


def _bim(c: Any, targeted: bool, p: dict[str, Any]) -> Any:
    return BasicIterativeMethod(
        c,
        eps=p["eps"],
        eps_step=p["eps_step"],
        max_iter=p["max_iter"],
        targeted=targeted,
        batch_size=p.get("batch", 100),
        verbose=False,
    )


def _pgd(c: Any, targeted: bool, p: dict[str, Any]) -> Any:
    return ProjectedGradientDescent(
        c,
        eps=p["eps"],
        eps_step=p["eps_step"],
        max_iter=p["max_iter"],
        num_random_init=p.get("restarts", 1),
        targeted=targeted,
        batch_size=p.get("batch", 100),
        verbose=False,
    )


# MNIST budgets of MODEF Table I / EvadeML-Zoo
register_attack(AttackSpec("fgsm", "linf", Target.UNTARGETED, _fgsm, {"eps": 0.3}))
register_attack(AttackSpec("bim", "linf", Target.UNTARGETED, _bim, {"eps": 0.3, "eps_step": 0.06, "max_iter": 10}))
register_attack(
    AttackSpec("pgd", "linf", Target.UNTARGETED, _pgd, {"eps": 0.3, "eps_step": 0.01, "max_iter": 100, "restarts": 1})
)


def attack_targets(probs: np.ndarray, y: np.ndarray, target: Target) -> np.ndarray | None:
    """One-hot targets ``[N, K]`` for ML / LL attacks from the attacked model's ``probs`` ``[N, K]``."""
    if target is Target.UNTARGETED:
        return None
    p = probs.copy()
    if target is Target.MOST_LIKELY:
        p[np.arange(len(y)), y] = -np.inf
        t = p.argmax(1)
    else:
        t = p.argmin(1)
    return np.eye(probs.shape[1], dtype=np.float32)[t]


def run_attack(
    name: str, classifier: Any, x: np.ndarray, y: np.ndarray, overrides: dict[str, Any] | None = None
) -> np.ndarray:
    """Adversarial examples for ``x`` ``[N, C, H, W]`` (labels ``y``) against an ART classifier."""
    spec = ATTACKS[name]
    params = {**spec.params, **(overrides or {})}
    targets = attack_targets(classifier.predict(x), y, spec.target)
    attack = spec.build(classifier, targets is not None, params)
    return attack.generate(x=x, y=targets).astype(np.float32)
