"""Blocking inside a kernel: the hook through which a kernel part waits for another part (a pipe
slot, an all-block barrier), as the chip's cross-core flags let a core wait for another.

    kernel part (any thread of any device process)          the device (device/waits.py)
    ──────────────────────────────────────────────          ────────────────────────────
    w = waits.current()      ◀── installed per thread ──── a Waiter for the core it runs on
    w.get(i)  / w.set(i, v)      sync words: SYNC_WORDS per core (offsets: claim()), read by
                                 anyone, each written by one core only -- no atomics needed
    w.wait(ready, kind, obj, detail)
                                 block until ready() is true: a bounded yield-spin, then the
                                 core says what it waits on and sleeps on its semaphore
    w.wake(clusters, obj=None)   after a set(): post the semaphore of every core of those
                                 clusters that sleeps in a wait (it looks at its ready() again);
                                 with ``obj``, only those whose wait is on that object (the
                                 others cannot be ready because of this set: no spurious wake-up)
    w.pause()                    a fuzzing point: the schedule fuzzer may delay this part here
    raises WaitAborted           when the run is aborted while a part waits: a kernel error in
                                 another part, an aborted run, the device closing, a stall

A sync object (kernels/pipe.py's TPipe, a barrier) is built from these: counters in sync words,
each with one writer; ``ready`` a function reading the others' counters; a ``wake`` after every
change another part may wait for. ``kind`` is a code registered with ``register_kind`` (its name
and a function describing a wait of that kind), so that a stall names what a core is stuck on:
the stall detector prints ``describe(kind, obj, detail)`` beside the task and core.

The word indices: ``word(core, offset)`` is word ``offset`` of ``core``'s sync words, where a
core is ``3 * cluster + slot``: for a mixed kernel the slot is the part's index (0 = the AIC part,
1 and 2 = the vector parts, whichever vector core a part landed on), for a single-core kernel its
own lane (0 AIC, 1 AIV0, 2 AIV1). Blocks of an SPMD task do not know each other's cores: a sync
object among blocks marks words with the task (``w.task``) and looks at all ``w.ncores``.
Offsets are claimed once at import time by the module that uses them (``claim``), so every
process agrees on them. Sync words are zeroed when a run starts.

This module imports nothing of the device: the device installs an implementation of ``Waits``
in each thread that runs kernel parts (``install``), as it sets ``core_info()``.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from typing import Protocol

__all__ = ["SYNC_WORDS", "WaitAborted", "Waits", "claim", "current", "describe", "install", "register_kind",
           "kinds", "task_end_check", "task_end_checks", "word"]

SYNC_WORDS = 64                 # sync words per core (offsets handed out by claim)
DETAIL_WORDS = 4                # ints a wait may publish about itself


class WaitAborted(RuntimeError):
    """Raised in a kernel part blocked in (or entering) a wait when the run is being aborted: a
    kernel error in another part, the run aborted by the host, the device closing, a stall. The
    part should not catch it: the device reports the first real failure, not this release."""


class Waits(Protocol):
    """What the device gives a kernel part to wait with (device/waits.py ``Waiter``)."""

    core: int           # this part's sync-word core: 3 * cluster + slot
    cluster: int        # the physical block the part runs on
    slot: int           # mixed kernel: 0 = AIC part, 1 / 2 = vector parts; single-core: its lane
    slots: tuple[bool, bool, bool]      # which parts the current task has (AIC, vec 0, vec 1)
    ncores: int         # sync-word cores on this device (3 * blocks)
    task: int           # the task id the part belongs to

    def get(self, i: int) -> int: ...
    def set(self, i: int, value: int) -> None: ...
    def wait(self, ready: Callable[[], bool], kind: int, obj: int, detail: tuple[int, ...] = ()) -> None: ...
    def wake(self, clusters: Iterable[int], obj: int | None = None) -> None: ...
    def pause(self) -> None: ...
    def in_device_memory(self, address: int, nbytes: int) -> bool: ...


class _Local(threading.local):
    waits: Waits | None = None


_tl = _Local()


def install(w: Waits | None) -> None:
    """The device: ``w`` serves the kernel parts this thread runs from now on (None: none)."""
    _tl.waits = w


def current(what: str = "this call") -> Waits:
    """The calling part's Waits; a RuntimeError naming ``what`` outside a device's kernel."""
    w = _tl.waits
    if w is None:
        raise RuntimeError(f"{what} waits for another part of a mixed task, so it only works inside a "
                           "kernel a Device runs (a process device or inline=True), not in a plain call")
    return w


# ── sync-word offsets ───────────────────────────────────────────────────────────────────────────


def word(core: int, offset: int) -> int:
    """The index of sync word ``offset`` of ``core`` (for ``get`` / ``set``)."""
    return core * SYNC_WORDS + offset


_CLAIMS: dict[str, tuple[int, int]] = {}
_next = 0


def claim(name: str, n: int) -> int:
    """Reserve ``n`` sync words per core under ``name`` (at import time; claiming the same name
    again returns the same offset); returns their first offset."""
    global _next
    if name in _CLAIMS:
        off, m = _CLAIMS[name]
        if m != n:
            raise ValueError(f"waits.claim({name!r}, {n}): already claimed with {m} words")
        return off
    if _next + n > SYNC_WORDS:
        raise ValueError(f"waits.claim({name!r}, {n}): only {SYNC_WORDS - _next} of {SYNC_WORDS} sync words "
                         f"per core are left (claimed: {', '.join(_CLAIMS)})")
    _CLAIMS[name] = (_next, n)
    _next += n
    return _CLAIMS[name][0]


# ── kinds of wait, for stall messages ───────────────────────────────────────────────────────────

_KINDS: dict[int, tuple[str, Callable[[int, tuple[int, ...]], str]]] = {}


def register_kind(code: int, name: str, describe_fn: Callable[[int, tuple[int, ...]], str]) -> int:
    """Register wait kind ``code`` (> 0): ``describe_fn(obj, detail)`` says in words what a core
    waiting with it waits for (it runs in the scheduler process: use only its arguments)."""
    old = _KINDS.get(code)
    if old is not None and old[0] != name:
        raise ValueError(f"wait kind {code} is taken by {old[0]!r}")
    if code <= 0:
        raise ValueError(f"wait kind codes are > 0, got {code}")
    _KINDS[code] = (name, describe_fn)
    return code


def kinds() -> dict[int, str]:
    return {k: v[0] for k, v in _KINDS.items()}


def describe(kind: int, obj: int, detail: tuple[int, ...]) -> str:
    """What a wait of ``kind`` on ``obj`` with ``detail`` is, in words."""
    k = _KINDS.get(kind)
    if k is None:
        return f"wait of kind {kind} on object {obj} (detail {list(detail)})"
    try:
        return k[1](obj, tuple(detail))
    except Exception as e:  # noqa: BLE001 - a diagnosis must not fail on its own description
        return f"{k[0]} wait on object {obj} (detail {list(detail)}; describing it failed: {e})"


# ── checks when a task ends ─────────────────────────────────────────────────────────────────────

EndCheck = Callable[[Callable[[int], int], Iterable[int]], list[str]]
_END_CHECKS: list[EndCheck] = []


def task_end_check(fn: EndCheck) -> EndCheck:
    """Register ``fn(get, clusters)`` -> notices: the device calls it when a mixed task (parts
    sharing a cluster) has ended, every part of it, with the clusters it ran on; ``get(i)``
    reads sync word i. A notice is told to the user (e.g. a pipe left holding tiles: the next
    mixed task there pops them), it is not a failure."""
    if fn not in _END_CHECKS:
        _END_CHECKS.append(fn)
    return fn


def task_end_checks() -> tuple[EndCheck, ...]:
    return tuple(_END_CHECKS)
