"""Run MODEF team selection on a store's verifier pool and save it as the ``teams-verifiers`` artifact."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ensdef.data import Split
from ensdef.defenses.registry import load_role
from ensdef.diversity.teams import TeamSelection, select_teams
from ensdef.models.inference import predict
from ensdef.presets import Preset
from ensdef.store import TEAMS_ARTIFACT, ArtifactStore
from ensdef.types import Role


def pool_probs(models: list[torch.nn.Module], split: Split) -> torch.Tensor:
    """``[M, N, K]`` softmax outputs of every model on ``split``."""
    return torch.stack([F.softmax(predict(m, split.x), dim=1) for m in models])


def run_selection(
    store: ArtifactStore, preset: Preset, split: Split, device: torch.device | str = "cpu"
) -> TeamSelection:
    """Kappa matrix on ``split``'s negative examples, ranked list, Best-kappa team; saved to ``store``."""
    names, models = load_role(store, Role.VERIFIER, torch.device(device))
    c = preset.modef
    sel = select_teams(
        names,
        pool_probs(models, split).numpy(),
        split.y.numpy(),
        c.min_team,
        min(c.max_team, len(names)),
        c.kappa_threshold,
        c.policy,
    )
    store.save_json(TEAMS_ARTIFACT, sel.to_json())
    return sel
