"""``ensdef`` command line: thin shells that parse arguments, call the library and print.

Every command takes ``--json`` for machine-readable output on stdout; logs go to stderr. An expected error
(:class:`~ensdef.errors.EnsdefError`) prints its message and exits 2; ``-v`` adds the traceback.
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import threading
import traceback
from typing import Any

from ensdef.cli.command import Command, plugin_commands
from ensdef.errors import EnsdefError
from ensdef.registry import Registry

__all__ = ["build_parser", "commands", "configure_logging", "main"]


def commands() -> Registry[Command]:
    """The library's commands, then every installed layer's (a name taken twice is an error)."""
    from ensdef.cli import library, studies

    out: Registry[Command] = Registry("command")
    for c in [*library.COMMANDS.values(), *studies.COMMANDS.values(), *plugin_commands()]:
        out.add(c.name, c)
    return out


def build_parser(cmds: Registry[Command] | None = None) -> argparse.ArgumentParser:
    cmds = cmds if cmds is not None else commands()
    p = argparse.ArgumentParser(prog="ensdef", description=__doc__)
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging, and tracebacks with errors")
    sub = p.add_subparsers(dest="cmd", required=True)
    groups: dict[str, Any] = {}
    for c in cmds.values():
        word, _, rest = c.name.partition(" ")
        if rest:
            if word not in groups:
                groups[word] = sub.add_parser(word, help=f"{word} commands").add_subparsers(dest="sub", required=True)
            sp = groups[word].add_parser(rest, help=c.help)
        else:
            sp = sub.add_parser(word, help=c.help)
        sp.add_argument("--json", action="store_true", help="machine-readable output")
        c.arguments(sp)
        sp.set_defaults(command=c.name)
    return p


def render(result: Any) -> str:
    if isinstance(result, list):
        return "\n".join(render(r) for r in result)
    if isinstance(result, dict):
        return "  ".join(f"{k}={json.dumps(v) if isinstance(v, dict | list) else v}" for k, v in result.items())
    return str(result)


QUIET_UNLESS_VERBOSE = ("art",)
"""Libraries whose INFO lines drown ours: ART logs every attack batch ("Success rate of attack", by its own
count, not the harness's) and its C&W L0 attack formats arrays into a logging error; without ``-v`` they
log warnings and errors only (their progress bars stay)."""


def configure_logging(verbose: bool) -> None:
    """Logs to stderr: DEBUG with ``verbose``, else INFO, with :data:`QUIET_UNLESS_VERBOSE` at WARNING."""
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    for name in QUIET_UNLESS_VERBOSE:
        logging.getLogger(name).setLevel(logging.NOTSET if verbose else logging.WARNING)


def main(argv: list[str] | None = None) -> int:
    # Ctrl-C and SIGINT stop every command, also one started where SIGINT is ignored (a background job of a
    # script): long jobs save their work as they go and resume (training keeps every finished member).
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, signal.default_int_handler)
    cmds = commands()
    args = build_parser(cmds).parse_args(argv)
    configure_logging(args.verbose)
    try:
        result, code = cmds[args.command].run(args)
    except (EnsdefError, ConnectionError) as e:
        if args.verbose:
            traceback.print_exc(file=sys.stderr)
        if getattr(args, "json", False):
            print(json.dumps({"error": str(e), "type": type(e).__name__}))
        else:
            print(f"ensdef: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("ensdef: interrupted; finished work is kept (run the command again to continue)", file=sys.stderr)
        return 130
    print(json.dumps(result, indent=2) if args.json else render(result))
    return code
