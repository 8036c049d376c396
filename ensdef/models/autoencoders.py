"""Autoencoders: MODEF's denoisers (Table IV) and three structurally different MagNet-style reformers.

Every builder returns a module mapping ``[B, C, H, W]`` in [0, 1] to an image of the same shape in [0, 1]
(the last activation is a sigmoid). ``num_classes`` is ignored.
"""

from __future__ import annotations

import torch
from torch import nn

from ensdef.models.registry import Kind, Shape, register
from ensdef.types import Role

DENOISER = (Role.DENOISER, Role.REFORMER)


def _cs(cin: int, cout: int) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, 3, padding=1), nn.Sigmoid()]


@register("dae_mnist", Kind.AUTOENCODER, DENOISER, "MODEF Table IV MNIST denoiser (pool/upsample, sigmoid)")
def dae_mnist(shape: Shape, num_classes: int = 0) -> nn.Sequential:
    c = shape[0]
    return nn.Sequential(
        *_cs(c, 3), nn.AvgPool2d(2), *_cs(3, 3), *_cs(3, 3), nn.Upsample(scale_factor=2), *_cs(3, 3), *_cs(3, c)
    )


@register("dae_cifar", Kind.AUTOENCODER, DENOISER, "MODEF Table IV CIFAR-10 denoiser (3 conv, sigmoid)")
def dae_cifar(shape: Shape, num_classes: int = 0) -> nn.Sequential:
    c = shape[0]
    return nn.Sequential(*_cs(c, 3), *_cs(3, 3), *_cs(3, c))


@register("reformer_conv", Kind.AUTOENCODER, DENOISER, "MagNet-style reformer without pooling (16 filters)")
def reformer_conv(shape: Shape, num_classes: int = 0) -> nn.Sequential:
    c = shape[0]
    return nn.Sequential(*_cs(c, 16), *_cs(16, 16), *_cs(16, c))


@register("reformer_pool", Kind.AUTOENCODER, DENOISER, "MagNet-style reformer with pooling bottleneck")
def reformer_pool(shape: Shape, num_classes: int = 0) -> nn.Sequential:
    c = shape[0]
    return nn.Sequential(
        *_cs(c, 16), nn.AvgPool2d(2), *_cs(16, 16), nn.Upsample(scale_factor=2), *_cs(16, 16), *_cs(16, c)
    )


class SkipAutoencoder(nn.Module):
    """Strided-conv encoder, transposed-conv decoder, one skip connection and a global residual in logit
    space (leaky ReLU inside)."""

    def __init__(self, c: int) -> None:
        super().__init__()
        self.enc1 = nn.Sequential(nn.Conv2d(c, 32, 3, 2, 1), nn.LeakyReLU(0.1, inplace=True))
        self.enc2 = nn.Sequential(nn.Conv2d(32, 64, 3, 2, 1), nn.LeakyReLU(0.1, inplace=True))
        self.dec2 = nn.Sequential(nn.ConvTranspose2d(64, 32, 4, 2, 1), nn.LeakyReLU(0.1, inplace=True))
        self.dec1 = nn.Sequential(nn.ConvTranspose2d(64, 32, 4, 2, 1), nn.LeakyReLU(0.1, inplace=True))
        self.out = nn.Conv2d(32, c, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        e1 = self.enc1(x)
        d2 = self.dec2(self.enc2(e1))
        # global residual in logit space: starts near the identity, so the sigmoid cannot collapse to zero
        return torch.sigmoid(self.out(self.dec1(torch.cat([d2, e1], dim=1))) + torch.logit(x.clamp(1e-3, 1 - 1e-3)))


@register("reformer_skip", Kind.AUTOENCODER, DENOISER, "strided encoder / transposed decoder with a skip")
def reformer_skip(shape: Shape, num_classes: int = 0) -> SkipAutoencoder:
    return SkipAutoencoder(shape[0])
