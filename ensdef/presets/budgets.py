"""Attack budgets: every attack the evaluation knows, its norm and target, its default parameters (the papers'
MNIST settings) and the further parameters it accepts. A preset's ``evaluation.budgets`` override them per
attack, and :func:`check_attacks` refuses an unknown attack or parameter when the preset loads.

Defaults follow MODEF (Chen et al. 2022) Table I (L-inf 0.3 for FGSM / BIM, C&W confidence 5, JSMA theta 1 /
gamma 0.1) and Lee et al. 2021 (EAD c = 0.1). The ART builders bound to these names are
:mod:`ensdef.attacks.catalog`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import Enum
from typing import Any

from ensdef.errors import ConfigError
from ensdef.registry import Registry


class Target(str, Enum):
    UNTARGETED = "ua"
    MOST_LIKELY = "ml"  # the attacked model's most likely wrong class (MODEF II)
    LEAST_LIKELY = "ll"  # its least likely class


@dataclass(frozen=True)
class AttackBudget:
    name: str
    norm: str  # "linf" | "l2" | "l1" | "l0"
    target: Target
    params: dict[str, Any]  # the defaults
    optional: tuple[str, ...] = ()  # further parameters the attack accepts (their defaults are ART's or the builder's)
    gradient_free: bool = False  # a black-box (score / decision based) attack

    def merged(self, overrides: Mapping[str, Any] | None, where: str = "") -> dict[str, Any]:
        """The defaults with ``overrides`` applied; an unknown parameter is a :class:`ConfigError`."""
        allowed = {*self.params, *self.optional, "batch"}
        for key in overrides or {}:
            if key not in allowed:
                raise ConfigError(
                    f"{where or 'budgets'}: attack {self.name!r} has no parameter {key!r} "
                    f"(allowed: {', '.join(sorted(allowed))})"
                )
        return {**self.params, **(overrides or {})}


BUDGETS: Registry[AttackBudget] = Registry("attack")
_CW = {"confidence": 5.0, "lr": 0.01, "max_iter": 100, "search_steps": 5, "c": 0.1}
_CW_LINF = {"confidence": 5.0, "lr": 0.01, "max_iter": 100}
_CW_LINF_MORE = ("decrease_factor", "initial_const", "largest_const")
_JSMA = {"theta": 1.0, "gamma": 0.1}
for _b in (
    AttackBudget("fgsm", "linf", Target.UNTARGETED, {"eps": 0.3}),
    AttackBudget("bim", "linf", Target.UNTARGETED, {"eps": 0.3, "eps_step": 0.06, "max_iter": 10}),
    AttackBudget(
        "pgd", "linf", Target.UNTARGETED, {"eps": 0.3, "eps_step": 0.01, "max_iter": 100, "restarts": 1}, ("norm",)
    ),
    AttackBudget(
        "apgd", "linf", Target.UNTARGETED, {"eps": 0.3, "eps_step": 0.1, "max_iter": 100}, ("restarts", "loss")
    ),
    AttackBudget("cw_linf_ml", "linf", Target.MOST_LIKELY, _CW_LINF, _CW_LINF_MORE),
    AttackBudget("cw_linf_ll", "linf", Target.LEAST_LIKELY, _CW_LINF, _CW_LINF_MORE),
    AttackBudget("cw_l2_ml", "l2", Target.MOST_LIKELY, _CW),
    AttackBudget("cw_l2_ll", "l2", Target.LEAST_LIKELY, _CW),
    AttackBudget("cw_l0_ml", "l0", Target.MOST_LIKELY, _CW),
    AttackBudget("cw_l0_ll", "l0", Target.LEAST_LIKELY, _CW),
    AttackBudget("jsma_ml", "l0", Target.MOST_LIKELY, _JSMA),
    AttackBudget("jsma_ll", "l0", Target.LEAST_LIKELY, _JSMA),
    AttackBudget("deepfool", "l2", Target.UNTARGETED, {"max_iter": 50, "overshoot": 0.02}),
    AttackBudget("ead", "l1", Target.UNTARGETED, {**_CW, "beta": 1e-3, "search_steps": 3}),
    AttackBudget("square", "linf", Target.UNTARGETED, {"eps": 0.3, "max_iter": 100}, ("restarts",), True),
    AttackBudget("hopskipjump", "linf", Target.UNTARGETED, {"max_iter": 20, "max_eval": 1000}, ("init_eval",), True),
):
    BUDGETS.add(_b.name, _b)


def attack_params(name: str, overrides: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Attack ``name``'s parameters: its defaults with ``overrides`` applied (unknown names and keys refused)."""
    return BUDGETS[name].merged(overrides)


def check_attacks(names: Iterable[str], budgets: Mapping[str, Mapping[str, Any]], where: str) -> None:
    """Every name in ``names`` and every attack and parameter of ``budgets`` must be known (:class:`ConfigError`
    naming the first that is not)."""
    known = ", ".join(BUDGETS)
    for name in [*names, *budgets]:
        if name not in BUDGETS:
            raise ConfigError(f"{where}: unknown attack {name!r} (known: {known})")
    for name, overrides in budgets.items():
        BUDGETS[name].merged(overrides, f"{where}.budgets.{name}")
