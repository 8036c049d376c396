"""The model zoo. Importing this package registers every architecture in :data:`MODELS`."""

from ensdef.models import autoencoders, classifiers, kernel, resnets, rls, tempnet  # noqa: F401  (registration)
from ensdef.models.layers import Normalize, UnitNet, model_device
from ensdef.models.registry import CIFAR_SHAPE, MNIST_SHAPE, MODELS, Kind, ModelSpec, build, get_spec

__all__ = [
    "CIFAR_SHAPE",
    "MNIST_SHAPE",
    "MODELS",
    "Kind",
    "ModelSpec",
    "Normalize",
    "UnitNet",
    "build",
    "get_spec",
    "model_device",
]
