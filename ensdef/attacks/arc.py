"""ARC, the attack on randomized ensembles of Dbouk and Shanbhag (2022, "Adversarial vulnerability of randomized
ensembles"), L-inf version.

A randomized ensemble answers each query with one of its members, member i with probability ``alpha_i``; what
it loses to an example is its expected accuracy, ``sum_i alpha_i [f_i(x') = y]``. Attacks on the averaged
output (PGD or APGD through EOT) can stall where the members' gradients cancel and leave that expectation
untouched. ARC instead walks over the members (the most likely first): for member i it linearises the margin
to the nearest wrong class, steps towards that boundary (a larger step when the boundary is closer than one
step, so the step crosses it), keeps the step only if the expected accuracy does not rise, and after each
sweep keeps the accumulated perturbation only where the expectation did not rise either.

Here a member is any ``[B, ...] -> [B, K]`` logit or log-probability function, so a defense's randomness enters
as members: one fixed draw of its surrogate per member (``ensdef.attacks.adaptive``), each drawn with equal
probability.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from ensdef.defenses.base import Defense
from ensdef.rng import make_generator, rand_like

Member = Callable[[torch.Tensor], torch.Tensor]
"""``x`` ``[B, ...]`` -> logits or log-probabilities ``[B, K]``, differentiable in ``x``."""

TINY = 1e-10


Joint = Callable[[torch.Tensor], torch.Tensor]
"""``x`` ``[B, ...]`` -> every member's output ``[M, B, K]`` at once (work the members share runs once)."""


def surrogate_draws(defense: Defense, draws: int, seed: int) -> tuple[list[Member], Joint]:
    """``draws`` members, each the defense's surrogate with its own fixed draw of randomness (a generator
    seeded anew from ``seed`` and the member's index on every call, so a member answers alike every time it
    is asked, as one of the defense's possible instances), and all of them at once through
    ``defense.surrogate_many`` (equal to the members one by one)."""
    seeds = [seed * 1_000_003 + i for i in range(draws)]
    members: list[Member] = [lambda z, s=s: defense.surrogate(z, make_generator(s, z.device)) for s in seeds]
    return members, lambda z: defense.surrogate_many(z, [make_generator(s, z.device) for s in seeds])


def expected_accuracy(
    members: Sequence[Member], alpha: torch.Tensor, x: torch.Tensor, y: torch.Tensor, joint: Joint | None = None
) -> torch.Tensor:
    """``[B]``: ``sum_i alpha_i [argmax f_i(x) = y]``, the randomized ensemble's chance of answering ``y``
    (through ``joint`` when given)."""
    with torch.no_grad():
        out = joint(x) if joint is not None else torch.stack([f(x) for f in members])  # [M, B, K]
        return (alpha.to(x)[:, None] * (out.argmax(2) == y).to(x.dtype)).sum(0)


def _flat_norm(v: torch.Tensor, p: float) -> torch.Tensor:
    return v.flatten(1).norm(p=p, dim=1).view(-1, *([1] * (v.dim() - 1)))


def _boundary(
    member: Member, x: torch.Tensor, y: torch.Tensor, classes: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """For each image of ``x`` ``[B, ...]``, of the ``classes`` most likely wrong classes of ``member`` the one
    whose linearised boundary with ``y`` is nearest in L-inf: its distance ``zeta`` ``[B]`` (margin over the
    L1 norm of the margin's gradient), the signed step towards it and the L1-normalised direction (both
    shaped like ``x``)."""
    x = x.detach().requires_grad_(True)
    z = member(x)
    others = z.detach().scatter(1, y[:, None], -torch.inf).topk(min(classes, z.shape[1] - 1), 1).indices
    zeta = torch.full((len(x),), torch.inf, device=x.device, dtype=x.dtype)
    step, unit = torch.zeros_like(x), torch.zeros_like(x)
    zy = z.gather(1, y[:, None])[:, 0]
    for j in range(others.shape[1]):
        margin = zy - z.gather(1, others[:, j : j + 1])[:, 0]  # [B]: > 0 while the member answers y over j
        (w,) = torch.autograd.grad(margin.sum(), x, retain_graph=j + 1 < others.shape[1])
        norm = _flat_norm(w, 1)
        d = margin.detach().abs() / (norm.flatten() + TINY)
        nearer = d < zeta
        zeta = torch.where(nearer, d, zeta)
        mask = nearer.view(-1, *([1] * (x.dim() - 1)))
        step = torch.where(mask, -w.sign(), step)
        unit = torch.where(mask, -w / (norm + TINY), unit)
    return zeta, step, unit


def arc(
    members: Sequence[Member],
    alpha: torch.Tensor,
    x: torch.Tensor,
    y: torch.Tensor,
    eps: float,
    step_size: float,
    steps: int,
    classes: int = 1,
    restarts: int = 1,
    g: torch.Generator | None = None,
    clip: tuple[float, float] = (0.0, 1.0),
    joint: Joint | None = None,
) -> torch.Tensor:
    """ARC examples ``[B, ...]`` of ``x`` (true labels ``y`` ``[B]``) within L-inf ``eps`` and ``clip`` against
    the randomized ensemble of ``members`` drawn with probabilities ``alpha`` ``[M]``: ``steps`` sweeps over
    the members of step ``step_size``, each member's direction towards its nearest boundary among ``classes``
    wrong classes. The first restart starts at ``x``, later ones uniformly within ``eps / 2`` (drawn from
    ``g``); per image the example with the lowest expected accuracy is returned, and an example never has a
    higher expected accuracy than ``x`` itself. ``joint`` computes every member at once for the expected
    accuracy (the members one by one without it)."""
    lo, hi = clip
    x, y = x.detach(), y.detach()
    order = torch.argsort(alpha, descending=True, stable=True).tolist()
    best_acc = expected_accuracy(members, alpha, x, y, joint)
    best = torch.zeros_like(x)
    rho = 0.05 * eps
    for r in range(restarts):
        delta = torch.zeros_like(x)
        if r and g is not None:
            delta = (rand_like(x, g) * 2 - 1) * eps / 2
        delta = (x + delta).clamp(lo, hi) - x
        acc = expected_accuracy(members, alpha, x + delta, y, joint)
        for _ in range(steps):
            local, local_acc = torch.zeros_like(x), acc.clone()
            for n, i in enumerate(order):
                zeta, step, unit = _boundary(members[i], x + delta + local, y, classes)
                beta = torch.full_like(zeta, step_size)
                if n:  # a boundary nearer than one step: a step sized to cross it from where ``local`` stands
                    along = (unit * local).flatten(1).sum(1)
                    crossing = step_size / (step_size - zeta + TINY) * (zeta - along).abs() + rho
                    beta = torch.where(zeta < step_size, crossing, beta)
                cand = local + beta.view(-1, *([1] * (x.dim() - 1))) * step
                cand = step_size * cand / (_flat_norm(cand, float("inf")) + TINY)
                d = ((delta + cand).clamp(-eps, eps) + x).clamp(lo, hi) - x
                new = expected_accuracy(members, alpha, x + d, y, joint)
                keep = new <= local_acc
                local = torch.where(keep.view(-1, *([1] * (x.dim() - 1))), cand, local)
                local_acc = torch.minimum(local_acc, new)
            d = ((delta + local).clamp(-eps, eps) + x).clamp(lo, hi) - x
            new = expected_accuracy(members, alpha, x + d, y, joint)
            keep = (new <= acc).view(-1, *([1] * (x.dim() - 1)))
            delta, acc = torch.where(keep, d, delta), torch.minimum(acc, new)
        better = (acc <= best_acc).view(-1, *([1] * (x.dim() - 1)))
        best, best_acc = torch.where(better, delta, best), torch.minimum(best_acc, acc)
    return (x + best).clamp(lo, hi).detach()
