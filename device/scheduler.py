"""The scheduler process: the emulated AICPU.

    host ──records──▶ TASK RING ──ingest──▶ task table + tensor map ──▶ ready queue per core shape
                                                                             │
    workers ◀── mailbox (+ wake if asleep) ◀── dispatch, widest shapes first ┘
       │
       └── done counters ──▶ complete: release successors, buffer users ──▶ retire in order
                                                                  ──▶ RETIRED, FREED ──▶ host

    step()       one pass: ingest, complete, dispatch, retire -- each as far as it can -- then
                 publish for the host; True if anything moved
    idle_wait()  nothing moved: answer the host, yield-spin while work may come soon, then
                 sleep until a producer wakes us

The parts, one job each: device/tasks.py (per-slot task state, ingest, completion, retirement),
device/cores.py (mailboxes, done counters, free cores, mixed-task block reservation),
device/accounting.py (statistics and trace rows), device/hostlink.py (requests, abort, waking
the host, a dead host), device/lifetime.py (runtime tensors' memory). The state that is the
scheduler's own: ``discard`` (after a kernel error or an abort request, ready tasks finish as
"skipped" without running and in-flight ones drain), ``accounted`` (records folded into the
statistics; RETIRED moves with it, in batches, or at once when the host waits), ``nfreed``
(entries put on the FREED queue).

Sleeping without lost wake-ups and without a system call per event: before blocking, the
scheduler stores SLEEP = 1, fences, and looks at HEAD and the done counters once more; every
producer (host publishing records, worker finishing one, host request) stores its data, fences,
and posts the scheduler's semaphore only if it reads SLEEP = 1.

Options (all off by default): tracing keeps every task's times and every dependency edge and
times the loop's steps; recording keeps the edges; the sanitizer poisons Out regions at dispatch
and checks them at completion, and posts an SPMD task's blocks one at a time (device/sanitizer.py);
fuzzing takes ready tasks and free cores in a seeded random order.
"""

from __future__ import annotations

import os
import random
import time
from collections.abc import Callable

import numpy as np

from device import codec as C
from device import layout as L
from device import sanitizer
from device.accounting import Accounting
from device.codec import DeviceContext, make_fence
from device.cores import CorePool
from device.execute import ArgDecoder, predicate_holds, unwritten_report
from device.hostlink import HostLink, child_signals, orphaned
from device.lifetime import BUFS, TID
from device.tasks import NPARTS, Q_INSTANT, Q_PRED, Q_SPMD, Q_SYNC, TaskTable
from kernels.registry import SHAPE_AIC, SHAPE_AIC_AIV, SHAPE_AIC_AIV_X2, SHAPE_AIV, SHAPE_AIV_X2

# Widest first: a mixed task needs a whole set of idle cores and would starve behind narrow ones.
DISPATCH_ORDER = (SHAPE_AIC_AIV_X2, SHAPE_AIC_AIV, SHAPE_AIV_X2, SHAPE_AIC, SHAPE_AIV)
MEASURE_EVERY = 64          # retired records between looks at how long tasks take
INGEST_BATCH = 256          # records per step before the scheduler goes back to dispatching
ORPHAN_CHECK_NS = 500_000_000


def run(ctx: DeviceContext) -> None:
    """Entry point of the scheduler process (forked from the host)."""
    child_signals()
    sched = Scheduler(ctx)
    prof_path = os.environ.get("PTOEMU_PROFILE_SCHEDULER")   # developer aid: cProfile the loop
    try:
        if prof_path:
            import cProfile
            cProfile.runctx("sched.loop()", globals(), {"sched": sched}, prof_path)
        else:
            sched.loop()
    except BaseException as e:  # noqa: BLE001 - the host must hear about any scheduler failure
        sched.link.fail(e)
        raise


class Scheduler:
    def __init__(self, ctx: DeviceContext, fence: Callable[[], None] | None = None) -> None:
        self.ctx = ctx
        lay = self.lay = ctx.layout
        self.q = q = ctx.q
        self.fence = fence or make_fence()
        self.mask = lay.mask
        self.rng = random.Random(ctx.seed) if ctx.schedule == "random" else None
        self.tracing = ctx.trace
        self.tasks = TaskTable(q, ctx.ctrl_buf, lay, ctx.trace or ctx.record, self._freed, ctx.reference)
        self.gm = ctx.gm_buf                     # predicates read their operand here
        self.cores = CorePool(q, ctx.ctrl_buf, lay, ctx.worker_sems, self.fence, self.rng)
        self.acct = Accounting(ctx.kernel_names, tracing=ctx.trace)
        self.link = HostLink(self)
        self.ts_on = ctx.timestamps
        self.sanitize = ArgDecoder(ctx.q, ctx.f, ctx.ctrl_buf, ctx.gm_buf) if ctx.sanitize else None
        self.checks: dict[int, sanitizer.TaskCheck] = {}     # sanitizer: tid -> its watch, dispatch..done
        self.discard = False
        self.accounted = 0
        self.measured = 0
        self.account_batch = max(1, min(256, lay.window // 8))
        self.nfreed = 0
        self.free_off, self.free_mask = lay.free_off, lay.free_slots - 1
        self.rec_np = np.ndarray((lay.window, C.REC_WORDS), np.int64, ctx.ctrl_buf, lay.ring_off * 8)
        self.ts_np = np.ndarray((lay.window, C.TS_WORDS), np.int64, ctx.ctrl_buf, lay.ts_off * 8)
        self.g_head, self.g_retired = lay.g(L.G_HEAD), lay.g(L.G_RETIRED)
        self.g_freed, self.g_sleep, self.g_idle = lay.g(L.G_FREED), lay.g(L.G_SLEEP), lay.g(L.G_IDLE)
        self.g_anydone = lay.g(L.G_ANYDONE)
        # the loop's own bookkeeping
        self.loops = 0
        self.busy_ns = 0
        self.busy_since = self.idle_since = 0
        self.last_check = 0
        self.stopping = False
        self.phase_ns = dict.fromkeys(("ingest", "complete", "dispatch", "retire", "idle"), 0)
        self.t_start = time.perf_counter_ns()
        self.phase_mark: dict[str, int] = {}       # phases() at the last trace take
        if self.tracing:            # time each step of the loop (costs ~0.3 us per loop)
            for phase in ("ingest", "complete", "dispatch", "retire"):
                setattr(self, phase, self._timed(phase, getattr(self, phase)))

    # -- the loop ------------------------------------------------------------------------------------
    def loop(self) -> None:
        self.q[self.lay.g(L.G_SCHED_PID)] = os.getpid()
        self.busy_since = self.last_check = time.perf_counter_ns()
        while not self.stopping:
            self.loops += 1
            if self.step():
                if self.idle_since:
                    self.idle_since = 0
                    self.busy_since = time.perf_counter_ns()
                if self.loops & 63 == 0 and self.periodic():
                    break
            elif not self.idle_wait():
                break

    def step(self) -> bool:
        """One pass over the phases, each as far as it can go; True if anything moved."""
        tasks = self.tasks
        work = False
        head = self.q[self.g_head]
        if tasks.ingested < head:
            self.ingest(min(head, tasks.ingested + INGEST_BATCH))
            work = True
        if self.cores.n_inflight and self.complete():
            work = True
        if tasks.nready and self.dispatch():
            work = True
        if (work or tasks.retired < tasks.ingested) and self.retire():
            work = True
        if work:
            self.link.publish()
        return work

    def idle_wait(self) -> bool:
        """Nothing moved: answer the host, yield while work may come soon, then sleep. False
        when the scheduler must stop."""
        now = time.perf_counter_ns()
        if not self.idle_since:
            self.idle_since = now
            self.busy_ns += now - self.busy_since
            return not self.link.service()
        spin = self.ctx.spin_ns * (4 if self.cores.n_inflight else 1)
        if now - self.idle_since < spin:
            os.sched_yield()
            return True
        if self.periodic():
            return False
        self.sleep()
        return not self.stopping

    def periodic(self) -> bool:
        """Host requests, and (every half second) whether the host is still there."""
        if self.link.service():
            return True
        now = time.perf_counter_ns()
        if now - self.last_check > ORPHAN_CHECK_NS:
            self.last_check = now
            if orphaned(self.ctx.host_pid):
                self.link.orphan_exit()
                return True
        return False

    def sleep(self) -> None:
        """Block until a producer posts (see the module docstring for why none is missed)."""
        q, tasks, sem = self.q, self.tasks, self.ctx.sched_sem
        if self.accounted < tasks.retired:
            self.flush_retired()
            self.link.publish()
        while sem.acquire(False):                     # wake-ups meant for an earlier sleep
            pass
        q[self.g_sleep] = 1
        self.fence()
        if (q[self.g_head] != tasks.ingested or (self.cores.n_inflight and self.cores.moved())
                or self.link.pending()):
            q[self.g_sleep] = 0
            return
        if not self.cores.n_inflight and not tasks.nready:
            q[self.g_idle] = tasks.ingested + 1      # the host may wait for what cannot come
            self.fence()
            if q[self.lay.g(L.G_WAIT_KIND)]:
                self.ctx.host_sem.release()
        while not sem.acquire(True, ORPHAN_CHECK_NS / 1e9):
            if orphaned(self.ctx.host_pid):
                self.link.orphan_exit()
                self.stopping = True
                break
            if q[self.lay.g(L.G_STOP)]:
                break
        q[self.g_sleep] = 0
        q[self.g_idle] = 0
        self.idle_since = 0
        self.busy_since = time.perf_counter_ns()

    # -- phases --------------------------------------------------------------------------------------
    def ingest(self, end: int) -> None:
        tasks = self.tasks
        tasks.ready_ns = time.perf_counter_ns() if self.ts_on else 0
        tasks.ingest(end, self.g_anydone if self.cores.n_inflight else -1)
        end = tasks.ingested
        self.q[self.lay.g(L.G_INGESTED)] = end

    def complete(self) -> bool:
        """Handle every mailbox entry the workers finished since the last look."""
        self.q[self.g_anydone] = 0              # cleared before looking: a later finish sets it again
        done = self.cores.collect()
        if not done:
            return False
        tasks, q = self.tasks, self.q
        # Read after the done counters: a task's end stamp is never later than its done stamp.
        now = tasks.ready_ns = time.perf_counter_ns() if self.ts_on else 0
        parts, mask, ts_off, TSW, finish = tasks.parts, self.mask, self.lay.ts_off, C.TS_WORDS, tasks.finish
        san = self.sanitize is not None
        for e in done:
            tid = e >> C.ENTRY_SHIFT
            s = tid & mask
            left = parts[s] - 1
            parts[s] = left
            if left:
                if san and e & C.ENTRY_SPMD:
                    self._block_part_done(tid, s, left)
                continue
            t = ts_off + s * TSW
            if now:
                q[t + C.T_DONE] = now
            if q[t + C.T_STATUS] != C.STATUS_OK or self.sanitize:
                self._checked(tid, t)
            finish(tid, s)
        return True

    def _checked(self, tid: int, t: int) -> None:
        """A task that failed, or (sanitizer) broke its directions: the run stops."""
        if self.sanitize:
            if self.q[t + C.T_STATUS] == C.STATUS_OK:
                self._check_outs(tid, t)
            self.checks.pop(tid, None)
        if self.q[t + C.T_STATUS] == C.STATUS_ERROR:
            self._kernel_failed()

    def dispatch(self) -> bool:
        """Ready tasks onto cores with a free mailbox slot: records that need no core first,
        then a start-together SPMD launch (while one waits for its cores nothing else starts),
        then multi-block tasks, then the widest shapes first."""
        tasks, cores, q = self.tasks, self.cores, self.q
        if self.discard:
            tasks.skip_ready()
            return True
        did = False
        now = time.perf_counter_ns() if self.ts_on else 0
        ready = tasks.ready
        if ready[Q_PRED] or ready[Q_INSTANT] or ready[Q_SYNC] or ready[Q_SPMD]:
            if ready[Q_PRED] or ready[Q_INSTANT]:
                did = self._instant(now)
            if ready[Q_SYNC] and not self._sync(now):
                cores.wake()
                return did                     # draining the device for the launch
            if ready[Q_SPMD] and self._spmd(now):
                did = True
        mask, ts_off, TSW, parts, rng = self.mask, self.lay.ts_off, C.TS_WORDS, tasks.parts, self.rng
        slow = rng is not None or self.sanitize is not None
        if cores.reserved >= 0 and not (ready[SHAPE_AIC_AIV_X2] or ready[SHAPE_AIC_AIV] or ready[SHAPE_AIV_X2]
                                        or ready[Q_SPMD] or ready[Q_SYNC]):
            cores.reserved = -1                # no mixed task waits any more: release its block
        for shape in DISPATCH_ORDER:
            rq = ready[shape]
            if not rq:
                continue
            single = shape == SHAPE_AIC or shape == SHAPE_AIV
            if single:
                stack = cores.free_aic if shape == SHAPE_AIC else cores.free_aiv
                part = 0 if shape == SHAPE_AIC else 1
                if not slow:
                    n = cores.fill(rq, stack, part, parts, tasks.core, ts_off + C.T_DISPATCH, now)
                    if n:
                        tasks.nready -= n
                        did = True
                    continue
            while rq:
                if rng is not None and len(rq) > 1:             # fuzzing: a random ready task
                    rq.rotate(-rng.randrange(len(rq)))
                got = self._one_block(shape, stack, part) if single else self._one_block(shape)
                if got is None:
                    break
                tid = rq.popleft()
                s = tid & mask
                parts[s] = len(got)
                tasks.core[s] = got[0][0] if single else -1
                if self.sanitize:
                    self._poison(tid)
                if now:
                    q[ts_off + s * TSW + C.T_DISPATCH] = now
                for c, p in got:
                    if not single:
                        cores.skip[c] += 1      # this mailbox slot is taken outside the stack
                    cores.post(c, C.entry(tid, p))
                tasks.nready -= 1
                did = True
        # Early dispatch (not with fuzzing, which wants any order, nor with the sanitizer, which
        # poisons outputs a producer may still be writing).
        if slow or self.discard:
            tasks.early.clear()
        else:
            filled, forward = cores.filled, self._forward
            for tid, c in filled:
                forward(tid, tid & mask, c, tasks.early)
            filled.clear()
            if tasks.early and self._early(now):
                did = True
        cores.wake()
        return did

    def _one_block(self, shape: int, stack: list | None = None, part: int = 0) -> tuple | list | None:
        """Cores (with the part each runs) for one block of ``shape`` now, or None: a free
        mailbox slot for a single-core shape, a set of one block's cores for a mixed one."""
        cores = self.cores
        if stack is not None:
            c = cores.take(stack)
            if c >= 0:
                c = cores.may_take(c, stack)
            return ((c, part),) if c >= 0 else None
        # Short tasks keep to blocks whose workers are awake once enough are busy.
        behind = cores.short and len(cores.busy) >= C.LANES * cores.max_busy
        got = cores.queue_behind(shape) if behind else None
        if got is None:
            got = cores.idle_block(shape)
        if got is None and cores.short and not behind:
            got = cores.queue_behind(shape)
        return got

    def _instant(self, now: int) -> bool:
        """Predicates of ready tasks (a false one makes its task need no core), then every
        record that needs no core finishes -- which may make more of both ready."""
        tasks, ready, mask = self.tasks, self.tasks.ready, self.mask
        preds, instant = ready[Q_PRED], ready[Q_INSTANT]
        did = False
        while preds or instant:
            while preds:
                tid = preds.popleft()
                s = tid & mask
                if predicate_holds(self.q, self.lay.rec(tid), self.gm):
                    ready[tasks.route(s)].append(tid)
                else:
                    self.q[self.lay.ts(tid) + C.T_STATUS] = C.STATUS_PRED_FALSE
                    if tasks.keep_edges:
                        tasks.pred_false.append(tid)
                    instant.append(tid)
            while instant:
                tid = instant.popleft()
                tasks.nready -= 1
                tasks.finish_instant(tid, tid & mask, now)
                did = True
        return did

    def _spmd(self, now: int) -> bool:
        """Multi-block tasks, oldest first: as many blocks as cores allow; the rest wait (waves)."""
        tasks, cores, mask = self.tasks, self.cores, self.mask
        rq = tasks.ready[Q_SPMD]
        did = False
        while rq:
            tid = rq[0]
            s = tid & mask
            shape, n, b = tasks.shape[s], tasks.blocks[s], tasks.next_block[s]
            if b == 0:
                self._start_launch(tid, s, shape, n, now)
            single = shape <= SHAPE_AIV
            stack = cores.free_aic if shape == SHAPE_AIC else cores.free_aiv
            part = 0 if shape == SHAPE_AIC else 1
            while b < n:
                if self.sanitize and b and tasks.parts[s] > (n - b) * NPARTS[shape]:
                    break                      # sanitizer: one block at a time (its write map)
                got = self._one_block(shape, stack, part) if single else self._one_block(shape)
                if got is None:
                    break
                for c, p in got:
                    if not single:
                        cores.skip[c] += 1
                    cores.post(c, C.entry(tid, p, block=b))
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
            shape, n = tasks.shape[s], tasks.blocks[s]
            sets = cores.idle_sets(shape, n)
            if sets is None:
                return False
            self._start_launch(tid, s, shape, n, now)
            for b, got in enumerate(sets):
                for c, p in got:
                    cores.skip[c] += 1
                    cores.post(c, C.entry(tid, p, block=b))
            tasks.next_block[s] = n
            rq.popleft()
            tasks.nready -= 1
        return True

    def _start_launch(self, tid: int, s: int, shape: int, n: int, now: int) -> None:
        """The first block of a multi-block task goes out: it finishes after n blocks' parts."""
        self.tasks.parts[s] = n * NPARTS[shape]
        if self.sanitize:
            self._poison(tid)
        if now:
            self.q[self.lay.ts_off + s * C.TS_WORDS + C.T_DISPATCH] = now

    def _early(self, now: int) -> bool:
        """Early dispatch (device/tasks.py): post the candidates whose core has room, gated (the
        worker skips them if one of its tasks failed since the last abort); then their
        successors in turn. Candidates waiting for room stay for the next pass."""
        tasks, cores, q, mask = self.tasks, self.cores, self.q, self.mask
        fanin, parts, is_early, shape, where = tasks.fanin, tasks.parts, tasks.is_early, tasks.shape, tasks.core
        inflight, cap, stamp = cores.inflight, cores.cap, self.lay.ts_off
        work, keep = tasks.early, []
        did = False
        i = 0
        while i < len(work):
            tid, c = work[i]
            i += 1
            s = tid & mask
            if fanin[s] == 0 or is_early[s] or C.is_aic(c) != (shape[s] == SHAPE_AIC):
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
            cores.skip[c] += 1                 # this mailbox slot is taken outside the stack
            cores.post(c, C.entry(tid, 0 if shape[s] == SHAPE_AIC else 1, gated=True))
            did = True
            self._forward(tid, s, c, work)
        tasks.early = keep
        return did

    def _forward(self, tid: int, s: int, c: int, work: list) -> None:
        """tid was posted to core c: successors waiting for it alone can follow it there."""
        lst = self.tasks.succ[s]
        if lst:
            fanin, queue, mask = self.tasks.fanin, self.tasks.queue, self.mask
            for t in lst:
                ts = t & mask
                if fanin[ts] == 1 and queue[ts] <= SHAPE_AIV:      # plain single-core tasks only
                    work.append((t, c))

    def retire(self) -> bool:
        tasks = self.tasks
        if not tasks.retire():
            return False
        if tasks.retired - self.accounted >= self.account_batch:
            self.flush_retired()
        if tasks.retired - self.measured >= MEASURE_EVERY:
            self.measured = tasks.retired
            self.cores.measure()               # short or long tasks? (device/cores.py)
        return True

    def flush_retired(self) -> None:
        """Fold retired records into the statistics, then hand their ring slots back to the host.
        Batched: the host only sees RETIRED move once the times in those slots are read."""
        r0, r1 = self.accounted, self.tasks.retired
        if r0 >= r1:
            return
        m = self.mask
        for a, b in ((r0, min(r1, (r0 | m) + 1)), ((r0 | m) + 1, r1)):   # the ring may wrap
            if a < b:
                sa, sb = a & m, ((b - 1) & m) + 1
                # Columns before rows: a record is kilobytes, its few words of interest are not.
                self.acct.account(self.rec_np[sa:sb, :C.H_SUBMIT_NS + 1], self.ts_np[sa:sb],
                                  np.arange(a, b), self.ts_on)
        self.accounted = r1
        self.q[self.g_retired] = r1

    def _freed(self, a: list) -> None:
        """A heap allocation died: forget its buffers and tell the host (FREED queue)."""
        drop = self.tasks.tmap.drop
        for b in a[BUFS]:
            drop(b)
        n = self.nfreed
        self.q[self.free_off + (n & self.free_mask)] = a[TID]
        self.nfreed = n + 1
        self.q[self.g_freed] = n + 1

    # -- failures and aborts -------------------------------------------------------------------------
    def _kernel_failed(self) -> None:
        q, g = self.q, self.lay.g(L.G_ERROR)
        if q[g] == L.ERR_NONE:
            q[g] = L.ERR_KERNEL
            self.ctx.host_sem.release()
        self.discard = True

    def abort(self) -> bool:
        """Discard what has not run; True once nothing is in flight and all has retired (then
        the scheduler is ready for the next run)."""
        self.discard = True
        tasks = self.tasks
        tasks.heap.release_all_holds()
        tasks.skip_ready()
        head = self.q[self.g_head]
        if self.cores.n_inflight or tasks.ingested != head:
            return False
        tasks.retire()
        self.flush_retired()
        if tasks.retired != head:
            return False
        self.discard = False
        self.cores.reserved = -1
        tasks.tmap.clear()
        self.checks.clear()
        return True

    def _poison(self, tid: int) -> None:
        """Sanitizer, at dispatch: poison the task's Outs, checksum its Ins (device/sanitizer.py)."""
        dec, s = self.sanitize, tid & self.mask
        blocks = 1 if self.tasks.flags[s] & C.FLAG_SYNC else self.tasks.blocks[s]
        self.checks[tid] = sanitizer.TaskCheck(dec.tensors(self.lay.rec(tid)), dec.last_dirs, blocks,
                                               self.ctx.reference)

    def _block_part_done(self, tid: int, s: int, left: int) -> None:
        """Sanitizer: a part of an SPMD task finished; if it ended a block, update the write map
        (blocks run one at a time, see _spmd)."""
        check, tasks = self.checks.get(tid), self.tasks
        b = tasks.next_block[s]
        if check is not None and check.blocks > 1 and left == (tasks.blocks[s] - b) * NPARTS[tasks.shape[s]]:
            check.block_done(b - 1, self.sanitize.tensors(self.lay.rec(tid)))

    def _check_outs(self, tid: int, t: int) -> None:
        """Sanitizer: report Out elements the task left holding poison."""
        q, r = self.q, self.lay.rec(tid)
        k = self.tasks.kernel[tid & self.mask]
        fn = next(p for p in self.ctx.kernel_parts[k] if p is not None)
        core = q[t + C.T_CORE0] if q[t + C.T_START0] >= q[t + C.T_DISPATCH] else q[t + C.T_CORE1]
        check = self.checks.get(tid)
        if check is not None and check.blocks > 1:
            check.block_done(check.blocks - 1, self.sanitize.tensors(r))     # the last block
        rep = unwritten_report(self.sanitize, r, fn, tid, self.ctx.kernel_names[k], C.core_name(core), check)
        if rep is not None:
            q[t + C.T_STATUS] = C.STATUS_ERROR
            C.write_report(q, self.lay.err_area(core), C.ERR_AREA_WORDS, rep)

    # -- reports -------------------------------------------------------------------------------------
    def _timed(self, phase: str, fn: Callable) -> Callable:
        perf, acc = time.perf_counter_ns, self.phase_ns

        def timed(*a):
            t0 = perf()
            r = fn(*a)
            acc[phase] += perf() - t0
            return r
        return timed

    def phases(self) -> dict:
        """Scheduler time per step of its loop since it started; "idle" is everything else
        (spinning, sleeping, servicing the host)."""
        ph = dict(self.phase_ns)
        ph["idle"] = time.perf_counter_ns() - self.t_start - sum(v for k, v in ph.items() if k != "idle")
        return ph

    def stats(self) -> dict:
        a, t = self.acct, self.tasks
        a.n_alloc, a.n_scope, a.n_dummy, a.n_probe, a.records = t.n_alloc, t.n_scope, t.n_dummy, t.n_probe, t.completed
        a.busy_ns, a.loops = self.busy_ns, self.loops
        a.loop_phases = self.phases() if self.tracing else None
        return a.report()

    def take_trace(self) -> dict:
        """Hand the trace rows and edges collected so far to the host (through a file: it can be
        large), with the loop's phase times since the previous take."""
        if not self.tasks.keep_edges:
            return {"path": None}
        rows = self.acct.take_rows()
        edges = np.array(self.tasks.edges, np.int64).reshape(-1, 2)
        self.tasks.edges = []
        pred_false, self.tasks.pred_false = self.tasks.pred_false, []
        path = os.path.join(self.ctx.trace_dir, f"trace-{os.getpid()}-{self.loops}.npz")
        np.savez(path, rows=rows, edges=edges)
        now, mark = self.phases(), self.phase_mark
        self.phase_mark = now
        return {"path": path, "pred_false": pred_false, "phase_ns": {k: v - mark.get(k, 0) for k, v in now.items()},
                "kernel_names": self.ctx.kernel_names}

    def diagnose(self) -> dict:
        """What every unretired record is waiting for, and what every core is doing."""
        q, lay, tasks, names = self.q, self.lay, self.tasks, self.ctx.kernel_names
        now = time.perf_counter_ns()
        oldest = tasks.describe()
        for d in oldest:
            d["kernel"] = names[d["kernel"]] if d["kernel"] >= 0 else d["kind"]
        running = [{"tid": C.entry_tid(e), "kernel": names[tasks.kernel[C.entry_tid(e) & self.mask]],
                    "core": C.core_name(c),
                    "for_s": (now - q[lay.ts(C.entry_tid(e)) + C.T_DISPATCH]) / 1e9 if self.ts_on else None}
                   for c, e in self.cores.running()]
        return {"head": q[self.g_head], "ingested": tasks.ingested, "retired": tasks.retired,
                "completed": tasks.completed, "in_flight": self.cores.n_inflight, "ready": tasks.nready,
                "discarding": self.discard, "oldest": oldest, "running": running,
                "heap_allocations": tasks.heap.describe(),
                "short_tasks": self.cores.short, "mailbox_cap": self.cores.cap,
                "tensormap_buffers": len(tasks.tmap), "tensormap_entries": tasks.tmap.entries()}


__all__ = ["run", "Scheduler"]
