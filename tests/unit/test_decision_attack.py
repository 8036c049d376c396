"""The query-only attacker sees decisions only: its examples stay within the budget, it wins against a plain
classifier, and a refusal (flag or abstain) is no success for it."""

from __future__ import annotations

import torch
from torch import nn

from ensdef.attacks.decisions import DecisionAttack
from ensdef.defenses.base import Defense
from ensdef.defenses.plans import Job, Op, Plan, decisions, required
from ensdef.defenses.single import SingleModel
from ensdef.models import build
from ensdef.presets import TrainConfig
from ensdef.rng import seeded
from ensdef.training.loops import train_classifier


class FlagsEverything(Defense):
    """Answers the wrong class for every input, always flagged: a query-only attacker learns nothing."""

    randomized = False

    def __init__(self, model: nn.Module) -> None:
        self.model = model

    def plan(self, x: torch.Tensor, g: torch.Generator, quorum: float = 0.5) -> Plan:
        (res,) = yield [Job("m", Op.LABELS, x)]
        wrong = (required(res, "m") + 1) % 10
        return decisions(wrong, torch.ones_like(wrong, dtype=torch.bool), False, lambda i: {})

    def named_members(self) -> dict[str, nn.Module]:
        return {"m": self.model}

    def surrogate(self, x: torch.Tensor, g: torch.Generator | None = None) -> torch.Tensor:
        return self.model(x).log_softmax(1)


def test_decision_attack_within_budget_and_refusals_are_no_success(mnist5k) -> None:
    with seeded(0):
        model = build("cnn4", (1, 28, 28), 10)
    model = train_classifier(model, mnist5k.train, mnist5k.val, TrainConfig(epochs=1, batch_size=64, seed=0)).model
    x, y = mnist5k.test.x[:6], mnist5k.test.y[:6]
    params = {"max_iter": 15, "max_eval": 100, "init_eval": 20}
    attack = DecisionAttack(0.3, params, seed=0)
    adv, info = attack(SingleModel(model), x, y)
    assert adv.shape == tuple(x.shape) and info["queries"] > 0 and info["sees"] == "decisions"
    assert (abs(adv - x.numpy()).max() <= 0.3 + 1e-6) and adv.min() >= 0 and adv.max() <= 1
    fooled = (model(torch.from_numpy(adv)).argmax(1) != y).float().mean()
    assert fooled > 0  # with 15 iterations of 100 queries it finds wrong answers within L-inf 0.3 (2 of 6 here)
    adv, _ = attack(FlagsEverything(model), x, y)
    assert abs(adv - x.numpy()).max() == 0.0  # every answer was a refusal: nothing to start from
