"""Attack wrappers against hand-worked examples: superimposition, the detector-aware model, the cache key,
the iteration sanity check, and the attack catalogue on a real (tiny) model."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from ensdef.attacks.art_classifier import art_classifier
from ensdef.attacks.cache import cache_key
from ensdef.attacks.catalog import ATTACKS, Target, attack_targets, run_attack
from ensdef.attacks.detector_aware import FlagAwareSurrogate, flag_aware_targets
from ensdef.attacks.superimpose import superimpose
from ensdef.defenses.base import Defense
from ensdef.evaluation.sanity import iteration_check
from ensdef.models import build


def test_superimpose_sums_the_k_smallest_successful_perturbations() -> None:
    x = np.full((2, 1, 1, 2), 0.5, dtype=np.float32)
    a = [x + d for d in (np.float32([0.1, 0.0]), np.float32([0.0, 0.3]), np.float32([0.2, 0.2]))]
    fooled = np.array([[True, True], [True, False], [True, True]])
    out = superimpose(x, a, fooled, 2)
    # image 0: norms 0.1, 0.3, 0.283 -> members 0 and 2; image 1: member 1 failed -> members 0 and 2
    np.testing.assert_allclose(out[0, 0, 0], [0.8, 0.7], atol=1e-6)
    np.testing.assert_allclose(out[1, 0, 0], [0.8, 0.7], atol=1e-6)
    assert superimpose(x, a, np.zeros_like(fooled), 2).tolist() == x.tolist()  # nothing succeeded: clean
    big = superimpose(x, [x + 0.4] * 3, np.ones_like(fooled), 3)
    assert big.max() == 1.0  # clipped


class _TwoVoters(Defense):
    """Voters with fixed probabilities, independent of x: p1 = (0.5, 0.3, 0.2), p2 = (0.6, 0.2, 0.2)."""

    randomized = False
    P = torch.tensor([[0.5, 0.3, 0.2], [0.6, 0.2, 0.2]])

    def plan(self, x, g, quorum=0.5):  # pragma: no cover - not used
        raise NotImplementedError

    def named_members(self):  # pragma: no cover - not used
        return {}

    def surrogate(self, x, g=None):
        return self.voters(x, g).mean(0)

    def voters(self, x, g=None):
        return self.P.log()[:, None, :].expand(2, len(x), 3) + 0 * x.sum()


def test_flag_aware_surrogate_matches_hand_computation() -> None:
    out = FlagAwareSurrogate(_TwoVoters(), samples=20)(torch.zeros(1, 1, 2, 2)).exp()[0]
    agree = [0.5 * 0.6, 0.3 * 0.2, 0.2 * 0.2]
    np.testing.assert_allclose(out[:3].numpy(), agree, rtol=1e-5)
    assert math.isclose(float(out[3]), 1 - sum(agree), rel_tol=1e-5)  # the voters disagree: flagged
    t = flag_aware_targets(np.log(out[None].numpy()), np.array([0]))
    assert t.argmax(1).tolist() == [1]  # never the true class, never the flag


def test_cache_key_is_stable_and_sensitive() -> None:
    a = cache_key({"attack": "pgd", "params": {"eps": 0.3, "max_iter": 10}})
    assert a == cache_key({"params": {"max_iter": 10, "eps": 0.3}, "attack": "pgd"})
    assert a != cache_key({"attack": "pgd", "params": {"eps": 0.3, "max_iter": 20}})


@pytest.mark.parametrize(
    ("a1", "a2", "randomized", "ok"),
    [(0.2, 0.2, False, True), (0.2, 0.3, False, False), (0.2, 0.25, True, True), (0.2, 0.6, True, False)],
)
def test_iteration_check(a1: float, a2: float, randomized: bool, ok: bool) -> None:
    one = {"n": 100, "accuracy": a1, "max_iter": 10}
    two = {"n": 100, "accuracy": a2, "max_iter": 20}
    assert iteration_check("d", one, two, randomized).passed is ok


def test_ml_ll_targets() -> None:
    probs = np.array([[0.6, 0.3, 0.1], [0.1, 0.2, 0.7]])
    y = np.array([0, 2])
    assert attack_targets(probs, y, Target.MOST_LIKELY).argmax(1).tolist() == [1, 1]
    assert attack_targets(probs, y, Target.LEAST_LIKELY).argmax(1).tolist() == [2, 0]
    assert attack_targets(probs, y, Target.UNTARGETED) is None


TINY_BUDGETS = {
    "bim": {"max_iter": 2},
    "pgd": {"max_iter": 2},
    "apgd": {"max_iter": 2},
    "cw_linf_ml": {"max_iter": 2, "decrease_factor": 0.5, "initial_const": 0.1},
    "cw_linf_ll": {"max_iter": 2, "decrease_factor": 0.5, "initial_const": 0.1},
    "cw_l2_ml": {"max_iter": 2, "search_steps": 1},
    "cw_l2_ll": {"max_iter": 2, "search_steps": 1},
    "cw_l0_ml": {"max_iter": 2, "search_steps": 1},
    "cw_l0_ll": {"max_iter": 2, "search_steps": 1},
    "deepfool": {"max_iter": 2},
    "ead": {"max_iter": 2, "search_steps": 1},
    "square": {"max_iter": 3},
    "hopskipjump": {"max_iter": 1, "max_eval": 20, "init_eval": 5},
}


@pytest.mark.parametrize("name", sorted(ATTACKS))
def test_every_catalogue_attack_runs_and_stays_in_range(name: str, mnist5k) -> None:
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = build("mlp", mnist5k.shape, 10)
    clf = art_classifier(nn.Sequential(model).eval(), mnist5k.shape, 10)
    x, y = mnist5k.test.x[::250][:4].numpy(), mnist5k.test.y[::250][:4].numpy()
    adv = run_attack(name, clf, x, y, TINY_BUDGETS.get(name))
    assert adv.shape == x.shape and adv.dtype == np.float32
    assert adv.min() >= 0.0 and adv.max() <= 1.0
    eps = ATTACKS[name].params.get("eps")
    if eps is not None and ATTACKS[name].norm == "linf":
        assert np.abs(adv - x).max() <= eps + 1e-5


def test_bpda_clip_forward_clips_backward_is_identity() -> None:
    from ensdef.defenses.base import bpda_clip

    x = torch.tensor([-0.5, 0.3, 1.7], requires_grad=True)
    y = bpda_clip(x)
    assert y.tolist() == pytest.approx([0.0, 0.3, 1.0])
    (y * torch.tensor([1.0, 2.0, 3.0])).sum().backward()
    assert x.grad.tolist() == [1.0, 2.0, 3.0]


def test_worst_case_keeps_per_image_the_candidate_that_beats_the_defense() -> None:
    from ensdef.attacks.adaptive import worst_case
    from ensdef.defenses.single import SingleModel

    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(2, 2, bias=False))
    net[1].weight.data = torch.eye(2)  # the label is the brighter of the two pixels
    y = np.array([0, 0])
    a = np.float32([[[[0.9, 0.1]]], [[[0.2, 0.8]]]])  # image 0 still correct, image 1 fooled
    b = np.float32([[[[0.1, 0.9]]], [[[0.7, 0.3]]]])  # image 0 fooled, image 1 still correct
    out = worst_case(SingleModel(net), [a, b], y, 0)
    assert out[0].tolist() == b[0].tolist() and out[1].tolist() == a[1].tolist()


@pytest.mark.parametrize(("defense_name", "flags"), [("target", False), ("modef-1tm", True), ("noisy-vote", True)])
def test_apgd_adds_the_detector_aware_objective_for_defenses_that_flag(
    defense_name: str, flags: bool, random_store, mnist5k
) -> None:
    from ensdef.attacks.adaptive import apgd_examples
    from ensdef.defenses.registry import build_defense

    store, preset = random_store
    defense = build_defense(defense_name, store, preset)
    assert defense.can_flag is flags
    x, y = mnist5k.test.x[:3], mnist5k.test.y[:3]
    budget = {"max_iter": 2, "restarts": 1}
    for targets in (0, 2):
        adv, what = apgd_examples(defense, x, y, loss="cross_entropy", overrides=budget, eot=2, seed=0, targets=targets)
        assert what["detector_aware"] is defense.can_flag and what["targets"] == targets
        assert adv.shape == tuple(x.shape) and adv.dtype == np.float32
        assert np.abs(adv - x.numpy()).max() <= what["eps"] + 1e-6 and 0.0 <= adv.min() and adv.max() <= 1.0
