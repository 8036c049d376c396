"""API keys: each maps to a client name; only their SHA-256 digests are configured or kept.

Keys are random tokens of 256 bits (:func:`new_key`), so a plain digest is enough to keep them secret at rest
(no slow password hash is needed against guessing); lookup is by digest, which leaks nothing useful about a key
through timing.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from collections.abc import Mapping

from ensdef.errors import ConfigError

PREFIX = "ensdef_"
_DIGEST = re.compile(r"^[0-9a-f]{64}$")
_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")


def digest(key: str) -> str:
    """The hex SHA-256 of a key (any string; non-ASCII is encoded as UTF-8 with replacement)."""
    return hashlib.sha256(key.encode("utf-8", "replace")).hexdigest()


def new_key() -> tuple[str, str]:
    """A fresh key and its digest: ``(key, sha256 hex)``; only the digest goes into the serve config."""
    key = PREFIX + secrets.token_urlsafe(32)
    return key, digest(key)


class ApiKeys:
    """Digest -> client name. Empty: open mode (clients name themselves)."""

    def __init__(self, clients: Mapping[str, str] | None = None) -> None:
        """``clients``: client name -> key digest (hex SHA-256). Names are 1 to 64 characters of
        ``[A-Za-z0-9_.-]``; every digest is distinct."""
        self._by_digest: dict[str, str] = {}
        for name, d in (clients or {}).items():
            if not _NAME.match(name):
                raise ConfigError(f"api key client name {name[:70]!r} must be 1 to 64 characters of [A-Za-z0-9_.-]")
            d = str(d).lower()
            if not _DIGEST.match(d):
                raise ConfigError(f"api key of {name!r}: give the key's SHA-256 hex digest (64 hex digits)")
            if d in self._by_digest:
                raise ConfigError(f"clients {self._by_digest[d]!r} and {name!r} share one api key")
            self._by_digest[d] = name

    @property
    def enabled(self) -> bool:
        return bool(self._by_digest)

    def client(self, presented: str | None) -> str | None:
        """The client a presented key belongs to, or None (missing or unknown key)."""
        if not presented:
            return None
        return self._by_digest.get(digest(presented))


def presented_key(authorization: str | None, api_key: str | None) -> str | None:
    """The key of a request: ``Authorization: Bearer <key>`` or an ``X-API-Key`` header (gRPC metadata
    ``authorization`` / ``x-api-key``)."""
    if api_key:
        return api_key.strip()
    if authorization and authorization[:7].lower() == "bearer ":
        return authorization[7:].strip()
    return None
