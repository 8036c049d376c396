"""The model zoo registry: a name maps to a builder, the roles it can play and the inputs it takes."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum

from torch import nn

from ensdef.errors import ConfigError
from ensdef.registry import Registry
from ensdef.types import Role

Shape = tuple[int, int, int]
MNIST_SHAPE: Shape = (1, 28, 28)
CIFAR_SHAPE: Shape = (3, 32, 32)
BOTH: tuple[Shape, ...] = (MNIST_SHAPE, CIFAR_SHAPE)


class Kind(str, Enum):
    CLASSIFIER = "classifier"  # x [B, C, H, W] in [0, 1] -> logits [B, K]
    AUTOENCODER = "autoencoder"  # x [B, C, H, W] in [0, 1] -> image [B, C, H, W] in [0, 1]


Builder = Callable[..., nn.Module]  # (input_shape, num_classes, **build_kwargs) -> module


@dataclass(frozen=True)
class ModelSpec:
    name: str
    kind: Kind
    roles: tuple[Role, ...]
    input_shapes: tuple[Shape, ...]
    builder: Builder
    description: str


MODELS: Registry[ModelSpec] = Registry("architecture")


def register(
    name: str, kind: Kind, roles: tuple[Role, ...], description: str, input_shapes: tuple[Shape, ...] = BOTH
) -> Callable[[Builder], Builder]:
    """Decorator that adds a builder ``(input_shape, num_classes) -> nn.Module`` to :data:`MODELS`."""

    def deco(fn: Builder) -> Builder:
        MODELS.add(name, ModelSpec(name, kind, roles, input_shapes, fn, description))
        return fn

    return deco


def get_spec(name: str) -> ModelSpec:
    return MODELS[name]


def build(name: str, input_shape: Shape, num_classes: int = 10, **kwargs: object) -> nn.Module:
    """Build a fresh, randomly initialised model (``kwargs``: builder options such as RLS's ``m``).
    Raises ``ValueError`` for an unsupported input shape."""
    spec = get_spec(name)
    shape = tuple(int(v) for v in input_shape)
    if shape not in spec.input_shapes:
        raise ConfigError(f"architecture {name!r} supports input shapes {spec.input_shapes}, not {shape}")
    return spec.builder(shape, num_classes, **kwargs)
