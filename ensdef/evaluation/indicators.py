"""Attack-failure indicators (Pintor, Demetrio, Sotgiu, Melis, Demontis, Roli and Biggio 2022, "Indicators of
attack failure: debugging and improving optimization of adversarial examples"): signs that a robustness
figure measures a failed attack rather than a robust defense.

A probe, an instrumented L-inf PGD on the defense's EOT surrogate (the same differentiable path the adaptive
attacks use), records per step the loss and whether the surrogate was already fooled. From it and from a
few extra evaluations of the surrogate:

- ``zero-gradients``: the input gradient is zero or not finite on some images (the attack has no direction);
- ``unstable-loss``: the loss changes a lot under small random perturbations of the same point (randomness
  not averaged away, or a shattered surface);
- ``silent-success``: the probe fooled the surrogate at some step but its returned point does not fool it;
- ``incomplete-optimization``: the loss is still rising over the last steps (more iterations would help);
- ``unbounded-failure``: with an unbounded budget the probe still does not fool the surrogate on every image
  (an attack that cannot win without limits is broken, not the defense strong).

Each indicator gives the share of images on which it fires; it fires when that share exceeds its threshold.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F

Surrogate = Callable[[torch.Tensor], torch.Tensor]  # [B, C, H, W] -> log-probabilities [B, K] (EOT-averaged)


@dataclass(frozen=True)
class Indicator:
    name: str
    share: float  # fraction of images on which it fires
    threshold: float
    detail: str

    @property
    def fired(self) -> bool:
        return self.share > self.threshold

    def as_dict(self) -> dict[str, object]:
        return {**asdict(self), "fired": self.fired}


@dataclass(frozen=True)
class Probe:
    x: torch.Tensor  # [B, C, H, W] the returned point (the last step)
    losses: torch.Tensor  # [T + 1, B] cross-entropy of the true class, at the start and after every step
    fooled: torch.Tensor  # [T + 1, B] bool: the surrogate's label was wrong


def _loss(surrogate: Surrogate, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    logp = surrogate(x)
    return F.nll_loss(logp, y, reduction="none"), logp.argmax(1) != y


def probe(surrogate: Surrogate, x: torch.Tensor, y: torch.Tensor, eps: float, steps: int, step_size: float) -> Probe:
    """L-inf PGD from ``x`` (no random start) that maximises the surrogate's cross-entropy for ``y``."""
    adv = x.clone()
    losses, fooled = [], []
    for _ in range(steps):
        adv.requires_grad_(True)
        loss, bad = _loss(surrogate, adv, y)
        (grad,) = torch.autograd.grad(loss.sum(), adv)
        losses.append(loss.detach())
        fooled.append(bad.detach())
        with torch.no_grad():
            adv = torch.min(torch.max(adv + step_size * grad.sign(), x - eps), x + eps).clamp(0, 1)
    with torch.no_grad():
        loss, bad = _loss(surrogate, adv, y)
    return Probe(adv.detach(), torch.stack([*losses, loss]), torch.stack([*fooled, bad]))


def zero_gradients(surrogate: Surrogate, x: torch.Tensor, y: torch.Tensor, threshold: float = 0.0) -> Indicator:
    x = x.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(_loss(surrogate, x, y)[0].sum(), x)
    norm = grad.flatten(1).abs().sum(1)
    bad = (norm == 0) | ~torch.isfinite(norm)
    return Indicator("zero-gradients", float(bad.float().mean()), threshold, f"{int(bad.sum())} of {len(x)} images")


def _uniform(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    return torch.rand(x.shape, generator=g, device=x.device)


def unstable_loss(
    surrogate: Surrogate,
    x: torch.Tensor,
    y: torch.Tensor,
    g: torch.Generator,
    radius: float = 1e-3,
    draws: int = 4,
    tolerance: float = 0.1,
    threshold: float = 0.1,
) -> Indicator:
    """Relative spread of the loss over ``draws`` uniform perturbations of size ``radius`` around ``x``: a
    spread above ``tolerance`` on an image counts it."""
    with torch.no_grad():
        base = _loss(surrogate, x, y)[0]
        near = torch.stack(
            [_loss(surrogate, (x + radius * (2 * _uniform(x, g) - 1)).clamp(0, 1), y)[0] for _ in range(draws)]
        )
    spread = (near - base).abs().amax(0) / base.abs().clamp_min(1e-3)
    bad = spread > tolerance
    return Indicator(
        "unstable-loss",
        float(bad.float().mean()),
        threshold,
        f"{int(bad.sum())} of {len(x)} images change their loss by more than {tolerance:.0%} within L-inf {radius:g}",
    )


def from_probe(p: Probe, window: int = 3, rise: float = 0.05, threshold: float = 0.0) -> list[Indicator]:
    """``silent-success`` and ``incomplete-optimization`` from a probe's trace."""
    silent = p.fooled[:-1].any(0) & ~p.fooled[-1]
    last = p.losses[-1]
    before = p.losses[-1 - min(window, len(p.losses) - 1)]
    still = (last - before) > rise * before.abs().clamp_min(1e-3)
    still &= ~p.fooled[-1]  # an image already fooled needs no more steps
    n = p.losses.shape[1]
    return [
        Indicator("silent-success", float(silent.float().mean()), threshold, f"{int(silent.sum())} of {n} images"),
        Indicator(
            "incomplete-optimization",
            float(still.float().mean()),
            threshold,
            f"{int(still.sum())} of {n} unfooled images still gain more than {rise:.0%} loss over the last "
            f"{window} steps",
        ),
    ]


def unbounded_failure(surrogate: Surrogate, x: torch.Tensor, y: torch.Tensor, steps: int = 50) -> Indicator:
    """The probe with budget 1 (any image) must fool the surrogate on every image."""
    p = probe(surrogate, x, y, 1.0, steps, 0.05)
    bad = ~p.fooled.any(0)
    return Indicator(
        "unbounded-failure", float(bad.float().mean()), 0.0, f"{int(bad.sum())} of {len(x)} images never fooled"
    )


def indicators(
    surrogate: Surrogate, x: torch.Tensor, y: torch.Tensor, eps: float, steps: int, g: torch.Generator
) -> list[Indicator]:
    """Every indicator for the attack set ``x`` ``[N, C, H, W]`` with labels ``y`` at L-inf budget ``eps``."""
    p = probe(surrogate, x, y, eps, steps, 2.5 * eps / steps)
    return [
        zero_gradients(surrogate, x, y),
        unstable_loss(surrogate, p.x, y, g),
        *from_probe(p),
        unbounded_failure(surrogate, x, y, max(2 * steps, 20)),
    ]
