"""The scheduler process: the emulated AICPU.

    host ──records──▶ TASK RING ──ingest──▶ tensor map ──edges──▶ pending (fan-in > 0)
                                                                     │ last producer finished
                                                                     ▼
    workers ◀──mailbox + sem── dispatch ◀── ready queue per core shape (AIC, AIV, AIV_X2, ...)
       │
       └── done counter + sem ──▶ completions ──▶ release successors, drop buffer users
                                                  retire in order ──▶ RETIRED ──▶ host
                                                  dead heap allocations ──▶ FREED queue ──▶ host

One loop does five things, each as far as it can before the next:
  1. ingest   new records: task (dependencies from the tensor map), scope end (drop the scope's
              hold on its tasks), alloc (a builtin task that completes without a worker)
  2. complete done counters that moved: a task whose parts all finished releases its successors
  3. dispatch ready tasks to cores with a free mailbox slot; widest shapes first; a mixed task
              waits for all the cores it needs in one block to be idle, so its parts start together
  4. retire   the oldest records, in order, once finished; publish RETIRED (task ring space)
  5. wait     yield-spin while tasks are in flight, then block on the scheduler semaphore (one
              token per published record and per completion, so no wake-up is ever lost)

A record retires (its ring slot goes back to the host) as soon as it has finished. The memory of
runtime tensors lives apart from ring slots (device/lifetime.py): a heap allocation stays until the
scope its tensors were made in has ended and its last user has finished; the heap tail moves over
dead allocations in allocation order.

After a kernel error, or when the host asks to abort, the scheduler discards: ready tasks finish
as "skipped" without running, in-flight ones drain, and every scope hold is released, so the host
never waits forever. An abort is acknowledged once nothing is in flight and all is retired.

Options that change the loop (all off by default): tracing keeps every task's times and every
dependency edge (and times the loop's steps); the sanitizer poisons Out regions at dispatch and
checks them at completion (device/sanitizer.py); schedule fuzzing takes ready tasks and free cores
in a seeded random order. Statistics are folded in with numpy when tasks retire, in batches, so
they cost little per task; RETIRED moves in the same batches (or at once when the host waits).
"""

from __future__ import annotations

import os
import random
import signal
import threading
import time
from collections import deque
from types import SimpleNamespace

import numpy as np

from device import layout as L
from device import sanitizer
from device.execute import ArgDecoder, unwritten_report
from device.hostlink import alive, child_signals, orphaned
from device.lifetime import BUFS, TID, Lifetimes
from device.shm import write_report
from device.tensormap import TensorMap
from device.worker import core_name
from kernels.registry import SHAPE_AIC, SHAPE_AIC_AIV, SHAPE_AIC_AIV_X2, SHAPE_AIV, SHAPE_AIV_X2

# Widest first: a mixed task needs a whole set of idle cores and would starve behind narrow ones.
DISPATCH_ORDER = (SHAPE_AIC_AIV_X2, SHAPE_AIC_AIV, SHAPE_AIV_X2, SHAPE_AIC, SHAPE_AIV)
INGEST_BATCH = 256          # records per loop before the scheduler goes back to dispatching
# Trace rows: tid kernel shape submit ready dispatch done status core0..2 start0..2 end0..2 (ns;
# a part that did not run has core -1).
TRACE_COLUMNS = ("tid", "kernel", "shape", "submit", "ready", "dispatch", "done", "status",
                 "core0", "core1", "core2", "start0", "start1", "start2", "end0", "end1", "end2")
TRACE_COLS = len(TRACE_COLUMNS)
SMART_SCAN = 8              # up to this many busy cores are polled one by one, else one snapshot


def _fence_factory():
    lock = threading.Lock()

    def fence() -> None:
        # A lock round trip is a locked instruction on x86: a full barrier between our stores
        # (RETIRED, ...) and the load of the host's wait request that follows.
        lock.acquire()
        lock.release()
    return fence


def run(ctx: SimpleNamespace) -> None:
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
        import traceback
        q = ctx.q
        write_report(q, ctx.layout.err_area(ctx.layout.ncores), L.ERR_AREA_WORDS, {
            "where": "scheduler", "error": f"{type(e).__name__}: {e}",
            "traceback": traceback.format_exc()})
        q[ctx.layout.g(L.G_ERROR)] = L.ERR_SCHEDULER
        ctx.host_sem.release()
        raise


class Scheduler:
    def __init__(self, ctx: SimpleNamespace) -> None:
        self.ctx = ctx
        lay: L.Layout = ctx.layout
        self.lay = lay
        self.q = ctx.q
        W = lay.window
        self.mask = lay.mask
        self.fanin = [0] * W
        self.succ: list[list | None] = [None] * W
        self.done_tid = [-1] * W
        self.parts_left = [0] * W
        self.owners: list[list | None] = [None] * W     # allocation records this task uses
        self.kernel = [0] * W
        self.shape = [0] * W
        self.ready = [deque() for _ in range(5)]
        self.nready = 0
        self.ingested = 0
        self.retired = 0
        self.completed = 0
        self.discard = False
        self.tracing = bool(ctx.trace)
        # Tracing and graph recording keep every dependency edge, also to finished producers.
        self.keep_edges = self.tracing or bool(ctx.record)
        self.tmap = TensorMap(self.is_done, self.geometry, keep_done=self.keep_edges)
        self.heap = Lifetimes(self._freed)
        self.nfreed = 0
        self.edges: list[tuple[int, int]] = []         # (consumer, producer), tracing only
        self.phase_ns = dict.fromkeys(("ingest", "complete", "dispatch", "retire", "idle"), 0)
        self.t_start = time.perf_counter_ns()
        self.phase_mark: dict[str, int] = {}       # phases() at the last trace take
        if self.tracing:            # time each step of the loop (costs ~0.3 us per loop)
            for phase, name in (("ingest", "ingest"), ("complete", "collect"), ("dispatch", "dispatch"),
                                ("retire", "retire"), ("retire", "publish")):
                setattr(self, name, self._timed(phase, getattr(self, name)))
        # cores
        n = lay.ncores
        self.ncores, self.nblocks, self.D = n, n // 3, lay.depth
        self.inflight = [0] * n
        self.pending = [deque() for _ in range(n)]
        self.acked = [0] * n
        self.busy: set[int] = set()
        self.n_inflight = 0
        self.skip = [0] * n
        self.free_aic = [c for c in range(0, n, 3) for _ in range(self.D)]
        self.free_aiv = [c for c in range(n) if c % 3 for _ in range(self.D)]
        self.mb = [lay.mailbox(c) for c in range(n)]
        self.done_idx = [lay.wline(c) + L.W_DONE for c in range(n)]
        self.done_np = np.ndarray((n,), np.int64, ctx.ctrl_buf, lay.wline(0) * 8 + L.W_DONE * 8,
                                  (2 * L.LINE * 8,))
        self.sems = ctx.worker_sems
        self.reserved = -1        # block kept free for a waiting mixed task
        self.fence = _fence_factory()
        self.ts_on = ctx.timestamps
        # statistics (kept here, published on request)
        nk = len(ctx.kernel_parts)
        self.k_count = [0] * nk
        self.k_exec = [0] * nk
        self.k_skipped = [0] * nk
        self.k_errors = [0] * nk
        self.n_alloc = 0
        self.n_scope = 0
        self.phase = [0] * 5            # submit->ready, ready->dispatch, dispatch->start, exec, end->seen
        self.n_timed = 0
        self.busy_ns = 0
        self.loops = 0
        self.trace: list | None = [] if ctx.trace else None
        self.last_abort = 0
        self.g_head = lay.g(L.G_HEAD)
        self.g_retired = lay.g(L.G_RETIRED)
        self.g_freed = lay.g(L.G_FREED)
        self.free_off, self.free_mask = lay.free_off, lay.free_slots - 1
        self.accounted = 0
        self.account_batch = max(1, min(256, W // 8))
        self.ts_off = lay.ts_off
        self.ts_np = np.ndarray((W, L.TS_WORDS), np.int64, ctx.ctrl_buf, lay.ts_off * 8)
        self.sanitize = ArgDecoder(ctx) if ctx.sanitize else None
        # Schedule fuzzing: take ready tasks and free cores in a seeded random order.
        self.rng = random.Random(ctx.seed) if ctx.schedule == "random" else None
        self.rec_np = np.ndarray((W, L.REC_WORDS), np.int64, ctx.ctrl_buf, lay.ring_off * 8)

    # -- helpers ---------------------------------------------------------------------------------
    def is_done(self, tid: int) -> bool:
        return tid < self.retired or self.done_tid[tid & self.mask] == tid

    def geometry(self, ref: int) -> tuple:
        return L.arg_geometry(self.q, ref)

    # -- 1. ingest ------------------------------------------------------------------------------
    def ingest(self, head: int) -> None:
        q, lay, mask = self.q, self.lay, self.mask
        end = min(head, self.ingested + INGEST_BATCH)
        access = self.tmap.access
        ring_off, ts_off = lay.ring_off, lay.ts_off
        for tid in range(self.ingested, end):
            s = tid & mask
            r = ring_off + s * L.REC_WORDS
            self.done_tid[s] = -1
            kind = q[r + L.H_KIND]
            self.owners[s] = None
            self.succ[s] = None
            if kind == L.KIND_SCOPE_END:
                self.n_scope += 1
                depth = q[r + L.H_AUX]
                self.heap.end_scope(depth)
                if depth == 0 and self.keep_edges:
                    self.tmap.clear()        # a run's end: nothing later depends on it
                self._finish(tid, s)
                continue
            nt = q[r + L.H_NTENSORS]
            preds: list[int] = []
            owners = None
            if q[r + L.H_FLAGS] & L.FLAG_HEAP:
                bufs = [q[a] for a in range(r + L.ARGS_OFF, r + L.ARGS_OFF + nt * L.ARG_WORDS, L.ARG_WORDS)
                        if q[a + L.A_OWNER] == tid]
                owners = [self.heap.allocate(tid, bufs, q[r + L.H_HOLD])]
            use = self.heap.use
            for i in range(nt):
                a = r + L.ARGS_OFF + i * L.ARG_WORDS
                owner = q[a + L.A_OWNER]
                if owner >= 0 and owner != tid:
                    rec = use(owner)
                    if rec is not None:
                        if owners is None:
                            owners = [rec]
                        else:
                            owners.append(rec)
                if kind == L.KIND_TASK:
                    meta = q[a + L.A_META]
                    access(q[a], tid, meta & 3, q[a + L.A_LO], q[a + L.A_HI], meta & L.META_CONTIG, a,
                           preds)
            self.owners[s] = owners
            if kind == L.KIND_ALLOC:
                self.n_alloc += 1
                self._finish(tid, s)
                continue
            q[ts_off + s * L.TS_WORDS + L.T_STATUS] = L.STATUS_OK
            self.kernel[s] = q[r + L.H_KERNEL]
            self.shape[s] = q[r + L.H_SHAPE]
            n = 0
            if preds:
                is_done = self.is_done
                succ = self.succ
                if self.keep_edges:
                    self.edges.extend((tid, p) for p in set(preds) if p != tid)
                for p in set(preds):
                    if p != tid and not is_done(p):
                        ps = p & mask
                        lst = succ[ps]
                        if lst is None:
                            succ[ps] = [tid]
                        else:
                            lst.append(tid)
                        n += 1
            self.fanin[s] = n
            if n == 0:
                self._make_ready(tid, s)
        self.ingested = end
        q[lay.g(L.G_INGESTED)] = end

    def _make_ready(self, tid: int, s: int) -> None:
        if self.ts_on:
            self.q[self.ts_off + s * L.TS_WORDS + L.T_READY] = time.perf_counter_ns()
        self.ready[self.shape[s]].append(tid)
        self.nready += 1

    def _finish(self, tid: int, s: int) -> None:
        """A record is finished: release successors and the buffers it used."""
        self.done_tid[s] = tid
        self.completed += 1
        mask = self.mask
        lst = self.succ[s]
        if lst is not None:
            self.succ[s] = None
            fanin = self.fanin
            for t in lst:
                ts = t & mask
                fanin[ts] -= 1
                if fanin[ts] == 0:
                    self._make_ready(t, ts)
        own = self.owners[s]
        if own is not None:
            self.owners[s] = None
            release = self.heap.release
            for a in own:
                release(a)

    def _freed(self, a: list) -> None:
        """A heap allocation died: forget its buffers and tell the host (FREED queue)."""
        drop = self.tmap.drop
        for b in a[BUFS]:
            drop(b)
        n = self.nfreed
        self.q[self.free_off + (n & self.free_mask)] = a[TID]
        self.nfreed = n + 1
        self.q[self.g_freed] = n + 1

    # -- 2. complete -----------------------------------------------------------------------------
    def collect(self) -> bool:
        """Handle every mailbox entry the workers finished since the last look."""
        if len(self.busy) <= SMART_SCAN:
            q = self.q
            moved = [c for c in self.busy if q[self.done_idx[c]] != self.acked[c]]
            if not moved:
                return False
            for c in moved:
                self._core_done(c, q[self.done_idx[c]])
            return True
        snap = self.done_np.tolist()
        acked = self.acked
        moved = False
        for c in list(self.busy):
            if snap[c] != acked[c]:
                self._core_done(c, snap[c])
                moved = True
        return moved

    def _core_done(self, c: int, done: int) -> None:
        q, mask = self.q, self.mask
        pend = self.pending[c]
        free = self.free_aic if c % 3 == 0 else self.free_aiv
        parts_left = self.parts_left
        ts_off = self.ts_off
        n = done - self.acked[c]
        now = time.perf_counter_ns() if self.ts_on else 0
        for _ in range(n):
            tid = pend.popleft() >> 2
            s = tid & mask
            free.append(c)
            parts_left[s] -= 1
            if parts_left[s] == 0:
                t = ts_off + s * L.TS_WORDS
                if now:
                    q[t + L.T_DONE] = now
                if self.sanitize and q[t + L.T_STATUS] != L.STATUS_ERROR:
                    self._check_outs(tid, t)
                if q[t + L.T_STATUS] == L.STATUS_ERROR:
                    self._kernel_failed(tid)
                self._finish(tid, s)
        self.n_inflight -= n
        self.inflight[c] -= n
        self.acked[c] = done
        if self.inflight[c] == 0:
            self.busy.discard(c)

    def account(self, r0: int, r1: int) -> None:
        """Fold the times of retired tasks [r0, r1) into the statistics, vectorised: per task
        this costs a few numpy element operations instead of a dozen Python reads."""
        m = self.mask
        for a, b in ((r0, min(r1, (r0 | m) + 1)), ((r0 | m) + 1, r1)):
            if a >= b:
                continue
            sa, sb = a & m, ((b - 1) & m) + 1
            # Pick columns before rows: a record is 4 KiB, its few words of interest are not.
            kind = self.rec_np[sa:sb, L.H_KIND]
            task = kind == L.KIND_TASK
            if not task.any():
                continue
            rec = self.rec_np[sa:sb, :L.H_SUBMIT_NS + 1][task]
            ts = self.ts_np[sa:sb][task]
            k = rec[:, L.H_KERNEL]
            status = ts[:, L.T_STATUS]
            nk = len(self.k_count)
            for arr, st in ((self.k_count, L.STATUS_OK), (self.k_errors, L.STATUS_ERROR),
                            (self.k_skipped, L.STATUS_SKIPPED)):
                c = np.bincount(k[status == st], minlength=nk)
                for i in np.flatnonzero(c):
                    arr[i] += int(c[i])
            if not self.ts_on:
                continue
            ran = status != L.STATUS_SKIPPED
            rec, ts, k = rec[ran], ts[ran], k[ran]
            if not len(k):
                continue
            dsp = ts[:, L.T_DISPATCH]
            starts = ts[:, L.T_START0:L.T_END2 + 1:2]
            ends = ts[:, L.T_END0:L.T_END2 + 1:2]
            valid = starts >= dsp[:, None]
            start = np.where(valid, starts, np.iinfo(np.int64).max).min(1)
            end = np.where(valid, ends, 0).max(1)
            ph = self.phase
            ph[0] += int((ts[:, L.T_READY] - rec[:, L.H_SUBMIT_NS]).sum())
            ph[1] += int((dsp - ts[:, L.T_READY]).sum())
            ph[2] += int((start - dsp).sum())
            ex = end - start
            ph[3] += int(ex.sum())
            ph[4] += int((ts[:, L.T_DONE] - end).sum())
            e = np.bincount(k, weights=ex, minlength=nk)
            for i in np.flatnonzero(e):
                self.k_exec[i] += int(e[i])
            self.n_timed += len(k)
            if self.trace is not None:
                cores = np.where(valid, ts[:, L.T_CORE0:L.T_CORE2 + 1], -1)
                self.trace.append(np.column_stack([
                    np.arange(a, b)[task][ran], k, rec[:, L.H_SHAPE], rec[:, L.H_SUBMIT_NS],
                    ts[:, L.T_READY], dsp, ts[:, L.T_DONE], ts[:, L.T_STATUS],
                    cores, np.where(valid, starts, 0), np.where(valid, ends, 0)]))

    def _poison(self, tid: int) -> None:
        dec = self.sanitize
        sanitizer.poison_outs(dec.tensors(self.lay.rec(tid)), dec.last_dirs)

    def _check_outs(self, tid: int, t: int) -> None:
        """Sanitizer: report Out elements the task left holding poison."""
        q, r = self.q, self.lay.rec(tid)
        k = self.kernel[tid & self.mask]
        fn = next(p for p in self.ctx.kernel_parts[k] if p is not None)
        core = q[t + L.T_CORE0] if q[t + L.T_START0] >= q[t + L.T_DISPATCH] else q[t + L.T_CORE1]
        rep = unwritten_report(self.sanitize, r, fn, tid, self.ctx.kernel_names[k], core_name(core))
        if rep is not None:
            q[t + L.T_STATUS] = L.STATUS_ERROR
            write_report(q, self.lay.err_area(core), L.ERR_AREA_WORDS, rep)

    def _kernel_failed(self, tid: int) -> None:
        q = self.q
        if q[self.lay.g(L.G_ERROR)] == L.ERR_NONE:
            q[self.lay.g(L.G_ERROR)] = L.ERR_KERNEL
            self.ctx.host_sem.release()
        self.discard = True

    # -- 3. dispatch -----------------------------------------------------------------------------
    def _post(self, c: int, entry: int) -> None:
        q = self.q
        mb = self.mb[c]
        h = q[mb]
        q[mb + 1 + h % self.D] = entry
        q[mb] = h + 1
        self.sems[c].release()
        self.pending[c].append(entry)
        self.inflight[c] += 1
        self.n_inflight += 1
        self.busy.add(c)

    def _pop_free(self, stack: list) -> int:
        skip, reserved = self.skip, self.reserved
        parked = None
        c = -1
        while stack:
            x = stack.pop()
            if skip[x]:
                skip[x] -= 1
                continue
            if reserved >= 0 and x // 3 == reserved:
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

    def skip_ready(self) -> None:
        """Discarding: finish every ready task without running it. Finishing one may make more
        ready, so this loops (never recurses) until the queues are empty."""
        q, lay, mask = self.q, self.lay, self.mask
        while self.nready:
            for rq in self.ready:
                while rq:
                    tid = rq.popleft()
                    self.nready -= 1
                    q[lay.ts(tid) + L.T_STATUS] = L.STATUS_SKIPPED
                    self._finish(tid, tid & mask)

    def dispatch(self) -> bool:
        if self.discard:
            self.skip_ready()
            return True
        did = False
        ready = self.ready
        q = self.q
        ts_on = self.ts_on
        mask, ts_off, TSW = self.mask, self.ts_off, L.TS_WORDS
        parts_left, skip = self.parts_left, self.skip
        for shape in DISPATCH_ORDER:
            rq = ready[shape]
            if not rq:
                continue
            if shape == SHAPE_AIC or shape == SHAPE_AIV:
                stack = self.free_aic if shape == SHAPE_AIC else self.free_aiv
                part = 0 if shape == SHAPE_AIC else 1
                while rq and stack:
                    if self.rng:
                        self._shuffle(rq, stack)
                    c = stack[-1]
                    if skip[c] or self.reserved >= 0:
                        c = self._pop_free(stack)
                        if c < 0:
                            break
                    else:
                        stack.pop()
                    tid = rq.popleft()
                    parts_left[tid & mask] = 1
                    if self.sanitize:
                        self._poison(tid)
                    if ts_on:
                        q[ts_off + (tid & mask) * TSW + L.T_DISPATCH] = time.perf_counter_ns()
                    self._post(c, tid * 4 + part)
                    self.nready -= 1
                    did = True
            else:
                while rq:
                    if self.rng:
                        self._shuffle(rq, None)
                    cores = self._idle_block(shape)
                    if cores is None:
                        break
                    tid = rq.popleft()
                    if self.sanitize:
                        self._poison(tid)
                    if ts_on:
                        q[ts_off + (tid & mask) * TSW + L.T_DISPATCH] = time.perf_counter_ns()
                    parts_left[tid & mask] = len(cores)
                    for c, part in cores:
                        skip[c] += 1          # this mailbox slot is taken outside the stack
                        self._post(c, tid * 4 + part)
                    self.nready -= 1
                    did = True
        return did

    def _shuffle(self, rq: deque, stack: list | None) -> None:
        """Fuzzing: bring a random ready task to the front and a random free core to the top."""
        rng = self.rng
        if len(rq) > 1:
            rq.rotate(-rng.randrange(len(rq)))
        if stack is not None and len(stack) > 1:
            i = rng.randrange(len(stack))
            stack[i], stack[-1] = stack[-1], stack[i]

    def _idle_block(self, shape: int) -> list | None:
        """Cores (with the part each runs) of one block able to start a mixed task now."""
        inf = self.inflight
        best, best_load = -1, 1 << 30
        for b in range(self.nblocks):
            c = 3 * b
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
        # Nothing idle: keep the least loaded block from taking new single-core work until it is.
        if self.reserved < 0:
            self.reserved = best
        return None

    # -- 4. retire -------------------------------------------------------------------------------
    def retire(self) -> bool:
        r0 = r = self.retired
        end = self.ingested
        mask = self.mask
        done_tid = self.done_tid
        while r < end and done_tid[r & mask] == r:
            r += 1
        if r == r0:
            return False
        self.retired = r
        if r == end and not self.keep_edges:
            self.tmap.clear()      # nothing unfinished is left to depend on
        if r - self.accounted >= self.account_batch:
            self.flush_retired()
        return True

    def flush_retired(self) -> None:
        """Fold retired tasks into the statistics, then hand their ring slots back to the host.
        Batched: the host only sees RETIRED move once the times in those slots are read."""
        if self.accounted < self.retired:
            self.account(self.accounted, self.retired)
            self.accounted = self.retired
            self.q[self.g_retired] = self.retired

    def publish(self) -> None:
        q, lay = self.q, self.lay
        q[lay.g(L.G_COMPLETED)] = self.completed
        self.fence()
        kind = q[lay.g(L.G_WAIT_KIND)]
        if kind:
            v = q[lay.g(L.G_WAIT_VALUE)]
            if kind == L.WAIT_RETIRED and self.retired >= v > self.accounted:
                self.flush_retired()
            if ((kind == L.WAIT_RETIRED and self.accounted >= v)
                    or (kind == L.WAIT_COMPLETED and self.completed >= v)
                    or (kind == L.WAIT_FREED and self.nfreed >= v)):
                self.ctx.host_sem.release()

    # -- host requests ---------------------------------------------------------------------------
    def service(self) -> bool:
        """Stop, abort and report requests from the host. True when the loop must end."""
        q, lay = self.q, self.lay
        if q[lay.g(L.G_STOP)]:
            return True
        req = q[lay.g(L.G_REQ)]
        if req != q[lay.g(L.G_ACK)]:
            kind = req >> 32
            area = lay.sched_area
            q[area] = 0
            self.flush_retired()
            if kind == L.REQ_STATS:
                write_report(q, area, L.SCHED_AREA_WORDS, self.stats())
            elif kind == L.REQ_DIAG:
                write_report(q, area, L.SCHED_AREA_WORDS, self.diagnose())
            elif kind == L.REQ_TRACE:
                write_report(q, area, L.SCHED_AREA_WORDS, self.take_trace())
            q[lay.g(L.G_ACK)] = req
            self.ctx.host_sem.release()
        abort = q[lay.g(L.G_ABORT_REQ)]
        if abort != self.last_abort:
            self.discard = True
            self.heap.release_all_holds()
            self.skip_ready()
            head = q[self.g_head]
            if self.n_inflight == 0 and self.ingested == head:
                self.retire()
                self.flush_retired()
                if self.retired == head:
                    self.discard = False
                    self.reserved = -1
                    self.tmap.clear()
                    q[lay.g(L.G_ERROR)] = L.ERR_NONE
                    self.last_abort = abort
                    q[lay.g(L.G_ABORT_ACK)] = abort
                    self.publish()
                    self.ctx.host_sem.release()
        return False

    def _timed(self, phase: str, fn):
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

    def take_trace(self) -> dict:
        """Hand the trace collected so far to the host (through a file: it can be large)."""
        if not self.keep_edges:
            return {"path": None}
        rows = np.concatenate(self.trace) if self.trace else np.zeros((0, TRACE_COLS), np.int64)
        edges = np.array(self.edges, np.int64).reshape(-1, 2)
        self.trace, self.edges = ([] if self.tracing else None), []
        path = os.path.join(self.ctx.trace_dir, f"trace-{os.getpid()}-{self.loops}.npz")
        np.savez(path, rows=rows, edges=edges)
        now, mark = self.phases(), self.phase_mark
        self.phase_mark = now                    # each take covers the time since the previous one
        return {"path": path, "phase_ns": {k: v - mark.get(k, 0) for k, v in now.items()},
                "kernel_names": self.ctx.kernel_names}

    def stats(self) -> dict:
        names = self.ctx.kernel_names
        return {
            "kernels": {names[k]: {"tasks": self.k_count[k], "exec_ns": self.k_exec[k],
                                   "skipped": self.k_skipped[k], "errors": self.k_errors[k]}
                        for k in range(len(names))
                        if self.k_count[k] or self.k_skipped[k] or self.k_errors[k]},
            "runtime_tasks": {"alloc": self.n_alloc, "scope_end": self.n_scope},
            "records": self.completed,
            "timed_tasks": self.n_timed,
            "phase_ns": dict(zip(("submit_to_ready", "ready_to_dispatch", "dispatch_to_start",
                                  "execute", "end_to_seen"), self.phase)),
            "scheduler_busy_ns": self.busy_ns,
            "scheduler_loops": self.loops,
            "scheduler_phase_ns": self.phases() if self.tracing else None,
        }

    def diagnose(self) -> dict:
        """What every unretired task is waiting for, and what every core is doing."""
        q, lay, mask = self.q, self.lay, self.mask
        tasks = []
        for tid in range(self.retired, min(self.ingested, self.retired + 64)):
            s = tid & mask
            state = ("finished" if self.done_tid[s] == tid else
                     "waiting" if self.fanin[s] else "ready/running")
            tasks.append({"tid": tid, "kernel": self.ctx.kernel_names[self.kernel[s]]
                          if q[lay.rec(tid) + L.H_KIND] == L.KIND_TASK
                          else L.KIND_NAMES[q[lay.rec(tid) + L.H_KIND]],
                          "state": state, "fanin": self.fanin[s]})
        now = time.perf_counter_ns()
        running = []
        for c in range(self.ncores):
            for e in self.pending[c]:
                tid = e >> 2
                running.append({"tid": tid, "kernel": self.ctx.kernel_names[self.kernel[tid & mask]],
                                "core": core_name(c),
                                "for_s": (now - q[lay.ts(tid) + L.T_DISPATCH]) / 1e9 if self.ts_on else None})
        return {"head": q[self.g_head], "ingested": self.ingested, "retired": self.retired,
                "completed": self.completed, "in_flight": self.n_inflight, "ready": self.nready,
                "discarding": self.discard, "oldest": tasks, "running": running,
                "heap_allocations": self.heap.describe(),
                "tensormap_buffers": len(self.tmap), "tensormap_entries": self.tmap.entries()}

    # -- 5. the loop -----------------------------------------------------------------------------
    def loop(self) -> None:
        ctx, q, lay = self.ctx, self.q, self.lay
        q[lay.g(L.G_SCHED_PID)] = os.getpid()
        sem = ctx.sched_sem
        g_idle = lay.g(L.G_IDLE)
        spin_busy = ctx.spin_ns * 4
        spin_idle = ctx.spin_ns
        idle_since = 0
        perf = time.perf_counter_ns
        yield_ = os.sched_yield
        t_busy = last_check = perf()
        while True:
            self.loops += 1
            work = False
            head = q[self.g_head]
            if self.ingested < head:
                self.ingest(head)
                work = True
            if self.n_inflight and self.collect():
                work = True
            if self.nready and self.dispatch():
                work = True
            if (work or self.retired < self.ingested) and self.retire():
                work = True
            if work:
                self.publish()
                if idle_since:
                    idle_since = 0
                    t_busy = perf()
                if self.loops & 63 == 0:
                    if self.service():
                        break
                    if self.loops & 4095 == 0 and orphaned(ctx.host_pid):
                        self.orphan_exit()
                        return
                continue
            # Nothing moved this time round.
            now = perf()
            if not idle_since:
                idle_since = now
                self.busy_ns += now - t_busy
                if self.service():
                    break
                continue
            if now - idle_since < (spin_busy if self.n_inflight else spin_idle):
                yield_()
                continue
            if self.service():
                break
            if now - last_check > 500_000_000:        # a busy scheduler still notices a dead host
                last_check = now
                if orphaned(ctx.host_pid):
                    self.orphan_exit()
                    return
            # Block. Drain stale tokens first, then look once more before sleeping.
            if self.accounted < self.retired:
                self.flush_retired()
                self.publish()
            while sem.acquire(False):
                pass
            if (q[self.g_head] != self.ingested or (self.n_inflight and self._moved())
                    or self._host_event()):
                continue
            idle = self.n_inflight == 0 and self.nready == 0
            if idle:
                q[g_idle] = self.ingested + 1
                self.fence()
                kind = q[lay.g(L.G_WAIT_KIND)]
                if kind:
                    ctx.host_sem.release()      # the host waits for something that cannot come
            while not sem.acquire(True, 0.5):
                if orphaned(ctx.host_pid):
                    self.orphan_exit()
                    return
                if q[lay.g(L.G_STOP)]:
                    break
            q[g_idle] = 0
            idle_since = 0
            t_busy = perf()

    def _host_event(self) -> bool:
        """A request, abort or stop the host posted (its token may have been drained)."""
        q, lay = self.q, self.lay
        return (q[lay.g(L.G_REQ)] != q[lay.g(L.G_ACK)] or q[lay.g(L.G_STOP)] != 0
                or q[lay.g(L.G_ABORT_REQ)] != self.last_abort)

    def _moved(self) -> bool:
        q, acked = self.q, self.acked
        return any(q[self.done_idx[c]] != acked[c] for c in self.busy)

    def orphan_exit(self) -> None:
        """The host died without closing the device: stop the workers (kill the ones still inside
        a kernel after a short grace) and leave. The memory goes with the last process."""
        q, lay = self.q, self.lay
        q[lay.g(L.G_STOP)] = 1
        for s in self.sems:
            s.release()
        pids = [q[lay.wline(c) + L.W_PID] for c in range(self.ncores)]
        deadline = time.monotonic() + 0.5
        while time.monotonic() < deadline and any(alive(p) for p in pids):
            time.sleep(0.01)
        for p in pids:
            if alive(p):
                try:
                    os.kill(p, signal.SIGKILL)
                except OSError:
                    pass


__all__ = ["run", "Scheduler", "TRACE_COLUMNS"]
