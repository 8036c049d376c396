"""Residual classifiers: CIFAR-style ResNet-20 and a small MobileNetV2. Each block is a sampling unit."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ensdef.models.classifiers import CLASSIFIER_ROLES, _norm
from ensdef.models.layers import UnitNet, conv_bn_relu
from ensdef.models.registry import Kind, Shape, register
from ensdef.types import Role


class BasicBlock(nn.Module):
    """ResNet basic block ``[B, cin, H, W] -> [B, cout, H/stride, W/stride]`` with a 1x1 projection."""

    def __init__(self, cin: int, cout: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.short: nn.Module = nn.Identity()
        if stride != 1 or cin != cout:
            self.short = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(out)) + self.short(x))


def resnet(shape: Shape, num_classes: int, blocks_per_stage: int, widths: tuple[int, int, int]) -> UnitNet:
    units: list[nn.Module] = [_norm(shape), conv_bn_relu(shape[0], widths[0])]
    cin = widths[0]
    for stage, w in enumerate(widths):
        for b in range(blocks_per_stage):
            units.append(BasicBlock(cin, w, stride=2 if (stage > 0 and b == 0) else 1))
            cin = w
    units.append(nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(cin, num_classes)))
    return UnitNet(units)


@register("resnet20", Kind.CLASSIFIER, CLASSIFIER_ROLES + (Role.RLS,), "ResNet-20 (3 stages x 3 blocks, 16-32-64)")
def resnet20(shape: Shape, num_classes: int) -> UnitNet:
    return resnet(shape, num_classes, 3, (16, 32, 64))


@register("resnet8", Kind.CLASSIFIER, (Role.RLS, Role.VERIFIER), "ResNet-8 (3 stages x 1 block), CPU-sized")
def resnet8(shape: Shape, num_classes: int) -> UnitNet:
    return resnet(shape, num_classes, 1, (16, 32, 64))


class InvertedResidual(nn.Module):
    """MobileNetV2 block: 1x1 expand, 3x3 depthwise, 1x1 project; residual when shapes match."""

    def __init__(self, cin: int, cout: int, stride: int, expand: int) -> None:
        super().__init__()
        hidden = cin * expand
        self.body = nn.Sequential(
            nn.Conv2d(cin, hidden, 1, bias=False),
            nn.BatchNorm2d(hidden),
            nn.ReLU6(inplace=True),
            nn.Conv2d(hidden, hidden, 3, stride, 1, groups=hidden, bias=False),
            nn.BatchNorm2d(hidden),
            nn.ReLU6(inplace=True),
            nn.Conv2d(hidden, cout, 1, bias=False),
            nn.BatchNorm2d(cout),
        )
        self.residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.body(x)
        return x + out if self.residual else out


@register("mobilenetv2", Kind.CLASSIFIER, CLASSIFIER_ROLES, "small MobileNetV2 (inverted residuals)")
def mobilenetv2(shape: Shape, num_classes: int) -> UnitNet:
    units: list[nn.Module] = [_norm(shape), conv_bn_relu(shape[0], 16)]
    cin = 16
    for cout, stride, expand in ((16, 1, 1), (24, 2, 4), (24, 1, 4), (32, 2, 4), (32, 1, 4), (64, 1, 4)):
        units.append(InvertedResidual(cin, cout, stride, expand))
        cin = cout
    units.append(
        nn.Sequential(
            nn.Conv2d(cin, 128, 1, bias=False),
            nn.BatchNorm2d(128),
            nn.ReLU6(inplace=True),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
            nn.Dropout(0.2),
            nn.Linear(128, num_classes),
        )
    )
    return UnitNet(units)
