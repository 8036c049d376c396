"""The evaluation harness end to end on the tiny store: every registered defense under static, gray-box and
adaptive attacks (tiny sizes from ``fixtures/tiny.yaml``), the report files, and the cache on a rerun."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

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


def _intervals(node, path=""):  # noqa: ANN001, ANN202
    """Every ``(path, count, n, interval)`` in a report: a ``<rate>_ci`` beside its ``<rate>_count`` and ``n``."""
    if isinstance(node, dict):
        for k, v in node.items():
            if k.endswith("_ci") and f"{k[:-3]}_count" in node and "n" in node:
                yield f"{path}/{k}", node[f"{k[:-3]}_count"], node["n"], v
            else:
                yield from _intervals(v, f"{path}/{k}")
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _intervals(v, f"{path}[{i}]")


def test_every_interval_in_the_report_is_clopper_pearson_of_its_count(evaluated) -> None:
    """Recomputed independently from the counts with scipy's beta quantiles (the closed form)."""
    from scipy.stats import beta

    _, _, _, rep = evaluated
    found = list(_intervals(rep))
    assert len(found) > 100
    for path, k, n, (lo, hi) in found:
        want_lo = 0.0 if k == 0 else beta.ppf(0.025, k, n - k + 1)
        want_hi = 1.0 if k == n else beta.ppf(0.975, k + 1, n - k)
        assert abs(lo - want_lo) < 1e-6 and abs(hi - want_hi) < 1e-6, path


def test_the_worst_case_leads_and_is_no_better_than_any_attack_in_the_budget(evaluated) -> None:
    _, out, _, rep = evaluated
    for d, w in rep["worst_case"].items():
        assert w is not None and w["attacks"], d
        for cell in w["attacks"]:
            assert w["robust"] <= rep["rows"][d][cell]["accuracy"] + 1e-9, (d, cell)
            assert max(rep["rows"][d][cell]["per_image"]["linf"]) <= 0.3 + 1e-4
        assert {"adaptive/pgd", "adaptive/apgd-ce", "adaptive/apgd-dlr-targeted"} <= set(w["attacks"])
        outside = [
            k for k, c in rep["rows"][d].items() if "per_image" in c and max(c["per_image"]["linf"]) > 0.3 + 1e-4
        ]
        assert not set(outside) & set(w["attacks"])  # unbounded attacks beyond the budget are not combined
        assert w["robust"] <= w["defended"]
    assert ("target-worst-case", "target") in {(c["name"], c["defense"]) for c in rep["sanity"]}
    summary = (out / "report.md").read_text().split("## Summary", 1)[1]
    assert summary.split("\n")[2].startswith("| defense | worst_robust | worst_robust_count | worst_robust_ci")
    pairs = rep["paired"]
    assert len(pairs) == len(DEFENSES) * (len(DEFENSES) - 1) // 2


CASCADED = (
    "adaptive/apgd-ce",
    "adaptive/apgd-dlr-targeted",
    "adaptive/arc",
    "adaptive/square-decisions",
    "adaptive/hopskipjump-decisions",
)


def test_the_cascade_attacks_exactly_the_images_no_earlier_cell_broke(evaluated) -> None:
    """Recomputed from the cells (report.json sorts them by name): APGD-CE attacks the images that no
    uncascaded cell made wrong and unflagged within the budget, and each later cascaded cell the images that
    none before it (in the harness's order) did."""
    import numpy as np

    _, _, _, rep = evaluated
    assert rep["config"]["evaluation"]["cascade"] is True
    n = rep["config"]["n_attack_set"]

    def broke(cell: dict) -> np.ndarray:
        p = cell["per_image"]
        return ~np.array(p["correct"]) & ~np.array(p["flagged"]) & (np.array(p["linf"]) <= 0.3 + 1e-4)

    attacked = []
    for d, row in rep["rows"].items():
        broken = np.zeros(n, dtype=bool)
        for k, cell in row.items():
            if "per_image" in cell and k not in CASCADED:
                broken |= broke(cell)
        assert {"adaptive/apgd-ce", "adaptive/apgd-dlr-targeted"} <= set(row), d
        for k in (k for k in CASCADED if k in row):
            assert row[k]["attacked"] == int((~broken).sum()), (d, k)
            attacked.append(row[k]["attacked"])
            broken |= broke(row[k])
    assert 0 < sum(attacked) < n * len(attacked)  # some images attacked, some carried
    # ARC on the randomized defenses only, with its budget
    assert "adaptive/arc" in rep["rows"]["rls"] and "adaptive/arc" not in rep["rows"]["target"]
    assert rep["rows"]["rls"]["adaptive/arc"]["draws"] == 3 and rep["rows"]["rls"]["adaptive/arc"]["sweeps"] == 2


def test_a_store_with_only_the_target_and_baselines_evaluates(tiny_store, tmp_path: Path) -> None:
    """A subset of defenses and threats needs only their pools (no verifier tables without verifiers)."""
    import shutil

    from ensdef.store import ArtifactStore

    store, _ = tiny_store
    sub = ArtifactStore(tmp_path / "store")
    for name in ("target", "baseline-adv-training", "baseline-distillation"):
        shutil.copytree(Path(store.root) / name, Path(sub.root) / name)
    cfg = yaml.safe_load((FIXTURES / "tiny.yaml").read_text())  # and a budget cut for one defense
    cfg["evaluation"]["per_defense"] = {"adv-training": {"apgd_iter": 1, "decision_iter": 0}}
    (tmp_path / "cut.yaml").write_text(yaml.safe_dump(cfg))
    argv = ["evaluate", "--preset", str(tmp_path / "cut.yaml"), "--store", sub.root, "--out", str(tmp_path / "r")]
    argv += ["--defenses", "target,adv-training", "--threats", "adaptive", "--json"]
    assert main(argv) == 0
    rep = json.loads((tmp_path / "r" / "report.json").read_text())
    assert set(rep["rows"]) == {"target", "adv-training"} and "transfer" not in rep
    rows = rep["rows"]
    assert (
        rows["adv-training"]["adaptive/apgd-ce"]["max_iter"] == 1
        and rows["target"]["adaptive/apgd-ce"]["max_iter"] == 2
    )
    assert (
        "adaptive/hopskipjump-decisions" not in rows["adv-training"]
        and "adaptive/hopskipjump-decisions" in rows["target"]
    )
    assert (
        "**Budgets cut to fit the machine** (the rest of the suite as above): adv-training: apgd_iter 1"
        in (tmp_path / "r" / "report.md").read_text()
    )
