"""Allocators for the two parts of GM, both run by the host.

    GM:  [ HostArena: first fit, freed explicitly  | HeapRing: bump allocation, freed in order ]
          dev.empty / dev.to_device                  runtime tensors, at submit of their writer

The heap ring counts in *virtual* bytes that only grow: ``head`` is where the next allocation
goes, ``tail`` (published by the scheduler as tasks retire) is where the oldest live one starts;
physical offset = virtual mod size. An allocation never straddles the end: if it would, the rest
of the lap is skipped (and counted as used until the tail passes it).
"""

from __future__ import annotations

import bisect

ALIGN = 512            # host tensors: keeps rows of common shapes on separate cache lines
HEAP_ALIGN = 1024      # runtime tensors, as the reference runtime aligns heap outputs


def align_up(n: int, a: int) -> int:
    return (n + a - 1) // a * a


class HostArena:
    """First-fit allocator over [0, size) with coalescing free list."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.starts: list[int] = [0]          # free blocks, sorted by start
        self.lens: list[int] = [size]
        self.used = 0

    def alloc(self, nbytes: int) -> int | None:
        n = align_up(max(nbytes, 1), ALIGN)
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
        n = align_up(max(nbytes, 1), ALIGN)
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


class HeapRing:
    """Bump allocator over a ring of ``size`` bytes at GM offset ``base``."""

    def __init__(self, base: int, size: int) -> None:
        self.base, self.size = base, size
        self.head = 0                          # virtual

    def place(self, nbytes: int) -> tuple[int, int]:
        """(virtual start, virtual head after) for an allocation of nbytes, skipping the rest of
        the lap when it would straddle the end. Does not move head."""
        n = align_up(max(nbytes, 1), HEAP_ALIGN)
        start = self.head
        phys = start % self.size
        if phys + n > self.size:
            start += self.size - phys
        return start, start + n

    def needed_tail(self, end: int) -> int:
        """The tail the scheduler must publish before [.., end) is free."""
        return end - self.size

    def gm_offset(self, vstart: int) -> int:
        return self.base + vstart % self.size
