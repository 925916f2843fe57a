"""Argument types for the ``ptoemu`` commands: a bad value is a usage error (exit 2) naming the
flag and what it expects, never a traceback or a silently absurd run. Output files are checked
before any work (``unwritable``) and written inside ``output`` (a write that fails after the work
is a message naming the flag, exit 2, not a traceback that loses what was printed)."""

from __future__ import annotations

import argparse
import math
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager


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


def unwritable(path: str | os.PathLike) -> str | None:
    """Why no file can be written at ``path`` (None when one can): a directory, a missing or
    read-only directory, or a file that cannot be opened for writing -- checked by opening it to
    append (nothing is truncated; a file the check created is removed again). A full device shows
    only when the file is written: see ``output``."""
    p = os.fspath(path)
    if os.path.isdir(p):
        return "is a directory; expected a file name"
    d = os.path.dirname(os.path.abspath(p))
    if not os.path.isdir(d):
        return f"directory {d} does not exist"
    if not os.access(d, os.W_OK) and not os.path.exists(p):
        return f"directory {d} is not writable"
    existed = os.path.exists(p)
    try:
        with open(p, "a"):
            pass
    except OSError as e:
        return f"cannot open it for writing ({e.strerror or e})"
    finally:
        if not existed and os.path.exists(p):
            os.unlink(p)
    return None


class OutputError(Exception):
    """An output file the command was asked for could not be written: a message, exit code 2."""


@contextmanager
def output(path: str | os.PathLike, flag: str) -> Iterator[None]:
    """Write an output file inside this: an OSError (a full device, say) becomes an OutputError
    naming the flag and the file."""
    try:
        yield
    except OSError as e:
        raise OutputError(f"argument {flag}: could not write {os.fspath(path)}: {e.strerror or e}") from e
