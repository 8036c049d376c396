"""Stable versions for member hosts, so that a redeploy restarts only what changed.

Serve gives every deployment of a ``serve.run`` a new random version, so each redeploy replaces every replica:
with ``--train-missing`` that reloaded every trained pool each time another pool finished, on the cores the
training needs. A member host's version here is a digest of what its replicas load and run (the source of
``ensdef`` and ``deployments``, each member's manifest with its weight digest, the constructor arguments): equal
versions keep the running replicas, any change starts new ones. The ingress and the routers keep Serve's random
versions (their arguments name the served defenses, which change with every redeploy anyway). Ray 2.60 removed
the public ``version`` option of ``Deployment.options``; ``deployments.app`` passes it as Serve itself does
internally (``_internal=True``), which ``tests/integration/test_redeploy.py`` checks against the pinned Ray.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import asdict
from functools import cache
from pathlib import Path
from typing import Any

import ensdef
from ensdef.store import ArtifactStore


def tree_digest(*roots: Path) -> str:
    """sha256 over every ``.py`` file under ``roots`` (each file's path below its root's parent, and its bytes)."""
    h = hashlib.sha256()
    for root in roots:
        for f in sorted(root.rglob("*.py")):
            h.update(str(f.relative_to(root.parent)).encode())
            h.update(f.read_bytes())
    return h.hexdigest()


@cache
def source_digest() -> str:
    """:func:`tree_digest` of the ``ensdef`` and ``deployments`` packages, read once per process."""
    return tree_digest(Path(ensdef.__file__).parent, Path(__file__).parent)


def host_version(store: ArtifactStore, members: Sequence[str], args: Sequence[Any]) -> str:
    """The version of a member host that loads ``members`` from ``store`` and is built with ``args`` (plain
    JSON-able values): 16 hex digits, the same exactly when the source, the members' manifests (weight sha256,
    architecture, build arguments) and the arguments are."""
    payload = {
        "source": source_digest(),
        "members": {m: asdict(store.manifest(m)) for m in members},
        "args": list(args),
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:16]
