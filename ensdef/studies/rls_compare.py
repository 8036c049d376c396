"""Lee et al. (2021)'s comparisons for a stored RLS model: benign accuracy against one sub-model trained alone with
the same settings, and the interrater agreement of N sampled networks against N dropout samples of that
single network (Table 5's "stochastic dropout")."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ensdef.data import Dataset
from ensdef.defenses.rls import RLSEnsemble
from ensdef.diversity.kappa import interrater_agreement
from ensdef.errors import ConfigError
from ensdef.models import build
from ensdef.models.inference import accuracy
from ensdef.presets import Preset
from ensdef.rng import seeded
from ensdef.store import ArtifactStore
from ensdef.training.loops import train_classifier


@torch.no_grad()
def dropout_predictions(model: nn.Module, x: torch.Tensor, n: int, seed: int) -> torch.Tensor:
    """``[n, B]`` labels of ``model`` with dropout active (batch norm in eval mode), one seed per sample."""
    model.eval()
    drops = [m for m in model.modules() if isinstance(m, nn.Dropout)]
    if not drops:
        raise ConfigError("the single network has no dropout layer to sample")
    for m in drops:
        m.train()
    out = []
    for i in range(n):
        with seeded(seed + i):
            out.append(model(x).argmax(1))
    model.eval()
    return torch.stack(out)


def compare(store: ArtifactStore, preset: Preset, data: Dataset, name: str, seed: int = 0) -> dict[str, Any]:
    rls_model, manifest = store.load_model(name)
    ens = RLSEnsemble(rls_model, preset.rls.n)  # type: ignore[arg-type]
    backbone = manifest.extra["backbone"]
    with seeded(preset.rls.train.seed):
        single = build(backbone, data.shape, data.num_classes)
    single = train_classifier(single, data.train, data.val, preset.rls.train, desc=f"single-{backbone}").model
    drop_preds = dropout_predictions(single, data.test.x, preset.rls.n, seed)
    return {
        "rls": name,
        "backbone": backbone,
        "m": rls_model.num_submodels,
        "k": manifest.extra["k"],
        "n": preset.rls.n,
        "rls_test_accuracy": manifest.metrics["test_accuracy"],
        "single_test_accuracy": accuracy(single, data.test),
        "rls_interrater_agreement": ens.diversity(data.test, seed),
        "dropout_interrater_agreement": interrater_agreement(drop_preds.numpy(), data.test.y.numpy()),
        "seed": seed,
    }
