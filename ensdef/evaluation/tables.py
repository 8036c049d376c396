"""MODEF's model tables for the report: pairwise kappa of the verifier pool (Table VII) and the
transferability matrix between the target and the verifiers (Table IX)."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from ensdef.attacks.art_classifier import art_classifier
from ensdef.attacks.cache import AttackCache
from ensdef.attacks.catalog import attack_params, run_attack
from ensdef.data import Split
from ensdef.diversity.kappa import kappa_matrix
from ensdef.models.inference import predict
from ensdef.store import ArtifactStore
from ensdef.types import Role


def table_models(store: ArtifactStore) -> list[str]:
    return ["target", *[m.name for m in store.by_role(Role.VERIFIER)]]


def kappa_table(store: ArtifactStore, test: Split) -> dict[str, Any]:
    """Pairwise Cohen kappa of the verifiers' test predictions on the pool's negative examples."""
    names = [m.name for m in store.by_role(Role.VERIFIER)]
    preds = np.stack([predict(store.load_model(n)[0], test.x).argmax(1).numpy() for n in names])
    return {"models": names, "matrix": kappa_matrix(preds, test.y.numpy()).tolist()}


def transfer_table(
    store: ArtifactStore, ref: Split, attack: str, overrides: dict[str, Any], cache: AttackCache, num_classes: int
) -> dict[str, Any]:
    """``matrix[i][j]``: fraction of ``attack`` examples made on model i (untargeted) that model j misclassifies."""
    names = table_models(store)
    models = [store.load_model(n)[0] for n in names]
    params = attack_params(attack, overrides)
    advs = []
    for n, m in zip(names, models, strict=True):
        parts = {"attack": attack, "params": params, "model": store.manifest(n).sha256, "x": ref.x.sum().item()}
        clf = art_classifier(m, tuple(ref.x.shape[1:]), num_classes)
        advs.append(
            cache.tensors(
                "transfer",
                parts,
                lambda c=clf: {"x": torch.from_numpy(run_attack(attack, c, ref.x.numpy(), ref.y.numpy(), params))},
            )["x"]
        )
    mat = [[float((predict(mj, a).argmax(1) != ref.y).float().mean()) for mj in models] for a in advs]
    return {"models": names, "attack": attack, "params": params, "matrix": mat}
