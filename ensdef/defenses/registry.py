"""Defense registry: a name maps to a builder that assembles the defense from an artifact store."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from ensdef.defenses.base import Defense
from ensdef.defenses.crosslayer import CrossLayerEnsemble, CrossLayerMode
from ensdef.defenses.denoising import DenoisingEnsemble
from ensdef.defenses.det import DeTDefense
from ensdef.defenses.noisy_vote import NoisyVoteEnsemble
from ensdef.defenses.rls import RLSEnsemble
from ensdef.defenses.single import SingleModel
from ensdef.defenses.verification import VerificationEnsemble
from ensdef.presets import Preset
from ensdef.store import ArtifactStore
from ensdef.teams import TeamSelection
from ensdef.types import Role

TEAMS_ARTIFACT = "teams-verifiers"
Builder = Callable[[ArtifactStore, Preset, torch.device], Defense]
DEFENSES: dict[str, Builder] = {}


def register_defense(name: str) -> Callable[[Builder], Builder]:
    def deco(fn: Builder) -> Builder:
        DEFENSES[name] = fn
        return fn

    return deco


def load_role(store: ArtifactStore, role: Role, device: torch.device) -> tuple[list[str], list[nn.Module]]:
    """All stored members of ``role`` (sorted by name), loaded on ``device`` with hash checks."""
    names = [m.name for m in store.by_role(role)]
    if not names:
        raise FileNotFoundError(f"no {role.value} artifacts in store {store.root}; train them with `ensdef train`")
    return names, [store.load_model(n, device)[0] for n in names]


def load_target(store: ArtifactStore, device: torch.device) -> nn.Module:
    return store.load_model("target", device)[0]


TUNED = "tuned"  # a team-selection sweep's record inside the artifact (``ensdef tune-teams``)


def load_teams(store: ArtifactStore, preset: Preset, device: torch.device) -> tuple[TeamSelection, list[nn.Module]]:
    """The saved team selection and its verifiers, in the selection's order. The policy is the sweep's when
    the selection was tuned (``ensdef tune-teams``), else the preset's."""
    return _teams(_saved_teams(store), store, preset, device)


def _saved_teams(store: ArtifactStore) -> dict:
    if not store.has_json(TEAMS_ARTIFACT):
        raise FileNotFoundError(f"no team selection in store {store.root}; run `ensdef select` first")
    return store.load_json(TEAMS_ARTIFACT)


def _teams(
    saved: dict, store: ArtifactStore, preset: Preset, device: torch.device
) -> tuple[TeamSelection, list[nn.Module]]:
    teams = TeamSelection.from_json(saved)
    if TUNED not in saved:
        teams = teams.with_policy(preset.modef.policy)
    return teams, [store.load_model(n, device)[0] for n in teams.members]


@register_defense("denoising")
def _denoising(store: ArtifactStore, preset: Preset, device: torch.device) -> Defense:
    names, denoisers = load_role(store, Role.DENOISER, device)
    return DenoisingEnsemble(denoisers, load_target(store, device), names=names)


@register_defense("verification")
def _verification(store: ArtifactStore, preset: Preset, device: torch.device) -> Defense:
    teams, verifiers = load_teams(store, preset, device)
    c = preset.modef
    return VerificationEnsemble(load_target(store, device), verifiers, teams, c.vote, c.on_disagree)


def _crosslayer(mode: CrossLayerMode | None) -> Builder:
    def build(store: ArtifactStore, preset: Preset, device: torch.device) -> Defense:
        saved = _saved_teams(store)  # read once: the selection, and the mode a sweep chose for it
        teams, verifiers = _teams(saved, store, preset, device)
        names, denoisers = load_role(store, Role.DENOISER, device)
        c = preset.modef
        tuned = CrossLayerMode(saved[TUNED]["mode"]) if TUNED in saved else None
        return CrossLayerEnsemble(
            denoisers,
            load_target(store, device),
            verifiers,
            teams,
            mode or tuned or c.cross_layer,
            c.vote,
            c.on_disagree,
            c.consensus,
            denoiser_names=names,
        )

    return build


register_defense("modef")(_crosslayer(None))
register_defense("modef-1tm")(_crosslayer(CrossLayerMode.ONE_TO_MANY))
register_defense("modef-mtm")(_crosslayer(CrossLayerMode.MANY_TO_MANY))


@register_defense("noisy-vote")
def _noisy_vote(store: ArtifactStore, preset: Preset, device: torch.device) -> Defense:
    c = preset.noisy_vote
    names, members = load_role(store, Role.TEMPNET, device)
    return NoisyVoteEnsemble(members, c.sigma, c.alpha_rv if c.rank_verification else None, names=names)


@register_defense("rls")
def _rls(store: ArtifactStore, preset: Preset, device: torch.device) -> Defense:
    names = [m.name for m in store.by_role(Role.RLS)]
    if not names:
        raise FileNotFoundError(f"no rls artifacts in store {store.root}; train them with `ensdef train --pool rls`")
    return RLSEnsemble(store.load_model(names[0], device)[0], preset.rls.n, names[0])  # type: ignore[arg-type]


DET_LIST_ARTIFACT = "det-reformer-list"


@register_defense("det")
def _det(store: ArtifactStore, preset: Preset, device: torch.device) -> Defense:
    if not store.has_json(DET_LIST_ARTIFACT):
        raise FileNotFoundError(f"no DeT reformer list in store {store.root}; run `ensdef train --pool reformers`")
    chosen = store.load_json(DET_LIST_ARTIFACT)
    c = preset.det
    return DeTDefense(
        load_target(store, device),
        store.load_model(chosen["preliminary"], device)[0],
        [store.load_model(n, device)[0] for n in chosen["list"]],
        c.sigma,
        c.eps,
        c.samples,
        names=("target", chosen["preliminary"], chosen["list"]),
    )


@register_defense("target")
def _target(store: ArtifactStore, preset: Preset, device: torch.device) -> Defense:
    return SingleModel(load_target(store, device), "target")


def _baseline(method: str) -> Builder:
    def build(store: ArtifactStore, preset: Preset, device: torch.device) -> Defense:
        name = f"baseline-{method}"
        if not store.exists(name):
            raise FileNotFoundError(f"no {name} in store {store.root}; train it with `ensdef train --pool baselines`")
        return SingleModel(store.load_model(name, device)[0], method, member=name)

    return build


register_defense("adv-training")(_baseline("adv-training"))
register_defense("distillation")(_baseline("distillation"))


def build_defense(name: str, store: ArtifactStore, preset: Preset, device: torch.device | str = "cpu") -> Defense:
    if name not in DEFENSES:
        raise KeyError(f"unknown defense {name!r}; known: {', '.join(DEFENSES)}")
    return DEFENSES[name](store, preset, torch.device(device))
