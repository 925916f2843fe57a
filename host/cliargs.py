"""Argument types for the ``ptoemu`` commands: a bad value is a usage error (exit 2) naming the
flag and what it expects, never a traceback or a silently absurd run."""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable


def count(lo: int = 1, hi: int | None = None) -> Callable[[str], int]:
    """An int in [lo, hi]."""
    def parse(text: str) -> int:
        try:
            v = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if v < lo or (hi is not None and v > hi):
            want = f">= {lo}" if hi is None else f"in {lo}..{hi}"
            raise argparse.ArgumentTypeError(f"expected an integer {want}, got {v}")
        return v
    parse.__name__ = "integer"
    return parse


def number(lo: float = 0.0, hi: float = math.inf, open_lo: bool = False) -> Callable[[str], float]:
    """A finite float in [lo, hi] (or (lo, hi] with ``open_lo``)."""
    def parse(text: str) -> float:
        try:
            v = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
        if not math.isfinite(v) or v < lo or (open_lo and v == lo) or v > hi:
            raise argparse.ArgumentTypeError(f"expected a finite number {'>' if open_lo else '>='} {lo:g}"
                                             + (f" and <= {hi:g}" if hi != math.inf else "") + f", got {text}")
        return v
    parse.__name__ = "number"
    return parse


def listed(item: Callable[[str], float | int]) -> Callable[[str], list]:
    """A comma-separated list of ``item`` values (at least one)."""
    def parse(text: str) -> list:
        parts = [x.strip() for x in text.split(",")]
        if not all(parts):
            raise argparse.ArgumentTypeError(f"expected a comma-separated list, got {text!r}")
        return [item(x) for x in parts]
    parse.__name__ = "list"
    return parse
