"""``ensdef tune-teams``: MODEF's team selection as a Tune grid (team sizes x kappa threshold x teaming policy
x cross-layer mode), trials in parallel, each scored by ``ensdef.training.team_sweep.score_trial`` on a cached
transfer-attack set. The best trial's kappa-ranked list is saved as ``teams-verifiers``, which ``ensdef
serve`` loads and draws a team from per request."""

from __future__ import annotations

import logging
from typing import Any

from ray import tune

from ensdef.attacks.cache import cache_key
from ensdef.config import to_plain
from ensdef.data import load_dataset
from ensdef.errors import ConfigError, EnsdefError
from ensdef.models.inference import resolve_device
from ensdef.presets import Preset
from ensdef.store import ArtifactStore
from ensdef.training.team_sweep import SweepData, TeamTrial, grid, save_winner, score_trial, sweep_data
from tune.pools import TuneRun, storage_path, tuner
from tune.resources import trial_resources, use_trial_cpus

log = logging.getLogger(__name__)
RESULT_KEYS = ("score", "adversarial_dsr", "adversarial_tsr", "benign_psr", "benign_fp", "ranked_teams", "error")


def team_trial(config: dict[str, Any], *, preset: Preset, store: str, sd: SweepData, device: str = "cpu") -> None:
    use_trial_cpus()
    trial = TeamTrial.from_json(config["trial"])
    scored = score_trial(ArtifactStore(store), preset, sd, trial, resolve_device(device))
    tune.report({**scored, **config["trial"]})


def tune_teams(preset: Preset, store: ArtifactStore, run: TuneRun | None = None, device: str = "cpu") -> dict[str, Any]:
    """Run the grid, save the winner (highest score; ties go to the earlier grid entry) and return every
    trial's result. ``device`` (``cpu``, ``cuda``, ``auto``): where the driver and each trial compute."""
    run = run or TuneRun()
    data = load_dataset(preset.dataset, preset.data_root)
    sd = sweep_data(
        store, preset, data, resolve_device(device)
    )  # made once in the driver: the transfer set is cached in the store
    trials = grid(preset.tune.teams)
    name = run.name or f"{preset.name}-teams-{cache_key(to_plain([preset.tune.teams, sd.names, preset.modef]))[:8]}"
    t = tuner(
        tune.with_resources(
            tune.with_parameters(team_trial, preset=preset, store=store.root, sd=sd, device=device),
            trial_resources(preset.tune, run.gpu_as),
        ),
        {"trial": tune.grid_search([tr.to_json() for tr in trials])},
        storage_path(store, run),
        name,
        run.resume,
        max_concurrent_trials=preset.tune.max_concurrent or None,
    )
    results = t.fit()
    errors = [str(r.error) for r in results if r.error is not None]
    if errors:
        raise EnsdefError(f"{len(errors)} team trials failed: {'; '.join(errors)}")
    rows = sorted(
        (r.metrics for r in results),
        key=lambda m: (-m["score"], trials.index(TeamTrial.from_json(m))),
    )
    rows = [{k: v for k, v in m.items() if k in {*TeamTrial.__dataclass_fields__, *RESULT_KEYS}} for m in rows]
    best = rows[0]
    if best["score"] < 0:
        raise ConfigError(f"no trial admitted a team: {best.get('error')}")
    sel = save_winner(store, sd, TeamTrial.from_json(best), {k: best[k] for k in RESULT_KEYS if k in best})
    return {"store": store.root, "experiment": name, "winner": best, "ranked_teams": len(sel.ranked), "trials": rows}
