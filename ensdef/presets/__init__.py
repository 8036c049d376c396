"""Presets: the YAML files that say which pools to train and how (``mnist5k``, ``cifar10``), shipped inside
the package so that an installed ensdef finds them; their schema (:mod:`ensdef.presets.schema`), the attack
budgets they may override (:mod:`ensdef.presets.budgets`) and the loader.

Each setting carries a one-line reason in its YAML comment; how a setting was chosen, with its figures, is
``docs/decisions.md``.
"""

from __future__ import annotations

from pathlib import Path

import yaml

from ensdef.config import from_mapping
from ensdef.errors import ConfigError
from ensdef.presets.budgets import check_attacks
from ensdef.presets.schema import (
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
from ensdef.types import Checkpoint, DataShare, GroupLossKind, Optim

PRESET_DIR = Path(__file__).resolve().parent
"""The shipped presets (``<name>.yaml``), inside the installed package."""

__all__ = [
    "PRESET_DIR",
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
]


def known_presets() -> list[str]:
    """Names of the shipped presets."""
    return sorted(f.stem for f in PRESET_DIR.glob("*.yaml"))


def load_preset(name_or_path: str | Path) -> Preset:
    """A shipped preset by name, or a YAML file by path. Unknown keys, wrong types, unknown attacks and unknown
    attack parameters raise :class:`ConfigError` naming them."""
    p = Path(name_or_path)
    if not p.suffix:
        p = PRESET_DIR / f"{name_or_path}.yaml"
    if not p.exists():
        known = ", ".join(known_presets())
        raise ConfigError(f"preset {str(name_or_path)!r} not found (looked for {p}; known presets: {known})")
    with open(p) as f:
        data = yaml.safe_load(f)
    where = f"preset {p.stem}"
    preset = from_mapping(Preset, data, where=where)
    for arch in preset.verifiers.overrides:
        preset.verifiers.train_for(arch)  # unknown override keys fail at load time, not mid-training
    e = preset.evaluation
    attacks = (*e.static_attacks, e.graybox_attack, e.adaptive_attack, e.blackbox_attack, preset.tune.teams.attack)
    check_attacks(attacks, e.budgets, f"{where}: evaluation")
    return preset
