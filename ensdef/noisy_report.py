"""Seed 003's accuracy figures for a stored temperature ensemble on a test split: best member, clean
ensemble vote, vote with noisy logits, and with rank verification (accuracy on answered inputs, abstain rate)."""

from __future__ import annotations

from typing import Any

import torch

from ensdef.data import Split
from ensdef.defenses.noisy_vote import NoisyVoteEnsemble
from ensdef.defenses.registry import load_role
from ensdef.evaluation import decide_all
from ensdef.presets import Preset
from ensdef.store import ArtifactStore
from ensdef.train import accuracy
from ensdef.types import Role


def summary(store: ArtifactStore, preset: Preset, test: Split, seed: int = 0) -> dict[str, Any]:
    names, members = load_role(store, Role.TEMPNET, torch.device("cpu"))
    c = preset.noisy_vote
    y = test.y.numpy()
    member_acc = {n: accuracy(m, test) for n, m in zip(names, members, strict=True)}
    clean = NoisyVoteEnsemble(members, sigma=0.0, alpha_rv=None)
    noisy = NoisyVoteEnsemble(members, sigma=c.sigma, alpha_rv=None)
    verified = NoisyVoteEnsemble(members, sigma=c.sigma, alpha_rv=c.alpha_rv)

    def acc(ds: list) -> float:
        return float(sum(d.label == t for d, t in zip(ds, y, strict=True)) / len(y))

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
        "ensemble_clean_accuracy": acc(decide_all(clean, test.x, seed)),
        "ensemble_noisy_accuracy": acc(decide_all(noisy, test.x, seed)),
        "rank_verified_accuracy_on_answered": float(sum(d.label == t for d, t in answered) / max(len(answered), 1)),
        "rank_verified_abstain_rate": 1 - len(answered) / len(y),
    }
