"""Write an evaluation :class:`~ensdef.evaluation.harness.Report` as ``report.json``, ``report.md`` and PNG plots."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from ensdef.evaluation.harness import Report
from ensdef.evaluation.plots import curve, heatmap

COLUMNS = ("accuracy", "psr", "tsr", "dsr", "fp", "abstain", "wrong_unflagged", "l0", "l2", "linf", "attack_seconds")


def _f(v: Any) -> str:
    return f"{v:.3f}" if isinstance(v, float) else str(v)


def _mean(row: dict[str, dict[str, Any]], prefix: str, key: str = "accuracy") -> float | None:
    vals = [c[key] for k, c in row.items() if k.startswith(prefix)]
    return float(np.mean(vals)) if vals else None


def summary(report: Report) -> list[dict[str, Any]]:
    """One line per defense: benign accuracy and flag rate, mean static accuracy and DSR, the worst static
    accuracy, gray-box, adaptive (and its unflagged-wrong rate), black-box and superimposition accuracy."""
    ev = report.config["evaluation"]
    a, b = f"adaptive/{ev['adaptive_attack']}", f"adaptive/{ev['blackbox_attack']}"
    out = []
    for d, row in report.rows.items():
        static = [c["accuracy"] for k, c in row.items() if k.startswith("static/")]
        out.append(
            {
                "defense": d,
                "benign_acc": row["benign"]["accuracy"],
                "benign_flag": row["benign"]["flag_rate"],
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
        "",
        "## Summary",
        "",
    ]
    rows = summary(report)
    if rows:
        keys = list(rows[0])
        lines += ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
        lines += ["| " + " | ".join(_f(r[k]) if r[k] is not None else "-" for k in keys) + " |" for r in rows]
    if report.attacks:
        lines += [
            "",
            "## Static attack set (made on the target)",
            "",
            "| attack | target ASR | L-inf | L2 | L0 | seconds |",
            "|---|---|---|---|---|---|",
        ]
        lines += [
            f"| {a} | {i['target_asr']:.2f} | {i['linf']:.3f} | {i['l2']:.2f} | {i['l0']:.3f} | {i['seconds']} |"
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
    series = {}
    for d, row in report.rows.items():
        keys = [f"adaptive/{ev['adaptive_attack']}@{e:g}" for e in eps[:-1]] + [f"adaptive/{ev['adaptive_attack']}"]
        if all(k in row for k in keys):
            series[d] = (list(eps), [row[k]["accuracy"] for k in keys])
    if series:
        paths["eps"] = curve(
            out / "robust_accuracy_eps.png", series, "L-inf epsilon", "robust accuracy", "adaptive attack"
        )
    for key, title in (("transfer", "transferability (row: source, col: victim)"), ("kappa", "pairwise kappa")):
        if key in report.extra:
            t = report.extra[key]
            paths[key] = heatmap(out / f"{key}.png", np.array(t["matrix"]), t["models"], title)
    return paths
