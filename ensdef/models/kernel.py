"""An RBF-kernel classifier written in torch, so that it can be attacked with gradients.

``f(x) = W k(s(x)) + b`` with ``k_j(z) = exp(-gamma ||z - c_j||^2)`` and ``s`` the classic moment-based
deskewing of digit images (differentiable; identity for colour images). The centres ``c_j`` start at
training images (:meth:`RBFNet.init_from_data`) and, with ``gamma``, are learned: a kernel machine on
inducing points, the differentiable counterpart of MODEF's SVM verifier.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ensdef.models.classifiers import CLASSIFIER_ROLES
from ensdef.models.layers import UnitNet
from ensdef.models.registry import Kind, Shape, register


class Deskew(nn.Module):
    """Shear each image so that its principal axis is vertical and its centroid centred.
    ``[B, C, H, W] -> [B, C, H, W]``, differentiable in the pixels."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, _, h, w = x.shape
        yy, xx = torch.meshgrid(
            torch.arange(h, dtype=x.dtype, device=x.device),
            torch.arange(w, dtype=x.dtype, device=x.device),
            indexing="ij",
        )
        img = x.mean(1)
        tot = img.sum((1, 2)).clamp_min(1e-6)
        my = (img * yy).sum((1, 2)) / tot
        mx = (img * xx).sum((1, 2)) / tot
        dy = yy - my.view(-1, 1, 1)
        var_y = (img * dy**2).sum((1, 2)) / tot
        cov = (img * dy * (xx - mx.view(-1, 1, 1))).sum((1, 2)) / tot
        alpha = (cov / var_y.clamp_min(1e-6)).view(-1, 1, 1)
        cy, cx = (h - 1) / 2, (w - 1) / 2
        src_y = yy + (my.view(-1, 1, 1) - cy)
        src_x = xx + alpha * (yy - cy) + (mx.view(-1, 1, 1) - cx)
        grid = torch.stack([src_x / (w - 1) * 2 - 1, src_y / (h - 1) * 2 - 1], -1)
        return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=True)


class RBFFeatures(nn.Module):
    """``[B, D] -> [B, P]`` Gaussian kernel values against ``P`` learnable centres."""

    def __init__(self, dim: int, num_centers: int, gamma: float) -> None:
        super().__init__()
        self.centers = nn.Parameter(torch.rand(num_centers, dim) * 0.1)
        self.log_gamma = nn.Parameter(torch.tensor(math.log(gamma)))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        d2 = (z * z).sum(1, keepdim=True) + (self.centers * self.centers).sum(1) - 2.0 * z @ self.centers.T
        return torch.exp(-self.log_gamma.exp() * d2.clamp_min(0.0))


class RBFNet(UnitNet):
    """Deskew -> flatten -> RBF features -> standardise -> linear. ``[B, C, H, W] -> [B, K]``."""

    def __init__(
        self, shape: Shape, num_classes: int, num_centers: int = 3500, gamma: float = 0.02, dropout: float = 0.3
    ) -> None:
        dim = shape[0] * shape[1] * shape[2]
        super().__init__(
            [
                Deskew() if shape[0] == 1 else nn.Identity(),
                nn.Flatten(),
                RBFFeatures(dim, num_centers, gamma),
                nn.BatchNorm1d(num_centers),  # standardising kernel values makes the linear head well conditioned
                nn.Dropout(dropout),
                nn.Linear(num_centers, num_classes),
            ]
        )

    @torch.no_grad()
    def init_from_data(self, x: torch.Tensor, g: torch.Generator) -> None:
        """Place the centres on distinct training images ``x`` ``[N, C, H, W]`` drawn with ``g``."""
        feats: RBFFeatures = self.units[2]  # type: ignore[assignment]
        n = feats.centers.shape[0]
        if x.shape[0] >= n:
            idx = torch.randperm(x.shape[0], generator=g)[:n]
        else:
            idx = torch.randint(0, x.shape[0], (n,), generator=g)
        feats.centers.copy_(self.units[1](self.units[0](x[idx].to(feats.centers))))


@register("rbf_svm", Kind.CLASSIFIER, CLASSIFIER_ROLES, "RBF-kernel classifier on learned inducing points")
def rbf_svm(shape: Shape, num_classes: int) -> RBFNet:
    return RBFNet(
        shape, num_classes, num_centers=3500 if shape[0] == 1 else 4000, gamma=0.03 if shape[0] == 1 else 0.005
    )
