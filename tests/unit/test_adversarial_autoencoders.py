"""Adversarial training of denoising autoencoders (``train.adversarial`` on denoisers and reformers, and
``det.cross_train.adversarial`` on DeT's reformer pairs): examples that ascend the reconstruction error, the
batch loss against a hand computation, the config checks, short runs whose denoiser and reformer chain are
harder to steer than the same runs' without it, and when a stored cross-trained pair is stale."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from ensdef.config import from_mapping, to_plain
from ensdef.data import Dataset
from ensdef.errors import ConfigError
from ensdef.models import build
from ensdef.models.inference import reconstruction_mse
from ensdef.noise import NoiseKind, NoiseSpec, corrupt
from ensdef.presets import AdversarialConfig, DenoiserPool, DeTConfig, ReformerPool, TrainConfig
from ensdef.rng import make_generator, seeded
from ensdef.store import ArtifactStore, Manifest
from ensdef.training.adversarial import (
    reconstruction_examples,
    reconstruction_loss,
    uniform_start,
    worst_reconstruction_mse,
)
from ensdef.training.det import cross_train, cross_trained_as_planned
from ensdef.training.loops import TrainResult, train_autoencoder
from ensdef.types import Role

NOISE = NoiseSpec(NoiseKind.GAUSSIAN, 0.3)
ADV = AdversarialConfig(eps=0.3, steps=3, step_size=0.15, ratio=0.5, val_steps=5)


def _autoencoder(mnist5k: Dataset) -> torch.nn.Module:
    with seeded(0):
        return build("dae_mnist", mnist5k.shape)


@pytest.fixture(scope="module")
def runs(mnist5k: Dataset) -> dict[str, TrainResult]:
    """MODEF's denoiser trained four epochs on mnist5k under Gaussian noise, without and with PGD on half
    of every batch (about 15 s together)."""
    val = mnist5k.val.subset(range(200))
    plain = TrainConfig(epochs=4, batch_size=32, lr=0.01, seed=5)
    return {
        name: train_autoencoder(_autoencoder(mnist5k), mnist5k.train, val, cfg, NOISE)
        for name, cfg in {"plain": plain, "adversarial": replace(plain, adversarial=ADV)}.items()
    }


def test_examples_stay_in_the_ball_and_beat_random_noise_of_the_same_budget(
    mnist5k: Dataset, runs: dict[str, TrainResult]
) -> None:
    model = runs["plain"].model.train()
    x = mnist5k.test.x[:64]
    adv = reconstruction_examples(model, x, 0.3, 0.1, 5, make_generator(1))
    assert model.training, "the attack restores the training mode"
    assert (adv - x).abs().max() <= 0.3 + 1e-6 and adv.min() >= 0 and adv.max() <= 1
    model.eval()
    with torch.no_grad():
        rand = (x + uniform_start(x, 0.3, make_generator(1))).clamp(0, 1)
        assert F.mse_loss(model(adv), x) > 1.5 * F.mse_loss(model(rand), x)


@pytest.mark.parametrize("ratio", [1.0, 0.5])
def test_the_loss_is_the_mse_of_examples_on_the_first_rows_and_noise_on_the_rest(
    mnist5k: Dataset, ratio: float
) -> None:
    model = _autoencoder(mnist5k).eval()
    x = mnist5k.test.x[:20]
    noisy = corrupt(x, NOISE, make_generator(2))
    cfg = AdversarialConfig(eps=0.3, steps=3, step_size=0.1, ratio=ratio)
    loss = reconstruction_loss(model, x, noisy, cfg, make_generator(4))
    n = 20 if ratio == 1.0 else 10
    adv = reconstruction_examples(model, x[:n], 0.3, 0.1, 3, make_generator(4))
    inputs = torch.cat([adv, noisy[n:]])
    by_hand = ((model(inputs) - x) ** 2).sum() / x.numel()
    assert loss.item() == pytest.approx(by_hand.item(), rel=1e-5)
    assert loss.item() > F.mse_loss(model(noisy), x).item()


def test_trades_is_refused_for_autoencoders() -> None:
    adv = {"adversarial": {"method": "trades"}}
    for pool, extra in ((DenoiserPool, {"members": []}), (ReformerPool, {"architectures": []})):
        with pytest.raises(ConfigError, match="autoencoders take pgd or fgsm-rs"):
            from_mapping(pool, {**extra, "train": adv})
    assert from_mapping(DenoiserPool, {"members": [], "train": {"adversarial": {"method": "pgd"}}}).train.adversarial


def test_an_adversarially_trained_denoiser_is_harder_to_steer(mnist5k: Dataset, runs: dict[str, TrainResult]) -> None:
    """Under 10-step PGD on the reconstruction error (another draw than training's) the adversarially
    trained denoiser's worst-case MSE is far below the plain one's (0.055 against 0.100 when written); the
    reported validation objective is the ratio mix of noisy and worst-case MSE, above the noisy MSE alone."""
    held_out = mnist5k.val.x[200:300]
    worst = {name: worst_reconstruction_mse(r.model, held_out, ADV.eps, seed=9) for name, r in runs.items()}
    assert worst["adversarial"] < 0.75 * worst["plain"], worst
    noisy = reconstruction_mse(runs["adversarial"].model, mnist5k.val.subset(range(200)), NOISE, 5)
    assert runs["adversarial"].metrics["val_mse"] > noisy


def test_adversarial_cross_training_makes_the_chain_harder_to_steer(mnist5k: Dataset) -> None:
    """DeT's cross-training with ``det.cross_train.adversarial``: the chain R_b(R_a(x')) keeps a lower
    reconstruction error under examples that ascend it than the same run on noise alone."""
    with seeded(0):
        pair = [build("reformer_conv", (1, 28, 28)).eval(), build("reformer_skip", (1, 28, 28)).eval()]
    train, x = mnist5k.train.subset(range(600)), mnist5k.val.x[:100]
    cfg = TrainConfig(epochs=4, batch_size=32, lr=3e-3, seed=0)
    runs = {
        name: cross_train(pair, train, c, noise=0.1)
        for name, c in (("noise", cfg), ("adversarial", replace(cfg, adversarial=ADV)))
    }
    worst = {k: worst_reconstruction_mse(torch.nn.Sequential(*v), x, 0.3, seed=1) for k, v in runs.items()}
    assert worst["adversarial"] < 0.8 * worst["noise"], worst


def test_trades_is_refused_for_det_cross_training() -> None:
    with pytest.raises(ConfigError, match=r"det\.cross_train\.adversarial: autoencoders take pgd or fgsm-rs"):
        from_mapping(DeTConfig, {"cross_train": {"adversarial": {"method": "trades", "eps": 0.3}}})


def test_a_cross_trained_reformer_is_stale_when_its_base_or_the_plan_changes(tmp_path: Path) -> None:
    store, cross = ArtifactStore(tmp_path), TrainConfig(epochs=1, batch_size=32)

    def save(name: str, seed: int, **extra: object) -> Manifest:
        with seeded(seed):
            model = build("reformer_conv", (1, 28, 28)).eval()
        m = Manifest(name, Role.REFORMER, "reformer_conv", "mnist5k", (1, 28, 28), 10, "")
        return store.save_model(model, replace(m, train_config={"cross_train": to_plain(cross)}, extra=dict(extra)))

    base = save("reformer-a", 0)
    save("reformer-a~b", 1, base="reformer-a", base_sha256=base.sha256)
    assert cross_trained_as_planned(store, "reformer-a~b", cross)
    assert not cross_trained_as_planned(store, "reformer-a~b", replace(cross, adversarial=ADV))
    save("reformer-a", 2)  # the base retrained
    assert not cross_trained_as_planned(store, "reformer-a~b", cross)
    assert not cross_trained_as_planned(store, "reformer-missing", cross)
