from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from ensdef.evaluation.metrics import rates
from ensdef.types import ABSTAIN, Decision, Outcome, outcomes

decision = st.builds(Decision, st.integers(-1, 3), st.booleans())


@given(st.lists(st.tuples(decision, st.integers(0, 3)), min_size=1, max_size=50))
def test_outcome_rates_sum_to_one(pairs) -> None:
    ds, ys = [d for d, _ in pairs], [y for _, y in pairs]
    r = rates(ds, ys)
    assert abs(r.psr + r.fp + r.tsr + r.wrong_unflagged - 1.0) < 1e-12
    assert abs(r.dsr - (r.psr + r.tsr)) < 1e-12 and 0 <= r.abstain <= r.flag_rate + 1e-12


def test_hand_worked_outcomes() -> None:
    ds = [Decision(1, False), Decision(1, True), Decision(2, True), Decision(2, False), Decision(ABSTAIN, False)]
    assert outcomes(ds, [1, 1, 1, 1, 1]) == [
        Outcome.CORRECT_UNFLAGGED,
        Outcome.CORRECT_FLAGGED,
        Outcome.WRONG_FLAGGED,
        Outcome.WRONG_UNFLAGGED,
        Outcome.WRONG_FLAGGED,
    ]
    r = rates(ds, [1, 1, 1, 1, 1])
    assert (r.psr, r.fp, r.tsr, r.wrong_unflagged, r.abstain) == (0.2, 0.2, 0.4, 0.2, 0.2)
    assert abs(r.dsr - 0.6) < 1e-12
