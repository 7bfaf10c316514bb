"""Command-line value types: every number an option takes is checked where it enters.

argparse calls these with the raw string; raising :class:`argparse.ArgumentTypeError` makes
argparse print ``edge detect: error: argument --nms-iou: must be in [0, 1], got 5`` and exit 2,
so a bad value names the option, what was wrong and what is expected, and never reaches a model.

Example:
    >>> p.add_argument("--nms-iou", type=fraction())                     # doctest: +SKIP
    >>> p.add_argument("--health-port", type=port)                       # doctest: +SKIP
"""

from __future__ import annotations

import argparse
import math

__all__ = ["integer", "number", "fraction", "port", "threads", "size_wxh", "MAX_THREADS", "MAX_SIDE"]

#: More inference threads than any board has cores; engines clamp to the cores in use.
MAX_THREADS = 256
#: Largest width or height of a synthetic or requested frame (a 16k frame is 128 MiB of BGR).
MAX_SIDE = 16384


def _parse_int(text: str) -> int:
    try:
        return int(text, 10)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid whole number {text!r}") from None


def _parse_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid number {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
    return value


def integer(low: int | None = None, high: int | None = None):
    """A whole number in ``[low, high]`` (either bound may be open)."""

    def parse(text: str) -> int:
        value = _parse_int(text)
        if (low is not None and value < low) or (high is not None and value > high):
            raise argparse.ArgumentTypeError(f"must be {_range(low, high)}, got {value}")
        return value

    parse.__name__ = "integer"  # argparse names the type in its own messages
    return parse


def number(low: float | None = None, high: float | None = None, *, low_open: bool = False):
    """A finite number in ``[low, high]``; ``low_open`` excludes ``low`` itself (e.g. a timeout > 0)."""

    def parse(text: str) -> float:
        value = _parse_float(text)
        too_low = low is not None and (value <= low if low_open else value < low)
        if too_low or (high is not None and value > high):
            raise argparse.ArgumentTypeError(f"must be {_range(low, high, low_open)}, got {text}")
        return value

    parse.__name__ = "number"
    return parse


def fraction():
    """A share or probability in [0, 1] (IoU, score, change threshold)."""
    return number(0.0, 1.0)


def _range(low, high, low_open: bool = False) -> str:
    if low is not None and high is not None:
        return f"in {'(' if low_open else '['}{low:g}, {high:g}]"
    if low is not None:
        return f"{'>' if low_open else '>='} {low:g}"
    return f"<= {high:g}"


port = integer(0, 65535)
port.__name__ = "port"
threads = integer(1, MAX_THREADS)
threads.__name__ = "threads"


def size_wxh(text: str) -> tuple[int, int]:
    """``WIDTHxHEIGHT`` with both sides in [1, MAX_SIDE]."""
    w, sep, h = text.lower().partition("x")
    if not sep:
        raise argparse.ArgumentTypeError(f"expected WIDTHxHEIGHT such as 640x480, got {text!r}")
    side = integer(1, MAX_SIDE)
    try:
        return side(w), side(h)
    except argparse.ArgumentTypeError as e:
        raise argparse.ArgumentTypeError(f"{text!r}: each side {e}") from None
