"""Statistics and trace rows: what ``dev.stats()`` and ``dev.trace()`` report, kept one way for
both engines.

    scheduler   account(r0, r1): the records [r0, r1) just retired, read from the ring and the
                time rows in one vectorised pass (a few numpy element operations per task
                instead of a dozen Python reads), in batches -- the host only gets the slots
                back (RETIRED) once their times are read
    sequential  add(kernel, status, exec_ns): one task at a time, as it runs
    both        report(...) ──▶ codec.StatsReply: kernels {name: tasks, exec_ns, skipped, errors,
                                predicate_false}, runtime_tasks {alloc, scope_end, dummy,
                                tensor_data (the rt.get/set_tensor_data waits)}, records,
                                timed_tasks, phase_ns {submit_to_ready, ready_to_dispatch,
                                dispatch_to_start, execute, end_to_seen}, scheduler_busy_ns,
                                scheduler_loops, scheduler_phase_ns

``tasks`` counts the tasks that ran; ``predicate_false`` the ones whose predicate was false (they
completed without a core), ``skipped`` the ones a failure discarded. Trace rows
(codec.TRACE_COLUMNS) are kept only when tracing -- one per task that ran or whose predicate
was false (no core, start = end = its dispatch) -- and ``take_rows`` hands them over.

Counted costs (recording only, ``CountedCosts``, both engines): every part of every block of a
task adds the row the tile layer counted for it (codec.COUNT_FIELDS); when the task finishes, its
rows are folded into one line of the counted array (codec.COUNTED_COLUMNS) -- per part the row of
its slowest block (largest ``us``), and the GM bytes of all its blocks and parts -- and ``take``
hands the lines over with the recorded edges. Why the slowest block: the model runs every block
of an SPMD launch as one job of one time, and a launch whose blocks run side by side ends with
its slowest; the catalogue's SPMD kernels split their work evenly, so it is also every block's.
The bytes are totals, so that the model's HBM traffic is exact. A task with a part that ran no
tile instruction (a plain numpy kernel) gets no line: it is priced by its law or the roofline.
"""

from __future__ import annotations

import numpy as np

from device import codec as C
from device.layout import Layout

PHASES = ("submit_to_ready", "ready_to_dispatch", "dispatch_to_start", "execute", "end_to_seen")


class Accounting:
    def __init__(self, kernel_names: list[str], tracing: bool = False) -> None:
        self.names = kernel_names
        nk = len(kernel_names)
        self.count = [0] * nk
        self.exec_ns = [0] * nk
        self.skipped = [0] * nk
        self.errors = [0] * nk
        self.pred_false = [0] * nk
        self.phase = [0] * len(PHASES)
        self.timed = 0
        self.rows: list[np.ndarray] | None = [] if tracing else None

    def add(self, kernel: int, status: int, exec_ns: int = 0) -> None:
        """One task, counted as it finishes (the sequential engine)."""
        (self.count if status == C.STATUS_OK else self.errors if status == C.STATUS_ERROR
         else self.pred_false if status == C.STATUS_PRED_FALSE else self.skipped)[kernel] += 1
        if status <= C.STATUS_ERROR and exec_ns:
            self.exec_ns[kernel] += exec_ns
            self.phase[3] += exec_ns
            self.timed += 1

    def account(self, rec: np.ndarray, ts: np.ndarray, tids: np.ndarray, timestamps: bool) -> None:
        """Retired records, vectorised: ``rec`` their header words (up to H_SUBMIT_NS), ``ts``
        their time rows, ``tids`` their task ids."""
        task = rec[:, C.H_KIND] == C.KIND_TASK
        if not task.any():
            return
        rec, ts, tids = rec[task], ts[task], tids[task]
        k = rec[:, C.H_KERNEL]
        status = ts[:, C.T_STATUS]
        nk = len(self.count)
        for arr, st in ((self.count, C.STATUS_OK), (self.errors, C.STATUS_ERROR),
                        (self.skipped, C.STATUS_SKIPPED), (self.pred_false, C.STATUS_PRED_FALSE)):
            c = np.bincount(k[status == st], minlength=nk)
            for i in np.flatnonzero(c):
                arr[i] += int(c[i])
        if not timestamps:
            return
        if self.rows is not None and (status == C.STATUS_PRED_FALSE).any():
            self._pred_false_rows(rec, ts, k, tids, status == C.STATUS_PRED_FALSE)
        ran = status <= C.STATUS_ERROR
        rec, ts, k, tids = rec[ran], ts[ran], k[ran], tids[ran]
        if not len(k):
            return
        dsp = ts[:, C.T_DISPATCH]
        starts = ts[:, C.T_START0:C.T_END2 + 1:2]
        ends = ts[:, C.T_END0:C.T_END2 + 1:2]
        valid = starts >= dsp[:, None]           # parts that ran for this task (not stale stamps)
        start = np.where(valid, starts, np.iinfo(np.int64).max).min(1)
        end = np.where(valid, ends, 0).max(1)
        ph = self.phase
        ph[0] += int((ts[:, C.T_READY] - rec[:, C.H_SUBMIT_NS]).sum())
        ph[1] += int((dsp - ts[:, C.T_READY]).sum())
        ph[2] += int((start - dsp).sum())
        ex = end - start
        ph[3] += int(ex.sum())
        ph[4] += int((ts[:, C.T_DONE] - end).sum())
        e = np.bincount(k, weights=ex, minlength=nk)
        for i in np.flatnonzero(e):
            self.exec_ns[i] += int(e[i])
        self.timed += len(k)
        if self.rows is not None:
            cores = np.where(valid, ts[:, C.T_CORE0:C.T_CORE2 + 1], -1)
            self.rows.append(np.column_stack([
                tids, k, rec[:, C.H_CORE_SHAPE], rec[:, C.H_SUBMIT_NS], ts[:, C.T_READY], dsp,
                ts[:, C.T_DONE], ts[:, C.T_STATUS], cores, np.where(valid, starts, 0),
                np.where(valid, ends, 0)]))

    def _pred_false_rows(self, rec: np.ndarray, ts: np.ndarray, k: np.ndarray, tids: np.ndarray,
                         sel: np.ndarray) -> None:
        rec, ts, k, tids = rec[sel], ts[sel], k[sel], tids[sel]
        n = len(k)
        none, at = np.full((n, 3), -1, np.int64), np.repeat(ts[:, C.T_DISPATCH:C.T_DISPATCH + 1], 3, 1)
        self.rows.append(np.column_stack([
            tids, k, rec[:, C.H_CORE_SHAPE], rec[:, C.H_SUBMIT_NS], ts[:, C.T_READY], ts[:, C.T_DISPATCH],
            ts[:, C.T_DONE], ts[:, C.T_STATUS], none, at, at]))

    def take_rows(self) -> np.ndarray:
        rows = np.concatenate(self.rows) if self.rows else np.zeros((0, len(C.TRACE_COLUMNS)), np.int64)
        if self.rows is not None:
            self.rows = []
        return rows

    def report(self, records: int, runtime: dict[str, int], busy_ns: int = 0, loops: int = 0,
               loop_phases: dict | None = None, notices: tuple[str, ...] = ()) -> C.StatsReply:
        """The statistics so far, with the counts the owner keeps: records finished, runtime
        records by kind (TaskTable.runtime_counts), the scheduler loop's busy time, passes and
        (tracing) phase times."""
        names = self.names
        return C.StatsReply(
            kernels={names[k]: C.KernelCounts(self.count[k], self.exec_ns[k], self.skipped[k], self.errors[k],
                                              self.pred_false[k])
                     for k in range(len(names))
                     if self.count[k] or self.skipped[k] or self.errors[k] or self.pred_false[k]},
            runtime_tasks=dict(runtime), records=records, timed_tasks=self.timed,
            phase_ns=dict(zip(PHASES, self.phase)), scheduler_busy_ns=busy_ns, scheduler_loops=loops,
            scheduler_phase_ns=loop_phases, notices=notices)


class CountedCosts:
    """Counted costs of the tasks in flight and of those finished since the last ``take``."""

    __slots__ = ("open", "lines")

    def __init__(self) -> None:
        self.open: dict[int, list] = {}         # tid -> [row per part or None, read, written, uncounted]
        self.lines: list[list[float]] = []

    def add(self, tid: int, part: int, row: tuple[float, ...]) -> None:
        """The row of one part of one block of task ``tid``."""
        acc = self.open.get(tid)
        if acc is None:
            acc = self.open[tid] = [None, None, None, 0, 0, False]
        if not row[C.CNT_INSTR]:
            acc[5] = True
            return
        best = acc[part]
        if best is None or row[C.CNT_US] > best[C.CNT_US]:
            acc[part] = row
        acc[3] += int(row[C.CNT_GM_READ])
        acc[4] += int(row[C.CNT_GM_WRITE])

    def collect(self, done: list[int], slots: list[tuple[int, int]], f: np.ndarray, lay: Layout) -> None:
        """The rows of the mailbox entries ``done`` (core, slot per entry in ``slots``)."""
        for e, (c, slot) in zip(done, slots):
            self.add(e >> C.ENTRY_SHIFT, e & C.ENTRY_PART, C.read_counts(f, lay.counts(c, slot)))

    def finish(self, tid: int) -> None:
        """Task ``tid`` finished: fold its rows into a line (none if a part was not counted)."""
        acc = self.open.pop(tid, None)
        if acc is None or acc[5]:
            return
        line = [float(tid)]
        for part in acc[:C.NPARTS_MAX]:
            line.extend(part if part is not None else [float("nan")] * C.COUNT_WORDS)
        line += [float(acc[3]), float(acc[4])]
        self.lines.append(line)

    def take(self) -> np.ndarray:
        """The lines of the tasks finished since the last take (codec.COUNTED_COLUMNS)."""
        out = np.array(self.lines, np.float64).reshape(-1, C.COUNTED_COLUMNS)
        self.lines = []
        return out

    def discard(self) -> None:
        """A run was aborted: what was in flight will not finish."""
        self.open.clear()
