"""A member host's version (``deployments.versions``): equal exactly when what its replicas load and run is, so
a redeploy keeps an unchanged pool's replicas and replaces a retrained or rebuilt one's."""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

import torch

from deployments.versions import host_version, source_digest, tree_digest
from ensdef.store import ArtifactStore


def test_equal_for_the_same_weights_and_arguments_different_otherwise(random_store, tmp_path: Path) -> None:
    store, _ = random_store
    members = ["target"]
    args = (str(store.root), members, 8, 0.01, 256, 1)
    v = host_version(store, members, args)
    assert len(v) == 16 and v == host_version(ArtifactStore(store.root), list(members), list(args))
    assert host_version(store, members, (*args[:2], 16, *args[3:])) != v  # another batch size

    retrained = ArtifactStore(tmp_path / "retrained")  # the same member under the same name, other weights
    model, manifest = store.load_model(members[0])
    with torch.no_grad():
        next(model.parameters()).add_(1.0)
    retrained.save_model(model, manifest)
    assert host_version(retrained, members, args) != v

    rebuilt = ArtifactStore(tmp_path / "rebuilt")  # the same weights, built otherwise
    rebuilt.save_model(store.load_model("target")[0], dataclasses.replace(manifest, extra={"build_kwargs": {"x": 1}}))
    assert rebuilt.manifest("target").sha256 == manifest.sha256 and host_version(rebuilt, members, args) != v


def test_a_changed_source_file_changes_the_digest(tmp_path: Path) -> None:
    import deployments

    tree = tmp_path / "deployments"
    shutil.copytree(Path(deployments.__file__).parent, tree)
    before = tree_digest(tree)
    assert before == tree_digest(tree) and len(source_digest()) == 64
    (tree / "member.py").write_text((tree / "member.py").read_text() + "\n# changed\n")
    assert tree_digest(tree) != before
