"""Every registered model builds for every input shape it claims, runs forward and backward, and every
parameter receives a gradient."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from ensdef.models import MODELS, Kind, UnitNet, build
from ensdef.models.rls import BACKBONES
from ensdef.rng import make_generator, seeded
from ensdef.types import Role

CASES = [(name, shape) for name, spec in MODELS.items() for shape in spec.input_shapes]


CASE_IDS = [f"{n}-{s[0]}x{s[1]}" for n, s in CASES]


def built_with_input(name: str, shape: tuple[int, int, int]) -> tuple[torch.nn.Module, torch.Tensor]:
    """Model ``name`` built for ``shape`` (seeded; data-initialised where it needs that) and a batch ``[3, *shape]``."""
    with seeded(0):
        model = build(name, shape, num_classes=10)
    init = getattr(model, "init_from_data", None)
    if init is not None:
        init(torch.rand(900, *shape, generator=make_generator(2)), make_generator(3))
    return model, torch.rand(3, *shape, generator=make_generator(1))


@pytest.mark.parametrize(("name", "shape"), CASES, ids=CASE_IDS)
def test_builds_runs_and_backprops(name: str, shape: tuple[int, int, int]) -> None:
    model, x = built_with_input(name, shape)
    model.train()
    out = model(x)
    spec = MODELS[name]
    if spec.kind is Kind.CLASSIFIER:
        assert out.shape == (3, 10)
        loss = torch.nn.functional.cross_entropy(out, torch.tensor([0, 1, 2]))
    else:
        assert out.shape == x.shape
        assert out.min() >= 0 and out.max() <= 1, "autoencoders return images in [0, 1]"
        loss = ((out - x) ** 2).mean()
    assert torch.isfinite(out).all()
    loss.backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert not missing, f"{name}: parameters without a finite gradient: {missing}"
    assert any(p.grad.abs().sum() > 0 for p in model.parameters())


def test_registry_covers_the_issue() -> None:
    verifiers = [n for n, s in MODELS.items() if Role.VERIFIER in s.roles and s.kind is Kind.CLASSIFIER]
    assert len(verifiers) >= 8
    assert "cw7" in MODELS and Role.TARGET in MODELS["cw7"].roles
    assert any(Role.TEMPNET in s.roles for s in MODELS.values())
    assert sum(Role.REFORMER in s.roles and n.startswith("reformer") for n, s in MODELS.items()) >= 3


@pytest.mark.parametrize("name", BACKBONES)
def test_rls_backbones_split_into_compatible_units(name: str) -> None:
    """Unit l of one copy can replace unit l of another copy built by the same builder."""
    with seeded(0):
        a = build(name, (1, 28, 28))
    with seeded(1):
        b = build(name, (1, 28, 28))
    assert isinstance(a, UnitNet) and len(a.units) == len(b.units) >= 3
    x = torch.rand(2, 1, 28, 28, generator=make_generator(0))
    a.eval(), b.eval()
    h = x
    for i, (ua, ub) in enumerate(zip(a.units, b.units, strict=True)):
        h = (ua if i % 2 else ub)(h)
    assert h.shape == (2, 10)


def test_unknown_architecture_and_shape_are_clear_errors() -> None:
    with pytest.raises(KeyError, match="unknown architecture 'nope'"):
        build("nope", (1, 28, 28))
    with pytest.raises(ValueError, match="supports input shapes"):
        build("cw7", (1, 32, 32))


def test_model_device_comes_from_the_model_or_the_callers_input() -> None:
    from ensdef.models.layers import model_device

    assert model_device(nn.Linear(2, 2)) == torch.device("cpu")
    assert model_device(nn.Identity(), torch.device("meta")) == torch.device("meta")  # no tensors: the fallback
    with pytest.raises(ValueError, match="holds no tensors"):
        model_device(nn.Identity())
