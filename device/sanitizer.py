"""Direction sanitizer (``Device(..., sanitize=True)``): catch kernels that break In / Out / InOut.

    scheduler, at dispatch     poison every Out region: NaN for floating dtypes, 0xA5 bytes else
    worker, while running      In views are read-only: a write raises inside the kernel
    scheduler, at completion   any Out element still poisoned -> the kernel left it unwritten, or
                               computed it from an Out it read (NaN spreads); reported
    worker, on a read-only     the In argument written is named from the kernel's frame
    error

A violation is a kernel failure: the run stops with ``DirectionViolation`` (a ``KernelError``)
naming the task, the kernel, the argument and what happened. A wrong direction otherwise gives a
plausible number (an In that is written races with its readers; an Out that is read sees stale
data), which is exactly what this mode is for. Poisoning happens once per task, before any of its
parts starts, so the parts of a mixed task can share outputs.
"""

from __future__ import annotations

import inspect
import linecache
from collections.abc import Callable

import numpy as np

from device import codec as C

POISON_BYTE = 0xA5


def _floating(dt: np.dtype) -> bool:
    return dt.kind in "fc" or dt.name == "bfloat16"


def _pattern(dt: np.dtype) -> object:
    return np.frombuffer(bytes([POISON_BYTE]) * dt.itemsize, dt)[0]


def poison(arr: np.ndarray) -> None:
    """Fill an Out region with poison (bool regions cannot hold a distinct poison; left alone)."""
    if _floating(arr.dtype):
        arr[...] = np.nan
    elif arr.dtype.kind != "b":
        arr[...] = _pattern(arr.dtype)


def poison_outs(arrays: list[np.ndarray], dirs: list[int]) -> None:
    """Poison every Out argument of a task."""
    for a, d in zip(arrays, dirs):
        if d == C.DIR_OUT:
            poison(a)


def poisoned(arr: np.ndarray) -> int:
    """How many elements of ``arr`` still hold poison."""
    if arr.size == 0 or arr.dtype.kind == "b":
        return 0
    if _floating(arr.dtype):
        return int(np.isnan(arr.astype(np.float32) if arr.dtype.name == "bfloat16" else arr).sum())
    return int((arr == _pattern(arr.dtype)).sum())


def arg_names(fn: Callable, n: int) -> list[str]:
    """Names of the first n positional parameters of a kernel (argN where it takes *args)."""
    names = []
    try:
        for p in inspect.signature(fn).parameters.values():
            if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD):
                names.append(p.name)
    except (TypeError, ValueError):
        pass
    return (names + [f"arg{i}" for i in range(len(names), n)])[:n]


def unwritten_outs(arrays: list[np.ndarray], dirs: list[int], names: list[str]) -> list[str]:
    out = []
    for i, (a, d) in enumerate(zip(arrays, dirs)):
        if d == C.DIR_OUT:
            n = poisoned(a)
            if n:
                out.append(f"Out argument {i} ({names[i]}, {a.shape} {a.dtype}): {n} of {a.size} "
                           "elements still hold the poison written before the kernel ran -- the kernel "
                           "left them unwritten or computed them from an Out argument it read")
    return out


def written_in(exc: BaseException, arrays: list[np.ndarray], dirs: list[int],
               names: list[str]) -> str | None:
    """If ``exc`` is numpy refusing a write into a read-only In view, say which argument."""
    if not isinstance(exc, ValueError) or "read-only" not in str(exc):
        return None
    ins = [i for i, d in enumerate(dirs) if d == C.DIR_IN]
    tb = exc.__traceback__
    frame = None
    while tb is not None:                    # innermost frame that holds one of our In views
        if any(_holds(tb.tb_frame.f_locals, arrays[i]) for i in ins):
            frame = tb
        tb = tb.tb_next
    guess = ins
    if frame is not None:
        line = linecache.getline(frame.tb_frame.f_code.co_filename, frame.tb_lineno)
        named = [i for i in ins if any(v is arrays[i] and k in line
                                       for k, v in frame.tb_frame.f_locals.items())]
        guess = named or [i for i in ins if _holds(frame.tb_frame.f_locals, arrays[i])]
    which = ", ".join(f"{i} ({names[i]}, {arrays[i].shape} {arrays[i].dtype})" for i in guess)
    return f"the kernel wrote to In argument {which}, which it declared read-only"


def _holds(local_vars: dict, arr: np.ndarray) -> bool:
    return any(v is arr for v in local_vars.values())
