"""Classifier architectures (target model and verifier pool, in the spirit of MODEF Table II).

Every builder takes ``(input_shape, num_classes)`` and returns a :class:`UnitNet` mapping pixels in
[0, 1], ``[B, C, H, W]``, to logits ``[B, K]``. Normalisation is the first unit (buffers only).
"""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from ensdef.models.layers import Normalize, UnitNet, conv_bn_relu, flat_dim, mnist_or_cifar
from ensdef.models.registry import Kind, Shape, register
from ensdef.types import Role

CLASSIFIER_ROLES = (Role.TARGET, Role.VERIFIER)


def _norm(shape: Shape) -> Normalize:
    return Normalize([0.5] * shape[0], [0.5] * shape[0])


def _conv_relu(cin: int, cout: int, k: int = 3, pool: bool = False) -> nn.Sequential:
    layers: list[nn.Module] = [nn.Conv2d(cin, cout, k, padding=0), nn.ReLU(inplace=True)]
    if pool:
        layers.append(nn.MaxPool2d(2))
    return nn.Sequential(*layers)


def conv_stack(block: Callable[..., nn.Module], shape: Shape, widths: list[tuple[int, bool]]) -> list[nn.Module]:
    """The input normalisation, then one ``block(cin, cout, pool=...)`` per ``(cout, pool)`` of ``widths``."""
    layers: list[nn.Module] = [_norm(shape)]
    cin = shape[0]
    for cout, pool in widths:
        layers.append(block(cin, cout, pool=pool))
        cin = cout
    return layers


def dense_head(feats: list[nn.Module], shape: Shape, width: int, num_classes: int) -> list[nn.Module]:
    """Two dense units after ``feats``: flatten, ``width`` ReLU units, dropout 0.3, the ``num_classes`` logits."""
    return [
        nn.Sequential(nn.Flatten(), nn.Linear(flat_dim(feats, shape), width), nn.ReLU(inplace=True)),
        nn.Sequential(nn.Dropout(0.3), nn.Linear(width, num_classes)),
    ]


def cw_cnn(shape: Shape, num_classes: int, dropout: float) -> UnitNet:
    """The Carlini & Wagner 7-layer CNN (4 conv + 3 dense; Liang and Samavi 2021 Table 1a)."""
    c, fc = mnist_or_cifar(shape, 32, 64), mnist_or_cifar(shape, 200, 256)
    feats = conv_stack(_conv_relu, shape, [(c, False), (c, True), (2 * c, False), (2 * c, True)])
    head = [
        nn.Sequential(nn.Flatten(), nn.Linear(flat_dim(feats, shape), fc), nn.ReLU(inplace=True)),
        nn.Sequential(nn.Dropout(dropout), nn.Linear(fc, fc), nn.ReLU(inplace=True)),
        nn.Sequential(nn.Dropout(dropout), nn.Linear(fc, num_classes)),
    ]
    return UnitNet(feats + head)


@register(
    "cw7",
    Kind.CLASSIFIER,
    CLASSIFIER_ROLES,
    "C&W 7-layer CNN, the target model of MODEF (Chow et al. 2019) and DeT (Li et al. 2019)",
)
def cw7(shape: Shape, num_classes: int) -> UnitNet:
    return cw_cnn(shape, num_classes, dropout=0.5)


@register("cnn4", Kind.CLASSIFIER, CLASSIFIER_ROLES, "CNN-4: 2 conv 5x5 + 2 dense")
def cnn4(shape: Shape, num_classes: int) -> UnitNet:
    feats = [
        _norm(shape),
        nn.Sequential(nn.Conv2d(shape[0], 32, 5, padding=2), nn.ReLU(inplace=True), nn.MaxPool2d(2)),
        nn.Sequential(nn.Conv2d(32, 64, 5, padding=2), nn.ReLU(inplace=True), nn.MaxPool2d(2)),
    ]
    return UnitNet(feats + dense_head(feats, shape, 256, num_classes))


@register("cnn5", Kind.CLASSIFIER, CLASSIFIER_ROLES, "CNN-5: 3 conv-BN + 2 dense")
def cnn5(shape: Shape, num_classes: int) -> UnitNet:
    feats = [
        _norm(shape),
        conv_bn_relu(shape[0], 32, pool=True),
        conv_bn_relu(32, 64, pool=True),
        conv_bn_relu(64, 128, pool=True),
    ]
    return UnitNet(feats + dense_head(feats, shape, 128, num_classes))


@register("cnn6", Kind.CLASSIFIER, CLASSIFIER_ROLES, "CNN-6: 5 strided conv-BN + global pooling + dense")
def cnn6(shape: Shape, num_classes: int) -> UnitNet:
    return UnitNet(
        [
            _norm(shape),
            conv_bn_relu(shape[0], 16),
            conv_bn_relu(16, 32, stride=2),
            conv_bn_relu(32, 32),
            conv_bn_relu(32, 64, stride=2),
            conv_bn_relu(64, 64),
            nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, num_classes)),
        ]
    )


@register("lenet", Kind.CLASSIFIER, CLASSIFIER_ROLES, "LeNet-5 (tanh, average pooling)")
def lenet(shape: Shape, num_classes: int) -> UnitNet:
    pad = 2 if shape[1] == 28 else 0
    feats = [
        _norm(shape),
        nn.Sequential(nn.Conv2d(shape[0], 6, 5, padding=pad), nn.Tanh(), nn.AvgPool2d(2)),
        nn.Sequential(nn.Conv2d(6, 16, 5), nn.Tanh(), nn.AvgPool2d(2)),
    ]
    head = [
        nn.Sequential(nn.Flatten(), nn.Linear(flat_dim(feats, shape), 120), nn.Tanh()),
        nn.Sequential(nn.Linear(120, 84), nn.Tanh()),
        nn.Linear(84, num_classes),
    ]
    return UnitNet(feats + head)


@register("mlp", Kind.CLASSIFIER, CLASSIFIER_ROLES, "MLP 512-256 with dropout")
def mlp(shape: Shape, num_classes: int) -> UnitNet:
    d = shape[0] * shape[1] * shape[2]
    return UnitNet(
        [
            _norm(shape),
            nn.Sequential(nn.Flatten(), nn.Linear(d, 512), nn.ReLU(inplace=True)),
            nn.Sequential(nn.Dropout(0.2), nn.Linear(512, 256), nn.ReLU(inplace=True)),
            nn.Sequential(nn.Dropout(0.2), nn.Linear(256, num_classes)),
        ]
    )


@register("vgg", Kind.CLASSIFIER, CLASSIFIER_ROLES + (Role.RLS,), "small VGG: 3 stages of conv-BN pairs")
def vgg(shape: Shape, num_classes: int) -> UnitNet:
    w = mnist_or_cifar(shape, 32, 64)
    feats = conv_stack(conv_bn_relu, shape, [(w, False), (w, True), (2 * w, False), (2 * w, True), (4 * w, True)])
    head = [nn.Sequential(nn.Flatten(), nn.Dropout(0.3), nn.Linear(flat_dim(feats, shape), num_classes))]
    return UnitNet(feats + head)
