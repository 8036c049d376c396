"""MODEF defenses on a hand-worked 3-member example, plus determinism and surrogate gradients.

Images are constant; a member sees only the mean intensity m, bucketed into bin0 (m < 0.2), bin1, bin2
(m >= 0.8). Denoisers shift the image by -0.35, 0, +0.35 (clipped). Verifier probabilities per bin:

    V1: [.8 .1 .1] [.1 .6 .3] [.1 .2 .7]     team mean P per bin:
    V2: [.6 .3 .1] [.2 .5 .3] [.1 .1 .8]     bin0 [.6 .3 .1]           -> 0, confidence .6
    V3: [.4 .5 .1] [.1 .75 .15] [.3 .3 .4]   bin1 [.1333 .6167 .25]    -> 1, confidence .6167
                                             bin2 [.1667 .2 .6333]     -> 2, confidence .6333
The target labels bin0 -> 0, bin1 -> 2, bin2 -> 1.
Inputs: a = 0.5 (versions in bins 0, 1, 2); b = 0.95 (bins 1, 2, 2); c = 0.05 (bins 0, 0, 1).
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from ensdef.defenses.crosslayer import CrossLayerEnsemble, many_to_many_vote
from ensdef.defenses.denoising import DenoisingEnsemble, denoise_vote
from ensdef.defenses.verification import VerificationEnsemble
from ensdef.diversity.teams import TeamSelection
from ensdef.rng import make_generator
from ensdef.types import CrossLayerMode, OnDisagree, TeamPolicy, VoteRule


class BinNet(nn.Module):
    def __init__(self, table: list[list[float]]) -> None:
        super().__init__()
        self.register_buffer("logits", torch.log(torch.tensor(table)))
        self.register_buffer("edges", torch.tensor([0.2, 0.8]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.logits[torch.bucketize(x.mean((1, 2, 3)), self.edges, right=True)]


class Shift(nn.Module):
    def __init__(self, offset: float) -> None:
        super().__init__()
        self.offset = offset

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x + self.offset).clamp(0, 1)


V = [
    BinNet([[0.8, 0.1, 0.1], [0.1, 0.6, 0.3], [0.1, 0.2, 0.7]]),
    BinNet([[0.6, 0.3, 0.1], [0.2, 0.5, 0.3], [0.1, 0.1, 0.8]]),
    BinNet([[0.4, 0.5, 0.1], [0.1, 0.75, 0.15], [0.3, 0.3, 0.4]]),
]
TARGET = BinNet([[0.8, 0.1, 0.1], [0.1, 0.1, 0.8], [0.1, 0.8, 0.1]])
D = [Shift(-0.35), Shift(0.0), Shift(0.35)]
X = torch.stack([torch.full((1, 4, 4), v) for v in (0.5, 0.95, 0.05)])


def teams_of(teams: tuple[tuple[int, ...], ...], policy: TeamPolicy) -> TeamSelection:
    """A selection over three verifiers whose ranked list is ``teams`` (the first is Best-kappa's)."""
    eye = ((1, 0, 0), (0, 1, 0), (0, 0, 1))
    return TeamSelection(
        ("v1", "v2", "v3"),
        teams,
        tuple(0.1 * (i + 1) for i in range(len(teams))),
        teams,
        teams[0],
        1.0,
        policy,
        0.5,
        eye,
    )


def one_team(policy: TeamPolicy = TeamPolicy.BEST_KAPPA) -> TeamSelection:
    return teams_of(((0, 1, 2),), policy)


def summary(decisions) -> list[tuple[int, bool]]:
    return [(d.label, d.flagged) for d in decisions]


def test_many_to_many_hand_worked() -> None:
    d = CrossLayerEnsemble(D, TARGET, V, one_team(), CrossLayerMode.MANY_TO_MANY, num_classes=3)
    assert summary(d.decide(X, make_generator(0))) == [(2, True), (2, False), (1, True)]


@pytest.mark.parametrize(("on_disagree", "b"), [(OnDisagree.REPAIR, (2, False)), (OnDisagree.FLAG, (2, True))])
def test_one_to_many_hand_worked(on_disagree: OnDisagree, b: tuple[int, bool]) -> None:
    d = CrossLayerEnsemble(D, TARGET, V, one_team(), CrossLayerMode.ONE_TO_MANY, on_disagree=on_disagree, num_classes=3)
    out = summary(d.decide(X, make_generator(0)))
    assert out[0][1] is True  # a: target labels 0, 2, 1 -> no majority among denoised versions -> flagged
    assert out[1] == b  # b: majority 1 on bin2 versions, team says 2 -> repaired (or flagged)
    assert out[2] == (0, False)  # c: majority 0 on bin0 versions, team agrees


def test_denoising_and_verification_hand_worked() -> None:
    den = DenoisingEnsemble(D, TARGET, num_classes=3)
    out = summary(den.decide(X, make_generator(0)))
    assert out[0][1] is True and out[1] == (1, False) and out[2] == (0, False)
    ver = VerificationEnsemble(TARGET, V, one_team(), VoteRule.SOFT, OnDisagree.FLAG)
    assert summary(ver.decide(X, make_generator(0))) == [(1, True), (2, True), (0, False)]
    ver = VerificationEnsemble(TARGET, V, one_team(), VoteRule.MAJORITY, OnDisagree.REPAIR)
    assert summary(ver.decide(X, make_generator(0))) == [(1, False), (2, False), (0, False)]


def test_pure_votes() -> None:
    v = denoise_vote(torch.tensor([[1, 2], [1, 0], [3, 2]]), 4, make_generator(0))
    assert v.label.tolist() == [1, 2] and v.flagged.tolist() == [False, False]
    assert v.chosen[0].item() in (0, 1) and v.chosen[1].item() in (0, 2)
    v = denoise_vote(torch.tensor([[1], [2], [3], [3]]), 4, make_generator(0))
    assert v.label.tolist() == [3] and v.flagged.tolist() == [True]  # 2 of 4 is not a strict majority
    p = torch.tensor([[[[0.6, 0.4]], [[0.6, 0.4]]], [[[0.1, 0.9]], [[0.1, 0.9]]], [[[0.3, 0.7]], [[0.3, 0.7]]]])
    m = many_to_many_vote(p)  # versions: 0 (.6), 1 (.9), 1 (.7) -> label 1 from version 1
    assert m.label.tolist() == [1] and m.flagged.tolist() == [False] and m.chosen.tolist() == [1]
    assert many_to_many_vote(p, consensus=0.7).flagged.tolist() == [True]


def test_same_seed_same_decision_and_seeds_draw_different_teams() -> None:
    teams = teams_of(((0, 1), (1, 2), (0, 2)), TeamPolicy.RAND_KAPPA)
    d = CrossLayerEnsemble(D, TARGET, V, teams, CrossLayerMode.ONE_TO_MANY, num_classes=3)
    first = d.decide(X, make_generator(7))
    assert first == d.decide(X, make_generator(7))
    drawn = {tuple(d.decide(X[:1], make_generator(s))[0].diagnostics["team"]) for s in range(20)}
    assert len(drawn) == 3
    assert {teams.with_policy(TeamPolicy.BEST_KAPPA).draw(make_generator(s)) for s in range(10)} == {(0, 1)}


@pytest.mark.parametrize("mode", list(CrossLayerMode))
def test_surrogates_give_input_gradients(mode: CrossLayerMode) -> None:
    from ensdef.models import build
    from ensdef.rng import seeded

    with seeded(0):
        dens = [build("dae_cifar", (1, 28, 28)).eval() for _ in range(3)]
        ver = [build(a, (1, 28, 28)).eval() for a in ("lenet", "mlp", "cnn6")]
        target = build("cnn6", (1, 28, 28)).eval()
    team = one_team(TeamPolicy.RAND_KAPPA)
    x = torch.rand(2, 1, 28, 28, generator=make_generator(0), requires_grad=True)
    for defense in (
        CrossLayerEnsemble(dens, target, ver, team, mode),
        DenoisingEnsemble(dens, target),
        VerificationEnsemble(target, ver, team),
    ):
        out = defense.surrogate(x, make_generator(1))
        assert out.shape == (2, 10) and torch.isfinite(out).all() and (out <= 0).all()  # mean of log-probabilities
        (grad,) = torch.autograd.grad(out[:, 3].sum(), x)
        assert grad.abs().sum() > 0 and torch.isfinite(grad).all()
