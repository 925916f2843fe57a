"""The sequential engine's device half: the scheduler's own task table (device/tasks.py) with a
synchronous executor -- dask's ``get_sync``: the same scheduler, an executor that runs each
ready task at once, here.

    the host writes record tid ──▶ run(tid):
        TaskTable.ingest     lifetimes, dependencies (gathered only when they are recorded),
                             its ready queue -- every earlier record has finished, so it is
                             ready at once (or, a scope end or an alloc, finished)
        TaskTable.settle     a predicate evaluated, a dummy / probe / false predicate finished
        execute              a ready task, in this process (device/execute.run_part, as a worker
                             runs a part) ──▶ finish. A single-part kernel runs here, block
                             after block; a mixed kernel's parts run together, one thread each
                             (they may wait for each other: pipes), block after block -- or every
                             block at once for a start-together launch (an all-block barrier)
        TaskTable.retire
    recording   every part also runs under the tile layer's collector; the finished tasks' counts
                (device/accounting.py CountedCosts) go to the host with the edges (take_edges)

So the two engines differ only in *when* a record's effects happen, never in what they are: the
per-kind effects, the dependency rules (the recorded graph has the scheduler's edges, under
either semantics) and how a part runs are the same code. A run here is the definition of
correct: every task one at a time, in submission order. Heap allocations die as on the device
(``on_freed``), so a run needs the same heap here as there.

Parts that run together block through the same waiting machinery as on the device
(device/waits.py: a wait area in private memory, a thread semaphore per core). A part that fails
releases the others (they end as released, the failure is reported); parts that are all blocked
for good -- or make no progress for the stall timeout -- are a ``Stall`` naming what each waits
on, which the host raises as DeadlockError. A single part that waits for something not yet there
fails at once: nothing else runs that could provide it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import numpy as np

from device import codec as C
from device import sanitizer
from device.accounting import Accounting, CountedCosts
from device.execute import ArgDecoder, run_part, unwritten_report
from device.layout import Layout
from device.tasks import Q_INSTANT, Q_SPMD, Q_SYNC, TaskTable
from device.waits import WaitArea, Waiter, area_words, gm_range, thread_semaphores
from kernels import waits as kernel_waits
from kernels.registry import CoreInfo, set_block, set_core

CORE = "the sequential engine"          # where a failed part ran, in its report
RUN_QUEUES = (*range(Q_INSTANT), Q_SPMD, Q_SYNC)     # the queues of records that run kernels
WATCH_S = 0.25                          # how often the part threads' watchdog looks
RELEASED = object()                     # a part an abort let go of (not a failure of its own)


class SequentialDevice:
    """Runs each record as it is written (module docstring). ``kernels``: (parts, name) per
    kernel index; ``blocks``: the platform's, for ``core_info().block``."""

    def __init__(self, layout: Layout, ctrl: memoryview, gm: memoryview, kernels: list[tuple[tuple, str]], blocks: int,
                 on_freed: Callable[[int], None], *, sanitize: bool = False, dry_run: bool = False,
                 record: bool = False, reference: bool = False, stall_timeout: float = 60.0,
                 skew: str | None = None, skew_us: float = 0.0, seed: int = 0) -> None:
        self.q, f = ctrl.cast("q"), ctrl.cast("d")
        self.lay, self.gm, self.kernels, self.blocks = layout, gm, kernels, blocks
        self.tasks = TaskTable(self.q, ctrl, layout, record, on_freed, lambda tid: None, reference,
                               track=record)
        self.dec = ArgDecoder(self.q, f, ctrl, gm)
        self.dec.count = record                                # recording: count each part (execute.py)
        self.counted = CountedCosts() if record else None
        self.count_lock = threading.Lock()
        self.sanitize, self.dry_run = sanitize, dry_run        # dry_run: count tasks, run no kernel
        self.reference = reference
        self.acct = Accounting([name for _, name in kernels])
        self.parts_run = {"AIC": [0, 0], "AIV": [0, 0]}       # core kind -> [parts, busy ns]
        # Blocking between parts (device/waits.py): a wait area of one line per core of the
        # platform in private memory, a waiter per core, one more for parts that run alone.
        n = 3 * blocks
        self.waits = WaitArea(memoryview(bytearray(area_words(n) * 8)).cast("q"), 0, n, thread_semaphores(n))
        self.abort_reason = ""
        gmr = gm_range(gm)
        self.waiters = [Waiter(self.waits, c, self._aborted, gm=gmr, skew=skew, skew_us=skew_us, seed=seed)
                        for c in range(n)]
        self.solo = Waiter(self.waits, 0, self._aborted, gm=gmr, solo=True)
        self.decoders: dict[int, ArgDecoder] = {}           # per part thread (a decoder keeps state)
        self.stall_timeout = stall_timeout

    def run(self, tid: int) -> C.TaskFailure | C.Stall | None:
        """Ingest record ``tid`` and carry out what it does; a task that failed is finished (as
        "error") and its report returned."""
        tasks, q, r = self.tasks, self.q, self.lay.rec(tid)
        tasks.ingest(tid + 1)
        tasks.settle(self.gm, 0)
        if q[self.lay.ts(tid) + C.T_STATUS] == C.STATUS_PRED_FALSE and q[r + C.H_KIND] == C.KIND_TASK:
            self.acct.add(q[r + C.H_KERNEL], C.STATUS_PRED_FALSE)     # finished by settle, no core
        failure = None
        for qi in RUN_QUEUES:
            rq = tasks.ready[qi]
            while rq:
                t = rq.popleft()
                tasks.nready -= 1
                failure = self.execute(t) or failure
        tasks.retire()
        return failure

    def execute(self, tid: int) -> C.TaskFailure | C.Stall | None:
        """Every part of every block of task ``tid``, here; then it is finished."""
        q, s, r = self.q, tid & self.lay.mask, self.lay.rec(tid)
        k = q[r + C.H_KERNEL]
        parts, name = self.kernels[k]
        if self.dry_run:
            return self._finished(tid, s, k, C.STATUS_OK)
        dec = self.dec
        exec_ns, nblocks = 0, q[r + C.H_BLOCKS]
        sync = bool(q[r + C.H_FLAGS] & C.FLAG_SYNC)
        check = None
        if self.sanitize:          # (start-together blocks get no write map, as on the device)
            check = sanitizer.TaskCheck(dec.tensors(r), dec.last_dirs, 1 if sync else nblocks, self.reference)
        jobs = [(part, fn) for part, fn in enumerate(parts) if fn is not None]
        together = len(jobs) > 1 or (sync and nblocks > 1)
        # the blocks that run at once: all of a start-together launch, else one at a time
        groups = [range(nblocks)] if together and sync else [range(b, b + 1) for b in range(nblocks)]
        status, rep = C.STATUS_OK, None
        try:
            for group in groups:
                if together:
                    rep, ns = self._together(tid, r, name, [(b, p, fn) for b in group for p, fn in jobs],
                                             nblocks, tuple(fn is not None for fn in parts))
                    exec_ns += ns
                    if rep is RELEASED:
                        status, rep = C.STATUS_SKIPPED, None
                else:
                    b = group[0]
                    part, fn = jobs[0]
                    kernel_waits.install(self.solo)
                    self.solo.begin(tid, b % self.blocks, part, tuple(fn is not None for fn in parts))
                    rep, ns = self._part(fn, dec, r, tid, name, b, part, nblocks)
                    exec_ns += ns
                if rep is not None:
                    return self._finished(tid, s, k, C.STATUS_ERROR if isinstance(rep, C.TaskFailure)
                                          else C.STATUS_SKIPPED, rep)
                if check is not None and check.blocks > 1:
                    check.block_done(group[0], dec.tensors(r))
        finally:
            set_core(None)
            set_block(0, 1)
            kernel_waits.install(None)
        if self.sanitize and status == C.STATUS_OK:
            fn0 = jobs[0][1]
            rep = unwritten_report(dec, r, fn0, tid, name, CORE, check)
            if rep is not None:
                return self._finished(tid, s, k, C.STATUS_ERROR, rep)
        return self._finished(tid, s, k, status, None, exec_ns)

    def _part(self, fn: Callable, dec: ArgDecoder, r: int, tid: int, name: str, b: int, part: int,
              nblocks: int) -> tuple[C.TaskFailure | None, int]:
        """One part of block b, in the calling thread: (its failure or None, its time in ns)."""
        set_core(CoreInfo(b % self.blocks, "AIC" if part == 0 else "AIV", max(part - 1, 0), -1))
        set_block(b, nblocks, bool(self.q[r + C.H_FLAGS] & C.FLAG_SYNC))
        t0 = time.perf_counter_ns()
        rep = run_part(fn, dec, r, tid, name, CORE, part)
        dt = time.perf_counter_ns() - t0
        if self.counted is not None:
            with self.count_lock:            # (parts running together add from their threads)
                self.counted.add(tid, part, C.counts_row(dec.counts))
        run = self.parts_run["AIC" if part == 0 else "AIV"]
        run[0] += 1
        run[1] += dt
        return rep, dt

    def _together(self, tid: int, r: int, name: str, jobs: list[tuple[int, int, Callable]], nblocks: int,
                  slots: tuple[bool, bool, bool]) -> tuple[object, int]:
        """Run ``jobs`` -- (block, part, function) -- at once, one thread each, until all have
        ended. Returns (the first failure, a Stall, RELEASED or None; the parts' time in ns)."""
        results: list = [None] * len(jobs)
        self.abort_reason = ""
        used = []
        ended = threading.Event()

        def body(i: int, b: int, part: int, fn: Callable, w: Waiter, dec: ArgDecoder) -> None:
            kernel_waits.install(w)
            w.begin(tid, w.phys // 3, w.phys % 3, slots)
            try:
                rep, dt = self._part(fn, dec, r, tid, name, b, part, nblocks)
                if w.released:
                    w.released, rep = False, RELEASED
                elif rep is not None:
                    self._abort(f"part {part} of task {tid} failed: {rep.error}")
                results[i] = (rep, dt)
            finally:
                set_core(None)
                kernel_waits.install(None)
                ended.set()

        threads = []
        single = sum(slots) == 1
        for i, (b, part, fn) in enumerate(jobs):
            # the core it stands for: a mixed task's parts on block b's cores; the blocks of a
            # start-together single-core launch each on a core of their own (two AIVs a block)
            c = (3 * (b % self.blocks) + part if not single else 3 * (b % self.blocks) if part == 0
                 else 3 * (b // 2 % self.blocks) + 1 + b % 2)
            w = self.waiters[c]
            used.append((c, w, part, b))
            dec = self.decoders.get(c)
            if dec is None:
                dec = self.decoders[c] = ArgDecoder(self.q, self.dec.f, self.dec.ctrl_buf, self.gm)
                dec.count = self.dec.count
            threads.append(threading.Thread(target=body, args=(i, b, part, fn, w, dec), daemon=True,
                                            name=f"ptoemu-part-{b}.{part}"))
        for t in threads:
            t.start()
        stall = self._watch(tid, name, threads, used, ended)
        for t in threads:
            t.join()
        if stall is not None:
            return stall, 0
        if sum(slots) > 1 and all(x is not None and x[0] is None for x in results):
            self.waits.task_end(c // 3 for c, _, _, _ in used)    # ran to its end: e.g. a pipe left full
        failures = [x[0] for x in results if x is not None and isinstance(x[0], C.TaskFailure)]
        ns = sum(x[1] for x in results if x is not None)
        if failures:
            return failures[0], ns
        if any(x is not None and x[0] is RELEASED for x in results):
            return RELEASED, ns
        return None, ns

    def _watch(self, tid: int, name: str, threads: list[threading.Thread], used: list,
               ended: threading.Event) -> C.Stall | None:
        """Wait for the part threads; a Stall if every live part is blocked in a wait and no sync
        word moved for two looks WATCH_S apart (nothing can wake them), or nothing moved for the
        stall timeout (a part stuck elsewhere), after releasing them."""
        area = self.waits
        last = (-1, -1)
        quiet_since = time.monotonic()
        while True:
            if ended.wait(WATCH_S):
                ended.clear()
            alive = [i for i, t in enumerate(threads) if t.is_alive()]
            if not alive:
                return None
            moves = (sum(w.moves for _, w, _, _ in used), len(alive))
            blocked = {c for c in area.blocked()}
            all_blocked = all(used[i][0] in blocked for i in alive)
            now = time.monotonic()
            if moves != last:
                last, quiet_since = moves, now
                continue
            timed_out = self.stall_timeout and now - quiet_since > self.stall_timeout
            if not ((all_blocked and now - quiet_since >= 2 * WATCH_S) or timed_out):
                continue
            lines = []
            for i in alive:
                c, _, part, b = used[i]
                what = area.describe(c)
                where = f"part {part} ({'AIC' if part == 0 else 'AIV'}) of block {b}"
                lines.append(f"  kernel {name} (task {tid}) {where} is blocked: {what}" if what else
                             f"  kernel {name} (task {tid}) {where} is still running")
            why = ("every part still running is blocked in a wait that nothing can end"
                   if all_blocked else f"no part made progress for {self.stall_timeout:g} s "
                   "(Platform(stall_timeout=...))")
            self._abort(f"the sequential engine found task {tid} stuck: {why}")
            return C.Stall(tid, f"task {tid} ({name}) cannot finish: {why}; its parts:\n" + "\n".join(lines))

    def _aborted(self) -> str:
        return self.abort_reason

    def _abort(self, reason: str) -> None:
        """Let every blocked part go (they raise WaitAborted and end as released)."""
        if not self.abort_reason:
            self.abort_reason = reason
        self.waits.release()

    def _finished(self, tid: int, s: int, k: int, status: int, rep: C.TaskFailure | C.Stall | None = None,
                  exec_ns: int = 0) -> C.TaskFailure | C.Stall | None:
        if self.counted is not None:
            if status == C.STATUS_OK:
                self.counted.finish(tid)
            else:
                self.counted.open.pop(tid, None)
        self.q[self.lay.ts_off + s * C.TS_WORDS + C.T_STATUS] = status
        self.acct.add(k, status, exec_ns)
        self.tasks.finish(tid, s)
        return rep

    def begin_run(self) -> None:
        """A run starts: pipes empty, barriers at 0."""
        self.waits.reset()

    def abort(self) -> None:
        """A failed run: every scope it left open is gone (their allocations die)."""
        self.tasks.heap.release_all_holds()
        self.tasks.tmap.clear()
        if self.counted is not None:
            self.counted.discard()

    def stats(self) -> C.StatsReply:
        t = self.tasks
        return self.acct.report(t.completed, t.runtime_counts(), notices=tuple(self.waits.notices))

    def take_edges(self) -> tuple[list[tuple[int, int]], list[int], np.ndarray]:
        """(consumer, producer) edges, the tids whose predicate was false and the counted costs
        (device/accounting.py CountedCosts) since the last take (kept only when recording)."""
        t = self.tasks
        edges, t.edges = t.edges, []
        pred_false, t.pred_false = t.pred_false, []
        counted = self.counted.take() if self.counted is not None else np.zeros((0, C.COUNTED_COLUMNS))
        return edges, pred_false, counted


__all__ = ["SequentialDevice"]
