"""Attack-failure indicators fire on defenses with known gradient masking (input quantisation by rounding, a
saturated softmax) and stay quiet on the plain classifier they wrap."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from ensdef.attacks.eot import EOTSurrogate
from ensdef.defenses.single import SingleModel
from ensdef.evaluation.indicators import indicators
from ensdef.models import build
from ensdef.presets import TrainConfig
from ensdef.rng import make_generator, seeded
from ensdef.training.loops import train_classifier


class Rounded(nn.Module):
    """Input quantisation to 4 levels: a step function, zero gradient almost everywhere."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(torch.round(x * 3) / 3)


class Saturated(nn.Module):
    """Logits scaled by 1e4: the softmax saturates and the cross-entropy gradient underflows to zero."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x) * 1e4


@pytest.fixture(scope="module")
def plain(mnist5k) -> nn.Module:
    with seeded(0):
        model = build("cnn4", (1, 28, 28), 10)
    return train_classifier(model, mnist5k.train, mnist5k.val, TrainConfig(epochs=1, batch_size=64, seed=0)).model


def _fired(model: nn.Module, mnist5k) -> dict[str, bool]:
    x, y = mnist5k.test.x[:40], mnist5k.test.y[:40]
    ok = model(x).argmax(1) == y
    sur = EOTSurrogate(SingleModel(model.eval()), 0, 0)
    found = indicators(sur, x[ok][:20], y[ok][:20], 0.3, 10, make_generator(1))
    return {i.name: i.fired for i in found}


def test_the_plain_classifier_fires_nothing(plain, mnist5k) -> None:
    fired = _fired(plain, mnist5k)
    assert set(fired) == {
        "zero-gradients",
        "unstable-loss",
        "silent-success",
        "incomplete-optimization",
        "unbounded-failure",
    }
    assert not any(fired.values()), fired


@pytest.mark.parametrize("mask", [Rounded, Saturated], ids=["rounding", "saturated-softmax"])
def test_gradient_masking_fires_the_indicators(plain, mnist5k, mask) -> None:
    fired = _fired(mask(plain), mnist5k)
    assert fired["zero-gradients"] and fired["unbounded-failure"], fired
