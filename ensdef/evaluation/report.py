"""Write an evaluation :class:`~ensdef.evaluation.harness.Report` as ``report.json``, ``report.md`` and PNG plots."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from ensdef.evaluation.harness import Report
from ensdef.evaluation.plots import curve, heatmap

COLUMNS = (
    "accuracy",
    "accuracy_count",
    "accuracy_ci",
    "psr",
    "tsr",
    "dsr",
    "fp",
    "abstain",
    "wrong_unflagged",
    "l0",
    "l2",
    "linf",
    "attack_seconds",
    "attacked",
)


def _f(v: Any) -> str:
    if isinstance(v, list | tuple) and all(isinstance(x, float) for x in v):
        return "[" + ", ".join(f"{x:.3f}" for x in v) + "]"
    return f"{v:.3f}" if isinstance(v, float) else str(v)


def _mean(row: dict[str, dict[str, Any]], prefix: str, key: str = "accuracy") -> float | None:
    vals = [c[key] for k, c in row.items() if k.startswith(prefix)]
    return float(np.mean(vals)) if vals else None


def _ci(v: list[float] | None) -> str | None:
    return None if v is None else f"[{v[0]:.3f}, {v[1]:.3f}]"


def _cuts(ev: dict[str, Any]) -> list[str]:
    """The report's line on the defenses whose adaptive budgets were cut (``per_defense``), if any."""
    cuts = ev.get("per_defense") or {}
    if not cuts:
        return []
    said = "; ".join(f"{d}: " + ", ".join(f"{k} {v}" for k, v in more.items()) for d, more in sorted(cuts.items()))
    return ["", f"**Budgets cut to fit the machine** (the rest of the suite as above): {said}."]


def _cascade(ev: dict[str, Any]) -> list[str]:
    """The report's line on the attack cascade (:mod:`ensdef.evaluation.cascade`)."""
    if not ev.get("cascade", False):
        return ["", "Every attack ran on every image (no cascade): each cell is its own attack's figure."]
    return [
        "",
        "**Cascade** (Croce and Hein 2020): APGD-CE, targeted APGD-DLR, then Square and HopSkipJump on decisions "
        "attack only the images no earlier cell broke within the budget (column `attacked`) and carry the breaking "
        "example for the rest, so their figures are cumulative; the worst case per image is the whole suite's.",
    ]


def summary(report: Report) -> list[dict[str, Any]]:
    """One line per defense, the worst case first: worst-case robust accuracy (correct and answered under
    every attack within the budget) with its count and 95% interval, and the worst-case defended rate (correct,
    or flagged / abstained); then clean accuracy, flag and abstain rates; then the static, gray-box, adaptive,
    black-box and superimposition figures."""
    ev = report.config["evaluation"]
    a, b = f"adaptive/{ev['adaptive_attack']}", f"adaptive/{ev['blackbox_attack']}"
    worst = report.extra.get("worst_case", {})
    out = []
    for d, row in report.rows.items():
        static = [c["accuracy"] for k, c in row.items() if k.startswith("static/")]
        w = worst.get(d) or {}
        out.append(
            {
                "defense": d,
                "worst_robust": w.get("robust"),
                "worst_robust_count": f"{w['robust_count']}/{w['n']}" if w else None,
                "worst_robust_ci": _ci(w.get("robust_ci")),
                "worst_defended": w.get("defended"),
                "worst_attacks": len(w.get("attacks", [])) if w else None,
                "benign_acc": row["benign"]["accuracy"],
                "benign_acc_ci": _ci(row["benign"].get("accuracy_ci")),
                "benign_flag": row["benign"]["flag_rate"],
                "benign_abstain": row["benign"]["abstain"],
                "static_acc_mean": _mean(row, "static/"),
                "static_dsr_mean": _mean(row, "static/", "dsr"),
                "static_acc_worst": min(static) if static else None,
                "graybox_acc": _mean(row, "graybox/"),
                "adaptive_acc": row[a]["accuracy"] if a in row else None,
                "adaptive_evaded": row[a]["wrong_unflagged"] if a in row else None,
                "blackbox_acc": row[b]["accuracy"] if b in row else None,
                "superimpose_acc": _mean(row, "adaptive/superimpose"),
            }
        )
    return out


def markdown(report: Report) -> str:
    lines = [f"# ensdef evaluation: preset {report.config['preset']}", ""]
    checks = report.extra.get("sanity", [])
    failed = [c for c in checks if not c["passed"] and c["severity"] == "fail"]
    warned = [c for c in checks if not c["passed"] and c["severity"] == "warning"]
    lines += [
        f"**Sanity checks: {'PASS' if not failed else 'FAIL'}** ({len(checks)} run, {len(failed)} failed, "
        f"{len(warned)} warnings)",
        "",
    ]
    lines += [
        f"- {'PASS' if c['passed'] else c['severity'].upper()} `{c['name']}` {c['defense']}: {c['detail']}"
        for c in checks
    ]
    cfg = report.config
    lines += [
        "",
        f"Attack set: {cfg['n_attack_set']} correctly classified test images, balanced per class; "
        f"threats {', '.join(cfg['threats'])}; seed {cfg['evaluation']['seed']}; EOT "
        f"{cfg['evaluation']['eot']}; target sha256 `{cfg['target_sha256'][:12]}`.",
        *_cascade(cfg["evaluation"]),
        *_cuts(cfg["evaluation"]),
        "",
        "## Summary",
        "",
    ]
    rows = summary(report)
    if rows:
        keys = list(rows[0])
        lines += ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
        lines += ["| " + " | ".join(_f(r[k]) if r[k] is not None else "-" for k in keys) + " |" for r in rows]
    pairs = report.extra.get("paired", [])
    if pairs:
        sig = [p for p in pairs if p["significant"]]
        lines += [
            "",
            "## Paired comparisons (worst-case robustness, exact McNemar, same images)",
            "",
            f"{len(sig)} of {len(pairs)} pairs differ significantly (p < 0.05).",
            "",
            "| a | b | only a robust | only b robust | p | significant |",
            "|---|---|---|---|---|---|",
        ]
        lines += [
            f"| {p['a']} | {p['b']} | {p['only_a']} | {p['only_b']} | {p['p_value']:.3g} | {p['significant']} |"
            for p in pairs
        ]
    if report.attacks:
        lines += [
            "",
            "## Static attack set (made on the target)",
            "",
            "| attack | target ASR | L-inf | L2 | L0 | seconds | parameters |",
            "|---|---|---|---|---|---|---|",
        ]
        lines += [
            f"| {a} | {i['target_asr']:.2f} | {i['linf']:.3f} | {i['l2']:.2f} | {i['l0']:.3f} | {i['seconds']} | "
            + ", ".join(f"{k}={v}" for k, v in i["params"].items())
            + " |"
            for a, i in report.attacks.items()
        ]
    for d, row in report.rows.items():
        lines += ["", f"## {d}", "", "| cell | " + " | ".join(COLUMNS) + " |", "|---|" + "---|" * len(COLUMNS)]
        lines += ["| " + k + " | " + " | ".join(_f(c.get(col, "")) for col in COLUMNS) + " |" for k, c in row.items()]
    return "\n".join(lines) + "\n"


def write(report: Report, out: str | Path) -> dict[str, Path]:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"json": out / "report.json", "md": out / "report.md"}
    paths["json"].write_text(json.dumps(report.to_json(), indent=2, sort_keys=True))
    paths["md"].write_text(markdown(report))
    ev = report.config["evaluation"]
    eps = ev["eps_curve"]
    series, intervals = {}, {}
    for d, row in report.rows.items():
        keys = [f"adaptive/{ev['adaptive_attack']}@{e:g}" for e in eps[:-1]] + [f"adaptive/{ev['adaptive_attack']}"]
        if all(k in row for k in keys):
            series[d] = (list(eps), [row[k]["accuracy"] for k in keys])
            if all("accuracy_ci" in row[k] for k in keys):
                intervals[d] = [row[k]["accuracy_ci"] for k in keys]
    if series:
        paths["eps"] = curve(
            out / "robust_accuracy_eps.png",
            series,
            "L-inf epsilon",
            "robust accuracy (95% interval)",
            "adaptive attack",
            intervals,
        )
    for key, title in (("transfer", "transferability (row: source, col: victim)"), ("kappa", "pairwise kappa")):
        if key in report.extra:
            t = report.extra[key]
            paths[key] = heatmap(out / f"{key}.png", np.array(t["matrix"]), t["models"], title)
    return paths
