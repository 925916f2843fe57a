"""The scheduler's cores: mailboxes to post work into, done counters to collect it from.

    post(c, entry)    mailbox[c] slot head % D = entry; head += 1          (entry = tid*4 + part)
    wake()            after a batch of posts: one fence, then the semaphore of each posted core
                      whose worker said it is asleep (W_ASLEEP) -- a worker that is spinning
                      finds its mailbox without a system call
    collect()         done counters that moved since the last look ──▶ [(core, entries done)]

Free mailbox slots are two stacks (AIC cores, AIV cores), one item per free slot, so the most
recently freed core -- the one most likely still awake -- is taken first. A mixed task needs
idle cores of one block at once (``idle_block``); while it waits, the least loaded block is
``reserved``: no single-core work is posted to it, so it drains.

Per core c: mb[c] / done_at[c] word offsets, acked[c] = entries seen done, pending[c] = entries
posted and not yet done (oldest first), inflight[c] = len(pending[c]), skip[c] = stack items of
c that are stale (taken by a mixed task outside the stack). ``busy`` = cores with work posted.

The wake-up is race free without per-post system calls: the worker stores W_ASLEEP = 1, fences,
then looks at its mailbox once more before it blocks; the scheduler stores the entry and head,
fences, then reads W_ASLEEP. One of the two sees the other's store (x86-TSO plus the fences).
"""

from __future__ import annotations

import random
from collections import deque
from collections.abc import Callable

import numpy as np

from device import codec as C
from device import layout as L
from kernels.registry import SHAPE_AIC_AIV, SHAPE_AIC_AIV_X2, SHAPE_AIV_X2

SMART_SCAN = 8              # up to this many busy cores are polled one by one, else one snapshot


class CorePool:
    def __init__(self, q, ctrl_buf, layout, sems: list, fence: Callable[[], None],
                 rng: random.Random | None) -> None:
        n = layout.ncores
        self.q, self.lay, self.sems, self.fence, self.rng = q, layout, sems, fence, rng
        self.ncores, self.nblocks, self.D = n, n // C.LANES, layout.depth
        self.mb = [layout.mailbox(c) for c in range(n)]
        self.done_at = [layout.wline(c) + L.W_DONE for c in range(n)]
        self.asleep_at = [layout.wline(c) + L.W_ASLEEP for c in range(n)]
        self.done_np = np.ndarray((n,), np.int64, ctrl_buf, layout.wline(0) * 8 + L.W_DONE * 8,
                                  (2 * L.LINE * 8,))
        self.acked = [0] * n
        self.pending = [deque() for _ in range(n)]
        self.inflight = [0] * n
        self.skip = [0] * n
        self.busy: set[int] = set()
        self.n_inflight = 0
        self.free_aic = [c for c in range(0, n, C.LANES) for _ in range(self.D)]
        self.free_aiv = [c for c in range(n) if not C.is_aic(c) for _ in range(self.D)]
        self.reserved = -1            # block kept free for a waiting mixed task
        self.posted: list[int] = []   # cores posted to since the last wake()

    # -- posting ---------------------------------------------------------------------------------
    def post(self, c: int, entry: int) -> None:
        q = self.q
        mb = self.mb[c]
        h = q[mb]
        q[mb + 1 + h % self.D] = entry
        q[mb] = h + 1
        self.pending[c].append(entry)
        self.inflight[c] += 1
        self.n_inflight += 1
        self.busy.add(c)
        self.posted.append(c)

    def wake(self) -> None:
        """Wake the workers that were posted to and sleep (see the module docstring)."""
        posted = self.posted
        if not posted:
            return
        self.fence()
        q, asleep, sems = self.q, self.asleep_at, self.sems
        for c in set(posted) if len(posted) > 1 else posted:
            if q[asleep[c]]:
                sems[c].release()
        posted.clear()

    def wake_all(self) -> None:
        """Stop request: one token each, whatever they are doing."""
        for s in self.sems:
            s.release()

    def take(self, stack: list) -> int:
        """A core with a free mailbox slot from ``stack``, or -1; skips stale items and keeps
        the reserved block free."""
        skip, reserved = self.skip, self.reserved
        if self.rng is not None and len(stack) > 1:          # fuzzing: a random free core
            i = self.rng.randrange(len(stack))
            stack[i], stack[-1] = stack[-1], stack[i]
        parked = None
        c = -1
        while stack:
            x = stack.pop()
            if skip[x]:
                skip[x] -= 1
                continue
            if reserved >= 0 and x // C.LANES == reserved:
                if parked is None:
                    parked = [x]
                else:
                    parked.append(x)
                continue
            c = x
            break
        if parked:
            stack.extend(parked)
        return c

    def idle_block(self, shape: int) -> list | None:
        """Cores (with the part each runs) of one block able to start a mixed task now; when
        there is none, reserve the least loaded block so that it drains."""
        inf = self.inflight
        best, best_load = -1, 1 << 30
        for b in range(self.nblocks):
            c = C.LANES * b
            a, v0, v1 = inf[c] == 0, inf[c + 1] == 0, inf[c + 2] == 0
            if shape == SHAPE_AIV_X2 and v0 and v1:
                got = [(c + 1, 1), (c + 2, 2)]
            elif shape == SHAPE_AIC_AIV and a and (v0 or v1):
                got = [(c, 0), (c + 1 if v0 else c + 2, 1)]
            elif shape == SHAPE_AIC_AIV_X2 and a and v0 and v1:
                got = [(c, 0), (c + 1, 1), (c + 2, 2)]
            else:
                load = inf[c] + inf[c + 1] + inf[c + 2]
                if load < best_load:
                    best, best_load = b, load
                continue
            if self.reserved == b:
                self.reserved = -1
            return got
        if self.reserved < 0:
            self.reserved = best
        return None

    # -- completions -----------------------------------------------------------------------------
    def collect(self) -> list[tuple[int, int]]:
        """(core, number of entries it finished) for every core whose done counter moved."""
        busy, acked = self.busy, self.acked
        if len(busy) <= SMART_SCAN:
            q, done_at = self.q, self.done_at
            return [(c, d - acked[c]) for c in busy if (d := q[done_at[c]]) != acked[c]]
        snap = self.done_np.tolist()
        return [(c, snap[c] - acked[c]) for c in busy if snap[c] != acked[c]]

    def moved(self) -> bool:
        q, acked, done_at = self.q, self.acked, self.done_at
        return any(q[done_at[c]] != acked[c] for c in self.busy)

    def retire_entries(self, c: int, n: int) -> list[int]:
        """Core c finished its n oldest entries: free their mailbox slots; the entries."""
        pend = self.pending[c]
        out = [pend.popleft() for _ in range(n)]
        free = self.free_aic if C.is_aic(c) else self.free_aiv
        free.extend([c] * n)
        self.acked[c] += n
        self.inflight[c] -= n
        self.n_inflight -= n
        if self.inflight[c] == 0:
            self.busy.discard(c)
        return out

    def running(self) -> list[tuple[int, int]]:
        """(core, entry) of everything posted and not yet done."""
        return [(c, e) for c in range(self.ncores) for e in self.pending[c]]
