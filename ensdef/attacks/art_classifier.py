"""Wrap a torch classifier (or a defense's surrogate) as an ART ``PyTorchClassifier``."""

from __future__ import annotations

import torch
from art.estimators.classification import PyTorchClassifier
from torch import nn


def art_classifier(model: nn.Module, input_shape: tuple[int, ...], num_classes: int) -> PyTorchClassifier:
    """ART view of ``model`` (``[B, C, H, W]`` in [0, 1] -> logits ``[B, K]``), clip values (0, 1), on the
    model's own device."""
    dev = next(iter(model.parameters()), torch.zeros(())).device
    return PyTorchClassifier(
        model=model.eval(),
        loss=nn.CrossEntropyLoss(),
        input_shape=tuple(input_shape),
        nb_classes=num_classes,
        clip_values=(0.0, 1.0),
        device_type="gpu" if dev.type == "cuda" else "cpu",
    )
