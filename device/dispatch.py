"""Dispatch: ready tasks (device/tasks.py) onto cores with a free mailbox slot (device/cores.py).

    dispatch()   one pass, in this order:
      1. records that need no core: predicates evaluated, dummies and false predicates finish
         (TaskTable.settle) -- which may make more of everything ready
      2. a start-together SPMD launch: all its blocks at once, to cores with nothing queued;
         while the oldest waits for its cores, nothing else starts (the device drains for it)
      3. multi-block tasks, oldest first: as many blocks as cores allow (the rest: waves)
      4. single tasks, widest shapes first (a mixed task needs a whole set of idle cores and
         would starve behind narrow ones): AIC+AIV x2, AIC+AIV, AIV x2, then AIC and AIV
      5. early dispatch: successors that wait only for tasks posted to one core follow them
         into that core's mailbox, gated
      then wake the workers that were posted to and sleep.

Every post goes through ``CorePool.post`` (entry encoding, free-slot accounting) except the
common case of step 4 -- plain single-core tasks without fuzzing or the sanitizer -- which
``CorePool.fill`` does in one tight loop. ``discard`` (after a kernel failure or an abort
request): ready tasks finish as "skipped" instead. Fuzzing (``rng``) takes ready tasks and free
cores in a seeded random order; the sanitizer poisons a task's Out regions before its first
part is posted.
"""

from __future__ import annotations

import random

from device import codec as C
from device import sanitizer
from device.cores import CorePool
from device.execute import ArgDecoder
from device.layout import Layout
from device.tasks import NPARTS, Q_INSTANT, Q_PRED, Q_SPMD, Q_SYNC, TaskTable
from kernels.registry import SHAPE_AIC, SHAPE_AIC_AIV, SHAPE_AIC_AIV_X2, SHAPE_AIV, SHAPE_AIV_X2

DISPATCH_ORDER = (SHAPE_AIC_AIV_X2, SHAPE_AIC_AIV, SHAPE_AIV_X2, SHAPE_AIC, SHAPE_AIV)


class Dispatcher:
    def __init__(self, tasks: TaskTable, cores: CorePool, layout: Layout, rng: random.Random | None,
                 sanitize: ArgDecoder | None, gm: memoryview, reference: bool = False) -> None:
        self.tasks, self.cores, self.lay, self.rng, self.sanitize = tasks, cores, layout, rng, sanitize
        self.q, self.mask, self.gm = tasks.q, layout.mask, gm
        self.slow = rng is not None or sanitize is not None     # no fill(), no early dispatch
        self.discard, self.reference = False, reference
        self.checks: dict[int, sanitizer.TaskCheck] = {}     # sanitizer: tid -> its watch, launch..done
        self.ran_on: dict[int, set[int]] = {}     # mixed task -> the clusters its blocks went to (end checks)

    def dispatch(self, now: int) -> bool:
        """One pass (module docstring); ``now`` is the dispatch stamp (0: timestamps off).
        True if anything was posted or finished."""
        tasks, cores = self.tasks, self.cores
        if self.discard:
            tasks.skip_ready()
            return True
        did = False
        ready = tasks.ready
        if ready[Q_PRED] or ready[Q_INSTANT] or ready[Q_SYNC] or ready[Q_SPMD]:
            if ready[Q_PRED] or ready[Q_INSTANT]:
                did = tasks.settle(self.gm, now)
            if ready[Q_SYNC] and not self._sync(now):
                cores.wake()
                return did                     # draining the device for the launch
            if ready[Q_SPMD] and self._spmd(now):
                did = True
        if cores.reserved >= 0 and not (ready[SHAPE_AIC_AIV_X2] or ready[SHAPE_AIC_AIV] or ready[SHAPE_AIV_X2]
                                        or ready[Q_SPMD] or ready[Q_SYNC]):
            cores.reserved = -1                # no mixed task waits any more: release its block
        for core_shape in DISPATCH_ORDER:
            if ready[core_shape] and self._singles(core_shape, now):
                did = True
        # Early dispatch (not with fuzzing, which wants any order, nor with the sanitizer, which
        # poisons outputs a producer may still be writing).
        if self.slow:
            tasks.early.clear()
        else:
            filled, forward, mask, succ = cores.filled, self._forward, self.mask, tasks.succ
            for tid, c in filled:
                if succ[tid & mask]:               # (most tasks have no successor waiting yet)
                    forward(tid, tid & mask, c, tasks.early)
            filled.clear()
            if tasks.early and self._early(now):
                did = True
        cores.wake()
        return did

    def _singles(self, core_shape: int, now: int) -> bool:
        """Tasks of one block from the ready queue of ``core_shape``, while cores allow."""
        tasks, cores, rq = self.tasks, self.cores, self.tasks.ready[core_shape]
        single = core_shape == SHAPE_AIC or core_shape == SHAPE_AIV
        stack = cores.free_aic if core_shape == SHAPE_AIC else cores.free_aiv
        part = 0 if core_shape == SHAPE_AIC else 1
        if single and not self.slow:
            n = cores.fill(rq, stack, part, tasks.parts, tasks.core, self.lay.ts_off + C.T_DISPATCH, now)
            tasks.nready -= n
            return n > 0
        did = False
        rng, mask, parts = self.rng, self.mask, tasks.parts
        while rq:
            if rng is not None and len(rq) > 1:             # fuzzing: a random ready task
                rq.rotate(-rng.randrange(len(rq)))
            got = self._one_block(core_shape, stack, part) if single else self._one_block(core_shape)
            if got is None:
                break
            tid = rq.popleft()
            s = tid & mask
            parts[s] = len(got)
            tasks.core[s] = got[0][0] if single else -1
            self._launched(tid, s, now)
            for c, p in got:
                cores.post(c, tid, p, stacked=single)
            if not single:
                self.ran_on[tid] = {got[0][0] // C.LANES}
            tasks.nready -= 1
            did = True
        return did

    def _one_block(self, core_shape: int, stack: list | None = None, part: int = 0) -> tuple | list | None:
        """Cores (with the part each runs) for one block of ``core_shape`` now, or None: a free
        mailbox slot for a single-core shape, a set of one block's cores for a mixed one."""
        cores = self.cores
        if stack is not None:
            c = cores.take(stack)
            if c >= 0:
                c = cores.may_take(c, stack)
            return ((c, part),) if c >= 0 else None
        # Short tasks keep to blocks whose workers are awake once enough are busy.
        behind = cores.short and len(cores.busy) >= C.LANES * cores.max_busy
        got = cores.queue_behind(core_shape) if behind else None
        if got is None:
            got = cores.idle_block(core_shape)
        if got is None and cores.short and not behind:
            got = cores.queue_behind(core_shape)
        return got

    def _spmd(self, now: int) -> bool:
        """Multi-block tasks, oldest first: as many blocks as cores allow; the rest wait (waves)."""
        tasks, cores, mask = self.tasks, self.cores, self.mask
        rq = tasks.ready[Q_SPMD]
        did = False
        while rq:
            tid = rq[0]
            s = tid & mask
            core_shape, n, b = tasks.core_shape[s], tasks.blocks[s], tasks.next_block[s]
            if b == 0:
                self._start_launch(tid, s, core_shape, n, now)
            single = core_shape <= SHAPE_AIV
            stack = cores.free_aic if core_shape == SHAPE_AIC else cores.free_aiv
            part = 0 if core_shape == SHAPE_AIC else 1
            while b < n:
                if self.sanitize and b and tasks.parts[s] > (n - b) * NPARTS[core_shape]:
                    break                      # sanitizer: one block at a time (its write map)
                got = self._one_block(core_shape, stack, part) if single else self._one_block(core_shape)
                if got is None:
                    break
                for c, p in got:
                    cores.post(c, tid, p, block=b, stacked=single)
                if not single:
                    self.ran_on.setdefault(tid, set()).add(got[0][0] // C.LANES)
                b += 1
                did = True
            tasks.next_block[s] = b
            if b < n:
                break
            rq.popleft()
            tasks.nready -= 1
        return did

    def _sync(self, now: int) -> bool:
        """Start-together launches: all blocks go out at once, to cores with nothing queued;
        False while the oldest cannot be placed yet (the caller then starts nothing else)."""
        tasks, cores, mask = self.tasks, self.cores, self.mask
        rq = tasks.ready[Q_SYNC]
        while rq:
            tid = rq[0]
            s = tid & mask
            core_shape, n = tasks.core_shape[s], tasks.blocks[s]
            sets = cores.idle_sets(core_shape, n)
            if sets is None:
                return False
            self._start_launch(tid, s, core_shape, n, now)
            mixed = NPARTS[core_shape] > 1
            for b, got in enumerate(sets):
                for c, p in got:
                    cores.post(c, tid, p, block=b)
                if mixed:
                    self.ran_on.setdefault(tid, set()).add(got[0][0] // C.LANES)
            tasks.next_block[s] = n
            rq.popleft()
            tasks.nready -= 1
        return True

    def _start_launch(self, tid: int, s: int, core_shape: int, n: int, now: int) -> None:
        """The first block of a multi-block task goes out: it finishes after n blocks' parts."""
        self.tasks.parts[s] = n * NPARTS[core_shape]
        self._launched(tid, s, now)

    def _launched(self, tid: int, s: int, now: int) -> None:
        """A task's first part is about to be posted: poison its outputs and checksum its inputs
        (sanitizer, device/sanitizer.py TaskCheck), stamp it."""
        dec = self.sanitize
        if dec is not None:
            blocks = 1 if self.tasks.flags[s] & C.FLAG_SYNC else self.tasks.blocks[s]
            self.checks[tid] = sanitizer.TaskCheck(dec.tensors(self.lay.rec(tid)), dec.last_dirs, blocks,
                                                   self.reference)
        if now:
            self.q[self.lay.ts_off + s * C.TS_WORDS + C.T_DISPATCH] = now

    def _early(self, now: int) -> bool:
        """Early dispatch (device/tasks.py): post the candidates whose core has room, gated (the
        worker skips them if one of its tasks failed since the last abort); then their
        successors in turn. Candidates waiting for room stay for the next pass."""
        tasks, cores, q, mask = self.tasks, self.cores, self.q, self.mask
        fanin, parts, is_early, where = tasks.fanin, tasks.parts, tasks.is_early, tasks.core
        core_shape = tasks.core_shape
        inflight, cap, stamp = cores.inflight, cores.cap, self.lay.ts_off
        work, keep = tasks.early, []
        did = False
        i = 0
        while i < len(work):
            tid, c = work[i]
            i += 1
            s = tid & mask
            if fanin[s] == 0 or is_early[s] or C.is_aic(c) != (core_shape[s] == SHAPE_AIC):
                continue                       # ready by now (or posted, or the wrong kind of core)
            if inflight[c] >= cap or c // C.LANES == cores.reserved:
                keep.append((tid, c))          # waits for room on c
                continue
            parts[s] = 1
            is_early[s] = True
            where[s] = c
            if now:
                t = stamp + s * C.TS_WORDS
                q[t + C.T_READY] = q[t + C.T_DISPATCH] = now
            cores.post(c, tid, 0 if core_shape[s] == SHAPE_AIC else 1, gated=True)
            did = True
            self._forward(tid, s, c, work)
        tasks.early = keep
        return did

    def _forward(self, tid: int, s: int, c: int, work: list) -> None:
        """tid was posted to core c: successors waiting for it alone can follow it there."""
        fanin, queue, mask = self.tasks.fanin, self.tasks.queue, self.mask
        for t in self.tasks.succ[s] or ():
            ts = t & mask
            if fanin[ts] == 1 and queue[ts] <= SHAPE_AIV:      # plain single-core tasks only
                work.append((t, c))


__all__ = ["Dispatcher", "DISPATCH_ORDER"]
