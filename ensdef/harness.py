"""Evaluation harness: benign and attacked scores of several defenses side by side.

The static threat model: adversarial examples are made against the undefended target model with ART and
transferred to every defense (the MODEF / DeT black-box setting).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from ensdef.attacks.art_classifier import art_classifier
from ensdef.attacks.eot import EOTSurrogate
from ensdef.attacks.static import run_attack
from ensdef.data import Dataset, Split
from ensdef.defenses.base import Defense
from ensdef.defenses.registry import build_defense, load_target
from ensdef.evaluation import attack_set, score
from ensdef.presets import Preset
from ensdef.store import ArtifactStore

log = logging.getLogger(__name__)


@dataclass
class Table:
    """``rows[defense][condition]`` -> rate dict; conditions are ``benign`` and attack names."""

    rows: dict[str, dict[str, dict[str, float]]] = field(default_factory=dict)
    attacks: dict[str, dict[str, Any]] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"rows": self.rows, "attacks": self.attacks}


def distortion(x: np.ndarray, adv: np.ndarray) -> dict[str, float]:
    d = (adv - x).reshape(len(x), -1)
    return {
        "linf": float(np.abs(d).max(1).mean()),
        "l2": float(np.linalg.norm(d, axis=1).mean()),
        "l0": float((np.abs(d) > 1e-6).mean(1).mean()),
    }


def adaptive_examples(
    defense: Defense,
    x: torch.Tensor,
    y: torch.Tensor,
    attack: str,
    eot: int,
    seed: int,
    overrides: dict[str, Any] | None = None,
) -> np.ndarray:
    """White-box examples made through the defense's own surrogate, averaged over ``eot`` random draws."""
    model = EOTSurrogate(defense, eot, seed)
    return run_attack(attack, art_classifier(model, tuple(x.shape[1:]), 10), x.numpy(), y.numpy(), overrides)


def static_table(
    store: ArtifactStore,
    preset: Preset,
    data: Dataset,
    defenses: list[str],
    attacks: list[str],
    per_class: int = 10,
    seed: int = 0,
    benign_n: int | None = None,
    threats: tuple[str, ...] = ("static",),
    adaptive_attack: str = "pgd",
    adaptive_overrides: dict[str, Any] | None = None,
    eot: int = 20,
) -> Table:
    """Score ``defenses`` on benign test images, on ``attacks`` transferred from the target (``static``) and,
    with ``adaptive`` in ``threats``, on ``adaptive_attack`` run through each defense's EOT surrogate."""
    target = load_target(store, torch.device("cpu"))
    ref: Split = attack_set(target, data.test, per_class, data.num_classes)
    clf = art_classifier(target, data.shape, data.num_classes)
    table = Table()
    adv: dict[str, torch.Tensor] = {}
    for name in attacks:
        t0 = time.perf_counter()
        x_adv = run_attack(name, clf, ref.x.numpy(), ref.y.numpy())
        fooled = float((clf.predict(x_adv).argmax(1) != ref.y.numpy()).mean())
        table.attacks[name] = {
            "seconds": round(time.perf_counter() - t0, 2),
            "target_asr": fooled,
            **distortion(ref.x.numpy(), x_adv),
            "n": len(ref),
        }
        adv[name] = torch.from_numpy(x_adv)
        log.info("%s: target fooled on %.0f%% of %d", name, 100 * fooled, len(ref))
    bx, by = (data.test.x, data.test.y) if benign_n is None else (data.test.x[:benign_n], data.test.y[:benign_n])
    for d in defenses:
        defense = build_defense(d, store, preset)
        row = {"benign": score(defense, bx, by, seed).as_dict()}
        if "static" in threats:
            for name, x_adv in adv.items():
                row[name] = score(defense, x_adv, ref.y, seed).as_dict()
        if "adaptive" in threats:
            t0 = time.perf_counter()
            x_ad = adaptive_examples(defense, ref.x, ref.y, adaptive_attack, eot, seed, adaptive_overrides)
            key = f"adaptive-{adaptive_attack}"
            row[key] = {
                **score(defense, torch.from_numpy(x_ad), ref.y, seed + 1).as_dict(),
                **distortion(ref.x.numpy(), x_ad),
                "seconds": round(time.perf_counter() - t0, 1),
                "eot": eot,
                **(adaptive_overrides or {}),
            }
        table.rows[d] = row
    return table
