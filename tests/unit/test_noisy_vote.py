"""Noisy-logit ensemble, rank verification and certification against independent computations."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.stats import binomtest, norm
from torch import nn

from ensdef.defenses.noisy_vote import NoisyVoteEnsemble, rank_verify, vote_counts
from ensdef.evaluation.certify import certified_accuracy, certify, clopper_pearson_lower
from ensdef.models import build
from ensdef.rng import make_generator, seeded
from ensdef.studies.noisy_report import paired_comparison
from ensdef.types import ABSTAIN


def test_rank_verification_hand_worked() -> None:
    counts = torch.tensor([[9, 1, 0], [8, 2, 0], [5, 0, 5], [6, 1, 3]])
    rv = rank_verify(counts, alpha=0.05)
    ref = [binomtest(9, 10).pvalue, binomtest(8, 10).pvalue, binomtest(5, 10).pvalue, binomtest(6, 9).pvalue]
    assert np.allclose(rv.p_value.numpy(), ref)
    # 9-1: p = 0.021 < .05 answers; 8-2: p = 0.109 abstains; 5-5 abstains; 6 vs 3: p = 0.508 abstains
    assert rv.label.tolist() == [0, ABSTAIN, ABSTAIN, ABSTAIN]
    assert rank_verify(counts, alpha=None).label.tolist() == [0, 0, 0, 0]
    assert vote_counts(torch.tensor([[0, 2], [0, 1], [1, 1]]), 3).tolist() == [[2, 1, 0], [0, 2, 1]]


class Recorder(nn.Module):
    """Remembers the inputs it saw; answers class 0."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[torch.Tensor] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.seen.append(x.clone())
        return torch.nn.functional.one_hot(torch.zeros(len(x), dtype=torch.long), 10).float()


def test_every_member_sees_its_own_noise_and_no_clean_logits_leave() -> None:
    members = [Recorder() for _ in range(4)]
    ens = NoisyVoteEnsemble(members, sigma=0.5, alpha_rv=0.05)
    x = torch.rand(2, 1, 8, 8, generator=make_generator(0))
    d = ens.decide(x, make_generator(1))
    seen = [m.seen[0] for m in members]
    assert all(not torch.allclose(s, x) for s in seen)
    assert all(not torch.allclose(a, b) for i, a in enumerate(seen) for b in seen[i + 1 :])
    assert abs(float(torch.cat([s - x for s in seen]).std()) - 0.5) < 0.1
    assert set(d[0].diagnostics) == {"votes", "p_value"} and d[0].diagnostics["votes"][0] == 4


def test_same_seed_same_decision_different_seed_different_noise() -> None:
    with seeded(0):
        members = [build("lenet", (1, 28, 28)).eval() for _ in range(5)]
    ens = NoisyVoteEnsemble(members, sigma=0.5, alpha_rv=0.05)
    x = torch.rand(16, 1, 28, 28, generator=make_generator(0))
    assert ens.decide(x, make_generator(3)) == ens.decide(x, make_generator(3))
    a = ens.member_labels(x, make_generator(3))
    assert any(not torch.equal(a, ens.member_labels(x, make_generator(s))) for s in range(4, 8))
    x.requires_grad_(True)
    (grad,) = torch.autograd.grad(ens.surrogate(x, make_generator(0))[:, 1].sum(), x)
    assert grad.abs().sum() > 0


class Linear2(nn.Module):
    """Two-class linear rule on flattened input: class 1 iff w.x + b > 0."""

    def __init__(self, w: torch.Tensor, b: float) -> None:
        super().__init__()
        self.w, self.b = w, b

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return ((x.flatten(1) @ self.w + self.b) > 0).long()


@pytest.mark.parametrize("offset", [0.05, 0.2, 0.4, 0.8, -0.3])
def test_certificate_of_a_linear_classifier_respects_the_closed_form(offset: float) -> None:
    g = make_generator(11)
    w = torch.randn(16, generator=g)
    x = torch.rand(1, 4, 4, generator=g)
    b = offset * float(w.norm()) - float(x.flatten() @ w)  # signed distance of x to the plane = offset
    sigma, n, alpha = 0.5, 2000, 0.001
    cert = certify(
        Linear2(w, b), x, sigma, n0=100, n=n, alpha=alpha, num_classes=2, g=make_generator(5), batch_size=256
    )
    p_true = norm.cdf(abs(offset) / sigma)  # P(f(x + eps) = class of x), closed form
    exact_radius = abs(offset)  # sigma * Phi^-1(p_true)
    assert cert.radius <= exact_radius + 1e-12, "a certificate never exceeds the true smoothed radius"
    ci = binomtest(cert.n_a, n).proportion_ci(confidence_level=1 - 2 * alpha, method="exact")
    assert abs(cert.p_a_lower - ci.low) < 1e-9  # independent Clopper-Pearson
    if p_true > 0.6:
        assert cert.label == (1 if offset > 0 else 0) and cert.radius > 0.5 * exact_radius
    assert abs(cert.n_a / n - p_true) < 0.05


def test_abstains_on_a_coin_flip_and_certified_accuracy_table() -> None:
    coin = Linear2(torch.ones(16), 0.0)
    x = torch.zeros(1, 4, 4)  # exactly on the plane: p_A = 1/2
    cert = certify(coin, x, 0.5, 100, 1000, 0.001, 2, make_generator(0))
    assert cert.label == ABSTAIN and cert.radius == 0.0
    assert clopper_pearson_lower(0, 10, 0.05) == 0.0
    certs = [cert, certify(Linear2(torch.ones(16), 10.0), x, 0.5, 100, 1000, 0.001, 2, make_generator(1))]
    table = certified_accuracy(certs, np.array([1, 1]), [0.0, 0.5, 100.0])
    assert table == {0.0: 0.5, 0.5: 0.5, 100.0: 0.0}


def test_paired_comparison_is_the_exact_mcnemar_test() -> None:
    a = np.array([True, True, False, False, False, False, False, True])
    b = np.array([True, False, True, True, True, True, True, True])
    # discordant pairs: a alone right once, b alone right five times; exact two-sided p = 2 * P(X <= 1), X ~ B(6, 1/2)
    cmp = paired_comparison(a, b)
    assert (cmp["only_first_correct"], cmp["only_second_correct"]) == (1, 5)
    assert cmp["mcnemar_p"] == pytest.approx(2 * (1 + 6) / 64)
    assert paired_comparison(a, a)["mcnemar_p"] == 1.0
