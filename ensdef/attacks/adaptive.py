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

from collections.abc import Callable
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


def flag_aware_examples(
    defense: Defense,
    attack: str,
    params: dict[str, Any],
    x: np.ndarray,
    y: np.ndarray,
    samples: int,
    seed: int,
    num_classes: int = 10,
) -> np.ndarray:
    """``attack`` targeted through the defense's flag-as-extra-class surrogate toward each image's most likely
    wrong class (He et al. 2017): an example wins only when the label is wrong and the defense does not flag
    or abstain. ``x`` ``[N, C, H, W]``, ``y`` ``[N]``; returns adversarial ``[N, C, H, W]`` float32."""
    clf = art_classifier(FlagAwareSurrogate(defense, samples, seed), tuple(x.shape[1:]), num_classes + 1)
    targets = flag_aware_targets(clf.predict(x), y)
    return ATTACKS[attack].build(clf, True, params).generate(x=x, y=targets).astype(np.float32)


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
        aware = flag_aware_examples(defense, attack, params, xs, ys, samples, seed, num_classes)
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
    most likely wrong classes. A defense that flags or abstains is also attacked with the same APGD through
    its detector-aware surrogate (:func:`flag_aware_examples`). The runs go in turn, each on the images the
    earlier ones did not make wrong and unflagged in the defense's own decisions (as AutoAttack's APGD-T);
    per image the candidate that does worst for the defense is kept (its own decisions, with a selection
    seed that is not the scoring seed)."""
    params = {**attack_params("apgd", overrides), "loss": loss}
    samples = eot if defense.randomized else 0
    xs, ys = x.numpy().astype(np.float32), y.numpy()
    clf = art_classifier(EOTSurrogate(defense, samples, seed), tuple(x.shape[1:]), num_classes)
    spec = ATTACKS["apgd"]

    def onehot(labels: np.ndarray) -> np.ndarray:
        return np.eye(num_classes, dtype=np.float32)[labels]

    runs: list[Callable[[np.ndarray], np.ndarray]] = []  # image indices -> their examples, in turn
    if targets <= 0:
        runs.append(lambda i: spec.build(clf, False, params).generate(x=xs[i], y=onehot(ys[i])))
    else:
        scores = clf.predict(xs)
        scores[np.arange(len(ys)), ys] = -np.inf
        ranked = np.argsort(-scores, axis=1)[:, :targets]  # [N, T] most likely wrong classes
        for t in range(ranked.shape[1]):
            runs.append(lambda i, t=t: spec.build(clf, True, params).generate(x=xs[i], y=onehot(ranked[i, t])))
    if defense.can_flag:
        runs.append(lambda i: flag_aware_examples(defense, "apgd", params, xs[i], ys[i], samples, seed, num_classes))
    candidates, left = [], np.arange(len(ys))
    for k, run in enumerate(runs):  # each run on the images the earlier ones left standing (as AutoAttack)
        cand = xs.copy()
        if len(left):
            cand[left] = run(left)
            if k < len(runs) - 1:
                got = outcomes(decide_all(defense, torch.from_numpy(cand[left]), seed + 11), ys[left])
                left = left[[o is not Outcome.WRONG_UNFLAGGED for o in got]]
        candidates.append(cand)
    adv = candidates[0] if len(candidates) == 1 else worst_case(defense, candidates, ys, seed + 11)
    chosen = len(candidates) - int(defense.can_flag) if targets > 0 else 0
    return adv, {"attack": "apgd", **params, "eot": samples, "targets": chosen, "detector_aware": defense.can_flag}
