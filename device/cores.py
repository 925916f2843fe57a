"""The scheduler's cores: mailboxes to post work into, done counters to collect it from.

    post(c, tid, part)  mailbox[c] slot head % D = entry (codec.entry); publish head + 1
    fill(rq, stack...)  post a run of single-core tasks from a ready queue (post, inlined)
    wake()              after a batch of posts: one fence, then the semaphore of each posted core
                        whose worker said it is asleep (W_ASLEEP) -- a worker that is spinning
                        finds its mailbox without a system call
    collect()           done counters that moved since the last look ──▶ [entries done]
                        (recording: ``slots`` gets (core, mailbox slot) of each, for its counts row)

Free mailbox slots are two stacks (AIC cores, AIV cores), one item per free slot, so the most
recently freed core -- the one most likely still awake -- is taken first. Likewise, a mixed task
goes to the block that became idle most recently (``recent``, a block moves to its end when one
of its cores goes idle), whose workers are the likeliest to be awake. A core holds at most
``cap`` entries: the platform's mailbox depth while tasks are long, every slot (layout.depth)
while they are short. The stacks hold cap - inflight items per core (less the stale ones, see
``skip``); a change of cap rebuilds them from ``inflight``. When tasks are short
(``short``: the workers' mean busy time per task is below SHORT_TASK_NS), waking a sleeping
worker costs more than the task: then a sleeper is woken only while fewer cores are busy than
``max_busy`` (the machine's CPUs less one, left to the host and the scheduler), and otherwise the
task waits in the ready queue for an awake worker's mailbox slot. Long tasks wake workers freely.
A mixed task needs idle cores of one block at once (``idle_block``); while it waits, the least
loaded block is ``reserved``: no single-core work is posted to it, so it drains.

Per core c: mb[c] / done_at[c] word offsets, acked[c] = entries seen done, pending[c] = entries
posted and not yet done (oldest first), inflight[c] = len(pending[c]), skip[c] = stack items of
c that are stale. The one invariant ``post`` keeps: a slot taken without popping c's stack item
(a mixed task's block, a start-together launch, an early post) leaves one item stale, counted in
skip[c]; ``take`` drops stale items as it meets them. ``busy`` = cores with work posted.

The wake-up is race free without per-post system calls: the worker stores W_ASLEEP = 1, fences,
then looks at its mailbox once more before it blocks; the scheduler publishes the head, fences,
then reads W_ASLEEP. One of the two sees the other's store (device/ordering.py).
"""

from __future__ import annotations

import os
import random
from collections import deque

import numpy as np

from device import codec as C
from device import layout as L
from device.ordering import fence, observe, observe_all, publish
from kernels.registry import SHAPE_AIC, SHAPE_AIC_AIV, SHAPE_AIC_AIV_X2, SHAPE_AIV, SHAPE_AIV_X2

SMART_SCAN = 8              # up to this many busy cores are polled one by one, else one snapshot
# The lanes a mixed task's parts take, per core shape (AIC+AIV may use either vector core).
MIXED_LANES = {SHAPE_AIV_X2: ((1, 2),), SHAPE_AIC_AIV: ((0, 1), (0, 2)), SHAPE_AIC_AIV_X2: ((0, 1, 2),)}
SHORT_TASK_NS = 3_000       # below this (no-op-like tasks), a wake-up costs more than the task


class CorePool:
    def __init__(self, q, ctrl_buf, layout, sems: list, rng: random.Random | None) -> None:
        n = layout.ncores
        self.q, self.lay, self.sems, self.rng = q, layout, sems, rng
        self.ncores, self.nblocks, self.D = n, n // C.LANES, layout.depth
        self.mb = [layout.mailbox(c) for c in range(n)]             # head words
        self.slots_at = [layout.mailbox(c) + 1 for c in range(n)]  # the slots after each head
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
        self.cap = layout.cap         # entries a core may hold now
        self.free_aic: list[int] = []
        self.free_aiv: list[int] = []
        self.set_cap(layout.cap)
        self.reserved = -1            # block kept free for a waiting mixed task
        self.recent = list(range(self.nblocks))    # blocks, least recently idled first
        self.idled = 0                # cores that went idle so far (a generation count)
        self.failed_at = [-1] * 5     # per core shape: ``idled`` when idle_block last found nothing
        self.posted: list[int] = []   # cores posted to since the last wake()
        self.filled: list[tuple[int, int]] = []    # (tid, core) posted by fill() this pass
        self.short = False            # are tasks short (see the module docstring)?
        self.max_busy = max(1, len(os.sched_getaffinity(0)) - 1)
        self.tasks_at = layout.wline(0) + L.W_TASKS
        self.busy_at = layout.wline(0) + L.W_BUSY_NS
        self.seen = (0, 0)            # (tasks, busy ns) of all workers at the last measure()
        self.slots: list[tuple[int, int]] | None = None   # recording: where collect()'s entries ran

    # -- posting ---------------------------------------------------------------------------------
    def post(self, c: int, tid: int, part: int, block: int = -1, gated: bool = False,
             stacked: bool = False) -> None:
        """Post part ``part`` of task ``tid`` (``block`` >= 0: that block of a multi-block task;
        ``gated``: early, behind its producers) to core c. ``stacked``: the slot was popped off
        the free stack (take); otherwise one of c's stack items is stale from now on."""
        if not stacked:
            self.skip[c] += 1
        e = C.entry(tid, part, gated, block)
        q = self.q
        mb = self.mb[c]
        h = q[mb]
        q[self.slots_at[c] + h % self.D] = e
        publish(q, mb, h + 1)
        self.pending[c].append(e)
        self.inflight[c] += 1
        self.n_inflight += 1
        self.busy.add(c)
        self.posted.append(c)

    def measure(self) -> None:
        """Update ``short`` from the workers' own counters (works without timestamps too)."""
        q, step = self.q, 2 * L.LINE
        tasks = sum(q[self.tasks_at + c * step] for c in range(self.ncores))
        busy = sum(q[self.busy_at + c * step] for c in range(self.ncores))
        dt, db = tasks - self.seen[0], busy - self.seen[1]
        if dt >= 16:
            self.short = db < SHORT_TASK_NS * dt
            self.set_cap(self.D if self.short else self.lay.cap)
            self.seen = (tasks, busy)

    def set_cap(self, cap: int) -> None:
        """Entries a core may hold from now on: the free stacks are rebuilt to match."""
        if cap == self.cap and (self.free_aic or self.free_aiv or self.n_inflight):
            return
        self.cap = cap
        inf = self.inflight
        # Deepest slots at the bottom: a core's first free slot is taken before any core's
        # second, so ready work goes to idle cores before it queues behind a busy one.
        aic = [c for c in range(0, self.ncores, C.LANES)]
        aiv = [c for c in range(self.ncores) if not C.is_aic(c)]
        self.free_aic = [c for d in range(cap - 1, -1, -1) for c in aic if cap - inf[c] > d]
        self.free_aiv = [c for d in range(cap - 1, -1, -1) for c in aiv if cap - inf[c] > d]
        self.skip = [0] * self.ncores

    def may_take(self, c: int, stack: list) -> int:
        """The core to post to, given that ``take`` chose c: c itself, or -- tasks being short,
        c's worker asleep and enough in flight -- an awake core among the next few free slots,
        or -1 (and c goes back on the stack)."""
        if not self.short or len(self.busy) < self.max_busy:
            return c
        q, asleep = self.q, self.asleep_at
        if not q[asleep[c]]:
            return c
        for i in range(len(stack) - 1, max(len(stack) - 8, 0) - 1, -1):
            x = stack[i]
            if not q[asleep[x]] and not self.skip[x] and (self.reserved < 0 or x // C.LANES != self.reserved):
                stack[i] = c
                return x
        stack.append(c)
        return -1

    def fill(self, rq: deque, stack: list, part: int, parts: list, where: list, stamp_at: int, now: int) -> int:
        """Post single-core tasks from the ready queue ``rq`` onto free cores of ``stack`` (the
        common case, without fuzzing or the sanitizer); before each post, the task's part count,
        its core (``where``) and (``now``) its dispatch time, at word ``stamp_at`` of its time
        row. Returns how many. This is ``take`` + ``post`` inlined for the hot path (the slot
        always comes off the stack, so no skip accounting): keep the two in step."""
        q, D, mb_at, slots_at, pending, inflight, busy, posted = self.q, self.D, self.mb, self.slots_at, \
            self.pending, self.inflight, self.busy, self.posted
        skip, asleep, mask, cap = self.skip, self.asleep_at, self.lay.mask, self.cap
        gate = self.max_busy if self.short else 1 << 62
        pub = publish
        n = 0
        out = self.filled
        while rq and stack:
            c = stack[-1]
            if skip[c] or self.reserved >= 0 or inflight[c] >= cap or (len(busy) >= gate and q[asleep[c]]):
                c = self.take(stack)                    # the careful way round
                if c >= 0:
                    c = self.may_take(c, stack)
                if c < 0:
                    break
            else:
                stack.pop()
            tid = rq.popleft()
            s = tid & mask
            parts[s] = 1
            where[s] = c
            if now:
                q[stamp_at + s * C.TS_WORDS] = now
            mb = mb_at[c]
            h = q[mb]
            e = tid << C.ENTRY_SHIFT | part
            q[slots_at[c] + h % D] = e
            pub(q, mb, h + 1)
            pending[c].append(e)
            inflight[c] += 1
            self.n_inflight += 1
            busy.add(c)
            posted.append(c)
            out.append((tid, c))
            n += 1
        return n

    def wake(self) -> None:
        """Wake the workers that were posted to and sleep (see the module docstring)."""
        posted = self.posted
        if not posted:
            return
        fence()
        q, asleep, sems = self.q, self.asleep_at, self.sems
        for c in set(posted) if len(posted) > 1 else posted:
            if observe(q, asleep[c]):
                sems[c].release()
        posted.clear()

    def wake_all(self) -> None:
        """Stop request: one token each, whatever they are doing."""
        for s in self.sems:
            s.release()

    def take(self, stack: list) -> int:
        """A core with a free mailbox slot from ``stack``, or -1; skips stale items, parks the
        items of cores at their cap and keeps the reserved block free."""
        skip, reserved, inflight, cap = self.skip, self.reserved, self.inflight, self.cap
        if self.rng is not None and len(stack) > 1:          # fuzzing: a random free core
            i = self.rng.randrange(len(stack))
            stack[i], stack[-1] = stack[-1], stack[i]
        kept = None                 # items of the reserved block, left on the stack
        c = -1
        while stack:
            x = stack.pop()
            if skip[x]:
                skip[x] -= 1
                continue
            if inflight[x] >= cap:
                continue                    # an item left over from a larger cap: gone
            if reserved >= 0 and x // C.LANES == reserved:
                if kept is None:
                    kept = [x]
                else:
                    kept.append(x)
                continue
            c = x
            break
        if kept:
            stack.extend(kept)
        return c

    def idle_block(self, core_shape: int) -> list | None:
        """Cores (with the part each runs) of one block able to start a mixed task now, the most
        recently idled block first; when there is none, reserve the least loaded block so that
        it drains. A core shape that found nothing is not looked for again until a core goes idle."""
        if self.failed_at[core_shape] == self.idled:
            return None
        inf = self.inflight
        best, best_load = -1, 1 << 30
        for b in reversed(self.recent):
            c = C.LANES * b
            a, v0, v1 = inf[c] == 0, inf[c + 1] == 0, inf[c + 2] == 0
            if core_shape == SHAPE_AIV_X2 and v0 and v1:
                got = [(c + 1, 1), (c + 2, 2)]
            elif core_shape == SHAPE_AIC_AIV and a and (v0 or v1):
                got = [(c, 0), (c + 1 if v0 else c + 2, 1)]
            elif core_shape == SHAPE_AIC_AIV_X2 and a and v0 and v1:
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
        self.failed_at[core_shape] = self.idled
        return None

    def queue_behind(self, core_shape: int) -> list | None:
        """Tasks being short: cores (with parts) of a block whose mailboxes each end with a part
        of one same mixed task and have room -- the new task queues behind it on every core, so
        its parts stay aligned (each core runs its mailbox in order). Most recent block first."""
        pend, inf, cap = self.pending, self.inflight, self.cap
        for b in reversed(self.recent):
            c = C.LANES * b
            for lanes in MIXED_LANES[core_shape]:
                last = -1
                for ln in lanes:
                    x = c + ln
                    if not pend[x] or inf[x] >= cap:
                        break
                    t = pend[x][-1] >> C.BLOCK_SHIFT       # the task and its block

                    if last >= 0 and t != last:
                        break
                    last = t
                else:
                    return [(c + ln, part) for part, ln in enumerate(lanes)] if core_shape != SHAPE_AIV_X2 \
                        else [(c + 1, 1), (c + 2, 2)]
        return None

    def idle_sets(self, core_shape: int, n: int) -> list | None:
        """A start-together launch: n sets of cores (with parts), one per block, each with
        nothing queued, so that every block starts at once -- or None if the device cannot hold
        them all right now. The most recently idled blocks first."""
        inf = self.inflight
        out: list = []
        for b in reversed(self.recent):
            c = C.LANES * b
            a, v0, v1 = inf[c] == 0, inf[c + 1] == 0, inf[c + 2] == 0
            if core_shape == SHAPE_AIC:
                if a:
                    out.append(((c, 0),))
            elif core_shape == SHAPE_AIV:
                if v0:
                    out.append(((c + 1, 1),))
                if v1 and len(out) < n:
                    out.append(((c + 2, 1),))
            elif core_shape == SHAPE_AIV_X2:
                if v0 and v1:
                    out.append(((c + 1, 1), (c + 2, 2)))
            elif core_shape == SHAPE_AIC_AIV:
                if a and (v0 or v1):
                    out.append(((c, 0), (c + 1 if v0 else c + 2, 1)))
            elif a and v0 and v1:
                out.append(((c, 0), (c + 1, 1), (c + 2, 2)))
            if len(out) >= n:
                return out[:n]
        return None

    # -- completions -----------------------------------------------------------------------------
    def collect(self) -> list[int]:
        """The entries the workers finished since the last look (their mailbox slots freed)."""
        busy, acked = self.busy, self.acked
        if len(busy) <= SMART_SCAN:
            q, done_at = self.q, self.done_at
            moved = [(c, d) for c in busy if (d := observe(q, done_at[c])) != acked[c]]
        else:
            snap = observe_all(self.done_np)
            moved = [(c, snap[c]) for c in busy if snap[c] != acked[c]]
        if not moved:
            return moved
        out: list[int] = []
        pending, inflight, free_aic, free_aiv = self.pending, self.inflight, self.free_aic, self.free_aiv
        cap = self.cap
        where = self.slots
        if where is not None:
            where.clear()
        for c, d in moved:
            n = d - acked[c]
            if where is not None:
                where.extend((c, i % self.D) for i in range(acked[c], d))
            acked[c] = d
            pend = pending[c]
            free = free_aiv if c % C.LANES else free_aic
            left = inflight[c]
            for _ in range(n):
                out.append(pend.popleft())
                left -= 1
                if left < cap:
                    free.append(c)
            inflight[c] = left
            if not left:
                busy.discard(c)
                self.idled += 1
                b = c // C.LANES
                if self.recent[-1] != b:
                    self.recent.remove(b)
                    self.recent.append(b)
        self.n_inflight -= len(out)
        return out

    def moved(self) -> bool:
        q, acked, done_at = self.q, self.acked, self.done_at
        return any(observe(q, done_at[c]) != acked[c] for c in self.busy)

    def running(self) -> list[tuple[int, int]]:
        """(core, entry) of everything posted and not yet done."""
        return [(c, e) for c in range(self.ncores) for e in self.pending[c]]
