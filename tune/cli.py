"""``ensdef tune`` and ``ensdef tune-teams``, registered by this layer under the ``ensdef.commands``
entry-point group (the library never imports Ray)."""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import sys
from typing import Any

from ensdef.cli.command import Command, Result, device_arg, finetune_arg, preset_store, ray_args
from ensdef.cli.library import POOL_NAMES
from ensdef.errors import ConfigError


def _common(p: argparse.ArgumentParser) -> None:
    preset_store(p)
    p.add_argument("--storage", default=None, help="Tune storage path or URI (default: <store>/_tune)")
    p.add_argument("--name", default=None, help="experiment name (default: derived from the plans)")
    p.add_argument("--no-resume", action="store_true", help="start afresh instead of restoring")
    p.add_argument("--gpu-as", default=None, help="request this custom resource instead of GPUs")
    ray_args(p)
    p.add_argument("--data-root", default=None, help="folder with torchvision dataset files")


def _tune_args(p: argparse.ArgumentParser) -> None:
    _common(p)
    p.add_argument("--pool", default="all", choices=["all", *POOL_NAMES])
    p.add_argument("--sweep", action="store_true", help="ASHA search over the preset's tune.sweeps[pool]")
    finetune_arg(p)


def _teams_args(p: argparse.ArgumentParser) -> None:
    _common(p)
    device_arg(p)


def _setup(a: argparse.Namespace) -> tuple[Any, Any, Any]:
    """The preset (``--data-root`` applied), the store and the Tune run; Ray connected."""
    from deployments.launch import connect
    from ensdef.presets import load_preset
    from ensdef.store import ArtifactStore
    from tune.pools import TuneRun

    preset = load_preset(a.preset)
    if a.data_root:
        preset = dataclasses.replace(preset, data_root=a.data_root)
    if getattr(a, "finetune_from", None):
        preset = dataclasses.replace(preset, finetune_from=a.finetune_from)
    connect(a.address, a.num_cpus)
    return preset, ArtifactStore(a.store), TuneRun(a.storage, a.name, a.gpu_as, not a.no_resume)


def _tune(a: argparse.Namespace) -> Result:
    """Train pools as parallel Ray Tune trials (``--sweep``: an ASHA hyper-parameter search per member)."""
    from ensdef.training.pools import Pool
    from tune.pools import tune_pools
    from tune.sweeps import sweep_pool

    if a.sweep and a.pool == "all":
        raise ConfigError("--sweep needs one --pool")
    with contextlib.redirect_stdout(sys.stderr):  # Tune's progress tables; stdout stays the result
        preset, store, run = _setup(a)
        if a.sweep:
            return sweep_pool(preset, store, Pool(a.pool), run), 0
        return tune_pools(preset, store, list(Pool) if a.pool == "all" else [Pool(a.pool)], run), 0


def _tune_teams(a: argparse.Namespace) -> Result:
    """MODEF team-selection sweep on Ray Tune; the winner becomes the store's ``teams-verifiers``."""
    from tune.teams import tune_teams

    with contextlib.redirect_stdout(sys.stderr):
        preset, store, run = _setup(a)
        return tune_teams(preset, store, run, a.device), 0


TUNE = Command(
    "tune", "train pools as parallel Ray Tune trials (resumable; --sweep for ASHA searches)", _tune_args, _tune
)
TUNE_TEAMS = Command(
    "tune-teams",
    "MODEF team-selection sweep on Ray Tune; saves the winning kappa-ranked list",
    _teams_args,
    _tune_teams,
)
