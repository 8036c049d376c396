from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from ensdef.cli import main
from ensdef.errors import IntegrityError
from ensdef.models import build
from ensdef.rng import make_generator, seeded
from ensdef.store import ArtifactStore, Manifest
from ensdef.types import Role
from tests.conftest import FIXTURES


def _save(store: ArtifactStore, name: str = "verifier-lenet") -> tuple[torch.nn.Module, Manifest]:
    with seeded(0):
        model = build("lenet", (1, 28, 28)).eval()
    m = Manifest(
        name=name,
        role=Role.VERIFIER,
        architecture="lenet",
        dataset="mnist5k",
        input_shape=(1, 28, 28),
        num_classes=10,
        sha256="",
        metrics={"test_accuracy": 0.5},
    )
    return model, store.save_model(model, m)


def test_round_trip_gives_identical_outputs_and_manifest(tmp_path: Path) -> None:
    store = ArtifactStore(tmp_path)
    model, saved = _save(store)
    loaded, m = store.load_model("verifier-lenet")
    x = torch.rand(4, 1, 28, 28, generator=make_generator(0))
    assert torch.equal(model(x), loaded(x))
    assert m == saved and len(m.sha256) == 64 and m.code_version and m.role is Role.VERIFIER
    assert store.names() == ["verifier-lenet"] and [x.name for x in store.by_role(Role.VERIFIER)] == ["verifier-lenet"]
    manifest = json.loads((tmp_path / "verifier-lenet" / "manifest.json").read_text())
    assert {"role", "architecture", "dataset", "train_config", "metrics", "sha256", "code_version"} <= set(manifest)


def test_a_relative_local_path_is_the_same_store_from_any_folder(tmp_path: Path, monkeypatch) -> None:
    # a Tune trial runs in its own folder: with the root kept relative it wrote a second store there, silently
    monkeypatch.chdir(tmp_path)
    store = ArtifactStore("rel/store")
    assert store.root == str(tmp_path / "rel" / "store")
    _save(store)
    (tmp_path / "trial").mkdir()
    monkeypatch.chdir(tmp_path / "trial")
    again = ArtifactStore(store.root)
    assert again.names() == ["verifier-lenet"] and again.verify("verifier-lenet").ok
    assert not (tmp_path / "trial" / "rel").exists()
    assert ArtifactStore("memory://ensdef-test/x").root == "memory://ensdef-test/x"  # URIs are kept as given


def test_one_changed_byte_is_refused_by_load_verify_and_cli(tmp_path: Path, capsys) -> None:
    store = ArtifactStore(tmp_path)
    _save(store, "good")
    _save(store, "tampered")
    f = tmp_path / "tampered" / "weights.pt"
    data = bytearray(f.read_bytes())
    data[len(data) // 2] ^= 0x01
    f.write_bytes(bytes(data))
    with pytest.raises(IntegrityError, match="artifact 'tampered'.*sha256"):
        store.load_model("tampered")
    store.load_model("good")
    res = {r.name: r for r in (store.verify(n) for n in store.names())}
    assert res["good"].ok and not res["tampered"].ok and "tampered" in res["tampered"].message
    code = main(["artifacts", "verify", "--store", str(tmp_path), "--json"])
    out = json.loads(capsys.readouterr().out)
    assert code != 0
    assert {r["name"]: r["ok"] for r in out} == {"good": True, "tampered": False}


def test_missing_weight_file_and_unknown_artifact(tmp_path: Path) -> None:
    store = ArtifactStore(tmp_path)
    _save(store)
    (tmp_path / "verifier-lenet" / "weights.pt").unlink()
    with pytest.raises(IntegrityError, match="missing"):
        store.load_model("verifier-lenet")
    with pytest.raises(FileNotFoundError, match="artifact 'nope' not found"):
        store.load_model("nope")


def test_json_artifacts_are_hashed(tmp_path: Path) -> None:
    store = ArtifactStore(tmp_path)
    store.save_json("teams", {"teams": [[0, 1, 2]]})
    assert store.load_json("teams") == {"teams": [[0, 1, 2]]}
    (tmp_path / "teams" / "data.json").write_text('{"teams": [[0, 1, 3]]}')
    with pytest.raises(IntegrityError):
        store.load_json("teams")


def test_import_torchscript_and_state_dict_targets(tmp_path: Path, capsys) -> None:
    with seeded(0):
        model = build("cnn6", (1, 28, 28)).eval()
    ts = tmp_path / "mine.ts"
    torch.jit.trace(model, torch.rand(1, 1, 28, 28)).save(str(ts))
    sd = tmp_path / "mine.pt"
    torch.save(model.state_dict(), sd)
    store_dir = tmp_path / "store"
    assert main(["artifacts", "import", str(ts), "--store", str(store_dir), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["format"] == "torchscript" and out["role"] == "target" and 0 <= out["metrics"]["test_accuracy"] <= 1
    assert (
        main(
            [
                "artifacts",
                "import",
                str(sd),
                "--architecture",
                "cnn6",
                "--name",
                "target-sd",
                "--store",
                str(store_dir),
                "--json",
            ]
        )
        == 0
    )
    capsys.readouterr()
    store = ArtifactStore(store_dir)
    x = torch.rand(3, 1, 28, 28, generator=make_generator(1))
    a, _ = store.load_model("target")
    b, _ = store.load_model("target-sd")
    assert torch.allclose(a(x), model(x), atol=1e-5) and torch.allclose(b(x), model(x), atol=1e-6)
    assert main(["artifacts", "verify", "--store", str(store_dir)]) == 0


def test_import_rejects_a_model_with_the_wrong_output(tmp_path: Path) -> None:
    bad = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(784, 3))
    ts = tmp_path / "bad.ts"
    torch.jit.trace(bad, torch.rand(1, 1, 28, 28)).save(str(ts))
    assert main(["artifacts", "import", str(ts), "--store", str(tmp_path / "s")]) == 2


def test_artifacts_copy_checks_hashes_and_copies_a_pool_with_its_selection(
    random_store, tmp_path: Path, capsys
) -> None:
    src, _ = random_store
    dst = tmp_path / "copy"
    argv = ["artifacts", "copy", "--from", src.root, "--store", str(dst), "--preset", str(FIXTURES / "tiny.yaml")]
    assert main([*argv, "--pool", "verifiers", "target", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    copied = ArtifactStore(dst)
    assert {r["name"] for r in out} == {
        "target",
        "teams-verifiers",
        *(n for n in src.names() if n.startswith("verifier-")),
    }
    for n in copied.names():
        assert copied.manifest(n) == src.manifest(n) and copied.verify(n).ok
    assert copied.load_json("teams-verifiers") == src.load_json("teams-verifiers")
    det = ArtifactStore(tmp_path / "det")  # a JSON artifact brings the models it names (DeT's reformer list)
    listed = src.load_json("det-reformer-list")
    assert det.copy_from(src, "det-reformer-list") == ["det-reformer-list", *sorted(listed["list"])]
    assert all(det.verify(n).ok for n in listed["list"]) and det.load_json("det-reformer-list") == listed
    bad = tmp_path / "bad"
    _save(ArtifactStore(bad), "good")
    data = bytearray((bad / "good" / "weights.pt").read_bytes())
    data[len(data) // 2] ^= 0x01
    (bad / "good" / "weights.pt").write_bytes(bytes(data))
    with pytest.raises(IntegrityError, match="sha256"):
        copied.copy_from(ArtifactStore(bad), "good")
    assert main(["artifacts", "copy", "--from", str(bad), "--store", str(dst), "missing"]) == 2
    assert "not found" in capsys.readouterr().err
