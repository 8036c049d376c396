"""Presets: the YAML files that say which pools to train and how (``mnist5k``, ``cifar10``), shipped inside
the package so that an installed ensdef finds them; their schema (:mod:`ensdef.presets.schema`), the attack
budgets they may override (:mod:`ensdef.presets.budgets`) and the loader.

Each setting carries a one-line reason in its YAML comment; how a setting was chosen, with its figures, is
``docs/decisions.md``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from ensdef.config import from_mapping
from ensdef.errors import ConfigError
from ensdef.presets.budgets import check_attacks
from ensdef.presets.schema import (
    PER_DEFENSE,
    AdversarialConfig,
    BaselineConfig,
    ClassifierSpec,
    DenoiserMember,
    DenoiserPool,
    DeTConfig,
    EvalConfig,
    ModefConfig,
    NoisyVoteConfig,
    Preset,
    ReformerPool,
    RLSPool,
    SweepConfig,
    TeamSweepConfig,
    TempnetPool,
    TrainConfig,
    TuneResources,
    VerifierPool,
)
from ensdef.types import AdvMethod, Checkpoint, DataShare, GroupLossKind, Optim

PRESET_DIR = Path(__file__).resolve().parent
"""The shipped presets (``<name>.yaml``), inside the installed package."""

__all__ = [
    "PRESET_DIR",
    "AdvMethod",
    "AdversarialConfig",
    "BaselineConfig",
    "Checkpoint",
    "ClassifierSpec",
    "DataShare",
    "DeTConfig",
    "DenoiserMember",
    "DenoiserPool",
    "EvalConfig",
    "GroupLossKind",
    "ModefConfig",
    "NoisyVoteConfig",
    "Optim",
    "Preset",
    "RLSPool",
    "ReformerPool",
    "SweepConfig",
    "TeamSweepConfig",
    "TempnetPool",
    "TrainConfig",
    "TuneResources",
    "VerifierPool",
    "known_presets",
    "load_preset",
    "merged",
]


def known_presets() -> list[str]:
    """Names of the shipped presets."""
    return sorted(f.stem for f in PRESET_DIR.glob("*.yaml"))


def _find(name_or_path: str | Path) -> Path:
    p = Path(name_or_path)
    if not p.suffix:
        p = PRESET_DIR / f"{name_or_path}.yaml"
    if not p.exists():
        known = ", ".join(known_presets())
        raise ConfigError(f"preset {str(name_or_path)!r} not found (looked for {p}; known presets: {known})")
    return p


def merged(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """``base`` with ``over`` laid on top: mappings merge key by key, every other value (lists included) is
    replaced whole."""
    out = dict(base)
    for k, v in over.items():
        out[k] = merged(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def _raw(p: Path, seen: tuple[Path, ...] = ()) -> dict[str, Any]:
    """The YAML mapping of ``p``, laid over the preset its ``base:`` key names (a shipped name, or a path
    relative to ``p``'s folder), recursively."""
    if p.resolve() in seen:
        raise ConfigError(f"preset {p.stem}: 'base' presets form a cycle")
    with open(p) as f:
        data = yaml.safe_load(f)
    if not isinstance(data, dict):
        raise ConfigError(f"preset {p.stem}: a YAML mapping expected")
    base = data.pop("base", None)
    if base is None:
        return data
    bp = Path(base) if Path(base).suffix else None
    return merged(_raw(p.parent / bp if bp else _find(base), (*seen, p.resolve())), data)


def load_preset(name_or_path: str | Path) -> Preset:
    """A shipped preset by name, or a YAML file by path. A preset may name another in ``base:`` and give only
    what differs (:func:`merged`). Unknown keys, wrong types, unknown attacks and unknown attack parameters
    raise :class:`ConfigError` naming them."""
    p = _find(name_or_path)
    data = _raw(p)
    where = f"preset {p.stem}"
    preset = from_mapping(Preset, data, where=where)
    for arch in preset.verifiers.overrides:
        preset.verifiers.train_for(arch)  # unknown override keys fail at load time, not mid-training
    e = preset.evaluation
    attacks = (*e.static_attacks, e.graybox_attack, e.adaptive_attack, e.blackbox_attack, preset.tune.teams.attack)
    check_attacks(attacks, e.budgets, f"{where}: evaluation")
    check_per_defense(e, f"{where}: evaluation.per_defense")
    return preset


def check_per_defense(e: EvalConfig, where: str) -> None:
    """Every key of ``per_defense`` overrides must be one of :data:`PER_DEFENSE`, with a positive integer."""
    for defense, more in e.per_defense.items():
        if not isinstance(more, dict):
            raise ConfigError(f"{where}.{defense}: expected a mapping of budget overrides")
        for key, value in more.items():
            if key not in PER_DEFENSE:
                raise ConfigError(f"{where}.{defense}: {key!r} cannot be set per defense; choose from {PER_DEFENSE}")
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ConfigError(f"{where}.{defense}.{key}: expected a non-negative integer, got {value!r}")
