"""Training loops: classifiers (cross-entropy on logits / T) and denoising autoencoders.

Both keep the weights with the best validation score (early stopping) or, with ``checkpoint: last``, the
weights after the last epoch; both use only explicit generators and take the device from the config
(``auto``: CUDA when present).
"""

from __future__ import annotations

import copy
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from ensdef.data import Split
from ensdef.models.inference import accuracy, reconstruction_mse, resolve_device
from ensdef.models.layers import model_device
from ensdef.noise import NoiseSpec, corrupt
from ensdef.presets import TrainConfig
from ensdef.rng import make_generator, rand_like, randn_like, seeded
from ensdef.training.adversarial import (
    adversarial_loss,
    evaluating,
    reconstruction_loss,
    robust_accuracy,
    worst_reconstruction_mse,
)
from ensdef.types import Checkpoint, Optim

log = logging.getLogger(__name__)


EpochHook = Callable[[int, float], None]
"""Called after every epoch with (epoch index, validation score, higher is better); Tune reports through it."""


@dataclass(frozen=True)
class TrainResult:
    model: nn.Module  # in eval mode, on CPU
    metrics: dict[str, float]
    epochs_run: int
    seconds: float


def augment(x: torch.Tensor, shift: int, rotate: float, g: torch.Generator) -> torch.Tensor:
    """Random affine jitter of ``x`` ``[B, C, H, W]``: translation up to ``shift`` pixels and rotation up to
    ``rotate`` degrees per image, drawn from ``g``; zero fill outside the image. Identity when both are 0."""
    if shift <= 0 and rotate <= 0:
        return x
    b, _, h, w = x.shape
    u = torch.rand(b, 3, generator=g).to(x.device) * 2 - 1
    ang = u[:, 0] * rotate * torch.pi / 180
    tx, ty = u[:, 1] * shift * 2 / w, u[:, 2] * shift * 2 / h
    cos, sin = torch.cos(ang), torch.sin(ang)
    theta = torch.stack([torch.stack([cos, -sin, tx], 1), torch.stack([sin, cos, ty], 1)], 1)
    grid = F.affine_grid(theta.to(x.dtype), list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def noisy_rows(x: torch.Tensor, clean_fraction: float, g: torch.Generator) -> torch.Tensor | float:
    """Mask ``[B, 1, 1, 1]``: 0 for the images of ``x`` ``[B, C, H, W]`` that stay clean (each with probability
    ``clean_fraction``), 1 for the rest; 1.0 when none stays clean (no draw: earlier runs reproduce)."""
    if clean_fraction <= 0:
        return 1.0
    return (rand_like(x[:, :1, :1, :1], g) >= clean_fraction).to(x.dtype)


def optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    params = [p for p in model.parameters() if p.requires_grad]
    if cfg.optimizer is Optim.SGD:
        return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)


def fit(
    model: nn.Module,
    train: Split,
    cfg: TrainConfig,
    batch_loss: Callable[[nn.Module, torch.Tensor, torch.Tensor, torch.Generator], torch.Tensor],
    val_score: Callable[[nn.Module], float],
    desc: str = "train",
    on_epoch: EpochHook | None = None,
) -> TrainResult:
    """Generic loop: minimise ``batch_loss`` over ``train``; keep the state with the best ``val_score`` (the
    first epoch to reach it), or with ``cfg.checkpoint`` LAST the state after the last epoch run;
    ``on_epoch(epoch, score)`` after every epoch. The result's ``val_score`` is that of the kept state."""
    device = resolve_device(cfg.device)
    with seeded(cfg.seed, device):  # dropout masks; the caller's RNG state is restored afterwards
        return _loop(model, train, cfg, batch_loss, val_score, desc, device, on_epoch)


def _loop(model, train, cfg, batch_loss, val_score, desc, device, on_epoch):  # type: ignore[no-untyped-def]
    g = make_generator(cfg.seed)
    model.to(device).train()
    opt = optimizer(model, cfg)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, max(cfg.epochs, 1)) if cfg.cosine else None
    best, best_state, stale, epoch, t0 = -float("inf"), None, 0, 0, time.perf_counter()
    score = best
    bar = tqdm(range(cfg.epochs), desc=desc, leave=False, disable=None)
    for epoch in bar:
        model.train()
        order = torch.randperm(len(train), generator=g)
        for i in range(0, len(order), cfg.batch_size):
            idx = order[i : i + cfg.batch_size]
            loss = batch_loss(model, train.x[idx].to(device), train.y[idx].to(device), g)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        if sched is not None:
            sched.step()
        score = val_score(model)
        bar.set_postfix(loss=f"{loss.item():.4f}", val=f"{score:.4f}")
        if on_epoch is not None:
            on_epoch(epoch, score)
        if score > best:
            keep = cfg.checkpoint is Checkpoint.BEST  # LAST needs no copy of every improving epoch
            best, best_state, stale = score, copy.deepcopy(model.state_dict()) if keep else None, 0
        else:
            stale += 1
            if stale >= cfg.patience:
                break
    if cfg.checkpoint is Checkpoint.LAST:
        best = score
    elif best_state is not None:
        model.load_state_dict(best_state)
    model.eval().cpu()
    secs = time.perf_counter() - t0
    log.info("%s: %d epochs, kept val %.4f (%s), %.1fs", desc, epoch + 1, best, cfg.checkpoint.value, secs)
    return TrainResult(model, {"val_score": best}, epoch + 1, secs)


def train_classifier(
    model: nn.Module,
    train: Split,
    val: Split,
    cfg: TrainConfig,
    desc: str = "classifier",
    on_epoch: EpochHook | None = None,
) -> TrainResult:
    """Cross-entropy on ``logits / cfg.temperature`` (on adversarial examples, or TRADES', with
    ``cfg.adversarial``: ``ensdef.training.adversarial``); early stopping on validation accuracy, on validation
    images with one fixed draw of the training noise when ``cfg.noise_sigma`` > 0, under PGD with
    ``cfg.adversarial.val_steps`` > 0."""
    init = getattr(model, "init_from_data", None)
    if callable(init):
        init(train.x, make_generator(cfg.seed + 1))

    def loss(m: nn.Module, xb: torch.Tensor, yb: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        xb = augment(xb, cfg.shift, cfg.rotate, g)
        noise: torch.Tensor | float = 0.0
        if cfg.noise_sigma > 0:  # the member answers noisy queries: the attacker's examples get the same draw
            noise = cfg.noise_sigma * randn_like(xb, g) * noisy_rows(xb, cfg.clean_fraction, g)

        def log_probs(z: torch.Tensor) -> torch.Tensor:  # z: the batch or its first rows (train.adversarial.ratio)
            return F.log_softmax(m(z + (noise if isinstance(noise, float) else noise[: len(z)])) / cfg.temperature, 1)

        if cfg.adversarial is None:
            return F.nll_loss(log_probs(xb), yb)
        return adversarial_loss(m, log_probs, xb, yb, cfg.adversarial, g)

    res = fit(model, train, cfg, loss, _val_score(val, cfg), desc, on_epoch)
    return TrainResult(res.model, {"val_accuracy": res.metrics["val_score"]}, res.epochs_run, res.seconds)


def _val_score(val: Split, cfg: TrainConfig) -> Callable[[nn.Module], float]:
    """Validation accuracy of a classifier in eval mode: with one fixed draw of the training noise when
    ``cfg.noise_sigma`` > 0 (members answer noisy queries: keep the checkpoint best under that noise), and
    under ``cfg.adversarial``'s validation PGD when it has steps."""
    noise = cfg.noise_sigma * randn_like(val.x, make_generator(cfg.seed + 2)) if cfg.noise_sigma > 0 else None
    adv = cfg.adversarial
    if adv is None or adv.val_steps == 0:
        noisy = val if noise is None else Split(val.x + noise, val.y)
        return lambda m: accuracy(m, noisy)

    def score(m: nn.Module) -> float:
        dev = model_device(m)
        off = None if noise is None else noise.to(dev)
        with evaluating(m):
            return robust_accuracy(
                lambda z: F.log_softmax(m(z), 1), val.x.to(dev), val.y.to(dev), adv, make_generator(cfg.seed + 3), off
            )

    return score


def train_autoencoder(
    model: nn.Module,
    train: Split,
    val: Split,
    cfg: TrainConfig,
    noise: NoiseSpec,
    desc: str = "autoencoder",
    on_epoch: EpochHook | None = None,
) -> TrainResult:
    """Denoising objective ``||D(q(x)) - x||^2`` with ``q`` = ``noise``; with ``cfg.adversarial`` (PGD or
    FGSM-RS), that share of every batch is replaced by inputs within its budget that ascend the reconstruction
    error (``ensdef.training.adversarial.reconstruction_loss``). Early stopping on validation MSE: under noise,
    mixed by ``ratio`` with the MSE on ``val_steps``-step examples when adversarial validation has steps."""

    def loss(m: nn.Module, xb: torch.Tensor, yb: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        noisy = corrupt(xb, noise, g)
        if cfg.adversarial is None:
            return F.mse_loss(m(noisy), xb)
        return reconstruction_loss(m, xb, noisy, cfg.adversarial, g)

    res = fit(model, train, cfg, loss, _val_mse(val, cfg, noise), desc, on_epoch)
    return TrainResult(res.model, {"val_mse": -res.metrics["val_score"]}, res.epochs_run, res.seconds)


def _val_mse(val: Split, cfg: TrainConfig, noise: NoiseSpec) -> Callable[[nn.Module], float]:
    """Minus the validation objective of an autoencoder: its MSE under one fixed draw of ``noise``; when
    ``cfg.adversarial`` has validation steps, ``(1 - ratio)`` times that plus ``ratio`` times its MSE on
    ``val_steps``-step examples (:func:`worst_reconstruction_mse`), the training objective's mix."""
    adv = cfg.adversarial
    if adv is None or adv.val_steps == 0:
        return lambda m: -reconstruction_mse(m, val, noise, cfg.seed)

    def score(m: nn.Module) -> float:
        mse_adv = worst_reconstruction_mse(m, val.x, adv.eps, cfg.seed + 3, adv.val_steps)
        return -((1 - adv.ratio) * reconstruction_mse(m, val, noise, cfg.seed) + adv.ratio * mse_adv)

    return score
