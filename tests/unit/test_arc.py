"""ARC (Dbouk and Shanbhag 2022) on toy randomized ensembles whose best attack is known by hand."""

from __future__ import annotations

import pytest
import torch

from ensdef.attacks.arc import arc, expected_accuracy, surrogate_draws
from ensdef.defenses.registry import DEFENSES, build_defense
from ensdef.rng import make_generator, seeded
from ensdef.training.adversarial import pgd_linf


def _threshold(at: float, sign: float) -> torch.nn.Module:
    """Two-class linear member on ``x`` ``[B, 2]``: answers class 1 once ``sign * (x_0 - at)`` > 0."""
    lin = torch.nn.Linear(2, 2)
    with torch.no_grad():
        lin.weight.copy_(torch.tensor([[0.0, 0.0], [10.0 * sign, 0.0]]))
        lin.bias.copy_(torch.tensor([0.0, -10.0 * sign * at]))
    return lin


def _images(n: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
    x = torch.stack([torch.full((n,), 0.5), torch.linspace(0.2, 0.8, n)], 1)
    return x, torch.zeros(n, dtype=torch.long)


# member 1 is fooled once x_0 > 0.6, member 2 once x_0 < 0.4: within eps 0.2 of x_0 = 0.5 one of them can be
# fooled, never both
MEMBERS = [_threshold(0.6, 1.0), _threshold(0.4, -1.0)]


@pytest.mark.parametrize(("alpha", "best"), [((0.5, 0.5), 0.5), ((0.7, 0.3), 0.3), ((0.3, 0.7), 0.3)])
def test_arc_reaches_the_known_optimum_of_two_members_that_cannot_both_be_fooled(
    alpha: tuple[float, float], best: float
) -> None:
    x, y = _images()
    a = torch.tensor(alpha)
    assert torch.equal(expected_accuracy(MEMBERS, a, x, y), torch.ones(len(x)))
    adv = arc(MEMBERS, a, x, y, eps=0.2, step_size=0.05, steps=10)
    assert (adv - x).abs().max() <= 0.2 + 1e-6 and adv.min() >= 0 and adv.max() <= 1
    assert torch.allclose(expected_accuracy(MEMBERS, a, adv, y), torch.full((len(x),), best))
    fooled = torch.stack([(m(adv).argmax(1) != y) for m in MEMBERS], 1)
    assert torch.equal(fooled.sum(1), torch.ones(len(x), dtype=torch.long))  # exactly one member each
    assert bool(fooled[:, int(torch.tensor(alpha).argmax())].all())  # the likelier one


def test_pgd_on_the_averaged_output_stalls_where_arc_does_not() -> None:
    """The members' gradients cancel at x_0 = 0.5: PGD on the mean probability (EOT's objective) does not move
    and leaves the expected accuracy at 1, while ARC halves it."""
    x, y = _images()
    a = torch.tensor([0.5, 0.5])

    def mean_loss(z: torch.Tensor) -> torch.Tensor:
        p = sum(torch.softmax(m(z), 1) for m in MEMBERS) / 2
        return torch.nn.functional.nll_loss(p.log(), y)

    pgd = pgd_linf(mean_loss, x, 0.2, 0.05, 20, torch.zeros_like(x))
    assert torch.equal(expected_accuracy(MEMBERS, a, pgd, y), torch.ones(len(x)))
    assert torch.equal(expected_accuracy(MEMBERS, a, arc(MEMBERS, a, x, y, 0.2, 0.05, 10), y), torch.full((8,), 0.5))


def test_arc_never_raises_the_expected_accuracy_and_restarts_replay() -> None:
    """Random three-layer members on random images: every example stays in the ball and answers y no more
    often than the input; restarts are drawn from the generator, so the same seed gives the same examples."""
    g = make_generator(3)
    with seeded(0):
        members = [
            torch.nn.Sequential(torch.nn.Linear(6, 16), torch.nn.Tanh(), torch.nn.Linear(16, 4)) for _ in range(3)
        ]
    x = torch.rand(32, 6, generator=g)
    with torch.no_grad():
        y = sum(torch.softmax(m(x), 1) for m in members).argmax(1)  # the members mostly answer y
    a = torch.tensor([0.5, 0.3, 0.2])
    adv = arc(members, a, x, y, 0.3, 0.05, 5, classes=3, restarts=2, g=make_generator(4))
    assert (adv - x).abs().max() <= 0.3 + 1e-6 and adv.min() >= 0 and adv.max() <= 1
    before, after = expected_accuracy(members, a, x, y), expected_accuracy(members, a, adv, y)
    assert bool((after <= before + 1e-6).all()) and after.sum() < before.sum()
    assert torch.equal(adv, arc(members, a, x, y, 0.3, 0.05, 5, classes=3, restarts=2, g=make_generator(4)))


@pytest.mark.parametrize("name", sorted(DEFENSES))
def test_arc_members_of_every_defense_are_fixed_draws_and_their_joint_pass_agrees(
    random_store, mnist5k, name: str
) -> None:
    """A surrogate draw answers alike every time it is asked, ``surrogate_many`` gives what the draws one by
    one give, and ARC through either makes the same examples, inside the ball. A deterministic defense's
    draws are all its one surrogate (why the harness gives it no ARC cell: one member, nothing to exploit)."""
    store, preset = random_store
    defense = build_defense(name, store, preset)
    x, y = mnist5k.test.x[:4], mnist5k.test.y[:4]
    members, joint = surrogate_draws(defense, 3, 5)
    with torch.no_grad():
        one_by_one = torch.stack([m(x) for m in members])
        assert torch.allclose(one_by_one, torch.stack([m(x) for m in members]))
        assert torch.allclose(joint(x), one_by_one, atol=1e-5)
        if not defense.randomized:
            assert torch.allclose(one_by_one, defense.surrogate(x, None).expand_as(one_by_one), atol=1e-5)
    a = torch.full((3,), 1 / 3)
    adv = arc(members, a, x, y, 0.3, 0.075, 1, joint=joint)
    assert torch.allclose(adv, arc(members, a, x, y, 0.3, 0.075, 1), atol=1e-6)
    assert (adv - x).abs().max() <= 0.3 + 1e-6
    assert bool((expected_accuracy(members, a, adv, y) <= expected_accuracy(members, a, x, y) + 1e-6).all())
