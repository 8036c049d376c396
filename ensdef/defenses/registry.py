"""Defense registry: a name maps to a builder that assembles the defense from an artifact store.

A builder takes its members from a :class:`MemberSource`. :func:`build_defense` loads every member's weights
(hash-checked) on a device, for the process that computes with them. :func:`describe_defense` gives the same
defense without weights (each member a :class:`MemberRef` built from its manifest): its plan, member names,
roles and hyper-parameters, for routers, the service's survey and listings. A described defense plans
exactly as the built one does (same names, same draws); it refuses to compute.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ensdef.defenses.base import Defense
from ensdef.defenses.crosslayer import CrossLayerEnsemble
from ensdef.defenses.denoising import DenoisingEnsemble
from ensdef.defenses.det import DeTDefense
from ensdef.defenses.noisy_vote import NoisyVoteEnsemble
from ensdef.defenses.rls import RLSEnsemble
from ensdef.defenses.single import SingleModel
from ensdef.defenses.verification import VerificationEnsemble
from ensdef.diversity.teams import TeamSelection
from ensdef.errors import NotTrained
from ensdef.models import build
from ensdef.models.rls import uniform_mu
from ensdef.presets import Preset
from ensdef.registry import Registry
from ensdef.store import DET_LIST_ARTIFACT, TEAMS_ARTIFACT, TUNED, ArtifactStore, Manifest
from ensdef.types import CrossLayerMode, Role

__all__ = [
    "DEFENSES",
    "DET_LIST_ARTIFACT",
    "TEAMS_ARTIFACT",
    "TUNED",
    "Description",
    "MemberRef",
    "MemberSource",
    "build_defense",
    "describe_defense",
    "load_role",
    "load_target",
    "load_teams",
]


class MemberRef(nn.Module):
    """Stands in for a stored member in a weight-free description: its manifest, no weights."""

    def __init__(self, manifest: Manifest) -> None:
        super().__init__()
        self.manifest = manifest

    def forward(self, *args: Any) -> torch.Tensor:
        raise RuntimeError(f"{self.manifest.name}: a described defense holds no weights (use build_defense)")


class MemberSource:
    """Where a builder gets its members: loaded on ``device`` (hash-checked), or, with ``device=None``, as
    :class:`MemberRef` stand-ins read from the manifests only."""

    def __init__(self, store: ArtifactStore, device: torch.device | None) -> None:
        self.store, self.device = store, device

    def model(self, name: str) -> nn.Module:
        if self.device is None:
            return MemberRef(self.store.manifest(name))
        return self.store.load_model(name, self.device)[0]

    def role(self, role: Role, pool: str) -> tuple[list[str], list[nn.Module]]:
        """Every stored member of ``role``, sorted by name; ``pool`` names the ``ensdef train --pool`` to run."""
        names = [m.name for m in self.store.by_role(role)]
        if not names:
            raise NotTrained(f"no {role.value} artifacts in store {self.store.root}; run `ensdef train --pool {pool}`")
        return names, [self.model(n) for n in names]

    def json(self, name: str, how: str) -> dict[str, Any]:
        if not self.store.has_json(name):
            raise NotTrained(f"no {name} in store {self.store.root}; run `{how}`")
        return self.store.load_json(name)


Builder = Callable[[MemberSource, Preset], Defense]
DEFENSES: Registry[Builder] = Registry("defense")


def load_role(store: ArtifactStore, role: Role, device: torch.device) -> tuple[list[str], list[nn.Module]]:
    """All stored members of ``role`` (sorted by name), loaded on ``device`` with hash checks."""
    return MemberSource(store, torch.device(device)).role(role, "all")


def load_target(store: ArtifactStore, device: torch.device) -> nn.Module:
    return store.load_model("target", device)[0]


def _teams(src: MemberSource, preset: Preset) -> tuple[dict[str, Any], TeamSelection, list[nn.Module]]:
    """The saved selection (raw), its teams and its verifiers in the selection's order. The policy is the
    sweep's when the selection was tuned (``ensdef tune-teams``), else the preset's."""
    saved = src.json(TEAMS_ARTIFACT, "ensdef select")
    teams = TeamSelection.from_json(saved)
    if TUNED not in saved:
        teams = teams.with_policy(preset.modef.policy)
    return saved, teams, [src.model(n) for n in teams.members]


def load_teams(store: ArtifactStore, preset: Preset, device: torch.device) -> tuple[TeamSelection, list[nn.Module]]:
    """The saved team selection and its verifiers loaded on ``device``, in the selection's order."""
    return _teams(MemberSource(store, torch.device(device)), preset)[1:]


@DEFENSES.register("denoising")
def _denoising(src: MemberSource, preset: Preset) -> Defense:
    names, denoisers = src.role(Role.DENOISER, "denoisers")
    return DenoisingEnsemble(denoisers, src.model("target"), names=names)


@DEFENSES.register("verification")
def _verification(src: MemberSource, preset: Preset) -> Defense:
    _, teams, verifiers = _teams(src, preset)
    c = preset.modef
    return VerificationEnsemble(src.model("target"), verifiers, teams, c.vote, c.on_disagree)


def _crosslayer(mode: CrossLayerMode | None) -> Builder:
    def build_it(src: MemberSource, preset: Preset) -> Defense:
        saved, teams, verifiers = _teams(src, preset)  # read once: the selection, and the mode a sweep chose
        names, denoisers = src.role(Role.DENOISER, "denoisers")
        c = preset.modef
        tuned = CrossLayerMode(saved[TUNED]["mode"]) if TUNED in saved else None
        return CrossLayerEnsemble(
            denoisers,
            src.model("target"),
            verifiers,
            teams,
            mode or tuned or c.cross_layer,
            c.vote,
            c.on_disagree,
            c.consensus,
            denoiser_names=names,
        )

    return build_it


DEFENSES.add("modef", _crosslayer(None))
DEFENSES.add("modef-1tm", _crosslayer(CrossLayerMode.ONE_TO_MANY))
DEFENSES.add("modef-mtm", _crosslayer(CrossLayerMode.MANY_TO_MANY))


@DEFENSES.register("noisy-vote")
def _noisy_vote(src: MemberSource, preset: Preset) -> Defense:
    c = preset.noisy_vote
    names, members = src.role(Role.TEMPNET, "tempnets")
    return NoisyVoteEnsemble(members, c.sigma, c.alpha_rv if c.rank_verification else None, names=names)


@DEFENSES.register("rls")
def _rls(src: MemberSource, preset: Preset) -> Defense:
    names, nets = src.role(Role.RLS, "rls")
    net = nets[0]
    if isinstance(net, MemberRef):  # the plan needs the sampling distribution's shape only (mu is not trained)
        return RLSEnsemble(net, preset.rls.n, names[0], mu=uniform_mu(*_mu_shape(net.manifest)))  # type: ignore[arg-type]
    return RLSEnsemble(net, preset.rls.n, names[0])  # type: ignore[arg-type]


def _mu_shape(m: Manifest) -> tuple[int, int]:
    """``(L, M)`` of a stored RLS member, from an untrained copy of its architecture (no weight file read; the
    copy is dropped at once). Building on torch's meta device would avoid the copy but imports ~150 MB of
    meta kernels into every router."""
    with torch.no_grad():
        shape = tuple(
            build(m.architecture, tuple(m.input_shape), m.num_classes, **m.extra.get("build_kwargs", {})).mu.shape
        )
    return int(shape[0]), int(shape[1])


@DEFENSES.register("det")
def _det(src: MemberSource, preset: Preset) -> Defense:
    chosen = src.json(DET_LIST_ARTIFACT, "ensdef train --pool reformers")
    c = preset.det
    return DeTDefense(
        src.model("target"),
        src.model(chosen["preliminary"]),
        [src.model(n) for n in chosen["list"]],
        c.sigma,
        c.eps,
        c.samples,
        names=("target", chosen["preliminary"], chosen["list"]),
        surrogate_samples=c.surrogate_samples,
    )


@DEFENSES.register("target")
def _target(src: MemberSource, preset: Preset) -> Defense:
    return SingleModel(src.model("target"), "target")


def _baseline(method: str) -> Builder:
    def build_it(src: MemberSource, preset: Preset) -> Defense:
        name = f"baseline-{method}"
        if not src.store.exists(name):
            raise NotTrained(f"no {name} in store {src.store.root}; run `ensdef train --pool baselines`")
        return SingleModel(src.model(name), method, member=name)

    return build_it


DEFENSES.add("adv-training", _baseline("adv-training"))
DEFENSES.add("distillation", _baseline("distillation"))


def build_defense(name: str, store: ArtifactStore, preset: Preset, device: torch.device | str = "cpu") -> Defense:
    """Defense ``name`` with every member's weights loaded (hash-checked) on ``device``."""
    return DEFENSES[name](MemberSource(store, torch.device(device)), preset)


@dataclass(frozen=True)
class Description:
    """A defense without weights: ``defense`` plans (``defense.plan``) but does not compute; ``members`` maps
    each member its plan calls to its role."""

    name: str
    defense: Defense
    members: dict[str, Role]

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "kind": type(self.defense).__name__,
            "members": {n: r.value for n, r in sorted(self.members.items())},
            "randomized": self.defense.randomized,
            "can_flag": self.defense.can_flag,
        }


def describe_defense(name: str, store: ArtifactStore, preset: Preset) -> Description:
    """Defense ``name`` from the store's manifests and JSON artifacts only (no weight file is read)."""
    defense = DEFENSES[name](MemberSource(store, None), preset)
    members = {n: m.manifest.role for n, m in defense.named_members().items()}  # type: ignore[union-attr]
    return Description(name, defense, members)
