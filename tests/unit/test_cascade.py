"""The attack cascade's bookkeeping against a hand-worked example: which images stay standing, which
example is carried, and how a cascaded attack's examples are put back in place."""

from __future__ import annotations

import torch

from ensdef.evaluation.cascade import Attacked, Cascade


def _done(correct: list[bool], flagged: list[bool], linf: list[float], fill: float) -> Attacked:
    cell = {"per_image": {"correct": correct, "flagged": flagged, "linf": linf}}
    return Attacked(cell, torch.full((len(correct), 1, 2, 2), fill))


def test_only_wrong_unflagged_images_within_the_budget_are_broken_and_the_first_example_is_kept() -> None:
    ref = torch.zeros(5, 1, 2, 2)
    c = Cascade(ref, eps=0.3)
    assert c.standing() == [0, 1, 2, 3, 4]
    # image 0 wrong and unflagged (broken); 1 wrong but flagged (defended: stays); 2 correct;
    # 3 wrong and unflagged but beyond the budget (stays); 4 correct and flagged
    c.add(_done([False, False, True, False, True], [False, True, False, False, True], [0.3, 0.3, 0.3, 0.5, 0.3], 1.0))
    assert c.standing() == [1, 2, 3, 4]
    c.add(_done([False, False, False, True, True], [False, False, False, False, False], [0.3] * 5, 2.0))
    assert c.standing() == [3, 4]
    assert c.carried[:, 0, 0, 0].tolist() == [1.0, 2.0, 2.0, 0.0, 0.0]  # image 0 keeps the first breaking example
    full = c.complete([3, 4], torch.tensor([7.0, 8.0]).view(2, 1, 1, 1).expand(2, 1, 2, 2))
    assert full[:, 0, 1, 1].tolist() == [1.0, 2.0, 2.0, 7.0, 8.0]
    assert c.complete([], torch.empty(0, 1, 2, 2)).equal(c.carried)


def test_cells_without_per_image_results_and_a_disabled_cascade_change_nothing() -> None:
    c = Cascade(torch.zeros(3, 1, 2, 2), eps=0.3, enabled=False)
    c.add(Attacked({"accuracy": 0.0}, torch.ones(3, 1, 2, 2)))
    c.add(_done([False] * 3, [False] * 3, [0.1] * 3, 1.0))
    assert c.standing() == [0, 1, 2]  # disabled: every attack on every image


def test_the_digest_follows_the_carried_examples_not_the_standing_images_alone() -> None:
    """Two runs that break the same images with other examples must not share a cached cascaded cell."""
    a, b = Cascade(torch.zeros(3, 1, 2, 2), eps=0.3), Cascade(torch.zeros(3, 1, 2, 2), eps=0.3)
    untouched = a.digest()
    a.add(_done([False, True, True], [False] * 3, [0.3] * 3, 1.0))
    b.add(_done([False, True, True], [False] * 3, [0.3] * 3, 0.5))
    assert a.standing() == b.standing() == [1, 2]
    assert len({untouched, a.digest(), b.digest()}) == 3
