"""Attack catalogue: each attack of :mod:`ensdef.presets.budgets` bound to its ART builder, and the ML / LL
targets. ``ML`` targets the attacked model's most likely wrong class, ``LL`` its least likely (MODEF II).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
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
    ProjectedGradientDescent,
    SaliencyMapMethod,
    SquareAttack,
)

from ensdef.attacks.hopskipjump import SeededHopSkipJump
from ensdef.presets.budgets import BUDGETS, Target, attack_params
from ensdef.registry import Registry

__all__ = ["ATTACKS", "AttackSpec", "Target", "attack_params", "attack_targets", "run_attack"]

Builder = Callable[[Any, bool, dict[str, Any]], Any]  # (ART classifier, targeted, params) -> attack


@dataclass(frozen=True)
class AttackSpec:
    """An attack's budget (norm, target, default parameters; :mod:`ensdef.presets.budgets`) and its ART builder."""

    name: str
    norm: str
    target: Target
    params: dict[str, Any]
    gradient_free: bool
    build: Builder


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


def _cw(p: dict[str, Any], t: bool) -> dict[str, Any]:
    """The arguments every C&W-style attack takes."""
    return {"confidence": p["confidence"], "targeted": t, "learning_rate": p["lr"], "max_iter": p["max_iter"]}


def _cw_linf(c: Any, t: bool, p: dict[str, Any]) -> Any:
    return CarliniLInfMethod(
        c,
        **_cw(p, t),
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
            **_cw(p, t),
            binary_search_steps=p["search_steps"],
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
    return SeededHopSkipJump(
        c,
        targeted=t,
        norm=np.inf,
        max_iter=p["max_iter"],
        max_eval=p["max_eval"],
        init_eval=p.get("init_eval", 100),
        verbose=False,
    )


BUILDERS: dict[str, Builder] = {
    "fgsm": _fgsm,
    "bim": _bim,
    "pgd": _pgd,
    "apgd": _apgd,
    "cw_linf_ml": _cw_linf,
    "cw_linf_ll": _cw_linf,
    "cw_l2_ml": _cw_l2,
    "cw_l2_ll": _cw_l2,
    "cw_l0_ml": _cw_l0,
    "cw_l0_ll": _cw_l0,
    "jsma_ml": _jsma,
    "jsma_ll": _jsma,
    "deepfool": _deepfool,
    "ead": _ead,
    "square": _square,
    "hopskipjump": _hsj,
}
ATTACKS: Registry[AttackSpec] = Registry("attack")
for _name, _budget in BUDGETS.items():
    b = _budget
    ATTACKS.add(_name, AttackSpec(b.name, b.norm, b.target, b.params, b.gradient_free, BUILDERS[_name]))


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
    """Adversarial examples ``[N, C, H, W]`` for ``x`` (true labels ``y``) against an ART classifier.
    Untargeted attacks get the true labels (no label leaking); ML / LL attacks get one-hot targets."""
    spec, params = ATTACKS[name], attack_params(name, overrides)
    targets = attack_targets(classifier.predict(x), y, spec.target)
    attack = spec.build(classifier, targets is not None, params)
    if targets is None and spec.build is not _hsj:
        targets = np.eye(classifier.nb_classes, dtype=np.float32)[y]
    return attack.generate(x=x, y=targets).astype(np.float32)
