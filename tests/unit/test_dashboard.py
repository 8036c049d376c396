"""The Grafana dashboard (``cluster/grafana/ensdef.json``) queries only metrics the service defines, under the
names Ray exports them with (``ray_`` prefix; counters end in ``_total``, histograms export ``_bucket``,
``_sum`` and ``_count``), and shows every one of them. The naming rule itself is checked against a live
service in ``tests/integration/test_serve.py::test_metrics_reach_rays_prometheus_endpoint``."""

from __future__ import annotations

import ast
import json
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "cluster" / "grafana" / "ensdef.json"
SUFFIXES = {"Counter": ("_total",), "Gauge": ("",), "Histogram": ("_bucket", "_sum", "_count")}


def defined_metrics() -> dict[str, str]:
    """Metric name -> kind, for every Ray metric the service layer creates (read from the source)."""
    out = {}
    for path in (ROOT / "deployments").glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in SUFFIXES):
                continue
            if node.args and isinstance(node.args[0], ast.Constant) and str(node.args[0].value).startswith("ensdef_"):
                out[node.args[0].value] = node.func.id
    return out


def exported_names(defined: dict[str, str]) -> dict[str, str]:
    """Exported series name -> the metric it belongs to."""
    return {f"ray_{name}{s}": name for name, kind in defined.items() for s in SUFFIXES[kind]}


def panel_metrics() -> dict[str, set[str]]:
    panels = json.loads(DASHBOARD.read_text())["panels"]
    return {p["title"]: {m for t in p["targets"] for m in re.findall(r"\bray_ensdef_\w+", t["expr"])} for p in panels}


def test_every_panel_queries_metrics_the_service_exports_and_every_metric_has_a_panel() -> None:
    defined = defined_metrics()
    assert {"ensdef_requests", "ensdef_client_queries", "ensdef_detections", "ensdef_quota_refusals"} <= set(defined)
    exported = exported_names(defined)
    panels = panel_metrics()
    for title, names in panels.items():
        assert names, f"panel {title!r} queries no ensdef metric"
        assert names <= set(exported), (title, names - set(exported))
    shown = {exported[n] for names in panels.values() for n in names}
    assert shown == set(defined), set(defined) - shown
