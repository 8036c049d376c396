"""The artifact store: one folder per trained model (weights + manifest.json), on any fsspec filesystem.

Every load recomputes the sha256 of the weight bytes and refuses a mismatch; state dicts load with
``weights_only=True``. Non-model artifacts (team selections, attack caches) are JSON or tensor files in
folders of their own, hashed the same way.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import io
import json
import logging
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any

import fsspec
import torch
from fsspec.implementations.local import LocalFileSystem
from torch import nn

import ensdef
from ensdef.config import from_mapping, to_plain
from ensdef.errors import IntegrityError, InvalidModel, NotTrained
from ensdef.models import build
from ensdef.types import Role

log = logging.getLogger(__name__)

MANIFEST = "manifest.json"
SCHEMA_VERSION = 1
# names of the stored JSON artifacts that are not models
TEAMS_ARTIFACT = "teams-verifiers"  # MODEF's team selection (``ensdef select`` / ``ensdef tune-teams``)
TUNED = "tuned"  # a team-selection sweep's record inside TEAMS_ARTIFACT
DET_LIST_ARTIFACT = "det-reformer-list"  # DeT's preliminary reformer and reformer list


class WeightFormat(str, Enum):
    STATE_DICT = "state_dict"  # weights.pt, loaded into a registered architecture
    TORCHSCRIPT = "torchscript"  # model.ts, a user's own scripted classifier


WEIGHT_FILE = {WeightFormat.STATE_DICT: "weights.pt", WeightFormat.TORCHSCRIPT: "model.ts"}


@dataclass(frozen=True)
class Manifest:
    """What a stored model is and how it was made. ``sha256`` covers the weight file's bytes."""

    name: str
    role: Role
    architecture: str
    dataset: str
    input_shape: tuple[int, ...]
    num_classes: int
    sha256: str
    format: WeightFormat = WeightFormat.STATE_DICT
    train_config: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)
    code_version: str = ""
    created: str = ""
    schema: int = SCHEMA_VERSION


def code_version() -> str:
    """``ensdef`` version plus the git commit of the source tree when there is one."""
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=Path(__file__).parent,
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        sha = ""
    return f"{ensdef.__version__}+{sha}" if sha else ensdef.__version__


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@dataclass(frozen=True)
class VerifyResult:
    name: str
    ok: bool
    message: str


class ArtifactStore:
    """A directory of artifacts: a local path or any fsspec URI (``s3://...``, ``gs://...``)."""

    def __init__(self, root: str | Path) -> None:
        self.fs, self._base = fsspec.core.url_to_fs(str(root))
        # a local folder is kept as its absolute path: a process that runs in another folder (a Tune trial runs
        # in its own) must read and write the same store, not a new one under its working directory
        self.root = self._base if isinstance(self.fs, LocalFileSystem) else str(root)
        self._recording: list[dict[str, str]] = []

    @contextlib.contextmanager
    def recording(self) -> Iterator[dict[str, str]]:
        """Collect ``name -> sha256`` of every model and JSON artifact loaded inside the block (what a
        defense is made of; the evaluation cache keys on it)."""
        used: dict[str, str] = {}
        self._recording.append(used)
        try:
            yield used
        finally:
            self._recording.remove(used)

    def _record(self, name: str, digest: str) -> None:
        for used in self._recording:
            used[name] = digest

    def _path(self, *parts: str) -> str:
        return "/".join([self._base.rstrip("/"), *parts])

    def _write(self, path: str, data: bytes) -> None:
        self.fs.makedirs(path.rsplit("/", 1)[0], exist_ok=True)
        with self.fs.open(path, "wb") as f:
            f.write(data)

    def _read(self, path: str) -> bytes:
        with self.fs.open(path, "rb") as f:
            return f.read()

    # --- listing -------------------------------------------------------------------------------------
    def names(self) -> list[str]:
        """Names of stored models (folders holding a manifest), sorted."""
        if not self.fs.exists(self._base):
            return []
        out = [p.rstrip("/").rsplit("/", 1)[-1] for p in self.fs.ls(self._base, detail=False)]
        return sorted(n for n in out if self.fs.exists(self._path(n, MANIFEST)))

    def exists(self, name: str) -> bool:
        return self.fs.exists(self._path(name, MANIFEST))

    def manifest(self, name: str) -> Manifest:
        if not self.exists(name):
            raise NotTrained(f"artifact {name!r} not found in store {self.root}")
        return from_mapping(Manifest, json.loads(self._read(self._path(name, MANIFEST))), f"{name}/{MANIFEST}")

    def by_role(self, role: Role) -> list[Manifest]:
        return [m for m in (self.manifest(n) for n in self.names()) if m.role is role]

    # --- models ----------------------------------------------------------------------------------------
    def save_model(self, model: nn.Module, manifest: Manifest) -> Manifest:
        """Write ``model``'s state dict and a manifest whose ``sha256`` matches the written bytes."""
        buf = io.BytesIO()
        torch.save({k: v.detach().cpu() for k, v in model.state_dict().items()}, buf)
        return self._save_weights(buf.getvalue(), manifest)

    def _save_weights(self, data: bytes, manifest: Manifest) -> Manifest:
        m = Manifest(
            **{
                **to_kwargs(manifest),
                "sha256": sha256_bytes(data),
                "code_version": manifest.code_version or code_version(),
                "created": manifest.created or dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            }
        )
        self._write(self._path(m.name, WEIGHT_FILE[m.format]), data)
        self._write(self._path(m.name, MANIFEST), json.dumps(to_plain(m), indent=2).encode())
        log.info("saved artifact %s (%s, %s)", m.name, m.role.value, m.architecture)
        return m

    def import_torchscript(self, path: str | Path, manifest: Manifest) -> Manifest:
        """Store a user's TorchScript classifier as-is (checked to load and to accept ``input_shape``)."""
        data = Path(path).read_bytes()
        model = torch.jit.load(io.BytesIO(data), map_location="cpu")
        with torch.no_grad():
            out = model(torch.rand(2, *manifest.input_shape))
        if tuple(out.shape) != (2, manifest.num_classes):
            raise InvalidModel(f"{path}: output shape {tuple(out.shape)} is not [B, {manifest.num_classes}]")
        return self._save_weights(data, Manifest(**{**to_kwargs(manifest), "format": WeightFormat.TORCHSCRIPT}))

    def _verified_bytes(self, m: Manifest) -> bytes:
        path = self._path(m.name, WEIGHT_FILE[m.format])
        if not self.fs.exists(path):
            raise IntegrityError(f"artifact {m.name!r}: weight file {path} is missing")
        data = self._read(path)
        digest = sha256_bytes(data)
        if digest != m.sha256:
            raise IntegrityError(
                f"artifact {m.name!r}: sha256 of {WEIGHT_FILE[m.format]} is {digest[:12]}..., manifest says "
                f"{m.sha256[:12]}...; the weights were changed or corrupted, refusing to load"
            )
        return data

    def load_model(self, name: str, device: torch.device | str = "cpu") -> tuple[nn.Module, Manifest]:
        """Load a stored model in eval mode on ``device`` after checking its hash."""
        m = self.manifest(name)
        data = self._verified_bytes(m)
        self._record(name, m.sha256)
        if m.format is WeightFormat.TORCHSCRIPT:
            model: nn.Module = torch.jit.load(io.BytesIO(data), map_location=device)
        else:
            model = build(m.architecture, tuple(m.input_shape), m.num_classes, **m.extra.get("build_kwargs", {}))
            model.load_state_dict(torch.load(io.BytesIO(data), map_location="cpu", weights_only=True))
            model.to(device)
        for p in model.parameters():
            p.requires_grad_(False)
        return model.eval(), m

    def copy_from(self, source: ArtifactStore, name: str) -> list[str]:
        """Copy artifact ``name`` from ``source``: a model (its weights checked against the manifest's sha256,
        the manifest kept as it is) or a JSON artifact (checked against its hash) with every model of
        ``source`` it names (a DeT list's cross-trained reformers). Returns the names copied; raises
        :class:`NotTrained` when ``source`` has no such artifact."""
        if source.exists(name):
            m = source.manifest(name)
            self._save_weights(source._verified_bytes(m), m)
            return [name]
        if not source.has_json(name):
            raise NotTrained(f"artifact {name!r} not found in store {source.root}")
        payload = source.load_json(name)
        self.save_json(name, payload)
        named = sorted({v for v in _strings(payload) if v != name and source.exists(v)})
        return [name, *(n for v in named for n in self.copy_from(source, v))]

    def verify(self, name: str) -> VerifyResult:
        try:
            self._verified_bytes(self.manifest(name))
            return VerifyResult(name, True, "ok")
        except (IntegrityError, FileNotFoundError, ValueError) as e:
            return VerifyResult(name, False, str(e))

    # --- JSON artifacts --------------------------------------------------------------------------------
    def save_json(self, name: str, payload: dict[str, Any]) -> str:
        """Store a JSON artifact (e.g. a team selection) in ``name/data.json`` with its hash beside it."""
        data = json.dumps(payload, indent=2, sort_keys=True).encode()
        self._write(self._path(name, "data.json"), data)
        self._write(self._path(name, "data.sha256"), sha256_bytes(data).encode())
        return self._path(name, "data.json")

    def load_json(self, name: str) -> dict[str, Any]:
        path = self._path(name, "data.json")
        if not self.fs.exists(path):
            raise NotTrained(f"JSON artifact {name!r} not found in store {self.root}")
        data = self._read(path)
        want = self._read(self._path(name, "data.sha256")).decode().strip()
        if sha256_bytes(data) != want:
            raise IntegrityError(f"artifact {name!r}: data.json does not match its sha256; refusing to load")
        self._record(name, want)
        return json.loads(data)

    def has_json(self, name: str) -> bool:
        return self.fs.exists(self._path(name, "data.json"))

    # --- tensor artifacts (attack caches) ----------------------------------------------------------------
    def save_tensors(self, name: str, tensors: dict[str, torch.Tensor]) -> str:
        """Store named tensors in ``name/tensors.pt`` with their sha256 beside them."""
        buf = io.BytesIO()
        torch.save({k: v.detach().cpu() for k, v in tensors.items()}, buf)
        data = buf.getvalue()
        self._write(self._path(name, "tensors.pt"), data)
        self._write(self._path(name, "tensors.sha256"), sha256_bytes(data).encode())
        return self._path(name, "tensors.pt")

    def load_tensors(self, name: str) -> dict[str, torch.Tensor]:
        data = self._read(self._path(name, "tensors.pt"))
        if sha256_bytes(data) != self._read(self._path(name, "tensors.sha256")).decode().strip():
            raise IntegrityError(f"artifact {name!r}: tensors.pt does not match its sha256; refusing to load")
        return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)

    def has_tensors(self, name: str) -> bool:
        return self.fs.exists(self._path(name, "tensors.sha256"))


def to_kwargs(m: Manifest) -> dict[str, Any]:
    return {f: getattr(m, f) for f in m.__dataclass_fields__}


def _strings(v: Any) -> Iterator[str]:
    """Every string inside a JSON value."""
    if isinstance(v, str):
        yield v
    elif isinstance(v, dict):
        for x in v.values():
            yield from _strings(x)
    elif isinstance(v, list):
        for x in v:
            yield from _strings(x)
