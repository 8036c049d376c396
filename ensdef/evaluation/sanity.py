"""Sanity checks of an evaluation report (the evaluation rules of docs/architecture.md), each pass or not:

- the undefended target falls to at most ``max_target_acc`` under the adaptive L-inf PGD at the full budget
  (a target trained with ``train.adversarial`` is not undefended: for it the two target checks are skipped, and
  the unbounded attack and the record check still test the attack);
- an unbounded PGD (eps 1) fools the target on every image;
- robust accuracy does not rise when the adaptive attack's iterations double (beyond the decision noise of
  a randomized defense: one image, plus two binomial standard errors when randomized);
- randomized defenses were attacked with at least ``min_eot`` EOT samples per gradient step;
- a black-box attack beating the white-box adaptive attack warns of gradient masking;
- plausibility: the undefended target's worst case over every attack is at most ``max_target_worst``, and a
  defense at or above a dataset's implausible worst-case robust accuracy at its standard L-inf budget is
  flagged (:data:`RECORDS`: above the published record, check the attack before believing it).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True)
class Record:
    """The published record of robust accuracy under AutoAttack at a dataset's standard L-inf budget, and the
    worst-case figure from which an evaluation's number is flagged as implausible."""

    eps: float
    record: float
    source: str
    implausible: float


RECORDS: dict[str, Record] = {  # dataset name prefix -> record
    "mnist": Record(0.3, 0.963, "Gowal et al. 2020", 0.99),
    # 70.7%: Wang et al. 2023, WRN-70-16 with 50M generated images; 66.0% without extra data (Gowal et al. 2021)
    "cifar10": Record(8 / 255, 0.707, "Wang et al. 2023", 0.75),
}


def record_for(dataset: str) -> Record | None:
    """The :data:`RECORDS` entry whose name prefixes ``dataset`` (``mnist5k`` -> ``mnist``), or None."""
    return next((r for prefix, r in RECORDS.items() if dataset.startswith(prefix)), None)


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
    worst: dict[str, dict[str, Any] | None] | None = None,
    dataset: str = "",
    max_target_acc: float = 0.02,
    min_eot: int = 20,
    max_target_worst: float = 0.01,
    robust_target: bool = False,
) -> list[Check]:
    """Every check that applies to ``rows``; ``robust_target``: the target was adversarially trained, so the
    checks that it falls (``target-pgd``, ``target-worst-case``) do not apply."""
    checks: list[Check] = plausibility(worst or {}, dataset, max_target_worst, robust_target)
    main, doubled, bb = f"adaptive/{adaptive}", f"adaptive/{adaptive}-2x", f"adaptive/{blackbox}"
    if "target" in rows and main in rows["target"] and not robust_target:
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


def plausibility(
    worst: dict[str, dict[str, Any] | None], dataset: str, max_target_worst: float, robust_target: bool = False
) -> list[Check]:
    """The worst-case checks: the target must fall (unless ``robust_target``); a defense at or above the
    dataset's implausible figure (:data:`RECORDS`) at its standard budget or a larger one is suspect."""
    checks = []
    w = worst.get("target")
    if w is not None and not robust_target:
        checks.append(
            Check(
                "target-worst-case",
                "target",
                w["robust"] <= max_target_worst,
                f"undefended target worst-case robust accuracy {w['robust']:.3f} ({w['robust_count']}/{w['n']}) "
                f"over {len(w['attacks'])} attacks (must be <= {max_target_worst})",
            )
        )
    if (rec := record_for(dataset)) is None:
        return checks
    for d, w in worst.items():
        if w is not None and w["eps"] >= rec.eps - 1e-6:
            ok = w["robust"] < rec.implausible
            why = f": above the published record ({rec.record:.3f}, {rec.source}); check the attack"
            checks.append(
                Check(
                    "implausible",
                    d,
                    ok,
                    f"worst-case robust accuracy {w['robust']:.3f} at L-inf {w['eps']:g}" + ("" if ok else why),
                    "warning",
                )
            )
    return checks


def indicator_checks(found: dict[str, list[dict[str, Any]]], attack: str) -> list[Check]:
    """One warning per attack-failure indicator that fired (``ensdef evaluate --strict`` fails on them)."""
    return [
        Check(
            f"indicator:{i['name']}",
            d,
            not i["fired"],
            f"adaptive {attack} on {d}: {i['detail']} (share {i['share']:.2f}, threshold {i['threshold']:.2f})",
            "warning",
        )
        for d, items in found.items()
        for i in items
    ]
