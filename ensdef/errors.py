"""Expected errors: every failure a user can cause or fix (a bad config, a store missing what a command needs,
an unknown name, a refused input) is an :class:`EnsdefError`. The command line prints its message (with the
traceback under ``-v``); the service answers it as a 4xx (or 503 for :class:`QuorumLost`). Anything else is
a bug and keeps its traceback.

Each class also derives from the builtin it refines, so ``except ValueError`` and the like keep working.
"""

from __future__ import annotations


class EnsdefError(Exception):
    """Base of ensdef's expected errors; ``str(e)`` is a short message for the user."""


class ConfigError(EnsdefError, ValueError):
    """A configuration file or mapping does not match its schema."""


class UnknownName(EnsdefError, KeyError):
    """A name that no registry holds (a defense, attack, model, command, ...)."""

    def __str__(self) -> str:  # KeyError's str() would quote the message
        return str(self.args[0]) if self.args else ""


class NotTrained(EnsdefError, FileNotFoundError):
    """The artifact store lacks what the command needs; the message says which command makes it."""


class IntegrityError(EnsdefError, RuntimeError):
    """A stored weight file does not match its manifest's sha256."""


class InvalidInput(EnsdefError, ValueError):
    """Images the service or the command line refuses; the message is returned to the client."""


class TooLarge(InvalidInput):
    """A payload over the byte limit (HTTP 413)."""


class RetryLater(EnsdefError):
    """Refused for now: ``retry_after_s`` (at least 1) says when to try again (HTTP ``Retry-After``)."""

    def __init__(self, message: str, retry_after_s: int) -> None:
        super().__init__(message)
        self.retry_after_s = max(1, int(retry_after_s))


class QuorumLost(EnsdefError, RuntimeError):
    """Too few members answered for a trustworthy vote (HTTP 503 / gRPC UNAVAILABLE)."""


class InvalidModel(EnsdefError, ValueError):
    """A model a user brings does not fit (wrong outputs, shape or architecture)."""


class NotInstalled(EnsdefError, RuntimeError):
    """An optional layer (the Ray layers of ``serve``, ``tune``, ``evaluate --workers``) is not installed."""
