"""The scheduler process: the emulated AICPU.

    host ──records──▶ TASK RING ──ingest──▶ task table + tensor map ──▶ ready queue per core shape
                                                                             │
    workers ◀── mailbox (+ wake if asleep) ◀── dispatch, widest shapes first ┘
       │
       └── done counters ──▶ complete: release successors, buffer users ──▶ retire in order
                                                                  ──▶ RETIRED, FREED ──▶ host

    step()       one pass: ingest, complete, dispatch, retire -- each as far as it can -- then
                 tell the host how far things got; True if anything moved
    idle_wait()  nothing moved: answer the host, yield-spin while work may come soon, then
                 sleep until a producer wakes us

The parts, one job each: device/tasks.py (per-slot task state, what each kind of record does,
ingest, completion, retirement), device/deps.py (where dependencies come from),
device/dispatch.py (ready tasks onto cores), device/cores.py (mailboxes, done counters, free
cores, mixed-task block reservation), device/accounting.py (statistics and trace rows),
device/hostlink.py (every word the host reads, requests, abort, a dead host),
device/lifetime.py (runtime tensors' memory), device/waits.py (kernel parts blocked in a wait:
released on a failure -- as soon as one part of a task fails -- or an abort; what a stall
diagnosis says they wait on; the end checks of a mixed task, e.g. a pipe left holding tiles).
The state that is the scheduler's own: ``accounted`` (records folded into the statistics; RETIRED
moves with it, in batches, or at once when the host waits), the loop's counters and phase times.

Sleeping without lost wake-ups and without a system call per event: before blocking, the
scheduler stores SLEEP = 1, fences, and looks at HEAD and the done counters once more; every
producer (host publishing records, worker finishing one, host request) stores its data, fences,
and posts the scheduler's semaphore only if it reads SLEEP = 1 (device/ordering.py).

Options (all off by default): tracing keeps every task's times and every dependency edge and
times the loop's phases (``phase_ns``); recording keeps the edges and what the tile layer counted
for each task (device/accounting.py CountedCosts); the sanitizer poisons Out regions at dispatch,
checks them at completion and posts an SPMD task's blocks one at a time (device/sanitizer.py);
fuzzing takes ready tasks and free cores in a seeded random order.
"""

from __future__ import annotations

import os
import random
import time

import numpy as np

from device import codec as C
from device import layout as L
from device.accounting import Accounting, CountedCosts
from device.codec import DeviceContext
from device.cores import CorePool
from device.dispatch import Dispatcher
from device.execute import ArgDecoder, unwritten_report
from device.hostlink import HostLink, child_signals, orphaned
from device.ordering import fence, publish
from device.tasks import NPARTS, TaskTable
from device.waits import WaitArea

MEASURE_EVERY = 64          # retired records between looks at how long tasks take
INGEST_BATCH = 256          # records per step before the scheduler goes back to dispatching
ORPHAN_CHECK_NS = 500_000_000
PHASES = ("ingest", "complete", "dispatch", "retire", "idle")


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
    def __init__(self, ctx: DeviceContext) -> None:
        self.ctx = ctx
        lay = self.lay = ctx.layout
        self.q = q = ctx.q
        self.mask = lay.mask
        self.rng = random.Random(ctx.seed) if ctx.schedule == "random" else None
        self.tracing = ctx.trace
        self.ts_on = ctx.timestamps
        self.waits = WaitArea(q, lay.waits_off, lay.ncores, ctx.wait_sems)
        self.cores = CorePool(q, ctx.ctrl_buf, lay, ctx.worker_sems, self.rng)
        self.link = HostLink(ctx, self.flush_retired, self.answer, self.abort, self.cores.wake_all,
                             self.waits.release)
        self.tasks = TaskTable(q, ctx.ctrl_buf, lay, ctx.trace or ctx.record, self.link.freed,
                               self.link.probe_done, ctx.reference)
        self.sanitize = ArgDecoder(ctx.q, ctx.f, ctx.ctrl_buf, ctx.gm_buf) if ctx.sanitize else None
        self.dispatcher = Dispatcher(self.tasks, self.cores, lay, self.rng, self.sanitize, ctx.gm_buf,
                                     ctx.reference)
        self.acct = Accounting(ctx.kernel_names, tracing=ctx.trace)
        self.counted = CountedCosts() if ctx.record else None
        if ctx.record:
            self.cores.slots = []
        self.accounted = self.measured = 0
        self.account_batch = max(1, min(256, lay.window // 8))
        self.rec_np = np.ndarray((lay.window, C.REC_WORDS), np.int64, ctx.ctrl_buf, lay.ring_off * 8)
        self.ts_np = np.ndarray((lay.window, C.TS_WORDS), np.int64, ctx.ctrl_buf, lay.ts_off * 8)
        self.g_anydone = lay.g(L.G_ANYDONE)
        # the loop's own bookkeeping
        self.loops = self.busy_ns = 0
        self.busy_since = self.idle_since = 0
        self.last_check = 0
        self.stopping = False
        self.phase_ns = dict.fromkeys(PHASES, 0)    # tracing: time in each phase of step()
        self.t_start = time.perf_counter_ns()
        self.phase_mark: dict[str, int] = {}       # phases() at the last trace take

    # -- the loop ------------------------------------------------------------------------------------
    def loop(self) -> None:
        self.link.started()
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
        """One pass over the phases, each as far as it can go; True if anything moved. While
        tracing, each phase's time is added to ``phase_ns`` (about 0.3 us a pass)."""
        tasks, cores, clock = self.tasks, self.cores, time.perf_counter_ns
        timed = self.phase_ns if self.tracing else None
        work = False
        head = self.link.head()
        if tasks.ingested < head:
            t0 = clock() if timed else 0
            self.ingest(min(head, tasks.ingested + INGEST_BATCH))
            work = True
            if timed:
                timed["ingest"] += clock() - t0
        if cores.n_inflight:
            t0 = clock() if timed else 0
            work = self.complete() or work
            if timed:
                timed["complete"] += clock() - t0
        if tasks.nready:
            t0 = clock() if timed else 0
            work = self.dispatcher.dispatch(clock() if self.ts_on else 0) or work
            if timed:
                timed["dispatch"] += clock() - t0
        if work or tasks.retired < tasks.ingested:
            t0 = clock() if timed else 0
            work = self.retire() or work
            if timed:
                timed["retire"] += clock() - t0
        if work:
            self.link.progress(tasks.completed, tasks.retired)
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
        tasks, link, sem = self.tasks, self.link, self.ctx.sched_sem
        if self.accounted < tasks.retired:
            self.flush_retired()
            link.progress(tasks.completed, tasks.retired)
        while sem.acquire(False):                     # wake-ups meant for an earlier sleep
            pass
        link.sleeping(True)
        fence()
        if (link.head() != tasks.ingested or (self.cores.n_inflight and self.cores.moved())
                or link.pending()):
            link.sleeping(False)
            return
        if not self.cores.n_inflight and not tasks.nready:
            link.idle(tasks.ingested)                 # the host may wait for what cannot come
        while not sem.acquire(True, ORPHAN_CHECK_NS / 1e9):
            if orphaned(self.ctx.host_pid):
                link.orphan_exit()
                self.stopping = True
                break
            if link.stop_requested():
                break
        link.sleeping(False)
        link.busy()
        self.idle_since = 0
        self.busy_since = time.perf_counter_ns()

    # -- phases --------------------------------------------------------------------------------------
    def ingest(self, end: int) -> None:
        tasks = self.tasks
        tasks.ready_ns = time.perf_counter_ns() if self.ts_on else 0
        tasks.ingest(end, self.g_anydone if self.cores.n_inflight else -1)
        self.link.ingested(tasks.ingested)

    def complete(self) -> bool:
        """Handle every mailbox entry the workers finished since the last look."""
        q = self.q
        publish(q, self.g_anydone, 0)           # cleared before looking: a later finish sets it again
        done = self.cores.collect()
        if not done:
            return False
        tasks = self.tasks
        # Read after the done counters: a task's end stamp is never later than its done stamp.
        now = tasks.ready_ns = time.perf_counter_ns() if self.ts_on else 0
        parts, mask, ts_off, TSW, finish = tasks.parts, self.mask, self.lay.ts_off, C.TS_WORDS, tasks.finish
        counted = self.counted
        if counted is not None:                 # the rows were published with the done counters
            counted.collect(done, self.cores.slots, self.ctx.f, self.lay)
        ran_on = self.dispatcher.ran_on
        for e in done:
            tid = e >> C.ENTRY_SHIFT
            s = tid & mask
            left = parts[s] - 1
            parts[s] = left
            if left:
                if self.sanitize is not None and e & C.ENTRY_SPMD:
                    self._block_part_done(tid, s, left)
                if q[ts_off + s * TSW + C.T_STATUS] == C.STATUS_ERROR:
                    # One part failed while others run: they may be waiting for it (a pipe, a
                    # barrier); the run is failing, so let them go now (device/waits.py).
                    self.link.kernel_failed()
                    self.dispatcher.discard = True
                continue
            t = ts_off + s * TSW
            if now:
                q[t + C.T_DONE] = now
            if q[t + C.T_STATUS] != C.STATUS_OK or self.sanitize:
                self._checked(tid, t)
            if counted is not None:
                counted.finish(tid)
            if ran_on and tid in ran_on:                 # a mixed task that ran to its end: what it left
                clusters = ran_on.pop(tid)
                if q[t + C.T_STATUS] == C.STATUS_OK and self.waits.task_end(clusters):
                    self.link.notices(len(self.waits.notices))
            finish(tid, s)
        return True

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
        self.link.retired(r1)

    # -- failures and aborts -------------------------------------------------------------------------
    def _checked(self, tid: int, t: int) -> None:
        """A task that failed, or (sanitizer) broke its directions: the run stops."""
        if self.sanitize:
            if self.q[t + C.T_STATUS] == C.STATUS_OK:
                self._check_outs(tid, t)
            self.dispatcher.checks.pop(tid, None)
        if self.q[t + C.T_STATUS] == C.STATUS_ERROR:
            self.link.kernel_failed()
            self.dispatcher.discard = True

    def abort(self) -> bool:
        """Discard what has not run; True once nothing is in flight and all has retired (then
        the scheduler is ready for the next run)."""
        self.dispatcher.discard = True
        if self.counted is not None:
            self.counted.discard()
        tasks = self.tasks
        tasks.heap.release_all_holds()
        tasks.skip_ready()
        head = self.link.head()
        if self.cores.n_inflight or tasks.ingested != head:
            return False
        tasks.retire()
        self.flush_retired()
        if tasks.retired != head:
            return False
        self.dispatcher.discard = False
        self.cores.reserved = -1
        tasks.tmap.clear()
        self.dispatcher.checks.clear()
        self.dispatcher.ran_on.clear()
        self.link.progress(tasks.completed, tasks.retired)
        return True

    def _block_part_done(self, tid: int, s: int, left: int) -> None:
        """Sanitizer: a part of an SPMD task finished; if it ended a block, update the write map
        (blocks run one at a time, device/dispatch.py _spmd)."""
        check, tasks = self.dispatcher.checks.get(tid), self.tasks
        b = tasks.next_block[s]
        if check is not None and check.blocks > 1 and left == (tasks.blocks[s] - b) * NPARTS[tasks.core_shape[s]]:
            check.block_done(b - 1, self.sanitize.tensors(self.lay.rec(tid)))

    def _check_outs(self, tid: int, t: int) -> None:
        """Sanitizer: report Out elements the task left holding poison."""
        q, r = self.q, self.lay.rec(tid)
        k = self.tasks.kernel[tid & self.mask]
        fn = next(p for p in self.ctx.kernel_parts[k] if p is not None)
        core = q[t + C.T_CORE0] if q[t + C.T_START0] >= q[t + C.T_DISPATCH] else q[t + C.T_CORE1]
        check = self.dispatcher.checks.get(tid)
        if check is not None and check.blocks > 1:
            check.block_done(check.blocks - 1, self.sanitize.tensors(r))     # the last block
        rep = unwritten_report(self.sanitize, r, fn, tid, self.ctx.kernel_names[k], C.core_name(core), check)
        if rep is not None:
            q[t + C.T_STATUS] = C.STATUS_ERROR
            self.link.task_failure(core, rep)

    # -- reports -------------------------------------------------------------------------------------
    def answer(self, kind: int) -> object:
        """The report a host request asks for (device/hostlink.py)."""
        return self.stats() if kind == L.REQ_STATS else self.diagnose() if kind == L.REQ_DIAG else self.take_trace()

    def phases(self) -> dict:
        """Scheduler time per phase of its loop since it started; "idle" is everything else
        (spinning, sleeping, servicing the host)."""
        ph = dict(self.phase_ns)
        ph["idle"] = time.perf_counter_ns() - self.t_start - sum(v for k, v in ph.items() if k != "idle")
        return ph

    def stats(self) -> C.StatsReply:
        return self.acct.report(self.tasks.completed, self.tasks.runtime_counts(), self.busy_ns, self.loops,
                                self.phases() if self.tracing else None, tuple(self.waits.notices))

    def take_trace(self) -> C.TraceReply:
        """Hand the trace rows and edges collected so far to the host (through a file: it can be
        large), with the loop's phase times since the previous take."""
        if not self.tasks.keep_edges:
            return C.TraceReply(None)
        edges = np.array(self.tasks.edges, np.int64).reshape(-1, 2)
        self.tasks.edges = []
        pred_false, self.tasks.pred_false = self.tasks.pred_false, []
        counted = self.counted.take() if self.counted is not None else np.zeros((0, C.COUNTED_COLUMNS))
        path = os.path.join(self.ctx.trace_dir, f"trace-{os.getpid()}-{self.loops}.npz")
        np.savez(path, rows=self.acct.take_rows(), edges=edges, counted=counted)
        now, mark = self.phases(), self.phase_mark
        self.phase_mark = now
        return C.TraceReply(path, tuple(pred_false), {k: v - mark.get(k, 0) for k, v in now.items()},
                            tuple(self.ctx.kernel_names))

    def diagnose(self) -> C.Diagnosis:
        """What every unretired record is waiting for, and what every core is doing."""
        q, lay, tasks, names = self.q, self.lay, self.tasks, self.ctx.kernel_names
        now, pend = time.perf_counter_ns(), self.cores.pending      # pend[c][0]: what core c runs now
        running = tuple(C.Running(C.entry_tid(e), names[tasks.kernel[C.entry_tid(e) & self.mask]], C.core_name(c),
                                  (now - q[lay.ts(C.entry_tid(e)) + C.T_DISPATCH]) / 1e9 if self.ts_on else None,
                                  self.waits.describe(c, now) if pend[c] and pend[c][0] == e else "")
                        for c, e in self.cores.running())
        return C.Diagnosis(self.link.head(), tasks.ingested, tasks.retired, tasks.completed, self.cores.n_inflight,
                           tasks.nready, self.dispatcher.discard, tasks.describe(names), running,
                           tasks.heap.describe(), self.cores.short, self.cores.cap, len(tasks.tmap),
                           tasks.tmap.entries())


__all__ = ["run", "Scheduler"]
