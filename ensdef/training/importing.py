"""Bring your own classifier: import a TorchScript file or a state dict as a preset's target model."""

from __future__ import annotations

from pathlib import Path

import torch

from ensdef.data import load_dataset
from ensdef.models import build
from ensdef.models.inference import accuracy
from ensdef.presets import load_preset
from ensdef.store import ArtifactStore, Manifest
from ensdef.types import Role


def import_target(
    store_root: str | Path,
    file: str | Path,
    preset: str = "mnist5k",
    name: str = "target",
    architecture: str | None = None,
    data_root: str | None = None,
) -> Manifest:
    """Store ``file`` as the target of ``preset`` after measuring its test accuracy.

    With ``architecture`` the file is a state dict for that registered architecture (loaded with
    ``weights_only=True``); without it the file must be TorchScript taking ``[B, C, H, W]`` pixels in
    [0, 1] and returning logits ``[B, K]``.
    """
    p = load_preset(preset)
    data = load_dataset(p.dataset, data_root or p.data_root)
    store = ArtifactStore(store_root)
    base = dict(
        name=name,
        role=Role.TARGET,
        dataset=data.name,
        input_shape=tuple(data.shape),
        num_classes=data.num_classes,
        sha256="",
        extra={"imported_from": str(file)},
    )
    if architecture is not None:
        model = build(architecture, data.shape, data.num_classes)
        model.load_state_dict(torch.load(file, map_location="cpu", weights_only=True))
        model.eval()
        return store.save_model(
            model, Manifest(architecture=architecture, **base, metrics={"test_accuracy": accuracy(model, data.test)})
        )
    scripted = torch.jit.load(str(file), map_location="cpu").eval()
    return store.import_torchscript(
        file, Manifest(architecture="torchscript", **base, metrics={"test_accuracy": accuracy(scripted, data.test)})
    )
