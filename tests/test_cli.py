from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from conftest import FIXTURES

from ensdef.cli import main
from ensdef.models import MODELS
from ensdef.store import ArtifactStore
from ensdef.types import Role


def _json(capsys, argv: list[str]) -> object:
    assert main(argv) == 0
    return json.loads(capsys.readouterr().out)


def test_data_info(capsys) -> None:
    out = _json(capsys, ["data", "info", "--dataset", "mnist5k", "--json"])
    assert out == {"dataset": "mnist5k", "shape": [1, 28, 28], "num_classes": 10,
                   "splits": {"train": 3500, "val": 500, "test": 1000}}


def test_data_info_missing_cifar_folder(tmp_path: Path, capsys) -> None:
    code = main(["data", "info", "--dataset", "cifar10", "--data-root", str(tmp_path), "--json"])
    err = json.loads(capsys.readouterr().out)["error"]
    assert code == 2 and "cifar10" in err and str(tmp_path) in err and "--download" in err


def test_models_list(capsys) -> None:
    out = _json(capsys, ["models", "list", "--json"])
    assert {m["name"] for m in out} == set(MODELS)
    assert all(m["roles"] and m["input_shapes"] for m in out)


def test_train_every_pool_of_a_tiny_preset(tmp_path: Path, capsys) -> None:
    out = _json(capsys, ["train", "--preset", str(FIXTURES / "tiny.yaml"), "--pool", "all",
                         "--store", str(tmp_path), "--json"])
    by_pool: dict[str, list[dict]] = {}
    for a in out["artifacts"]:
        by_pool.setdefault(a["pool"], []).append(a)
    assert {k: len(v) for k, v in by_pool.items()} == {"target": 1, "verifiers": 3, "denoisers": 3,
                                                       "reformers": 3, "tempnets": 3}
    assert all(0.0 <= a["metrics"]["test_accuracy"] <= 1.0 for a in by_pool["verifiers"])
    assert all(a["metrics"]["test_mse_clean"] < 0.2 for a in by_pool["denoisers"])
    temps = [ArtifactStore(tmp_path).manifest(a["name"]) for a in by_pool["tempnets"]]
    assert [t.extra["temperature"] for t in temps] == [10.0, 20.0, 30.0]
    assert [t.metrics["train_size"] for t in temps] == [1167, 1167, 1166]  # disjoint partitions
    assert all(t.role is Role.TEMPNET and t.train_config["temperature"] == t.extra["temperature"] for t in temps)
    # a second run with --skip-existing keeps what verifies
    again = _json(capsys, ["train", "--preset", str(FIXTURES / "tiny.yaml"), "--pool", "target",
                           "--store", str(tmp_path), "--skip-existing", "--json"])
    assert again["artifacts"][0]["metrics"] == by_pool["target"][0]["metrics"]


def test_console_script_runs() -> None:
    res = subprocess.run([sys.executable, "-m", "ensdef.cli", "models", "list", "--json"],
                         capture_output=True, text=True, check=True)
    assert any(m["name"] == "cw7" for m in json.loads(res.stdout))
