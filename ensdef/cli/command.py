"""What a command is, the options commands share, and where commands come from: the library's own
(:mod:`ensdef.cli.library`, :mod:`ensdef.cli.studies`) plus those that installed layers register under the
``ensdef.commands`` entry-point group (``serve`` from ``deployments``, ``tune`` and ``tune-teams`` from
``tune``), so the library never imports the Ray layers."""

from __future__ import annotations

import argparse
import logging
from collections.abc import Callable
from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import Any

from ensdef.errors import NotInstalled
from ensdef.registry import Registry

log = logging.getLogger(__name__)
ENTRY_POINTS = "ensdef.commands"
Result = tuple[Any, int]  # (what to print, exit code)


@dataclass(frozen=True)
class Command:
    """``name`` is one word or two (``"train"``, ``"artifacts verify"``); ``arguments`` adds its options to
    its parser; ``run`` returns the result to print and the exit code."""

    name: str
    help: str
    arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], Result]


def command(into: Registry[Command], name: str, help: str, arguments: Callable[[argparse.ArgumentParser], None]):  # noqa: A002
    """Decorator: ``run`` becomes :class:`Command` ``name`` in ``into``."""

    def deco(run: Callable[[argparse.Namespace], Result]) -> Command:
        return into.add(name, Command(name, help, arguments, run))

    return deco


def plugin_commands() -> list[Command]:
    """Commands registered by installed layers (entry-point group ``ensdef.commands``; each entry names a
    :class:`Command` or a list of them). A layer that fails to import is logged and left out."""
    out: list[Command] = []
    for ep in entry_points(group=ENTRY_POINTS):
        try:
            loaded = ep.load()
        except Exception as e:  # noqa: BLE001 - a broken optional layer must not take the whole CLI down
            log.warning("command %s (%s) is unavailable: %s", ep.name, ep.value, e)
            continue
        out += loaded if isinstance(loaded, list) else [loaded]
    return out


def plugin(group: str, name: str) -> Any:
    """The object an installed layer registers as ``name`` in entry-point group ``group``."""
    found = [ep for ep in entry_points(group=group) if ep.name == name]
    if not found:
        raise NotInstalled(f"no {group} entry named {name!r}: is its layer installed (pip install ensdef)?")
    return found[0].load()


# --- options shared by commands -----------------------------------------------------------------------
def preset_store(p: argparse.ArgumentParser, store_required: bool = True) -> None:
    p.add_argument("--preset", default="mnist5k", help="a shipped preset's name or a YAML file")
    p.add_argument("--store", required=store_required, help="artifact store folder or fsspec URI")


def data_args(p: argparse.ArgumentParser, download: bool = True) -> None:
    p.add_argument("--data-root", default=None, help="folder with torchvision dataset files")
    if download:
        p.add_argument("--download", action="store_true", help="allow torchvision to download missing files")


def finetune_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--finetune-from",
        default=None,
        help="a store whose members start each member of the same name (fine-tuning; the preset's finetune_from)",
    )


def device_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--device", default="cpu", help="where members compute: cpu, cuda, cuda:N or auto (CUDA when present)"
    )


def ray_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--address", help="Ray address (local: a new local Ray); default: a running cluster, else a new one")
    p.add_argument("--num-cpus", type=float, default=None, help="CPUs of a new local Ray")


def csv(value: str | None) -> tuple[str, ...] | None:
    return None if value is None else tuple(v for v in value.split(",") if v)
