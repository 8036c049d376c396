"""The adaptive white-box attack: ART gradient attacks on a classifier that wraps the whole defense.

Randomized defenses are attacked through their EOT surrogate (``eot`` draws per gradient step). Defenses that
can flag or abstain are attacked with seed 004's detector-aware objective: a targeted attack toward the most
likely wrong class of the flag-as-extra-class model, so success means a wrong label that is not flagged.
Non-differentiable steps (clipping, argmax votes) are replaced by the surrogate's smooth path (BPDA).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from ensdef.attacks.art_classifier import art_classifier
from ensdef.attacks.catalog import ATTACKS, attack_params
from ensdef.attacks.detector_aware import FlagAwareSurrogate, flag_aware_targets
from ensdef.attacks.eot import EOTSurrogate
from ensdef.defenses.base import Defense


def adaptive_examples(
    defense: Defense,
    x: torch.Tensor,
    y: torch.Tensor,
    attack: str,
    overrides: dict[str, Any] | None,
    eot: int,
    seed: int,
    num_classes: int = 10,
) -> tuple[np.ndarray, dict[str, Any]]:
    """Adversarial ``[N, C, H, W]`` for ``x`` with true labels ``y``, and what was run (objective, EOT)."""
    spec, params = ATTACKS[attack], attack_params(attack, overrides)
    shape = tuple(x.shape[1:])
    samples = eot if defense.randomized else 0
    xs, ys = x.numpy(), y.numpy()
    if defense.can_flag:
        clf = art_classifier(FlagAwareSurrogate(defense, samples, seed), shape, num_classes + 1)
        targets = flag_aware_targets(clf.predict(xs), ys)
        adv = spec.build(clf, True, params).generate(x=xs, y=targets)
        objective = "detector-aware (flag as class K, targeted to the most likely wrong class)"
    else:
        clf = art_classifier(EOTSurrogate(defense, samples, seed), shape, num_classes)
        adv = spec.build(clf, False, params).generate(x=xs, y=np.eye(num_classes, dtype=np.float32)[ys])
        objective = "untargeted cross-entropy on the surrogate"
    return adv.astype(np.float32), {"attack": attack, **params, "eot": samples, "objective": objective}
