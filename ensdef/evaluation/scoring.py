"""Evaluation helpers: the attack set (first correctly classified test images, balanced per class) and
defense scoring over batches with a replayable generator."""

from __future__ import annotations

from typing import Any

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


def scored_cell(
    defense: Defense, x: torch.Tensor, y: torch.Tensor, ref: torch.Tensor, seed: int, batch_size: int = 50
) -> dict[str, Any]:
    """A report cell for images ``x`` ``[N, C, H, W]`` made from ``ref`` (true labels ``y``): the rates with
    counts and intervals, and per image (in order) whether the defense was ``correct`` (right label, not
    abstained), ``flagged`` (flagged or abstained) and the perturbation's L-inf size (``linf``), so that
    attacks can be combined per image (worst case) and defenses compared on the same images."""
    decisions = decide_all(defense, x, seed, batch_size)
    labels = y.tolist()
    per_image = {
        "correct": [d.label == t and not d.abstained for d, t in zip(decisions, labels, strict=True)],
        "flagged": [d.flagged or d.abstained for d in decisions],
        "linf": (x - ref).flatten(1).abs().amax(1).tolist(),
    }
    return {**rates(decisions, y.numpy()).as_dict(), "per_image": per_image}
