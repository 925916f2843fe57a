"""The sequential engine's device half: the scheduler's own task table (device/tasks.py) with a
synchronous executor -- dask's ``get_sync``: the same scheduler, an executor that runs each
ready task at once, here.

    the host writes record tid ──▶ run(tid):
        TaskTable.ingest     lifetimes, dependencies (gathered only when they are recorded),
                             its ready queue -- every earlier record has finished, so it is
                             ready at once (or, a scope end or an alloc, finished)
        TaskTable.settle     a predicate evaluated, a dummy / probe / false predicate finished
        execute              a ready task: every block's parts one after the other, in this
                             process (device/execute.run_part, as a worker runs a part) ──▶ finish
        TaskTable.retire
    recording   every part also runs under the tile layer's collector; the finished tasks' counts
                (device/accounting.py CountedCosts) go to the host with the edges (take_edges)

So the two engines differ only in *when* a record's effects happen, never in what they are: the
per-kind effects, the dependency rules (the recorded graph has the scheduler's edges, under
either semantics) and how a part runs are the same code. A run here is the definition of
correct: every task one at a time, in submission order. Heap allocations die as on the device
(``on_freed``), so a run needs the same heap here as there.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np

from device import codec as C
from device import sanitizer
from device.accounting import Accounting, CountedCosts
from device.execute import ArgDecoder, run_part, unwritten_report
from device.layout import Layout
from device.tasks import Q_INSTANT, Q_SPMD, Q_SYNC, TaskTable
from kernels.registry import CoreInfo, set_block, set_core

CORE = "the sequential engine"          # where a failed part ran, in its report
RUN_QUEUES = (*range(Q_INSTANT), Q_SPMD, Q_SYNC)     # the queues of records that run kernels


class SequentialDevice:
    """Runs each record as it is written (module docstring). ``kernels``: (parts, name) per
    kernel index; ``blocks``: the platform's, for ``core_info().block``."""

    def __init__(self, layout: Layout, ctrl: memoryview, gm: memoryview, kernels: list[tuple[tuple, str]], blocks: int,
                 on_freed: Callable[[int], None], *, sanitize: bool = False, dry_run: bool = False,
                 record: bool = False, reference: bool = False) -> None:
        self.q, f = ctrl.cast("q"), ctrl.cast("d")
        self.lay, self.gm, self.kernels, self.blocks = layout, gm, kernels, blocks
        self.tasks = TaskTable(self.q, ctrl, layout, record, on_freed, lambda tid: None, reference,
                               track=record)
        self.dec = ArgDecoder(self.q, f, ctrl, gm)
        self.dec.count = record                                # recording: count each part (execute.py)
        self.counted = CountedCosts() if record else None
        self.sanitize, self.dry_run = sanitize, dry_run        # dry_run: count tasks, run no kernel
        self.reference = reference
        self.acct = Accounting([name for _, name in kernels])
        self.parts_run = {"AIC": [0, 0], "AIV": [0, 0]}       # core kind -> [parts, busy ns]

    def run(self, tid: int) -> C.TaskFailure | None:
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

    def execute(self, tid: int) -> C.TaskFailure | None:
        """Every part of every block of task ``tid``, here; then it is finished."""
        q, s, r = self.q, tid & self.lay.mask, self.lay.rec(tid)
        k = q[r + C.H_KERNEL]
        parts, name = self.kernels[k]
        if self.dry_run:
            return self._finished(tid, s, k, C.STATUS_OK)
        dec = self.dec
        exec_ns, nblocks = 0, q[r + C.H_BLOCKS]
        check = None
        if self.sanitize:          # (start-together blocks get no write map, as on the device)
            check = sanitizer.TaskCheck(dec.tensors(r), dec.last_dirs,
                                        1 if q[r + C.H_FLAGS] & C.FLAG_SYNC else nblocks, self.reference)
        try:
            for b in range(nblocks):                 # SPMD: the blocks one after the other
                for part, fn in enumerate(parts):    # the parts share the task's views of GM
                    if fn is None:
                        continue
                    set_core(CoreInfo(b % self.blocks, "AIC" if part == 0 else "AIV", max(part - 1, 0), -1))
                    set_block(b, nblocks)
                    t0 = time.perf_counter_ns()
                    rep = run_part(fn, dec, r, tid, name, CORE, part)
                    dt = time.perf_counter_ns() - t0
                    if self.counted is not None:
                        self.counted.add(tid, part, C.counts_row(dec.counts))
                    exec_ns += dt
                    run = self.parts_run["AIC" if part == 0 else "AIV"]
                    run[0] += 1
                    run[1] += dt
                    if rep is not None:
                        return self._finished(tid, s, k, C.STATUS_ERROR, rep)
                if check is not None and check.blocks > 1:
                    check.block_done(b, dec.tensors(r))
        finally:
            set_core(None)
            set_block(0, 1)
        if self.sanitize:
            fn0 = next(p for p in parts if p is not None)
            rep = unwritten_report(dec, r, fn0, tid, name, CORE, check)
            if rep is not None:
                return self._finished(tid, s, k, C.STATUS_ERROR, rep)
        return self._finished(tid, s, k, C.STATUS_OK, None, exec_ns)

    def _finished(self, tid: int, s: int, k: int, status: int, rep: C.TaskFailure | None = None,
                  exec_ns: int = 0) -> C.TaskFailure | None:
        if self.counted is not None:
            if status == C.STATUS_OK:
                self.counted.finish(tid)
            else:
                self.counted.open.pop(tid, None)
        self.q[self.lay.ts_off + s * C.TS_WORDS + C.T_STATUS] = status
        self.acct.add(k, status, exec_ns)
        self.tasks.finish(tid, s)
        return rep

    def abort(self) -> None:
        """A failed run: every scope it left open is gone (their allocations die)."""
        self.tasks.heap.release_all_holds()
        self.tasks.tmap.clear()
        if self.counted is not None:
            self.counted.discard()

    def stats(self) -> C.StatsReply:
        t = self.tasks
        return self.acct.report(t.completed, t.runtime_counts())

    def take_edges(self) -> tuple[list[tuple[int, int]], list[int], np.ndarray]:
        """(consumer, producer) edges, the tids whose predicate was false and the counted costs
        (device/accounting.py CountedCosts) since the last take (kept only when recording)."""
        t = self.tasks
        edges, t.edges = t.edges, []
        pred_false, t.pred_false = t.pred_false, []
        counted = self.counted.take() if self.counted is not None else np.zeros((0, C.COUNTED_COLUMNS))
        return edges, pred_false, counted


__all__ = ["SequentialDevice"]
