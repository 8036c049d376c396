"""The evaluation's cost estimate: the passes each adaptive cell asks for, worked by hand, and a timed estimate
for every registered defense (random-weight members)."""

from __future__ import annotations

from dataclasses import replace

import pytest

from ensdef.defenses.registry import DEFENSES, build_defense
from ensdef.evaluation.costs import HSJ_SINGLE_QUERIES, SCORED_CELLS, PassTimes, Work, adaptive_work, estimate
from ensdef.presets import EvalConfig


def test_adaptive_work_counts_every_cells_passes() -> None:
    cfg = EvalConfig(adaptive_iter=10, eps_curve=(0.1, 0.3), apgd_iter=100, apgd_restarts=1, apgd_targets=3,
                     blackbox_iter=100, decision_iter=10)  # fmt: skip
    # PGD: 10 + 20 (doubled) + 10 (eps 0.1) = 40; APGD: 100 (CE) + 3 x 100 (DLR per target) = 400;
    # indicators: 10 (probe) + 20 (unbounded) + 6
    plain = adaptive_work(cfg, can_flag=False, images=100)
    assert plain.gradient == 40 + 400 + 36 and plain.forward == 100
    assert plain.decide_set == 100 + SCORED_CELLS
    assert plain.decide_batch == 100 * 10 and plain.decide_one == 100 * 10 * HSJ_SINGLE_QUERIES
    flagging = adaptive_work(cfg, can_flag=True, images=100)  # every gradient cell twice, the probes once
    assert flagging.gradient == 2 * (40 + 400) + 36
    cut = adaptive_work(replace(cfg, apgd_targets=1, decision_iter=0), can_flag=False, images=100)
    assert cut.gradient == 40 + 200 + 36 and cut.decide_batch == cut.decide_one == 0
    # ARC on a randomized defense, 10 draws x 20 sweeps = 200 member steps: 200 one-draw gradients (10 EOT
    # gradients of 20 draws), 200 x 11 forwards (every member's expected accuracy after each step, and after
    # each sweep) and 10 before the first
    drawn = adaptive_work(replace(cfg, eot=20, arc_draws=10, arc_iter=20), False, 100, randomized=True)
    assert drawn.gradient == plain.gradient + 10 and drawn.forward == 100 + 200 * 11 + 10
    assert adaptive_work(replace(cfg, arc_draws=0), False, 100, randomized=True) == plain
    t = PassTimes(gradient=2.0, forward=0.5, decide_set=0.1, decide_batch=0.2, decide_one=0.01)
    w = Work(gradient=3, forward=4, decide_set=5, decide_batch=6, decide_one=7)
    assert w.seconds(t) == pytest.approx(3 * 2.0 + 4 * 0.5 + 5 * 0.1 + 6 * 0.2 + 7 * 0.01)


@pytest.mark.parametrize("name", sorted(DEFENSES))
def test_every_defense_gets_a_timed_estimate(random_store, mnist5k, name: str) -> None:
    store, preset = random_store
    defense = build_defense(name, store, preset)
    cfg = EvalConfig(eot=2, adaptive_iter=2, apgd_iter=2, decision_iter=1, decision_evals=4, blackbox_iter=2)
    x, y = mnist5k.test.x[:4], mnist5k.test.y[:4]
    est = estimate(defense, x, y, cfg)
    assert all(v > 0 for v in est["passes"].values())
    assert est["seconds"] == pytest.approx(Work(**est["work"]).seconds(PassTimes(**est["passes"])), abs=0.1)
