"""``edge eval faces | detect | classify``: accuracy figures on the user's own data, printed as JSON."""

from __future__ import annotations

import importlib

#: ``edge eval`` sub-command modules (``edge.cli.eval_<name>`` with ``add_parser(subparsers)``).
EVAL_MODULES = ("eval_faces", "eval_detect", "eval_classify")


def add_parser(sub) -> None:
    p = sub.add_parser("eval", help="measure a model's accuracy on labelled data (JSON output)")
    esub = p.add_subparsers(dest="eval_command", metavar="WHAT")
    esub.required = True
    for name in EVAL_MODULES:
        full = f"edge.cli.{name}"
        try:
            importlib.import_module(full).add_parser(esub)
        except ModuleNotFoundError as e:
            if e.name != full:
                raise
