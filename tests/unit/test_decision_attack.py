"""The query-only attackers (HopSkipJump, Square) see decisions only: their examples stay within the budget,
they win against a plain classifier, and a refusal (flag or abstain) is no success for them."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from ensdef.attacks.decisions import QUERY_ONLY, DecisionAttack, separated_groups
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


BUDGETS = {"hopskipjump": {"max_iter": 15, "max_eval": 100, "init_eval": 20}, "square": {"max_iter": 60}}
EPS = {"hopskipjump": 0.3, "square": 0.5}  # labels give Square no gradient of a score: random search, wider ball


@pytest.mark.parametrize("attack", QUERY_ONLY)
def test_decision_attack_within_budget_and_refusals_are_no_success(mnist5k, attack: str) -> None:
    with seeded(0):
        model = build("cnn4", (1, 28, 28), 10)
    model = train_classifier(model, mnist5k.train, mnist5k.val, TrainConfig(epochs=1, batch_size=64, seed=0)).model
    x, y, eps = mnist5k.test.x[:6], mnist5k.test.y[:6], EPS[attack]
    run = DecisionAttack(eps, BUDGETS[attack], seed=0, attack=attack)
    adv, info = run(SingleModel(model), x, y)
    assert adv.shape == tuple(x.shape) and info["queries"] > 0 and info["sees"] == "decisions"
    again, twice = run(SingleModel(model), x, y)  # the same seed replays exactly (ART's HopSkipJump starts
    assert (again == adv).all() and twice["queries"] == info["queries"]  # from an unseeded RandomState)
    assert (abs(adv - x.numpy()).max() <= eps + 1e-6) and adv.min() >= 0 and adv.max() <= 1
    fooled = (model(torch.from_numpy(adv)).argmax(1) != y).float().mean()
    assert fooled > 0  # from labels alone it finds wrong answers within the budget
    refused, seen = run(FlagsEverything(model), x, y)
    if attack == "hopskipjump":
        assert abs(refused - x.numpy()).max() == 0.0  # every answer was a refusal: nothing to start from
    else:  # Square never saw a success, so it spent its whole budget on every image
        assert seen["queries"] > info["queries"]


def test_separated_groups_put_images_closer_than_twice_eps_apart() -> None:
    x = torch.zeros(4, 1, 2, 2)
    x[1, 0, 0, 0] = 0.5  # 0.5 from image 0: within 2 * 0.3
    x[2, 0, 0, 0] = 1.0  # 1.0 from image 0, 0.5 from image 1
    x[3, 0, 1, 1] = 1.0  # 1.0 from every other image
    assert separated_groups(x, 0.3) == [[0, 2, 3], [1]]
    assert separated_groups(x, 0.2) == [[0, 1, 2, 3]]
    # a query within eps of an image of a group has that image as its unique nearest one
    for grp in separated_groups(x, 0.3):
        q = x[grp] + 0.3 * (2 * torch.rand(len(grp), 1, 2, 2, generator=torch.Generator().manual_seed(0)) - 1)
        near = (q[:, None] - x[grp][None]).flatten(2).abs().amax(2).argmin(1)
        assert near.tolist() == list(range(len(grp)))
