"""The ``edge`` command line. Library errors become messages and exit codes here, and only here."""

from __future__ import annotations

import argparse
import logging
import sys

from edge import __version__
from edge.errors import EdgeError

#: Exit codes shared by every sub-command.
EXIT_OK, EXIT_FAIL, EXIT_ERROR = 0, 1, 2


#: Sub-command modules, each with ``add_parser(subparsers)``; imported in this order. A module
#: that is not present (a feature not installed) is skipped.
COMMAND_MODULES = ("models_cmd", "run_cmd", "demo_cmd", "unlock_cmd", "detect_cmd", "eval_cmd",
                   "bench_cmd", "bundle_cmd", "info_cmd", "serve_cmd", "selftest_cmd", "release_cmd")


def _command_modules():
    import importlib

    for name in COMMAND_MODULES:
        full = f"edge.cli.{name}"
        try:
            yield importlib.import_module(full)
        except ModuleNotFoundError as e:
            if e.name != full:
                raise


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="edge", description="edgesight device runtime")
    parser.add_argument("--version", action="version", version=f"edgesight {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for module in _command_modules():
        module.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # --help, --version, or a bad option (argparse printed why): a code, like any error
        return e.code if isinstance(e.code, int) else EXIT_ERROR
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except (EdgeError, KeyError, ValueError, ImportError, FileNotFoundError) as e:
        msg = e.args[0] if isinstance(e, KeyError) and e.args else str(e)
        print(f"edge {args.command}: error: {msg}", file=sys.stderr)
        return EXIT_ERROR


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
