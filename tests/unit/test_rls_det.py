"""Random layer sampling and DeT: hand-worked votes and sampler, training, determinism."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from ensdef.data import Dataset
from ensdef.defenses.det import DeTDefense, two_level_vote
from ensdef.defenses.rls import RLSEnsemble, sampled_probs
from ensdef.models import build
from ensdef.models.rls import RLSNet
from ensdef.presets import TrainConfig
from ensdef.rng import make_generator, seeded
from ensdef.training.det import cross_train, select_list
from ensdef.training.rls import GroupLoss, group_loss, train_rls


def test_two_level_vote_hand_worked() -> None:
    # reformer 1 samples vote 1, 1, 2 -> 1; reformer 2: 2, 2, 0 -> 2; reformer 3: 1, 0, 1 -> 1; final 1
    labels = torch.tensor([[[1], [1], [2]], [[2], [2], [0]], [[1], [0], [1]]])
    final, per = two_level_vote(labels, 3, make_generator(0))
    assert per[:, 0].tolist() == [1, 2, 1] and final.tolist() == [1]
    tie = torch.tensor([[[0], [1]], [[0], [1]]])  # every level tied between 0 and 1
    outs = {two_level_vote(tie, 2, make_generator(s))[0].item() for s in range(20)}
    assert outs == {0, 1}, "ties are broken by the generator, both ways"
    assert two_level_vote(tie, 2, make_generator(3))[0].item() == two_level_vote(tie, 2, make_generator(3))[0].item()


def _net(m: int = 2, mu: torch.Tensor | None = None) -> RLSNet:
    subs = []
    for i in range(m):
        with seeded(i):
            subs.append(build("resnet8", (1, 28, 28)))
    return RLSNet(subs, mu).eval()


def test_layer_sampler_hand_worked_and_export() -> None:
    net = _net()
    L = net.num_units
    mu = torch.tensor([[1.0, 0.0] if l % 2 == 0 else [0.0, 1.0] for l in range(L)])
    fixed = RLSNet(list(net.submodels), mu)
    paths = fixed.sample_paths(5, make_generator(0))
    assert paths.tolist() == [[l % 2 for l in range(L)]] * 5  # one-hot mu: unit l from sub-model l mod 2
    x = torch.rand(2, 1, 28, 28, generator=make_generator(1))
    h = x
    for l in range(L):
        h = net.submodels[l % 2].units[l](h)
    assert torch.allclose(fixed.forward_path(x, paths[0]), h)
    assert torch.allclose(fixed.export(paths[0])(x), h)
    freq = net.sample_paths(400, make_generator(2)).float().mean().item()
    assert abs(freq - 0.5) < 0.03  # uniform mu: each sub-model half of the time
    assert not torch.equal(net.sample_paths(3, make_generator(2)), net.sample_paths(3, make_generator(3)))


def test_shared_prefix_paths_equal_one_path_at_a_time_with_their_gradients() -> None:
    net = _net().eval()
    paths = net.sample_paths(40, make_generator(4))  # 40 draws over 2^L paths: shared prefixes and repeats
    x = torch.rand(3, 1, 28, 28, generator=make_generator(5))
    xa, xb = x.clone().requires_grad_(), x.clone().requires_grad_()
    shared = net.forward_paths(xa, paths)
    one = torch.stack([net.forward_path(xb, p) for p in paths])
    assert shared.shape == (40, 3, 10) and torch.equal(shared, one)  # the same operations on the same inputs
    w = torch.rand(40, 3, 10, generator=make_generator(6))
    (shared * w).sum().backward()
    (one * w).sum().backward()
    torch.testing.assert_close(xa.grad, xb.grad)


def test_group_loss_is_cross_entropy_of_the_mean_probability() -> None:
    net = _net()
    x, y = torch.rand(4, 1, 28, 28, generator=make_generator(0)), torch.tensor([0, 1, 2, 3])
    loss = group_loss(net, x, y, 3, GroupLoss.CE_MEAN, make_generator(5))
    paths = net.sample_paths(3, make_generator(5))
    mean = torch.stack([net.forward_path(x, p).softmax(1) for p in paths]).mean(0)
    assert torch.allclose(loss, F.nll_loss(mean.log(), y))
    mse = group_loss(net, x, y, 3, GroupLoss.MSE, make_generator(5))
    assert torch.allclose(mse, ((mean - F.one_hot(y, 10)) ** 2).sum(1).mean())


def test_rls_training_decisions_and_surrogate(mnist5k: Dataset) -> None:
    net = _net().train()
    cfg = TrainConfig(epochs=3, batch_size=32, lr=3e-3, seed=1)
    res = train_rls(
        net,
        mnist5k.train.subset(range(0, 3500, 2)),
        mnist5k.val.subset(range(0, 500, 5)),
        cfg,
        2,
        GroupLoss.CE_MEAN,
        n_eval=4,
    )
    ens = RLSEnsemble(res.model, n=4)
    test = mnist5k.test.subset(range(0, 1000, 20))
    x = test.x
    first = ens.decide(x, make_generator(9))
    assert first == ens.decide(x, make_generator(9))
    assert first[0].diagnostics["paths"] != ens.decide(x, make_generator(10))[0].diagnostics["paths"]
    assert np.mean([d.label == int(t) for d, t in zip(first, test.y, strict=True)]) > 0.5
    assert 0.0 <= ens.diversity(mnist5k.test.subset(range(100))) <= 1.0
    xg = x[:2].clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(ens.surrogate(xg, make_generator(0))[:, 0].sum(), xg)
    assert grad.abs().sum() > 0
    assert sampled_probs(ens.net, x[:3], ens.net.sample_paths(2, make_generator(0))).shape == (2, 3, 10)


class Blur(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.avg_pool2d(x, 3, 1, 1)


def test_det_decisions_replay_and_change_with_seed(mnist5k: Dataset) -> None:
    with seeded(0):
        clf = build("lenet", (1, 28, 28)).eval()
    det = DeTDefense(clf, Blur(), [Blur(), nn.Identity()], sigma=0.3, eps=0.3, samples=5)
    x = mnist5k.test.x[:8]
    assert det.decide(x, make_generator(1)) == det.decide(x, make_generator(1))
    a, b = det.hypercube(x, make_generator(1), 5), det.hypercube(x, make_generator(2), 5)
    assert a.shape == (5, 8, 1, 28, 28) and not torch.equal(a, b) and a.min() >= 0 and a.max() <= 1
    xg = x[:2].clone().requires_grad_(True)
    for g in (None, make_generator(0)):
        (grad,) = torch.autograd.grad(det.surrogate(xg, g)[:, 1].sum(), xg)
        assert grad.abs().sum() > 0


def test_cross_training_lowers_the_chained_reconstruction_error(mnist5k: Dataset) -> None:
    with seeded(0):
        pair = [build("reformer_conv", (1, 28, 28)).eval(), build("reformer_skip", (1, 28, 28)).eval()]
    train = mnist5k.train.subset(range(600))
    x = mnist5k.val.x[:100]

    def chained(a: nn.Module, b: nn.Module) -> float:
        with torch.no_grad():
            return float(F.mse_loss(b(a(x)), x))

    before = chained(pair[0], pair[1])
    after = cross_train(pair, train, TrainConfig(epochs=2, batch_size=32, lr=3e-3, seed=0), noise=0.1)
    assert chained(after[0], after[1]) < before
    # the originals are left as they were (cross-training works on copies)
    assert all(
        torch.equal(p, q)
        for p, q in zip(pair[0].state_dict().values(), build_same(pair[0]).state_dict().values(), strict=True)
    )


def build_same(m: nn.Module) -> nn.Module:
    with seeded(0):
        return build("reformer_conv", (1, 28, 28))


def test_reformer_list_selection_hand_worked() -> None:
    transfer = np.array([[1.0, 0.9, 0.2, 0.5], [0.8, 1.0, 0.3, 0.4], [0.1, 0.2, 1.0, 0.6], [0.5, 0.3, 0.5, 1.0]])
    # pairs' mean off-diagonal transferability: (0,2) 0.15, (1,2) 0.25, (0,3) 0.5 ...; reformer 0 too inaccurate
    assert select_list([0.99, 0.98, 0.98, 0.97], transfer, 2, 0.9) == [0, 2]
    assert select_list([0.80, 0.98, 0.98, 0.97], transfer, 2, 0.9) == [1, 2]


def test_det_surrogate_draw_is_the_mean_over_its_samples_and_one_sample_estimates_the_same_expectation(
    mnist5k: Dataset,
) -> None:
    with seeded(0):
        clf = build("lenet", (1, 28, 28)).eval()
    reformers = [Blur(), nn.Identity()]
    x = mnist5k.test.x[:4]
    three = DeTDefense(clf, Blur(), reformers, sigma=0.3, eps=0.3, samples=5, surrogate_samples=3)
    cube = three.hypercube(x, make_generator(7), 3)  # the draw the surrogate takes with the same generator
    by_hand = torch.stack([F.log_softmax(clf(r(c)), 1) for r in reformers for c in cube]).mean(0)
    with torch.no_grad():
        assert torch.allclose(three.surrogate(x, make_generator(7)), by_hand, atol=1e-5)
        # S draws of one sample against S/3 draws of three: both estimate E over the noise of the log-probs
        one = DeTDefense(clf, Blur(), reformers, sigma=0.3, eps=0.3, samples=5)
        a = one.surrogate_many(x, [make_generator(i) for i in range(300)])
        b = three.surrogate_many(x, [make_generator(1000 + i) for i in range(100)])
    se = (a.var(0) / 300 + b.var(0) / 100).sqrt()
    assert ((a.mean(0) - b.mean(0)).abs() <= 4 * se + 1e-4).all()
    with pytest.raises(ValueError, match="surrogate_samples"):
        DeTDefense(clf, Blur(), reformers, surrogate_samples=0)
