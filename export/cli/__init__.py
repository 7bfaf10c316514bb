"""The ``edge-export`` command line (workstation)."""

from __future__ import annotations

import argparse
import sys

from export import __version__


#: Sub-command modules (``export.cli.<name>`` with ``add_parser(subparsers)``), in help order.
COMMAND_MODULES = ("classifier", "convert", "build", "keygen", "liveness", "profiles", "flash")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="edge-export", description="edgesight workstation export tool-chain")
    parser.add_argument("--version", action="version", version=f"edgesight {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    import importlib

    for name in COMMAND_MODULES:
        full = f"export.cli.{name}"
        try:
            module = importlib.import_module(full)
        except ModuleNotFoundError as e:
            if e.name != full:
                raise
            continue
        module.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    from edge.errors import EdgeError

    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except (ValueError, FileNotFoundError, ImportError, RuntimeError, EdgeError) as e:
        print(f"edge-export {args.command}: error: {e}", file=sys.stderr)
        return 2
