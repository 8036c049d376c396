"""Wrap a torch classifier (or a defense's surrogate) as an ART ``PyTorchClassifier``."""

from __future__ import annotations

import torch
from art.estimators.classification import PyTorchClassifier
from torch import nn

from ensdef.models.layers import model_device


class _Float32(nn.Module):
    """Casts ART's inputs to float32 (decision-based attacks such as HopSkipJump query in float64)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x.float())


def art_classifier(
    model: nn.Module,
    input_shape: tuple[int, ...],
    num_classes: int,
    lr: float | None = None,
    loss: nn.Module | None = None,
    device: torch.device | None = None,
) -> PyTorchClassifier:
    """ART view of ``model`` (``[B, C, H, W]`` in [0, 1] -> logits ``[B, K]``), clip values (0, 1), on the
    model's own device (``device`` for a model that holds no tensors). ``lr`` adds an Adam optimizer so ART can
    train it; ``loss`` replaces cross-entropy."""
    dev = model_device(model, device)
    opt = torch.optim.Adam(model.parameters(), lr=lr) if lr is not None else None
    return PyTorchClassifier(
        model=_Float32(model).eval(),
        loss=loss if loss is not None else nn.CrossEntropyLoss(),
        optimizer=opt,
        input_shape=tuple(input_shape),
        nb_classes=num_classes,
        clip_values=(0.0, 1.0),
        device_type="gpu" if dev.type == "cuda" else "cpu",
    )
