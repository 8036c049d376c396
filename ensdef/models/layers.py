"""Building blocks shared by the zoo, above all :class:`UnitNet`, a network split into sampling units."""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import torch
from torch import nn


def model_device(model: nn.Module, fallback: torch.device | None = None) -> torch.device:
    """The device of ``model``'s first parameter or buffer; ``fallback`` (the caller's input device) for a model
    with neither. Raises ``ValueError`` when there is neither a tensor nor a fallback to take it from."""
    first = next(itertools.chain(model.parameters(), model.buffers()), None)
    if first is not None:
        return first.device
    if fallback is None:
        raise ValueError(f"{type(model).__name__} holds no tensors: give the device explicitly")
    return fallback


class Normalize(nn.Module):
    """Per-channel ``(x - mean) / std`` with the statistics as buffers, so models take pixels in [0, 1]."""

    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(list(mean)).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(list(std)).view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


class UnitNet(nn.Module):
    """A feed-forward network stored as an ordered list of *sampling units*.

    A unit is a conv with its norm and activation, a residual block, or the classifier head. Random layer
    sampling (Lee et al. 2021) composes unit ``l`` of sub-model ``r_l`` for every ``l``; any ``UnitNet`` built by
    the same builder has compatible units. ``forward``: ``[B, C, H, W] -> [B, K]`` for classifiers.
    """

    def __init__(self, units: Sequence[nn.Module]) -> None:
        super().__init__()
        self.units = nn.ModuleList(units)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for unit in self.units:
            x = unit(x)
        return x


def conv_bn_relu(cin: int, cout: int, k: int = 3, stride: int = 1, pool: bool = False) -> nn.Sequential:
    layers: list[nn.Module] = [
        nn.Conv2d(cin, cout, k, stride=stride, padding=k // 2, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    ]
    if pool:
        layers.append(nn.MaxPool2d(2))
    return nn.Sequential(*layers)


def flat_dim(features: Sequence[nn.Module], input_shape: tuple[int, int, int]) -> int:
    """Number of features after running ``features`` on one zero image of ``input_shape``."""
    with torch.no_grad():
        x = torch.zeros(1, *input_shape)
        for f in features:
            f.eval()
            x = f(x)
            f.train()
    return int(x.numel())


def mnist_or_cifar(input_shape: tuple[int, int, int], mnist: int, cifar: int) -> int:
    """Pick a width by input shape: single-channel inputs get the MNIST setting."""
    return mnist if input_shape[0] == 1 else cifar
