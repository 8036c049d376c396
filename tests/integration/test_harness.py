"""The evaluation harness end to end on the tiny store: every registered defense under static, gray-box and
adaptive attacks (tiny sizes from ``fixtures/tiny.yaml``), the report files, and the cache on a rerun."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ensdef.cli import main
from ensdef.defenses.registry import DEFENSES

pytestmark = pytest.mark.slow
FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"


@pytest.fixture(scope="module")
def evaluated(tiny_store, tmp_path_factory: pytest.TempPathFactory):
    store, _ = tiny_store
    out = tmp_path_factory.mktemp("report")
    argv = ["evaluate", "--preset", str(FIXTURES / "tiny.yaml"), "--store", store.root, "--out", str(out), "--json"]
    argv += ["--defenses", ",".join(DEFENSES)]
    assert main(argv) == 0
    return store, out, argv, json.loads((out / "report.json").read_text())


def test_every_defense_has_static_graybox_and_adaptive_cells(evaluated) -> None:
    _, _, _, rep = evaluated
    assert set(rep["rows"]) == set(DEFENSES)
    for d, row in rep["rows"].items():
        kinds = {k.split("/")[0] for k in row}
        assert {"benign", "static", "graybox", "adaptive"} <= kinds, d
        for cell in row.values():
            assert abs(cell["psr"] + cell["tsr"] + cell["fp"] + cell["wrong_unflagged"] - 1) < 1e-9
        assert row["adaptive/pgd"]["linf"] <= 0.3 + 1e-5
        assert row["adaptive/pgd-2x"]["max_iter"] == 2 * row["adaptive/pgd"]["max_iter"]
    assert {"adaptive/rls-1-sampled", "adaptive/rls-2-sampled"} <= set(rep["rows"]["rls"])
    assert "adaptive/superimpose-2" in rep["rows"]["noisy-vote"]
    assert rep["rows"]["noisy-vote"]["adaptive/pgd"]["objective"] == "worst of detector-aware and untargeted"
    assert rep["rows"]["rls"]["adaptive/pgd"]["objective"] == "untargeted"
    assert rep["rows"]["target"]["adaptive/pgd"]["eot"] == 0 and rep["rows"]["det"]["adaptive/pgd"]["eot"] == 2


def test_report_files_and_sanity_checks(evaluated) -> None:
    _, out, _, rep = evaluated
    for f in ("report.json", "report.md", "robust_accuracy_eps.png", "transfer.png", "kappa.png"):
        assert (out / f).stat().st_size > 0, f
    names = {(c["name"], c["defense"]) for c in rep["sanity"]}
    assert {("target-pgd", "target"), ("unbounded", "target"), ("iterations", "target")} <= names
    eot = [c for c in rep["sanity"] if c["name"] == "eot"]
    assert eot and not any(c["passed"] for c in eot)  # tiny.yaml uses 2 EOT samples: the check must say so
    md = (out / "report.md").read_text()
    assert md.splitlines()[2].startswith("**Sanity checks: FAIL**") and "| noisy-vote |" in md
    n = len(rep["transfer"]["models"])
    assert n >= 2 and len(rep["transfer"]["matrix"]) == n


def test_second_run_reads_the_cache(evaluated, tmp_path: Path) -> None:
    _, _, argv, rep = evaluated
    argv = [*argv]
    argv[argv.index("--out") + 1] = str(tmp_path)
    assert main(argv) == 0
    again = json.loads((tmp_path / "report.json").read_text())
    assert again["cache"]["misses"] == 0 and again["cache"]["hits"] > 0
    assert again["rows"] == rep["rows"]
