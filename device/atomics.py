"""Atomic adds across the device's processes: striped locks over GM byte ranges.

    host, before fork      STRIPES process-shared locks (DeviceContext.atomic_locks)
    worker, at start       kernels.atomic.set_hook(StripedAdd(locks, gm).add)
    a kernel's atomic add  dst (a numpy view into GM) ─▶ the stripes its bytes fall in:
                              stripe = (GM byte offset // STRIPE_BYTES) mod STRIPES
                           ─▶ acquire them in ascending order ─▶ dst += value ─▶ release

Two adds that touch a common byte share that byte's stripe, so they exclude each other; adds into
disjoint regions mostly take different stripes and run side by side (a [16, 1024] fp32 tile of a
[16, 17408] accumulator is 16 rows of one 4 KiB stripe each, 17 stripes apart). Taking the locks
in one global order (ascending stripe number) rules out deadlock between adds. The stripes of a
view (its shape, strides and offset) are computed once and cached.

Memory ordering: a lock's release and the next acquire are a release/acquire pair (POSIX
semaphores: sem_post / sem_wait are full barriers), so the bytes one core added are what the next
core holding the stripe reads, on any CPU. That the sum is visible to the task's consumers comes
from the worker's completion publication, as for every output (device/ordering.py).

If a worker dies holding a stripe, the device is lost anyway (DeviceLost); a kernel waiting for
the stripe is stopped with the rest. The sequential engine runs one part at a time and installs
no hook.
"""

from __future__ import annotations

import ctypes
from collections.abc import Sequence
from typing import Any

import numpy as np

STRIPES = 128                  # locks per device
STRIPE_BYTES = 4096            # GM bytes per stripe, before wrapping around
_CACHE_MAX = 4096


def _all() -> tuple[int, ...]:
    return tuple(range(STRIPES))


def stripes_of(offset: int, shape: tuple[int, ...], strides: tuple[int, ...], itemsize: int) -> tuple[int, ...]:
    """The stripes (ascending) that a view's bytes fall in: ``offset`` is its first element's GM
    byte offset."""
    dims = [(n, s) for n, s in zip(shape, strides) if n != 1]
    if any(n == 0 for n in shape):
        return ()
    if any(s < 0 for _, s in dims):              # flipped views: lock the whole span's stripes
        lo = offset + sum((n - 1) * s for n, s in dims if s < 0)
        hi = offset + sum((n - 1) * s for n, s in dims if s > 0) + itemsize
        return _span(lo, hi - lo)
    dims.sort(key=lambda d: -d[1])
    run = itemsize                               # the contiguous bytes at the innermost end
    while dims and dims[-1][1] == run:
        run *= dims.pop()[0]
    starts = np.array([offset], np.int64)
    for n, s in dims:
        if starts.size * n > 1 << 16:            # a huge scatter: not worth the exact set
            return _span(offset, int(sum((n - 1) * s for n, s in dims)) + run)
        starts = (starts[:, None] + np.arange(n, dtype=np.int64) * s).reshape(-1)
    first = starts // STRIPE_BYTES
    span = int((((starts + run - 1) // STRIPE_BYTES) - first).max())
    if span + 1 >= STRIPES:
        return _all()
    ids = np.unique(np.concatenate([first + k for k in range(span + 1)]) % STRIPES)
    return tuple(int(i) for i in ids)


def _span(lo: int, nbytes: int) -> tuple[int, ...]:
    first, last = lo // STRIPE_BYTES, (lo + nbytes - 1) // STRIPE_BYTES
    if last - first + 1 >= STRIPES:
        return _all()
    return tuple(sorted({s % STRIPES for s in range(first, last + 1)}))


class StripedAdd:
    """The atomic-add hook of one worker process (kernels/atomic.py ``set_hook``)."""

    def __init__(self, locks: Sequence[Any], gm_buf: Any) -> None:
        if len(locks) != STRIPES:
            raise ValueError(f"StripedAdd: expected {STRIPES} locks, got {len(locks)}")
        self.locks = list(locks)
        self.base = ctypes.addressof(ctypes.c_char.from_buffer(gm_buf))
        self.end = self.base + len(gm_buf)
        self.cache: dict[tuple, tuple[int, ...]] = {}

    def add(self, dst: np.ndarray, value: Any) -> None:
        addr = dst.__array_interface__["data"][0]
        if not self.base <= addr < self.end:     # not device memory: nobody else can see it
            np.add(dst, value, out=dst, casting="unsafe")
            return
        key = (addr, dst.shape, dst.strides, dst.itemsize)
        ids = self.cache.get(key)
        if ids is None:
            ids = stripes_of(addr - self.base, dst.shape, dst.strides, dst.itemsize)
            if len(self.cache) >= _CACHE_MAX:
                self.cache.clear()
            self.cache[key] = ids
        locks = self.locks
        taken = 0
        try:
            for i in ids:
                locks[i].acquire()
                taken += 1
            np.add(dst, value, out=dst, casting="unsafe")
        finally:
            for i in reversed(ids[:taken]):
                locks[i].release()


__all__ = ["STRIPES", "STRIPE_BYTES", "StripedAdd", "stripes_of"]
