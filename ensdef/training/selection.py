"""Run MODEF team selection on a store's verifier pool and save it as the ``teams-verifiers`` artifact: on the
validation images, as MODEF does, or on adversarial examples of them made on each verifier (``modef.kappa_eps``),
so that the kappa that picks diverse teams measures how differently the members fail under attack."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from art.attacks.evasion import ProjectedGradientDescent

from ensdef.attacks.art_classifier import art_classifier
from ensdef.data import Split
from ensdef.defenses.registry import load_role
from ensdef.diversity.teams import TeamSelection, select_teams
from ensdef.models.inference import predict
from ensdef.presets import ModefConfig, Preset
from ensdef.store import TEAMS_ARTIFACT, ArtifactStore
from ensdef.types import Role


def pool_probs(models: list[torch.nn.Module], split: Split) -> torch.Tensor:
    """``[M, N, K]`` softmax outputs of every model on ``split``."""
    return torch.stack([F.softmax(predict(m, split.x), dim=1) for m in models])


def selection_split(
    models: list[torch.nn.Module], split: Split, c: ModefConfig, num_classes: int, batch_size: int = 256
) -> Split:
    """The images team selection scores the pool on: ``split`` itself, or with ``c.kappa_eps`` > 0 the L-inf
    PGD examples of ``split`` (ART's, from the image, ``kappa_steps`` steps of 2.5 eps / steps) made on each
    of ``models`` in turn: ``[M * N, C, H, W]``, labels repeated."""
    if c.kappa_eps <= 0:
        return split
    step, shape = 2.5 * c.kappa_eps / c.kappa_steps, tuple(split.x.shape[1:])
    out = []
    for m in models:
        clf = art_classifier(m, shape, num_classes)
        pgd = ProjectedGradientDescent(
            clf, eps=c.kappa_eps, eps_step=step, max_iter=c.kappa_steps, num_random_init=0, batch_size=batch_size,
            verbose=False,
        )  # fmt: skip
        out.append(torch.from_numpy(pgd.generate(split.x.numpy(), y=split.y.numpy())))
    return Split(torch.cat(out), split.y.repeat(len(models)))


def run_selection(
    store: ArtifactStore, preset: Preset, split: Split, device: torch.device | str = "cpu"
) -> TeamSelection:
    """Kappa matrix on the negative examples of ``split`` (or of its adversarial examples,
    :func:`selection_split`), ranked list, Best-kappa team; saved to ``store``."""
    names, models = load_role(store, Role.VERIFIER, torch.device(device))
    c = preset.modef
    scored = selection_split(models, split, c, store.manifest(names[0]).num_classes)
    sel = select_teams(
        names,
        pool_probs(models, scored).numpy(),
        scored.y.numpy(),
        c.min_team,
        min(c.max_team, len(names)),
        c.kappa_threshold,
        c.policy,
    )
    store.save_json(TEAMS_ARTIFACT, {**sel.to_json(), **scored_on(c)})
    return sel


def scored_on(c: ModefConfig) -> dict[str, Any]:
    """What a saved selection records of the images it was scored on: nothing for the clean validation images
    (selections saved before the option read the same), the attack's budget for adversarial examples."""
    return {"kappa_on": {"eps": c.kappa_eps, "steps": c.kappa_steps}} if c.kappa_eps > 0 else {}
