"""Attack catalogue: names to ART attack builders with the seeds' MNIST budgets, and ML / LL targets.

``ML`` targets the most likely wrong class of the attacked model, ``LL`` the least likely (MODEF II).
Budgets follow MODEF Table I (L-inf 0.3 for FGSM / BIM, C&W confidence 5, JSMA theta 1 / gamma 0.1) and
seed 001 (EAD c = 0.1); a preset's ``evaluation.budgets`` overrides any parameter per attack name.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from typing import Any

import numpy as np
from art.attacks.evasion import (
    AutoProjectedGradientDescent,
    BasicIterativeMethod,
    CarliniL0Method,
    CarliniL2Method,
    CarliniLInfMethod,
    DeepFool,
    ElasticNet,
    FastGradientMethod,
    HopSkipJump,
    ProjectedGradientDescent,
    SaliencyMapMethod,
    SquareAttack,
)


class Target(str, Enum):
    UNTARGETED = "ua"
    MOST_LIKELY = "ml"
    LEAST_LIKELY = "ll"


Builder = Callable[[Any, bool, dict[str, Any]], Any]  # (ART classifier, targeted, params) -> attack


@dataclass(frozen=True)
class AttackSpec:
    name: str
    norm: str  # "linf" | "l2" | "l0"
    target: Target
    build: Builder
    params: dict[str, Any]
    gradient_free: bool = False  # a black-box (score / decision based) attack


ATTACKS: dict[str, AttackSpec] = {}


def register_attack(spec: AttackSpec) -> AttackSpec:
    ATTACKS[spec.name] = spec
    return spec


def _b(p: dict[str, Any]) -> int:
    return int(p.get("batch", 100))


def _fgsm(c: Any, t: bool, p: dict[str, Any]) -> Any:
    return FastGradientMethod(c, eps=p["eps"], eps_step=p["eps"], targeted=t, batch_size=_b(p))


def _bim(c: Any, t: bool, p: dict[str, Any]) -> Any:
    return BasicIterativeMethod(
        c, eps=p["eps"], eps_step=p["eps_step"], max_iter=p["max_iter"], targeted=t, batch_size=_b(p), verbose=False
    )


def _pgd(c: Any, t: bool, p: dict[str, Any]) -> Any:
    norm = {"linf": np.inf, "l2": 2}[p.get("norm", "linf")]
    return ProjectedGradientDescent(
        c,
        norm=norm,
        eps=p["eps"],
        eps_step=p["eps_step"],
        max_iter=p["max_iter"],
        num_random_init=p.get("restarts", 1),
        targeted=t,
        batch_size=_b(p),
        verbose=False,
    )


def _apgd(c: Any, t: bool, p: dict[str, Any]) -> Any:
    return AutoProjectedGradientDescent(
        c,
        eps=p["eps"],
        eps_step=p["eps_step"],
        max_iter=p["max_iter"],
        targeted=t,
        nb_random_init=p.get("restarts", 1),
        batch_size=_b(p),
        loss_type=p.get("loss", "cross_entropy"),
        verbose=False,
    )


def _cw_linf(c: Any, t: bool, p: dict[str, Any]) -> Any:
    return CarliniLInfMethod(
        c,
        confidence=p["confidence"],
        targeted=t,
        learning_rate=p["lr"],
        max_iter=p["max_iter"],
        decrease_factor=p.get("decrease_factor", 0.9),
        initial_const=p.get("initial_const", 1e-5),
        largest_const=p.get("largest_const", 20.0),
        batch_size=_b(p),
        verbose=False,
    )


def _cw_search(cls: type, *extra: str) -> Builder:
    """C&W L2 and L0 and EAD: the same binary-search parameters (L0 repeats L2 while it freezes pixels; EAD
    adds ``extra`` parameters such as its L1 weight ``beta``)."""

    def build(c: Any, t: bool, p: dict[str, Any]) -> Any:
        return cls(
            c,
            confidence=p["confidence"],
            targeted=t,
            learning_rate=p["lr"],
            binary_search_steps=p["search_steps"],
            max_iter=p["max_iter"],
            initial_const=p["c"],
            batch_size=_b(p),
            verbose=False,
            **{k: p[k] for k in extra},
        )

    return build


_cw_l2, _cw_l0, _ead = _cw_search(CarliniL2Method), _cw_search(CarliniL0Method), _cw_search(ElasticNet, "beta")


def _jsma(c: Any, t: bool, p: dict[str, Any]) -> Any:
    return SaliencyMapMethod(c, theta=p["theta"], gamma=p["gamma"], batch_size=_b(p), verbose=False)


def _deepfool(c: Any, t: bool, p: dict[str, Any]) -> Any:
    return DeepFool(c, max_iter=p["max_iter"], epsilon=p["overshoot"], batch_size=_b(p), verbose=False)


def _square(c: Any, t: bool, p: dict[str, Any]) -> Any:
    return SquareAttack(c, eps=p["eps"], max_iter=p["max_iter"], nb_restarts=p.get("restarts", 1), verbose=False)


def _hsj(c: Any, t: bool, p: dict[str, Any]) -> Any:
    return HopSkipJump(
        c,
        targeted=t,
        norm=np.inf,
        max_iter=p["max_iter"],
        max_eval=p["max_eval"],
        init_eval=p.get("init_eval", 100),
        verbose=False,
    )


_CW = {"confidence": 5.0, "lr": 0.01, "max_iter": 100, "search_steps": 5, "c": 0.1}
for _name, _norm, _tgt, _fn, _params in [
    ("fgsm", "linf", Target.UNTARGETED, _fgsm, {"eps": 0.3}),
    ("bim", "linf", Target.UNTARGETED, _bim, {"eps": 0.3, "eps_step": 0.06, "max_iter": 10}),
    ("pgd", "linf", Target.UNTARGETED, _pgd, {"eps": 0.3, "eps_step": 0.01, "max_iter": 100, "restarts": 1}),
    ("apgd", "linf", Target.UNTARGETED, _apgd, {"eps": 0.3, "eps_step": 0.1, "max_iter": 100}),
    ("cw_linf_ml", "linf", Target.MOST_LIKELY, _cw_linf, {"confidence": 5.0, "lr": 0.01, "max_iter": 100}),
    ("cw_linf_ll", "linf", Target.LEAST_LIKELY, _cw_linf, {"confidence": 5.0, "lr": 0.01, "max_iter": 100}),
    ("cw_l2_ml", "l2", Target.MOST_LIKELY, _cw_l2, _CW),
    ("cw_l2_ll", "l2", Target.LEAST_LIKELY, _cw_l2, _CW),
    ("cw_l0_ml", "l0", Target.MOST_LIKELY, _cw_l0, _CW),
    ("cw_l0_ll", "l0", Target.LEAST_LIKELY, _cw_l0, _CW),
    ("jsma_ml", "l0", Target.MOST_LIKELY, _jsma, {"theta": 1.0, "gamma": 0.1}),
    ("jsma_ll", "l0", Target.LEAST_LIKELY, _jsma, {"theta": 1.0, "gamma": 0.1}),
    ("deepfool", "l2", Target.UNTARGETED, _deepfool, {"max_iter": 50, "overshoot": 0.02}),
    ("ead", "l1", Target.UNTARGETED, _ead, {**_CW, "beta": 1e-3, "search_steps": 3}),
]:
    register_attack(AttackSpec(_name, _norm, _tgt, _fn, dict(_params)))
register_attack(AttackSpec("square", "linf", Target.UNTARGETED, _square, {"eps": 0.3, "max_iter": 100}, True))
register_attack(AttackSpec("hopskipjump", "linf", Target.UNTARGETED, _hsj, {"max_iter": 20, "max_eval": 1000}, True))


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


def attack_params(name: str, overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    if name not in ATTACKS:
        raise KeyError(f"unknown attack {name!r}; known: {', '.join(ATTACKS)}")
    return {**ATTACKS[name].params, **(overrides or {})}


def run_attack(
    name: str, classifier: Any, x: np.ndarray, y: np.ndarray, overrides: dict[str, Any] | None = None
) -> np.ndarray:
    """Adversarial examples ``[N, C, H, W]`` for ``x`` (true labels ``y``) against an ART classifier.
    Untargeted attacks get the true labels (no label leaking); ML / LL attacks get one-hot targets."""
    spec, params = ATTACKS[name], attack_params(name, overrides)
    targets = attack_targets(classifier.predict(x), y, spec.target)
    attack = spec.build(classifier, targets is not None, params)
    if targets is None and spec.build is not _hsj:
        targets = np.eye(classifier.nb_classes, dtype=np.float32)[y]
    return attack.generate(x=x, y=targets).astype(np.float32)
