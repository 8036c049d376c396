"""Evaluation helpers: the attack set (first correctly classified test images, balanced per class) and
defense scoring over batches with a replayable generator."""

from __future__ import annotations

import torch
from torch import nn

from ensdef.data import Split
from ensdef.defenses.base import Defense, decide_all
from ensdef.evaluation.metrics import Rates, rates
from ensdef.models.inference import predict


def attack_set_indices(target: nn.Module, test: Split, per_class: int, num_classes: int = 10) -> list[int]:
    """Indices of the first ``per_class`` test images of each class that ``target`` classifies correctly
    (MODEF V-A), sorted."""
    ok = predict(target, test.x).argmax(1) == test.y
    idx: list[int] = []
    for c in range(num_classes):
        idx += (ok & (test.y == c)).nonzero().flatten()[:per_class].tolist()
    return sorted(idx)


def attack_set(target: nn.Module, test: Split, per_class: int, num_classes: int = 10) -> Split:
    """The attack set itself (see :func:`attack_set_indices`)."""
    return test.subset(attack_set_indices(target, test, per_class, num_classes))


def score(defense: Defense, x: torch.Tensor, y: torch.Tensor, seed: int, batch_size: int = 50) -> Rates:
    return rates(decide_all(defense, x, seed, batch_size), y.numpy())
