"""One trial of MODEF's team-selection sweep, without Ray: a team selection under (team sizes, kappa
threshold, teaming policy), the cross-layer defense it makes (one-to-many or many-to-many), and its score on
validation images: ``(DSR on transfer adversarial examples + PSR on the same images benign) / 2``, so a
defense that flags everything does not win. ``tune/teams.py`` runs the trials in parallel and saves the
winner as the ``teams-verifiers`` artifact (with a ``tuned`` record) that serving loads."""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ensdef.attacks.art_classifier import art_classifier
from ensdef.attacks.cache import AttackCache
from ensdef.attacks.catalog import attack_params, run_attack
from ensdef.data import Dataset, Split
from ensdef.defenses.crosslayer import CrossLayerEnsemble
from ensdef.defenses.registry import load_role, load_target
from ensdef.diversity.teams import TeamSelection, select_teams
from ensdef.evaluation.scoring import score
from ensdef.presets import Preset, TeamSweepConfig
from ensdef.store import TEAMS_ARTIFACT, TUNED, ArtifactStore
from ensdef.training.selection import pool_probs, scored_on, selection_split
from ensdef.types import CrossLayerMode, Role, TeamPolicy


@dataclass(frozen=True)
class TeamTrial:
    min_team: int
    max_team: int
    threshold: float
    policy: TeamPolicy
    mode: CrossLayerMode

    def to_json(self) -> dict[str, Any]:
        return {**self.__dict__, "policy": self.policy.value, "mode": self.mode.value}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> TeamTrial:
        return cls(int(d["min_team"]), int(d["max_team"]), float(d["threshold"]), TeamPolicy(d["policy"]),
                   CrossLayerMode(d["mode"]))  # fmt: skip


def grid(cfg: TeamSweepConfig) -> list[TeamTrial]:
    """Every combination of the sweep's sizes, thresholds, policies and modes."""
    return [
        TeamTrial(lo, hi, t, p, m)
        for (lo, hi), t, p, m in itertools.product(cfg.sizes, cfg.thresholds, cfg.policies, cfg.modes)
    ]


@dataclass(frozen=True)
class SweepData:
    """Verifier probabilities ``[M, N, K]`` on the validation split or its adversarial examples (for kappa,
    :func:`~ensdef.training.selection.selection_split`), the attacked validation images (benign) and their
    transfer adversarial examples."""

    names: tuple[str, ...]
    probs: np.ndarray
    y: np.ndarray
    benign: Split
    adversarial: Split
    kappa_on: dict[str, Any]  # what the saved selection records of the images kappa was scored on


def sweep_data(store: ArtifactStore, preset: Preset, data: Dataset, device: torch.device | str = "cpu") -> SweepData:
    """Transfer examples from ``preset.tune.teams.attack`` on the target for the first ``images`` validation
    images, cached in the store (keyed by the target's hash, the attack and its parameters)."""
    cfg = preset.tune.teams
    names, verifiers = load_role(store, Role.VERIFIER, torch.device(device))
    benign = data.val.subset(list(range(min(cfg.images, len(data.val)))))
    params = attack_params(cfg.attack, preset.evaluation.budgets.get(cfg.attack))
    parts = {"attack": cfg.attack, "params": params, "target": store.manifest("target").sha256, "n": len(benign)}

    def make() -> dict[str, torch.Tensor]:
        clf = art_classifier(load_target(store, torch.device(device)), data.shape, data.num_classes)
        return {"x": torch.from_numpy(run_attack(cfg.attack, clf, benign.x.numpy(), benign.y.numpy(), params))}

    adv = AttackCache(store).tensors("team-transfer", parts, make)["x"]
    scored = selection_split(
        verifiers, data.val, preset.modef, data.num_classes
    )  # kappa as ``ensdef train`` computes it
    probs = pool_probs(verifiers, scored).numpy()
    return SweepData(tuple(names), probs, scored.y.numpy(), benign, Split(adv, benign.y), scored_on(preset.modef))


def selection(sd: SweepData, trial: TeamTrial) -> TeamSelection:
    """The trial's team selection (raises ``ValueError`` when no team is below its kappa threshold)."""
    hi = min(trial.max_team, len(sd.names))
    return select_teams(list(sd.names), sd.probs, sd.y, trial.min_team, hi, trial.threshold, trial.policy)


def score_trial(
    store: ArtifactStore, preset: Preset, sd: SweepData, trial: TeamTrial, device: torch.device | str = "cpu"
) -> dict[str, Any]:
    """The trial's validation score and its parts; ``score`` is -1 when the trial admits no team."""
    try:
        sel = selection(sd, trial)
    except ValueError as e:
        return {"score": -1.0, "error": str(e)}
    dev, c = torch.device(device), preset.modef
    dnames, denoisers = load_role(store, Role.DENOISER, dev)
    verifiers = [store.load_model(n, dev)[0] for n in sel.members]
    defense = CrossLayerEnsemble(
        denoisers, load_target(store, dev), verifiers, sel, trial.mode, c.vote, c.on_disagree, c.consensus,
        denoiser_names=dnames,
    )  # fmt: skip
    seed = preset.tune.teams.seed
    adv = score(defense, sd.adversarial.x, sd.adversarial.y, seed)
    ben = score(defense, sd.benign.x, sd.benign.y, seed + 1)
    return {
        "score": (adv.dsr + ben.psr) / 2,
        "adversarial_dsr": adv.dsr,
        "adversarial_tsr": adv.tsr,
        "benign_psr": ben.psr,
        "benign_fp": ben.fp,
        "ranked_teams": len(sel.ranked),
    }


def save_winner(store: ArtifactStore, sd: SweepData, trial: TeamTrial, result: dict[str, Any]) -> TeamSelection:
    """Save the winning trial's selection as ``teams-verifiers`` with its ``tuned`` record."""
    sel = selection(sd, trial)
    record = {**sel.to_json(), **sd.kappa_on, TUNED: {**trial.to_json(), "result": result}}
    store.save_json(TEAMS_ARTIFACT, record)
    return sel
