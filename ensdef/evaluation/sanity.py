"""Sanity checks of an evaluation report (docs/evaluation.md, "What an honest number needs"), each marked pass or fail.

- the undefended target falls to at most ``max_target_acc`` under the adaptive L-inf PGD at the full budget;
- an unbounded PGD (eps 1) fools the target on every image;
- robust accuracy does not rise when the adaptive attack's iterations double (beyond the decision noise of
  a randomized defense: one image, plus two binomial standard errors when randomized);
- randomized defenses were attacked with at least ``min_eot`` EOT samples per gradient step;
- a black-box attack beating the white-box adaptive attack warns of gradient masking.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True)
class Check:
    name: str
    defense: str
    passed: bool
    detail: str
    severity: str = "fail"  # "fail" or "warning" when not passed

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _acc(cell: dict[str, Any]) -> float:
    return float(cell["accuracy"])


def iteration_check(defense: str, one: dict[str, Any], two: dict[str, Any], randomized: bool) -> Check:
    n, a1, a2 = int(one["n"]), _acc(one), _acc(two)
    tol = 1 / n + (2 * math.sqrt(max(a1 * (1 - a1), 1 / n) / n) if randomized else 0.0)
    return Check(
        "iterations",
        defense,
        a2 <= a1 + tol + 1e-9,
        f"robust accuracy {a1:.3f} at {one['max_iter']} steps, {a2:.3f} at {two['max_iter']} (tolerance {tol:.3f})",
    )


def run_checks(
    rows: dict[str, dict[str, dict[str, Any]]],
    randomized: dict[str, bool],
    adaptive: str,
    blackbox: str,
    unbounded: dict[str, Any] | None,
    max_target_acc: float = 0.02,
    min_eot: int = 20,
) -> list[Check]:
    checks: list[Check] = []
    main, doubled, bb = f"adaptive/{adaptive}", f"adaptive/{adaptive}-2x", f"adaptive/{blackbox}"
    if "target" in rows and main in rows["target"]:
        a = _acc(rows["target"][main])
        checks.append(
            Check(
                "target-pgd",
                "target",
                a <= max_target_acc,
                f"undefended target robust accuracy {a:.3f} under L-inf PGD eps "
                f"{rows['target'][main]['eps']} (must be <= {max_target_acc})",
            )
        )
    if unbounded is not None:
        checks.append(
            Check(
                "unbounded",
                "target",
                unbounded["accuracy"] == 0.0,
                f"target accuracy {unbounded['accuracy']:.3f} under PGD with eps 1 (must be 0)",
            )
        )
    for d, row in rows.items():
        if main in row and doubled in row:
            checks.append(iteration_check(d, row[main], row[doubled], randomized.get(d, True)))
        if main in row and randomized.get(d, True):
            e = int(row[main].get("eot", 0))
            checks.append(Check("eot", d, e >= min_eot, f"{e} EOT samples per step (randomized; needs >= {min_eot})"))
        if main in row and bb in row:
            w, b = _acc(row[main]), _acc(row[bb])
            checks.append(
                Check(
                    "gradient-masking",
                    d,
                    b >= w,
                    f"black-box {blackbox} accuracy {b:.3f} vs white-box {w:.3f}"
                    + ("" if b >= w else ": the black-box attack wins, gradients may be masked"),
                    "warning",
                )
            )
    return checks
