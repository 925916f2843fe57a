"""Allocators for the two parts of GM, both run by the host: one first-fit arena each.

    GM:  [ host arena: dev.empty / dev.to_device     | heap: runtime tensors, at submit of their
           freed by dev.free or when unreferenced      first writer; freed when the scheduler says
                                                       the allocation died (device/lifetime.py) ]

First fit over a free list sorted by address, with coalescing. Runtime tensors die in any order
(a tensor lives until the end of the scope it was made in), so the heap is an arena rather than a
ring reclaimed in allocation order: one long-lived tensor never blocks the memory behind it.
"""

from __future__ import annotations

import bisect

from device.layout import HEAP_ALIGN  # noqa: F401  (re-exported: runtime tensors start on it)

ALIGN = 512            # host tensors: keeps rows of common shapes on separate cache lines


def align_up(n: int, a: int) -> int:
    return (n + a - 1) // a * a


class Arena:
    """First-fit allocator over [0, size) with coalescing free list."""

    def __init__(self, size: int, align: int = ALIGN) -> None:
        self.size = size
        self.align = align
        self.starts: list[int] = [0]          # free blocks, sorted by start
        self.lens: list[int] = [size]
        self.used = 0

    def alloc(self, nbytes: int) -> int | None:
        n = align_up(max(nbytes, 1), self.align)
        for i, ln in enumerate(self.lens):
            if ln >= n:
                off = self.starts[i]
                if ln == n:
                    del self.starts[i], self.lens[i]
                else:
                    self.starts[i] += n
                    self.lens[i] -= n
                self.used += n
                return off
        return None

    def free(self, off: int, nbytes: int) -> None:
        n = align_up(max(nbytes, 1), self.align)
        self.used -= n
        i = bisect.bisect(self.starts, off)
        self.starts.insert(i, off)
        self.lens.insert(i, n)
        if i + 1 < len(self.starts) and self.starts[i] + self.lens[i] == self.starts[i + 1]:
            self.lens[i] += self.lens.pop(i + 1)
            self.starts.pop(i + 1)
        if i > 0 and self.starts[i - 1] + self.lens[i - 1] == self.starts[i]:
            self.lens[i - 1] += self.lens.pop(i)
            self.starts.pop(i)

    def largest_free(self) -> int:
        return max(self.lens, default=0)
