"""Liang and Samavi (2021)'s accuracy figures for a stored temperature ensemble on a test split: best member, clean
ensemble vote, vote with noisy logits, and with rank verification (accuracy on answered inputs, abstain rate).

The best member is reported twice: the one best on the test split itself (an optimistic pick, since it is
chosen on the images it is scored on) and the one best on the validation split, the member a user without
the test labels would deploy instead of the ensemble."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from ensdef.data import Dataset, Split
from ensdef.defenses.base import decide_all
from ensdef.defenses.noisy_vote import NoisyVoteEnsemble
from ensdef.defenses.registry import load_role
from ensdef.evaluation.stats import mcnemar
from ensdef.models.inference import predict
from ensdef.presets import Preset
from ensdef.store import ArtifactStore
from ensdef.types import Role


def paired_comparison(a_correct: np.ndarray, b_correct: np.ndarray) -> dict[str, Any]:
    """Exact McNemar test of two classifiers on the same images (boolean ``[N]`` each): the images only ``a``
    gets right, those only ``b`` gets right, and the two-sided p that both are equally accurate."""
    t = mcnemar(a_correct, b_correct)
    return {"only_first_correct": t["only_a"], "only_second_correct": t["only_b"], "mcnemar_p": t["p_value"]}


def _correct(members: dict[str, torch.nn.Module], split: Split) -> dict[str, np.ndarray]:
    """Per member, which images of ``split`` its clean prediction gets right (boolean ``[N]``)."""
    return {n: (predict(m, split.x).argmax(1) == split.y).numpy() for n, m in members.items()}


def summary(
    store: ArtifactStore, preset: Preset, data: Dataset, seed: int = 0, device: torch.device | str = "cpu"
) -> dict[str, Any]:
    """Figures on ``data.test``; ``data.val`` only picks the validation-best member."""
    names, members = load_role(store, Role.TEMPNET, torch.device(device))
    test, c = data.test, preset.noisy_vote
    y = test.y.numpy()
    named = dict(zip(names, members, strict=True))
    correct = _correct(named, test)
    member_acc = {n: float(ok.mean()) for n, ok in correct.items()}
    val_acc = {n: float(ok.mean()) for n, ok in _correct(named, data.val).items()}
    val_best = max(val_acc, key=val_acc.__getitem__)
    clean = NoisyVoteEnsemble(members, sigma=0.0, alpha_rv=None)
    noisy = NoisyVoteEnsemble(members, sigma=c.sigma, alpha_rv=None)
    verified = NoisyVoteEnsemble(members, sigma=c.sigma, alpha_rv=c.alpha_rv)

    def acc(ds: list) -> float:
        return float(sum(d.label == t for d, t in zip(ds, y, strict=True)) / len(y))

    vote = np.array([d.label for d in decide_all(clean, test.x, seed)])
    best = max(member_acc, key=member_acc.__getitem__)
    rv = decide_all(verified, test.x, seed)
    answered = [(d, t) for d, t in zip(rv, y, strict=True) if not d.abstained]
    return {
        "members": len(members),
        "sigma": c.sigma,
        "alpha_rv": c.alpha_rv,
        "seed": seed,
        "n": len(y),
        "member_clean_accuracy": member_acc,
        "best_member_clean_accuracy": max(member_acc.values()),
        "best_member": best,
        "ensemble_clean_accuracy": float((vote == y).mean()),
        "clean_vote_vs_best_member": paired_comparison(vote == y, correct[best]),
        "validation_best_member": val_best,
        "clean_vote_vs_validation_best_member": paired_comparison(vote == y, correct[val_best]),
        "ensemble_noisy_accuracy": acc(decide_all(noisy, test.x, seed)),
        "rank_verified_accuracy_on_answered": float(sum(d.label == t for d, t in answered) / max(len(answered), 1)),
        "rank_verified_abstain_rate": 1 - len(answered) / len(y),
    }
