"""Adversarial training inside ensdef's own loops: the inner maximisation and the loss of Madry et al. (2018,
"Towards deep learning models resistant to adversarial attacks": PGD), Wong, Rice and Kolter (2020, "Fast is
better than free": one FGSM step from a random start) and Zhang et al. (2019, "Theoretically principled
trade-off between robustness and accuracy": TRADES).

Denoising autoencoders (denoisers, reformers) take the same budget without labels: the examples ascend the
reconstruction error ``||D(x') - x||^2`` (the input the attacker can steer the furthest from the clean image)
and the step minimises it on them beside the noisy images the member is trained on.

The loops differ in what they train (a classifier's ``logits / T`` with its training noise, an RLS network's
mean over K sampled paths), so the attack runs on a ``log_probs`` closure the loop builds: the attacker sees
exactly the forward that the step minimises. ``pgd_linf`` takes its random start from the caller and follows
ART's ``ProjectedGradientDescent`` step for step (a unit test compares the two from one start).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator

import torch
import torch.nn.functional as F
from torch import nn

from ensdef.models.layers import model_device
from ensdef.presets import AdversarialConfig, AdvMethod
from ensdef.rng import make_generator, rand_like, randn_like

LogProbs = Callable[[torch.Tensor], torch.Tensor]
"""``x`` ``[B, C, H, W]`` -> log-probabilities ``[B, K]`` (differentiable in ``x``); also takes the batch's first
``n`` rows ``[n, C, H, W]`` alone (a ``ratio`` < 1 attacks only those), so whatever it adds per row (a noise
draw) is indexed by the row's position in the batch."""

Criterion = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
"""``(log_probs [B, K], labels [B]) -> scalar`` loss, the loop's clean objective (e.g. ``F.nll_loss``)."""

TRADES_START = 0.001
"""Standard deviation of TRADES' Gaussian random start (Zhang et al.'s code)."""


def uniform_start(x: torch.Tensor, eps: float, g: torch.Generator) -> torch.Tensor:
    """A start offset uniform in the L-inf ball of radius ``eps``, shaped like ``x``, drawn from ``g``."""
    return (rand_like(x, g) * 2 - 1) * eps


def pgd_linf(
    objective: Callable[[torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    eps: float,
    step_size: float,
    steps: int,
    start: torch.Tensor,
    clip: tuple[float, float] = (0.0, 1.0),
) -> torch.Tensor:
    """Signed-gradient ascent on the scalar ``objective`` from ``clip(x + start)``: each step moves every pixel
    by ``step_size`` along the sign of the gradient, clips to ``clip`` and projects onto the L-inf ball of
    radius ``eps`` around ``x`` (ART's order). Returns detached examples ``[B, C, H, W]`` within ``eps`` of
    ``x`` and inside ``clip``; the graph of ``objective`` is freed step by step."""
    lo, hi = clip
    x = x.detach()
    xa = (x + start).clamp(lo, hi)
    for _ in range(steps):
        xa.requires_grad_(True)
        (grad,) = torch.autograd.grad(objective(xa), xa)
        xa = (xa.detach() + step_size * grad.sign()).clamp(lo, hi)
        xa = x + (xa - x).clamp(-eps, eps)
    return xa.detach()


@contextlib.contextmanager
def evaluating(model: nn.Module) -> Iterator[None]:
    """``model`` in eval mode (no dropout, batch-norm running statistics untouched) for the attack; its mode
    is restored afterwards."""
    was = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was)


def examples(
    model: nn.Module,
    log_probs: LogProbs,
    x: torch.Tensor,
    y: torch.Tensor,
    cfg: AdversarialConfig,
    g: torch.Generator,
    criterion: Criterion = F.nll_loss,
) -> torch.Tensor:
    """The inner maximisation of ``cfg.method`` on ``x`` ``[B, C, H, W]`` with labels ``y`` ``[B]``:
    PGD and FGSM-RS ascend ``criterion`` from a uniform start; TRADES ascends KL(f(x) || f(x')) from
    ``x + 0.001 N(0, 1)``. ``model`` (the module behind ``log_probs``) is in eval mode meanwhile."""
    with evaluating(model):
        if cfg.method is AdvMethod.TRADES:
            with torch.no_grad():
                clean = log_probs(x).exp()

            def kl(z: torch.Tensor) -> torch.Tensor:
                return F.kl_div(log_probs(z), clean, reduction="sum")

            return pgd_linf(kl, x, cfg.eps, cfg.step_size, cfg.steps, TRADES_START * randn_like(x, g))
        start = uniform_start(x, cfg.eps, g)
        return pgd_linf(lambda z: criterion(log_probs(z), y), x, cfg.eps, cfg.step_size, cfg.steps, start)


def trades_loss(
    clean: torch.Tensor, adv: torch.Tensor, y: torch.Tensor, beta: float, criterion: Criterion
) -> torch.Tensor:
    """TRADES' objective from log-probabilities ``clean`` and ``adv`` ``[B, K]``: ``criterion(clean, y) +
    beta * KL(p_clean || p_adv)`` averaged over the batch (gradients flow through both terms)."""
    return criterion(clean, y) + beta * F.kl_div(adv, clean.exp(), reduction="batchmean")


def adversarial_loss(
    model: nn.Module,
    log_probs: LogProbs,
    x: torch.Tensor,
    y: torch.Tensor,
    cfg: AdversarialConfig,
    g: torch.Generator,
    criterion: Criterion = F.nll_loss,
) -> torch.Tensor:
    """The training loss of one batch ``x`` ``[B, C, H, W]`` under ``cfg``: :func:`trades_loss` (TRADES), or
    ``criterion`` on the batch with its first ``ceil(cfg.ratio * B)`` rows replaced by examples (PGD, FGSM-RS;
    batches come shuffled, so these are a random share as in ART's ``AdversarialTrainer``), with ``model`` in
    its training mode."""
    if cfg.method is AdvMethod.TRADES:
        adv = examples(model, log_probs, x, y, cfg, g, criterion)
        return trades_loss(log_probs(x), log_probs(adv), y, cfg.beta, criterion)
    n = math.ceil(cfg.ratio * len(x))
    adv = examples(model, log_probs, x[:n], y[:n], cfg, g, criterion)
    return criterion(log_probs(torch.cat([adv, x[n:]])), y)


def reconstruction_examples(
    model: nn.Module, x: torch.Tensor, eps: float, step_size: float, steps: int, g: torch.Generator
) -> torch.Tensor:
    """Examples ``[B, C, H, W]`` within ``eps`` of ``x`` that ascend the autoencoder's squared reconstruction
    error ``||model(x') - x||^2``: ``steps`` signed-gradient steps of ``step_size`` from a uniform start drawn
    from ``g``, ``model`` in eval mode meanwhile. (TRADES has no reconstruction analogue: a ConfigError at
    preset load.)"""
    with evaluating(model):
        return pgd_linf(
            lambda z: F.mse_loss(model(z), x, reduction="sum"), x, eps, step_size, steps, uniform_start(x, eps, g)
        )


def reconstruction_loss(
    model: nn.Module, x: torch.Tensor, corrupted: torch.Tensor, cfg: AdversarialConfig, g: torch.Generator
) -> torch.Tensor:
    """Mean squared reconstruction error of one batch ``x`` ``[B, C, H, W]`` under ``cfg``: ``model``'s input is
    ``corrupted`` (the training noise's draw on ``x``) with its first ``ceil(cfg.ratio * B)`` rows replaced by
    :func:`reconstruction_examples` of those images; the target is ``x`` throughout."""
    return F.mse_loss(model(reconstruction_inputs(model, x, corrupted, cfg, g)), x)


def reconstruction_inputs(
    model: nn.Module, x: torch.Tensor, corrupted: torch.Tensor, cfg: AdversarialConfig, g: torch.Generator
) -> torch.Tensor:
    """``corrupted`` ``[B, C, H, W]`` with its first ``ceil(cfg.ratio * B)`` rows replaced by
    :func:`reconstruction_examples` of those images of ``x`` against ``model`` (an autoencoder, or a chain of
    them as in DeT's cross-training)."""
    n = math.ceil(cfg.ratio * len(x))
    return torch.cat([reconstruction_examples(model, x[:n], cfg.eps, cfg.step_size, cfg.steps, g), corrupted[n:]])


def robust_accuracy(
    log_probs: LogProbs,
    x: torch.Tensor,
    y: torch.Tensor,
    cfg: AdversarialConfig,
    g: torch.Generator,
    offset: torch.Tensor | None = None,
    batch_size: int = 500,
) -> float:
    """Accuracy of ``log_probs`` (a model in eval mode) on ``cfg.val_steps``-step L-inf PGD examples of ``x``
    ``[N, C, H, W]`` at ``cfg.eps`` (step 2.5 eps / steps, uniform start from ``g``, cross-entropy), batch by
    batch on ``x``'s device; ``offset`` ``[N, C, H, W]`` (one fixed draw of the training noise) is added to
    every input after the attack, as the member's query noise would be. Clean accuracy when ``val_steps`` is 0."""
    correct = 0
    for i in range(0, len(x), batch_size):
        xb, yb = x[i : i + batch_size], y[i : i + batch_size]
        off = 0.0 if offset is None else offset[i : i + batch_size]

        def lp(z: torch.Tensor, off: torch.Tensor | float = off) -> torch.Tensor:
            return log_probs(z + off)

        if cfg.val_steps:
            step = 2.5 * cfg.eps / cfg.val_steps
            start = uniform_start(xb, cfg.eps, g)
            xb = pgd_linf(lambda z, t=yb: F.nll_loss(lp(z), t), xb, cfg.eps, step, cfg.val_steps, start)
        with torch.no_grad():
            correct += int((lp(xb).argmax(1) == yb).sum())
    return correct / max(len(x), 1)


def worst_reconstruction_mse(
    model: nn.Module, split_x: torch.Tensor, eps: float, seed: int, steps: int = 10, batch_size: int = 500
) -> float:
    """Mean squared error per pixel of ``model`` on ``steps``-step examples of ``split_x`` ``[N, C, H, W]``
    within ``eps`` that ascend its reconstruction error (step ``2.5 eps / steps``, as :func:`robust_accuracy`'s
    PGD; uniform starts from ``seed``), batch by batch on the model's device; ``model``'s mode is restored."""
    g, dev, sq = make_generator(seed), model_device(model), 0.0
    for i in range(0, len(split_x), batch_size):
        x = split_x[i : i + batch_size].to(dev)
        worst = reconstruction_examples(model, x, eps, 2.5 * eps / steps, steps, g)
        with torch.no_grad(), evaluating(model):
            sq += float(F.mse_loss(model(worst), x, reduction="sum"))
    return sq / max(split_x.numel(), 1)
