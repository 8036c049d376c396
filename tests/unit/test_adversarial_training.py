"""Adversarial training in ensdef's loops (``ensdef.training.adversarial``): the inner maximisation against
ART's PGD from one random start, TRADES' loss against a hand computation with scipy, the option's config and
cost, and a short training run that is more robust than the same run without it."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from art.attacks.evasion import ProjectedGradientDescent
from art.utils import random_sphere
from scipy.special import log_softmax, rel_entr, softmax

from ensdef.attacks.art_classifier import art_classifier
from ensdef.config import from_mapping, to_plain
from ensdef.data import Dataset
from ensdef.errors import ConfigError
from ensdef.models import build
from ensdef.presets import AdversarialConfig, AdvMethod, TrainConfig
from ensdef.rng import make_generator, seeded
from ensdef.training.adversarial import adversarial_loss, examples, pgd_linf, robust_accuracy, trades_loss
from ensdef.training.loops import train_classifier
from ensdef.training.rls import group_loss
from ensdef.types import GroupLossKind


@pytest.fixture
def numpy_global_rng() -> Iterator[None]:
    """ART draws its random starts from numpy's global RNG: seed it for the test, restore it afterwards."""
    state = np.random.get_state()
    yield
    np.random.set_state(state)


def _model(mnist5k: Dataset, seed: int = 0) -> torch.nn.Module:
    with seeded(seed):
        return build("lenet", mnist5k.shape).eval()


@pytest.mark.parametrize(("steps", "step_size"), [(7, 0.1), (1, 0.375)], ids=["pgd", "fgsm-rs"])
def test_pgd_matches_arts_projected_gradient_descent_from_the_same_start(
    mnist5k: Dataset, numpy_global_rng: None, steps: int, step_size: float
) -> None:
    model = _model(mnist5k)
    x, y = mnist5k.test.x[:32], mnist5k.test.y[:32]
    eps = 0.3
    art = ProjectedGradientDescent(
        art_classifier(model, mnist5k.shape, 10),
        eps=eps,
        eps_step=step_size,
        max_iter=steps,
        batch_size=32,
        num_random_init=1,
        verbose=False,
    )
    np.random.seed(3)
    theirs = torch.from_numpy(art.generate(x.numpy(), y=np.eye(10, dtype=np.float32)[y.numpy()]))
    np.random.seed(3)
    start = torch.from_numpy(random_sphere(32, x[0].numel(), eps, np.inf).reshape(x.shape).astype(np.float32))
    ours = pgd_linf(lambda z: F.cross_entropy(model(z), y), x, eps, step_size, steps, start)
    assert (theirs - x).abs().max() > 0.29  # the attack moved
    assert torch.allclose(ours, theirs, atol=1e-6), (ours - theirs).abs().max()
    assert (ours - x).abs().max() <= eps + 1e-6 and ours.min() >= 0 and ours.max() <= 1


def test_trades_loss_is_cross_entropy_plus_beta_kl_computed_by_hand() -> None:
    g = make_generator(0)
    zc, za = torch.randn(6, 10, generator=g), torch.randn(6, 10, generator=g)
    y = torch.tensor([0, 3, 9, 1, 1, 5])
    got = trades_loss(zc.log_softmax(1), za.log_softmax(1), y, 6.0, F.nll_loss)
    c, a = zc.double().numpy(), za.double().numpy()
    ce = -log_softmax(c, 1)[np.arange(6), y.numpy()].mean()
    kl = rel_entr(softmax(c, 1), softmax(a, 1)).sum(1).mean()
    assert got.item() == pytest.approx(ce + 6.0 * kl, rel=1e-5)


@pytest.mark.parametrize("method", list(AdvMethod))
def test_every_method_stays_in_the_ball_and_raises_the_loss(mnist5k: Dataset, method: AdvMethod) -> None:
    model = _model(mnist5k).train()
    x, y = mnist5k.test.x[:64], mnist5k.test.y[:64]
    cfg = AdversarialConfig(method=method, eps=0.2, steps=1 if method is AdvMethod.FGSM_RS else 5, step_size=0.25)

    def lp(z: torch.Tensor) -> torch.Tensor:
        return F.log_softmax(model(z), 1)

    adv = examples(model, lp, x, y, cfg, make_generator(1))
    assert model.training, "the attack restores the training mode"
    assert (adv - x).abs().max() <= 0.2 + 1e-6 and adv.min() >= 0 and adv.max() <= 1
    model.eval()
    with torch.no_grad():
        if method is AdvMethod.TRADES:
            clean = lp(x).exp()
            assert F.kl_div(lp(adv), clean, reduction="sum") > F.kl_div(lp(x + 0.0), clean, reduction="sum") + 1e-3
        else:
            assert F.nll_loss(lp(adv), y) > F.nll_loss(lp(x), y)
    model.train()
    loss = adversarial_loss(model, lp, x, y, cfg, make_generator(1))
    loss.backward()
    assert loss.item() > 0 and all(p.grad is not None for p in model.parameters() if p.requires_grad)


@pytest.mark.parametrize("ratio", [0.5, 0.3])
def test_a_ratio_replaces_only_the_first_share_of_the_batch(mnist5k: Dataset, ratio: float) -> None:
    """ART's ratio: ceil(ratio x B) rows become PGD examples of those rows alone (the same examples an attack
    on just them makes from the same draw), the rest stay clean, and the loss is over the whole batch."""
    model = _model(mnist5k)
    x, y = mnist5k.test.x[:20], mnist5k.test.y[:20]
    cfg = AdversarialConfig(eps=0.3, steps=3, step_size=0.1, ratio=ratio)
    seen: list[int] = []

    def lp(z: torch.Tensor) -> torch.Tensor:
        seen.append(len(z))
        return F.log_softmax(model(z), 1)

    loss = adversarial_loss(model, lp, x, y, cfg, make_generator(4))
    n = int(np.ceil(ratio * 20))
    assert set(seen[:-1]) == {n} and seen[-1] == 20, "the attack sees only the replaced rows"
    adv = examples(model, lp, x[:n], y[:n], cfg, make_generator(4))
    by_hand = F.cross_entropy(model(torch.cat([adv, x[n:]])), y)
    assert loss.item() == pytest.approx(by_hand.item(), rel=1e-5)
    assert loss.item() < adversarial_loss(model, lp, x, y, replace(cfg, ratio=1.0), make_generator(4)).item()


def test_a_ratio_under_training_noise_attacks_the_rows_with_their_own_draws(mnist5k: Dataset) -> None:
    """A noisy member's loop adds one noise draw per batch row; the attacked first rows keep theirs."""
    train, val = mnist5k.train.subset(range(96)), mnist5k.val.subset(range(32))
    adv = AdversarialConfig(eps=0.3, steps=2, step_size=0.15, ratio=0.5, val_steps=0)
    cfg = TrainConfig(epochs=1, batch_size=40, noise_sigma=0.3, adversarial=adv, seed=3)
    res = train_classifier(_model(mnist5k).train(), train, val, cfg)
    assert res.epochs_run == 1 and 0.0 <= res.metrics["val_accuracy"] <= 1.0


def test_rls_group_loss_under_attack_is_above_the_clean_group_loss(mnist5k: Dataset) -> None:
    with seeded(0):
        net = build("rls_vgg", mnist5k.shape, m=2).eval()
    x, y = mnist5k.test.x[:16], mnist5k.test.y[:16]
    cfg = AdversarialConfig(eps=0.3, steps=3, step_size=0.1)
    clean = group_loss(net, x, y, 3, GroupLossKind.CE_MEAN, make_generator(5))
    attacked = group_loss(net, x, y, 3, GroupLossKind.CE_MEAN, make_generator(5), cfg)
    assert attacked.item() > clean.item()


def test_the_option_parses_checks_and_keeps_old_manifests_as_planned() -> None:
    cfg = from_mapping(TrainConfig, {"adversarial": {"method": "trades", "eps": 0.3, "beta": 3.0}})
    assert cfg.adversarial == AdversarialConfig(method=AdvMethod.TRADES, beta=3.0)
    assert from_mapping(TrainConfig, to_plain(cfg)) == cfg
    old = {k: v for k, v in to_plain(TrainConfig()).items() if k != "adversarial"}  # stored before the option
    assert from_mapping(TrainConfig, old) == TrainConfig()
    with pytest.raises(ConfigError, match="fgsm-rs takes one step"):
        from_mapping(TrainConfig, {"adversarial": {"method": "fgsm-rs"}})
    with pytest.raises(ConfigError, match="eps and step_size"):
        AdversarialConfig(eps=0.0)
    for bad in ({"ratio": 0.0}, {"ratio": 1.5}, {"method": "trades", "ratio": 0.5}):
        with pytest.raises(ConfigError, match="ratio must be in"):
            from_mapping(AdversarialConfig, bad)
    with pytest.raises(ConfigError):
        from_mapping(TrainConfig, {"adversarial": {"method": "free"}})


def test_adversarial_training_is_more_robust_than_the_same_run_without_it(mnist5k: Dataset) -> None:
    """Two epochs of a LeNet on 700 images, with and without PGD training at L-inf 0.2: under PGD-10 on
    the validation split the adversarially trained one keeps far more images; the kept checkpoint is chosen
    by that robust accuracy, which training reports."""
    train = mnist5k.train.subset(range(0, 3500, 5))
    val = mnist5k.val.subset(range(200))
    adv = AdversarialConfig(eps=0.2, steps=3, step_size=0.08, val_steps=10)
    plain_cfg = TrainConfig(epochs=2, batch_size=64, lr=3e-3, seed=7)
    runs = {}
    for name, cfg in {"plain": plain_cfg, "adversarial": replace(plain_cfg, adversarial=adv)}.items():
        runs[name] = train_classifier(_model(mnist5k).train(), train, val, cfg)

    def robust(m: torch.nn.Module) -> float:
        return robust_accuracy(lambda z: F.log_softmax(m(z), 1), val.x, val.y, adv, make_generator(9))

    plain, adversarial = robust(runs["plain"].model), robust(runs["adversarial"].model)
    assert adversarial > plain + 0.3, (plain, adversarial)
    assert runs["adversarial"].metrics["val_accuracy"] == pytest.approx(
        robust_accuracy(
            lambda z: F.log_softmax(runs["adversarial"].model(z), 1), val.x, val.y, adv, make_generator(7 + 3)
        )
    )
