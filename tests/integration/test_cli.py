from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import yaml
from conftest import FIXTURES

from ensdef.cli import main
from ensdef.models import MODELS
from ensdef.types import Role


def _json(capsys, argv: list[str]) -> object:
    assert main(argv) == 0
    return json.loads(capsys.readouterr().out)


def test_data_info(capsys) -> None:
    out = _json(capsys, ["data", "info", "--dataset", "mnist5k", "--json"])
    assert out == {
        "dataset": "mnist5k",
        "shape": [1, 28, 28],
        "num_classes": 10,
        "splits": {"train": 3500, "val": 500, "test": 1000},
    }


def test_data_info_missing_cifar_folder(tmp_path: Path, capsys) -> None:
    code = main(["data", "info", "--dataset", "cifar10", "--data-root", str(tmp_path), "--json"])
    err = json.loads(capsys.readouterr().out)["error"]
    assert code == 2 and "cifar10" in err and str(tmp_path) in err and "--download" in err


def test_models_list(capsys) -> None:
    out = _json(capsys, ["models", "list", "--json"])
    assert {m["name"] for m in out} == set(MODELS)
    assert all(m["roles"] and m["input_shapes"] for m in out)


def test_train_command_and_skip_existing(tmp_path: Path, capsys) -> None:
    argv = ["train", "--preset", str(FIXTURES / "tiny.yaml"), "--pool", "target", "--store", str(tmp_path), "--json"]
    out = _json(capsys, argv)
    assert [a["name"] for a in out["artifacts"]] == ["target"] and 0 <= out["artifacts"][0]["metrics"]["test_accuracy"]
    again = _json(capsys, [*argv, "--skip-existing"])  # keeps what exists, verifies and has the same plan
    assert again["artifacts"][0]["metrics"] == out["artifacts"][0]["metrics"]
    cfg = yaml.safe_load((FIXTURES / "tiny.yaml").read_text())
    cfg["target"]["train"]["epochs"] = 2  # the preset changed: the stored target is not its plan any more
    (preset := tmp_path / "two-epochs.yaml").write_text(yaml.safe_dump(cfg))
    argv[2] = str(preset)
    changed = _json(capsys, [*argv, "--skip-existing"])
    assert changed["artifacts"][0]["metrics"]["epochs"] == 2
    assert json.loads((tmp_path / "target" / "manifest.json").read_text())["train_config"]["epochs"] == 2


def test_tiny_store_has_every_pool(tiny_store) -> None:
    store, _ = tiny_store
    by_role = {r: [m.name for m in store.by_role(r)] for r in Role}
    assert {r.value: len(v) for r, v in by_role.items()} == {
        "target": 1,
        "verifier": 3,
        "denoiser": 3,
        "reformer": 9,
        "tempnet": 3,
        "rls": 1,
        "baseline": 2,
        "init": 1,  # the warm start the three temperature networks train from
    }
    assert sum("~" in n for n in by_role[Role.REFORMER]) == 6  # every pair cross-trained both ways
    assert len(store.load_json("det-reformer-list")["list"]) == 2
    temps = [store.manifest(n) for n in by_role[Role.TEMPNET]]
    assert [t.extra["temperature"] for t in temps] == [10.0, 20.0, 30.0]
    assert [t.metrics["train_size"] for t in temps] == [1167, 1167, 1166]  # disjoint partitions
    assert all(t.train_config["temperature"] == t.extra["temperature"] for t in temps)
    assert all(store.manifest(n).metrics["test_mse_clean"] < 0.2 for n in by_role[Role.DENOISER])


def test_select_and_decide_commands(tiny_store, tmp_path: Path, capsys) -> None:
    import numpy as np

    from ensdef.data import load_mnist5k

    store, _ = tiny_store
    tiny = str(FIXTURES / "tiny.yaml")
    sel = _json(capsys, ["select", "--preset", tiny, "--store", store.root, "--json"])
    assert len(sel["kappa"]) == 3 and sel["ranked_count"] == 4 and len(sel["best_kappa_team"]) in (2, 3)
    x = load_mnist5k().test.x[:3].numpy()
    np.save(tmp_path / "q.npy", x)
    argv = [
        "decide",
        "--defense",
        "modef",
        "--preset",
        tiny,
        "--store",
        store.root,
        "--input",
        str(tmp_path / "q.npy"),
        "--seed",
        "3",
        "--json",
        "--diagnostics",
    ]
    first = _json(capsys, argv)
    assert len(first) == 3 and all({"label", "flagged", "abstained", "diagnostics"} <= set(d) for d in first)
    assert _json(capsys, argv) == first
    np.save(tmp_path / "bad.npy", x * 2)
    assert main([*argv[:-5], str(tmp_path / "bad.npy"), "--json"]) == 2
    assert "[0, 1]" in json.loads(capsys.readouterr().out)["error"]


def test_console_script_runs() -> None:
    res = subprocess.run(
        [sys.executable, "-m", "ensdef.cli", "models", "list", "--json"], capture_output=True, text=True, check=True
    )
    assert any(m["name"] == "cw7" for m in json.loads(res.stdout))


def test_serve_detach_needs_an_external_ray(tiny_store, capsys, monkeypatch) -> None:
    """A Ray this command started would end with it: a detached deployment needs a cluster that outlives it."""
    store, _ = tiny_store
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    argv = ["serve", "--preset", str(FIXTURES / "tiny.yaml"), "--store", str(store.root), "--detach", "--json"]
    assert main(argv) == 2
    out = json.loads(capsys.readouterr().out)
    assert "--detach needs" in out["error"] and "--address" in out["error"]


def test_noisy_report_certify_and_rls_compare(tiny_store, tmp_path: Path, capsys) -> None:
    store, _ = tiny_store
    tiny = str(FIXTURES / "tiny.yaml")
    rep = _json(capsys, ["noisy-report", "--preset", tiny, "--store", store.root, "--json"])
    assert rep["members"] == 3 and rep["n"] == 1000
    assert rep["best_member_clean_accuracy"] == max(rep["member_clean_accuracy"].values())
    assert rep["member_clean_accuracy"][rep["best_member"]] == rep["best_member_clean_accuracy"]
    cmp = rep["clean_vote_vs_best_member"]
    gap = rep["ensemble_clean_accuracy"] - rep["best_member_clean_accuracy"]
    assert cmp["only_first_correct"] - cmp["only_second_correct"] == round(gap * rep["n"])
    val_best = rep["validation_best_member"]
    vcmp = rep["clean_vote_vs_validation_best_member"]
    vgap = rep["ensemble_clean_accuracy"] - rep["member_clean_accuracy"][val_best]
    assert vcmp["only_first_correct"] - vcmp["only_second_correct"] == round(vgap * rep["n"])
    assert 0 <= rep["rank_verified_abstain_rate"] <= 1
    cert = _json(
        capsys,
        [
            "certify",
            "--preset",
            tiny,
            "--store",
            store.root,
            "--count",
            "4",
            "--n",
            "60",
            "--n0",
            "10",
            "--out",
            str(tmp_path / "cert"),
            "--json",
        ],
    )
    assert set(cert["certified_accuracy"]) == {"0", "0.25", "0.5", "1"} and len(cert["certificates"]) == 4
    acc = list(cert["certified_accuracy"].values())
    assert acc == sorted(acc, reverse=True), "certified accuracy never rises with the radius"
    assert (tmp_path / "cert" / "certified_accuracy.png").stat().st_size > 1000
    cmp = _json(capsys, ["rls-compare", "--preset", tiny, "--store", store.root, "--name", "rls-vgg", "--json"])
    assert {
        "rls_test_accuracy",
        "single_test_accuracy",
        "rls_interrater_agreement",
        "dropout_interrater_agreement",
    } <= set(cmp)
