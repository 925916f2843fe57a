"""Lifetimes of runtime tensors: heap allocations, who still uses them, which scope holds them.

    host, at submit        the first writer of runtime tensors gets heap space for them (first
                           fit, host/gm.py) and its record says FLAG_HEAP and the HOLD depth: the
                           scope the tensors were *made* in, wherever the writer was submitted
    scheduler, ingest      allocate(tid, bufs, hold)    the allocating task is the first user
                           use(owner)                   each task naming one of its buffers too
    scheduler, finish      release(allocation)          per user
    scheduler, scope end   end_scope(depth)             drops that scope's holds
                           ──▶ an allocation with no user and no hold is dead: on_dead(record)
                               (the scheduler puts its tid on the FREED queue ──▶ the host frees
                               the range; the sequential engine frees it at once)

An allocation record is a flat list ``[users, held, buffers, tid]``; tasks keep direct references
to the records they use, so releasing costs no lookup. Ring slots are independent of all this: a
task's slot retires as soon as it has finished, while the memory it allocated lives until the end
of the scope its tensors were made in and until their last user has finished. Allocations die in
any order, so one long-lived tensor never blocks the reuse of memory allocated after it.
"""

from __future__ import annotations

from collections.abc import Callable

from device.codec import HeapHold

USERS, HELD, BUFS, TID = range(4)
MAX_DEPTH = 64


class Lifetimes:
    """Live heap allocations; ``on_dead(record)`` runs once for each allocation that dies."""

    def __init__(self, on_dead: Callable[[list], None]) -> None:
        self.on_dead = on_dead
        self.live: dict[int, list] = {}                  # allocating tid -> allocation record
        self.holds: list[list[list]] = [[] for _ in range(MAX_DEPTH)]   # depth -> held records

    def __len__(self) -> int:
        return len(self.live)

    def allocate(self, tid: int, bufs: list[int], hold_depth: int) -> list:
        """A record allocated heap space for ``bufs``; the allocating task is its first user."""
        a = [1, True, bufs, tid]
        self.live[tid] = a
        self.holds[hold_depth].append(a)
        return a

    def use(self, owner: int) -> list | None:
        """One more unfinished task names a buffer allocated by ``owner``."""
        a = self.live.get(owner)
        if a is not None:
            a[USERS] += 1
        return a

    def release(self, a: list) -> None:
        """A user finished."""
        a[USERS] -= 1
        if not a[USERS] and not a[HELD]:
            self._die(a)

    def end_scope(self, depth: int) -> None:
        """The scope at ``depth`` ended (inner ones ended before it): drop its holds."""
        lst = self.holds[depth]
        for a in lst:
            a[HELD] = False
            if not a[USERS]:
                self._die(a)
        lst.clear()

    def release_all_holds(self) -> None:
        """An aborted run: every scope is gone."""
        for d in range(MAX_DEPTH):
            if self.holds[d]:
                self.end_scope(d)

    def _die(self, a: list) -> None:
        del self.live[a[TID]]
        self.on_dead(a)

    def describe(self, limit: int = 8) -> tuple[HeapHold, ...]:
        """The oldest live allocations, for a stall diagnosis."""
        return tuple(HeapHold(a[TID], a[USERS], a[HELD])
                     for a in sorted(self.live.values(), key=lambda a: a[TID])[:limit])
