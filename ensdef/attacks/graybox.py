"""The gray-box threat: the attacker holds one member of the defense (one verifier, one reformer with the
classifier, one temperature network, one sampled RLS network), attacks it with full gradients, and the
examples are transferred to the whole defense."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from ensdef.attacks.art_classifier import art_classifier
from ensdef.attacks.catalog import attack_params, run_attack
from ensdef.defenses.base import Defense
from ensdef.rng import make_generator, randint


def graybox_examples(
    defense: Defense,
    x: torch.Tensor,
    y: torch.Tensor,
    attack: str,
    overrides: dict[str, Any] | None,
    seed: int,
    num_classes: int = 10,
) -> tuple[np.ndarray, dict[str, Any]]:
    """Examples ``[N, C, H, W]`` made on one member drawn with ``seed``; returns them and which member."""
    g = make_generator(seed)
    members = defense.members(g)
    index = randint(len(members), g)
    clf = art_classifier(members[index].eval(), tuple(x.shape[1:]), num_classes)
    adv = run_attack(attack, clf, x.numpy(), y.numpy(), overrides)
    return adv, {"attack": attack, **attack_params(attack, overrides), "member": index, "of": len(members)}
