"""What a defense's adaptive cells will cost before they run: the gradient steps, forward passes and decision
queries its budget asks for (:func:`adaptive_work`), times passes of the defense timed on the attack set
(:func:`time_passes`). ``ensdef evaluate --estimate`` prints it per defense, to choose
``evaluation.per_defense`` cuts without running the attacks.

An upper-bound estimate: every adaptive attack is counted on every image, while the cascade
(:mod:`ensdef.evaluation.cascade`) gives APGD and the query-only attackers only the images still standing
and ART's APGD stops attacking an image once it is fooled; HopSkipJump's binary
searches take as many single queries as its images need (about :data:`HSJ_SINGLE_QUERIES` per iteration
here), and the static, gray-box and member-level cells (DeepFool on members, PGD on sampled RLS networks) are
left out: they cost seconds beside the adaptive ones. The report records every cell's real seconds.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn.functional as F

from ensdef.attacks.eot import EOTSurrogate
from ensdef.defenses.base import Defense
from ensdef.defenses.registry import build_defense
from ensdef.presets import EvalConfig, Preset
from ensdef.rng import make_generator
from ensdef.store import ArtifactStore

HSJ_SINGLE_QUERIES = 25  # one-image queries per HopSkipJump iteration (binary search and step-size search)
SCORED_CELLS = 12  # decisions on the attack set to score the cells (and pick the worse of two candidates)


@dataclass(frozen=True)
class PassTimes:
    """Seconds of one pass of a defense on the attack set (``n`` images) or on single queries."""

    gradient: float  # forward and backward of the EOT surrogate (all its draws) on the attack set
    forward: float  # forward of one surrogate draw on the attack set (Square on scores)
    decide_set: float  # decisions on the attack set (Square on decisions, scoring a cell)
    decide_batch: float  # decisions on ``decision_evals`` images (one HopSkipJump gradient estimate)
    decide_one: float  # a decision on one image


@dataclass(frozen=True)
class Work:
    """How many of each pass a defense's adaptive cells ask for (at most)."""

    gradient: float
    forward: float
    decide_set: float
    decide_batch: float
    decide_one: float

    def seconds(self, t: PassTimes) -> float:
        return sum(getattr(self, k) * getattr(t, k) for k in asdict(self))


def _timed(fn: Any, repeats: int) -> float:
    fn()  # warm-up: allocators, kernels, lazily built members
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def time_passes(defense: Defense, x: torch.Tensor, y: torch.Tensor, cfg: EvalConfig, repeats: int = 1) -> PassTimes:
    """Time each pass of :class:`PassTimes` on the attack set ``x`` ``[N, C, H, W]`` (labels ``y`` ``[N]``) with
    ``cfg``'s EOT draws; the best of ``repeats`` after a warm-up each."""
    sur = EOTSurrogate(defense, cfg.eot if defense.randomized else 0, cfg.seed)
    one = EOTSurrogate(defense, 1, cfg.seed)

    def gradient() -> None:
        xg = x.clone().requires_grad_(True)
        torch.autograd.grad(F.cross_entropy(sur(xg), y), xg)

    def forward() -> None:
        with torch.no_grad():
            one(x)

    batch = x[torch.arange(cfg.decision_evals) % len(x)]
    g = make_generator(cfg.seed)
    return PassTimes(
        gradient=_timed(gradient, repeats),
        forward=_timed(forward, repeats),
        decide_set=_timed(lambda: defense.decide(x, g), repeats),
        decide_batch=_timed(lambda: defense.decide(batch, g), repeats),
        decide_one=_timed(lambda: defense.decide(x[:1], g), repeats),
    )


def adaptive_work(cfg: EvalConfig, can_flag: bool, images: int, randomized: bool = False) -> Work:
    """The passes of one defense's adaptive cells at ``cfg``'s budget (apply ``for_defense`` first) on
    ``images`` attacked images. A defense that can flag is attacked twice by every gradient cell (plain and
    detector-aware); a randomized one also gets ARC: per sweep one one-draw gradient per member (a
    ``1 / eot`` share of an EOT gradient) and, per member, one forward of every member for the expected
    accuracy."""
    twice = 2 if can_flag else 1
    pgd = cfg.adaptive_iter * (1 + 2 + len(cfg.eps_curve) - 1)  # the attack, doubled iterations, epsilon curve
    apgd = cfg.apgd_iter * cfg.apgd_restarts * (1 + cfg.apgd_targets)  # cross-entropy, then DLR per target
    probes = cfg.adaptive_iter + max(2 * cfg.adaptive_iter, 20) + 6  # the attack-failure indicators
    hsj = images * cfg.decision_iter
    arc = cfg.arc_iter * cfg.arc_draws if randomized and cfg.arc_draws > 1 else 0  # member steps
    return Work(
        gradient=twice * (pgd + apgd) + probes + arc / max(cfg.eot, 1),
        forward=cfg.blackbox_iter + arc * (cfg.arc_draws + 1) + (cfg.arc_draws if arc else 0),
        decide_set=cfg.blackbox_iter + SCORED_CELLS,
        decide_batch=hsj,
        decide_one=hsj * HSJ_SINGLE_QUERIES,
    )


def estimate(defense: Defense, x: torch.Tensor, y: torch.Tensor, cfg: EvalConfig) -> dict[str, Any]:
    """The timed passes, the work and the estimated seconds of ``defense``'s adaptive cells on ``x``."""
    times = time_passes(defense, x, y, cfg)
    work = adaptive_work(cfg, defense.can_flag, len(x), defense.randomized)
    return {"seconds": round(work.seconds(times), 1), "passes": asdict(times), "work": asdict(work)}


def estimate_rows(
    store: ArtifactStore,
    preset: Preset,
    cfg: EvalConfig,
    x: torch.Tensor,
    y: torch.Tensor,
    names: list[str],
    device: torch.device | str = "cpu",
) -> dict[str, dict[str, Any]]:
    """:func:`estimate` for every defense of ``names`` built from ``store``, each at its own budget
    (``cfg.for_defense``), on the attack set ``x`` ``[N, C, H, W]`` with labels ``y`` ``[N]``."""
    out = {}
    for name in names:
        defense = build_defense(name, store, preset, device)
        out[name] = estimate(defense, x.to(device), y.to(device), cfg.for_defense(name))
    return out
