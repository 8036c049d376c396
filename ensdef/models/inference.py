"""Inference helpers: a model's outputs over a whole tensor in batches, on the model's own device, and the
accuracy and reconstruction error of a split. Used by training, selection, evaluation and the studies."""

from __future__ import annotations

import torch
from torch import nn

from ensdef.data import Split
from ensdef.errors import ConfigError
from ensdef.models.layers import model_device
from ensdef.noise import NoiseSpec, corrupt
from ensdef.rng import make_generator


def resolve_device(name: str | torch.device) -> torch.device:
    """``auto``: CUDA when present, else CPU; any other name as torch reads it (``cuda`` without a GPU raises)."""
    if str(name) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(name)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {str(name)!r} asked for, but no CUDA device is present")
    return dev


@torch.no_grad()
def predict(model: nn.Module, x: torch.Tensor, batch_size: int = 512) -> torch.Tensor:
    """Apply ``model`` in eval mode on its own device in batches; returns outputs on ``x``'s device."""
    dev = model_device(model, x.device)
    was = model.training
    model.eval()
    out = torch.cat([model(x[i : i + batch_size].to(dev)).to(x.device) for i in range(0, len(x), batch_size)])
    model.train(was)
    return out


def accuracy(model: nn.Module, split: Split, batch_size: int = 512) -> float:
    return float((predict(model, split.x, batch_size).argmax(1) == split.y).float().mean())


def reconstruction_mse(model: nn.Module, split: Split, noise: NoiseSpec | None = None, seed: int = 0) -> float:
    """Mean squared error per pixel between ``model(q(x))`` and ``x`` (``q`` = ``noise`` or identity)."""
    x = split.x if noise is None else corrupt(split.x, noise, make_generator(seed))
    return float(((predict(model, x) - split.x) ** 2).mean())
