from __future__ import annotations

import pytest
import torch

from ensdef.data import Dataset
from ensdef.errors import ConfigError
from ensdef.models import build
from ensdef.models.inference import accuracy, reconstruction_mse
from ensdef.noise import NoiseKind, NoiseSpec, corrupt
from ensdef.presets import TrainConfig
from ensdef.rng import make_generator, seeded
from ensdef.training.loops import augment, fit, noisy_rows, train_autoencoder, train_classifier
from ensdef.types import Checkpoint


@pytest.mark.parametrize("kind", list(NoiseKind))
def test_noise_stays_in_range_and_is_replayable(kind: NoiseKind) -> None:
    x = torch.rand(8, 1, 28, 28, generator=make_generator(0))
    spec = NoiseSpec(kind, 0.2)
    a, b = corrupt(x, spec, make_generator(5)), corrupt(x, spec, make_generator(5))
    assert torch.equal(a, b) and a.min() >= 0 and a.max() <= 1
    assert not torch.equal(a, corrupt(x, spec, make_generator(6)))


def test_salt_pepper_and_masking_change_the_requested_fraction() -> None:
    x = torch.full((16, 1, 28, 28), 0.5)
    sp = corrupt(x, NoiseSpec(NoiseKind.SALT_PEPPER, 0.1), make_generator(0))
    assert abs((sp != 0.5).float().mean().item() - 0.1) < 0.01
    assert abs((sp == 1).float().mean().item() - 0.05) < 0.01
    mk = corrupt(x, NoiseSpec(NoiseKind.MASKING, 0.3), make_generator(0))
    assert abs((mk == 0).float().mean().item() - 0.3) < 0.01
    g = corrupt(torch.full((64, 1, 28, 28), 0.5), NoiseSpec(NoiseKind.GAUSSIAN, 0.1), make_generator(0))
    assert abs((g - 0.5).std().item() - 0.1) < 0.005


def test_augment_identity_and_shift() -> None:
    x = torch.zeros(2, 1, 28, 28)
    x[:, :, 14, 14] = 1
    assert torch.equal(augment(x, 0, 0.0, make_generator(0)), x)
    y = augment(x, 3, 0.0, make_generator(0))
    assert y.shape == x.shape and abs(y.sum().item() - 2.0) < 0.2  # mass moved, not lost


def test_clean_fraction_leaves_that_share_of_training_images_clean() -> None:
    x = torch.zeros(4000, 1, 28, 28)
    mask = noisy_rows(x, 0.25, make_generator(0))
    assert isinstance(mask, torch.Tensor) and mask.shape == (4000, 1, 1, 1)
    assert set(mask.unique().tolist()) == {0.0, 1.0} and abs(1 - mask.mean().item() - 0.25) < 0.03
    assert noisy_rows(x, 0.0, make_generator(0)) == 1.0  # no draw: runs without it replay exactly
    with pytest.raises(ConfigError, match="clean_fraction"):
        TrainConfig(clean_fraction=1.0)


def test_classifier_training_learns_and_is_deterministic(mnist5k: Dataset) -> None:
    train = mnist5k.train.subset(range(0, 3500, 3))
    cfg = TrainConfig(epochs=2, batch_size=64, lr=3e-3, seed=7, temperature=10.0)
    runs = []
    for _ in range(2):
        with seeded(0):
            model = build("lenet", mnist5k.shape)
        runs.append(train_classifier(model, train, mnist5k.val, cfg))
    assert accuracy(runs[0].model, mnist5k.test) > 0.6  # chance is 0.1
    for p, q in zip(runs[0].model.parameters(), runs[1].model.parameters(), strict=True):
        assert torch.equal(p, q), "same seeds must give the same weights"


def test_denoiser_training_reduces_reconstruction_error(mnist5k: Dataset) -> None:
    noise = NoiseSpec(NoiseKind.GAUSSIAN, 0.3)
    with seeded(0):
        model = build("reformer_conv", mnist5k.shape)
    before = reconstruction_mse(model, mnist5k.val, noise)
    res = train_autoencoder(model, mnist5k.train, mnist5k.val, TrainConfig(epochs=2, batch_size=32, lr=3e-3), noise)
    assert res.metrics["val_mse"] < 0.5 * before


def test_training_leaves_the_global_rng_alone(mnist5k: Dataset) -> None:
    torch.manual_seed(1234)
    expected = torch.rand(3)
    torch.manual_seed(1234)
    with seeded(0):
        model = build("mlp", mnist5k.shape)
    train_classifier(model, mnist5k.train.subset(range(200)), mnist5k.val, TrainConfig(epochs=1))
    assert torch.equal(torch.rand(3), expected)


@pytest.mark.parametrize("checkpoint", list(Checkpoint))
def test_checkpoint_keeps_the_first_best_or_the_last_epoch(checkpoint: Checkpoint, mnist5k: Dataset) -> None:
    """A scripted validation score (best at epochs 2 and 3, of 4): ``best`` keeps epoch 2's weights (the first
    to reach the best), ``last`` epoch 4's; the reported score is the kept state's."""
    scores, states = iter([0.5, 0.9, 0.9, 0.7]), []

    def val_score(m: torch.nn.Module) -> float:
        states.append({k: v.clone() for k, v in m.state_dict().items()})
        return next(scores)

    with seeded(0):
        model = build("mlp", mnist5k.shape)
    cfg = TrainConfig(epochs=4, batch_size=64, patience=4, checkpoint=checkpoint)

    def loss(m: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        return torch.nn.functional.cross_entropy(m(x), y)

    res = fit(model, mnist5k.train.subset(range(256)), cfg, loss, val_score)
    kept, score = (states[1], 0.9) if checkpoint is Checkpoint.BEST else (states[3], 0.7)
    assert res.metrics["val_score"] == score and res.epochs_run == 4
    assert all(torch.equal(v, kept[k]) for k, v in res.model.state_dict().items())
    assert not all(torch.equal(v, states[3 if checkpoint is Checkpoint.BEST else 1][k]) for k, v in kept.items())
