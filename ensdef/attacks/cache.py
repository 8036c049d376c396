"""Attack cache in the artifact store: adversarial examples and scored cells, keyed by everything that
determines them (attack name and parameters, image indices, seeds, and the sha256 of every model involved),
so a rerun reuses them and any retrained model or changed budget misses the cache."""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable
from typing import Any

import torch

from ensdef.rng import seeded_libraries
from ensdef.store import ArtifactStore

log = logging.getLogger(__name__)


def cache_key(parts: dict[str, Any]) -> str:
    """A stable 20-hex-digit digest of ``parts`` (JSON with sorted keys)."""
    blob = json.dumps(parts, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:20]


def module_digest(model: torch.nn.Module) -> str:
    """sha256 of a module's state (parameters and buffers, in order): identifies a member built in memory,
    such as an exported sampled network or classifier o reformer."""
    h = hashlib.sha256()
    for k, v in model.state_dict().items():
        h.update(k.encode())
        h.update(v.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:20]


class AttackCache:
    """Get-or-make for tensors and JSON results. ``enabled=False`` always makes (and never writes). ``make``
    runs with torch's and numpy's global RNGs seeded from the key, so a result depends on its key only, not
    on what ran before it in the process (or on which worker ran it)."""

    def __init__(self, store: ArtifactStore, enabled: bool = True) -> None:
        self.store, self.enabled = store, enabled
        self.hits = self.misses = 0

    def model_hashes(self, names: list[str]) -> dict[str, str]:
        return {n: self.store.manifest(n).sha256 for n in names}

    def _get(
        self,
        kind: str,
        parts: dict[str, Any],
        make: Callable[[], Any],
        has: Callable[[str], bool],
        load: Callable[[str], Any],
        save: Callable[[str, Any], Any],
    ) -> Any:
        key = cache_key({"kind": kind, **parts})
        name = f"cache-{kind}-{key}"
        if self.enabled and has(name):
            self.hits += 1
            return load(name)
        self.misses += 1
        with seeded_libraries(int(key, 16)):  # ART's random starts draw from np.random: same key, same result
            out = make()
        if self.enabled:
            save(name, out)
        return out

    def tensors(
        self, kind: str, parts: dict[str, Any], make: Callable[[], dict[str, torch.Tensor]]
    ) -> dict[str, torch.Tensor]:
        s = self.store
        return self._get(kind, parts, make, s.has_tensors, s.load_tensors, s.save_tensors)

    def result(self, kind: str, parts: dict[str, Any], make: Callable[[], dict[str, Any]]) -> dict[str, Any]:
        s = self.store
        return self._get(kind, parts, make, s.has_json, s.load_json, s.save_json)
