"""The adaptive white-box attack: ART gradient attacks on a classifier that wraps the whole defense.

Randomized defenses are attacked through their EOT surrogate (``eot`` draws per gradient step). Defenses that
can flag or abstain are attacked twice: with He et al. (2017)'s detector-aware objective (a targeted attack toward the
most likely wrong class of the flag-as-extra-class model, so success means a wrong label that is not flagged)
and with the untargeted loss on the surrogate; per image the example that does best against the defense's own
decisions is kept (drawn with a selection seed that is not the scoring seed). Neither objective dominates:
the product of many voters in the detector-aware loss can have vanishing gradients where the plain loss does
not. Non-differentiable steps (clipping, argmax votes) are replaced by the surrogate's smooth path (BPDA).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from ensdef.attacks.art_classifier import art_classifier
from ensdef.attacks.catalog import ATTACKS, attack_params
from ensdef.attacks.detector_aware import FlagAwareSurrogate, flag_aware_targets
from ensdef.attacks.eot import EOTSurrogate
from ensdef.defenses.base import Defense, decide_all
from ensdef.types import Outcome, outcomes

# the attacker's preference, best first
_RANK = {Outcome.WRONG_UNFLAGGED: 0, Outcome.WRONG_FLAGGED: 1, Outcome.CORRECT_FLAGGED: 2, Outcome.CORRECT_UNFLAGGED: 3}


def worst_case(defense: Defense, candidates: list[np.ndarray], y: np.ndarray, seed: int) -> np.ndarray:
    """Per image, the candidate ``[N, C, H, W]`` whose decision (with ``seed``) is best for the attacker:
    wrong and unflagged, then wrong and flagged, then flagged; the first candidate on ties."""
    ranks = np.stack(
        [[_RANK[o] for o in outcomes(decide_all(defense, torch.from_numpy(c), seed), y)] for c in candidates]
    )  # [C, N]
    pick = ranks.argmin(0)
    return np.stack([candidates[k][i] for i, k in enumerate(pick)])


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
    clf = art_classifier(EOTSurrogate(defense, samples, seed), shape, num_classes)
    adv = spec.build(clf, False, params).generate(x=xs, y=np.eye(num_classes, dtype=np.float32)[ys]).astype(np.float32)
    objective = "untargeted cross-entropy on the surrogate"
    if defense.can_flag:
        clf = art_classifier(FlagAwareSurrogate(defense, samples, seed), shape, num_classes + 1)
        targets = flag_aware_targets(clf.predict(xs), ys)
        aware = spec.build(clf, True, params).generate(x=xs, y=targets).astype(np.float32)
        adv = worst_case(defense, [aware, adv], ys, seed + 7)
        objective = (
            "per image the worse for the defense of detector-aware (flag as class K, targeted to the most likely "
            "wrong class) and untargeted cross-entropy on the surrogate"
        )
    return adv, {"attack": attack, **params, "eot": samples, "objective": objective}


def apgd_examples(
    defense: Defense,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    loss: str,
    overrides: dict[str, Any] | None,
    eot: int,
    seed: int,
    targets: int = 0,
    num_classes: int = 10,
) -> tuple[np.ndarray, dict[str, Any]]:
    """ART's APGD through the defense's EOT surrogate: untargeted with ``loss`` (``cross_entropy`` or
    ``difference_logits_ratio``), or, with ``targets`` > 0, targeted at each of the surrogate's ``targets``
    most likely wrong classes, keeping per image the candidate that does worst for the defense (its own
    decisions, with a selection seed that is not the scoring seed)."""
    params = {**attack_params("apgd", overrides), "loss": loss}
    samples = eot if defense.randomized else 0
    xs, ys = x.numpy(), y.numpy()
    clf = art_classifier(EOTSurrogate(defense, samples, seed), tuple(x.shape[1:]), num_classes)
    spec = ATTACKS["apgd"]
    if targets <= 0:
        adv = spec.build(clf, False, params).generate(x=xs, y=np.eye(num_classes, dtype=np.float32)[ys])
        return adv.astype(np.float32), {"attack": "apgd", **params, "eot": samples, "targets": 0}
    scores = clf.predict(xs)
    scores[np.arange(len(ys)), ys] = -np.inf
    ranked = np.argsort(-scores, axis=1)[:, :targets]  # [N, T] most likely wrong classes
    candidates = [
        spec.build(clf, True, params)
        .generate(x=xs, y=np.eye(num_classes, dtype=np.float32)[ranked[:, t]])
        .astype(np.float32)
        for t in range(ranked.shape[1])
    ]
    adv = worst_case(defense, candidates, ys, seed + 11)
    return adv, {"attack": "apgd", **params, "eot": samples, "targets": int(ranked.shape[1])}
