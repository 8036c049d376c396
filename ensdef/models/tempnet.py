"""The temperature network of Liang and Samavi 2021 (Table 1a): the C&W CNN with dropout 0.5, trained at T_l = 10 l."""

from __future__ import annotations

from ensdef.models.classifiers import cw_cnn
from ensdef.models.layers import UnitNet
from ensdef.models.registry import Kind, Shape, register
from ensdef.types import Role


@register("tempnet", Kind.CLASSIFIER, (Role.TEMPNET,), "Liang and Samavi 2021 Table 1a network (C&W CNN, dropout 0.5)")
def tempnet(shape: Shape, num_classes: int) -> UnitNet:
    return cw_cnn(shape, num_classes, dropout=0.5)
