"""Direction sanitizer (``Device(..., sanitize=True)``): catch kernels that break In / Out / InOut.

    scheduler, at dispatch     TaskCheck: poison every Out region (NaN for floating dtypes, 0xA5
                               bytes else); checksum every In region
    worker, while running      In views are read-only: a write raises inside the kernel
    scheduler, per SPMD block  blocks of a multi-block task run one at a time; after each, the
                               Out / InOut elements it changed go into a write map: an element
                               two blocks wrote is an overlap (on the chip they race)
    scheduler, at completion   any Out element still poisoned -> the kernel left it unwritten, or
                               computed it from an Out it read (NaN spreads); an In whose checksum
                               changed -> the kernel wrote it behind the read-only view
                               (``setflags(write=True)``, a raw pointer); reported
    worker, on a read-only     the In argument written is named from the kernel's frame
    error

A violation is a kernel failure: the run stops with ``DirectionViolation`` (a ``KernelError``)
naming the task, the kernel, the argument and what happened. A wrong direction otherwise gives a
plausible number (an In that is written races with its readers; an Out that is read sees stale
data), which is exactly what this mode is for. Poisoning happens once per task, before any of its
parts starts, so the parts of a mixed task can share outputs (and are one unit for the write map).

Bytes a task declares both In and Out (overlapping arguments) are not checksummed -- the task
writes them -- and an Out left poisoned there is blamed on the overlap: the In read what Out said
is undefined. Start-together SPMD tasks (``sync_start=True``) keep their blocks concurrent (they
may wait for each other), so they get no write map. The inline engine runs the same checks.
"""

from __future__ import annotations

import inspect
import linecache
import zlib
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


def _checksum(arr: np.ndarray) -> int:
    return zlib.crc32(np.ascontiguousarray(arr).view(np.uint8)) if arr.size else 0


def _describe(i: int, names: list[str], arr: np.ndarray) -> str:
    return f"{i} ({names[i]}, {arr.shape} {arr.dtype})"


class TaskCheck:
    """The sanitizer's watch over one task, from its dispatch to its completion."""

    def __init__(self, arrays: list[np.ndarray], dirs: list[int], blocks: int = 1, reference: bool = False) -> None:
        poison_outs(arrays, dirs)
        self.reference = reference          # semantics="reference": unordered tasks may race
        ins = [i for i, d in enumerate(dirs) if d == C.DIR_IN]
        writes = [i for i, d in enumerate(dirs) if d != C.DIR_IN]
        # In arguments over bytes this task also writes: (in, out) pairs; their change is expected
        self.aliased = [(i, j) for i in ins for j in writes if np.may_share_memory(arrays[i], arrays[j])]
        skip = {i for i, _ in self.aliased}
        self.in_sums = {i: _checksum(arrays[i]) for i in ins if i not in skip}
        self.blocks = blocks
        self.overlaps: list[tuple[int, str]] = []     # (argument, what two blocks did)
        # SPMD write map: per written argument, its bytes after the last block and the block
        # that last changed each element (-1: none yet)
        self.wmap = ({j: (_bytes_of(arrays[j]), np.full(arrays[j].size, -1, np.int32)) for j in writes}
                     if blocks > 1 else {})

    def block_done(self, block: int, arrays: list[np.ndarray]) -> None:
        """Block ``block`` (of a task whose blocks run one at a time) has finished."""
        for j, (before, owner) in self.wmap.items():
            now = _bytes_of(arrays[j])
            changed = (now != before).any(axis=1) if now.size else np.zeros(0, bool)
            clash = np.flatnonzero(changed & (owner >= 0) & (owner != block))
            if clash.size and len(self.overlaps) < 4:
                k = int(clash[0])
                idx = np.unravel_index(k, arrays[j].shape) if arrays[j].ndim else ()
                self.overlaps.append(
                    (j, f"blocks {int(owner[k])} and {block} both wrote element {tuple(map(int, idx))} "
                        f"({clash.size} element(s) in all)"))
            owner[changed] = block
            self.wmap[j] = (now, owner)

    def problems(self, arrays: list[np.ndarray], dirs: list[int], names: list[str]) -> list[str]:
        """Everything wrong with the task once it has finished (empty: nothing)."""
        out = []
        for i, s in self.in_sums.items():
            if _checksum(arrays[i]) != s:
                out.append(f"In argument {_describe(i, names, arrays[i])} changed while the task ran: the "
                           "kernel wrote it around its read-only view (setflags(write=True), a raw pointer) "
                           "although it declared it read-only"
                           + (" -- or, under semantics='reference', a task the reference's rules leave "
                              "unordered with this one wrote it meanwhile (a race)" if self.reference else ""))
        seen = set()
        for j, what in self.overlaps:
            if j not in seen:
                seen.add(j)
                out.append(f"{C.DIR_NAMES[dirs[j]]} argument {_describe(j, names, arrays[j])}: {what}; the "
                           f"{self.blocks} blocks of an SPMD task run in parallel, so overlapping writes race -- "
                           "give each block its own part (core_info().block_idx)")
        alias = dict((j, i) for i, j in self.aliased)
        for j, (a, d) in enumerate(zip(arrays, dirs)):
            if d != C.DIR_OUT:
                continue
            n = poisoned(a)
            if n and j in alias:
                i = alias[j]
                out.append(f"Out argument {_describe(j, names, a)} overlaps In argument "
                           f"{_describe(i, names, arrays[i])} of the same task, and {n} of its {a.size} elements "
                           "still hold the poison written before the kernel ran: Out says its old contents are "
                           "undefined, so the In read poison there; declare those bytes once, as InOut")
            elif n:
                out.append(_unwritten(j, names, a, n))
        return out


def _bytes_of(arr: np.ndarray) -> np.ndarray:
    """A copy of an array's elements as rows of bytes (NaN compares by its bits)."""
    return np.ascontiguousarray(arr).reshape(-1).view(np.uint8).reshape(arr.size, arr.dtype.itemsize).copy()


def _unwritten(i: int, names: list[str], a: np.ndarray, n: int) -> str:
    return (f"Out argument {_describe(i, names, a)}: {n} of {a.size} elements still hold the poison written "
            "before the kernel ran -- the kernel left them unwritten or computed them from an Out argument "
            "it read")


def unwritten_outs(arrays: list[np.ndarray], dirs: list[int], names: list[str]) -> list[str]:
    out = []
    for i, (a, d) in enumerate(zip(arrays, dirs)):
        if d == C.DIR_OUT:
            n = poisoned(a)
            if n:
                out.append(_unwritten(i, names, a, n))
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
