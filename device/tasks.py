"""The scheduler's task table: one row per task-ring slot, filled when a record is ingested.

    record tid in slot s = tid & mask
      ingest   ──▶ dependencies from the tensor map (device/tensormap.py) ──▶ fanin[s] producers
                   heap allocations and their users (device/lifetime.py)
                   fanin 0 ──▶ ready queue of its core shape
      finish   ──▶ done_tid[s] = tid; successors' fanin - 1 (0 ──▶ ready); buffer users released
      retire   ──▶ the host may reuse the slot once every older record has finished too

Per-slot state (lists indexed by slot; "-" = not used by runtime records):

    done_tid[s]   the tid of the slot's record once it has finished, else -1. With ``retired``
                  this answers is_done(t) for any tid, also one whose slot was reused since.
    fanin[s]      producers the task still waits for                                    -
    succ[s]       tasks waiting for this one: None or a list of tids
    parts[s]      parts (cores) of the task still running                               -
    owners[s]     allocation records (device/lifetime.py) the task keeps alive: the buffers
                  it names that other records allocated, and its own allocation; released
                  when it finishes
    kernel[s]     kernel index                                                          -
    shape[s]      core shape code (its ready queue)                                     -
    core[s]       the core a single-core task was posted to, else -1                   -
    early[s]      posted early (see ``early``): finishing its producers does not make it
                  ready again                                                           -

Early dispatch: a single-core task whose unfinished producers are all single-core tasks posted
to one core may be posted to that core's mailbox right behind them (gated): the core runs its
mailbox in order, so the producers finish first. Candidates (tid, core) come from ingest (all
producers already posted to one core) and from posting (a successor whose only unfinished
producer is the task just posted); the scheduler posts those whose core has room, keeps the
ones that wait for room, and drops the ones that became ready the usual way.

A record whose kind is not a task (scope end, alloc) finishes as it is ingested. Records are
ingested, finished and retired in task-id order; ``retired`` <= finished <= ``ingested``.
"""

from __future__ import annotations

import struct
from collections import deque
from collections.abc import Callable

from device import codec as C
from device.lifetime import Lifetimes
from device.tensormap import TensorMap
from kernels.registry import SHAPE_AIV

HEADER = struct.Struct(f"{C.H_AUX + 1}q")
LOOKAHEAD = 64              # records ingested ahead of completion before completions take precedence
ARG_HEAD = struct.Struct("5q")              # buffer, meta, lo, hi, owner


class TaskTable:
    """The state of every record between ingest and retirement (see the module docstring)."""

    def __init__(self, q, raw, layout, keep_edges: bool, on_freed: Callable[[list], None]) -> None:
        W = layout.window
        self.q, self.raw, self.lay, self.mask = q, raw, layout, W - 1
        self.done_tid = [-1] * W
        self.fanin = [0] * W
        self.succ: list[list | None] = [None] * W
        self.parts = [0] * W
        self.owners: list[list | None] = [None] * W
        self.kernel = [0] * W
        self.shape = [0] * W
        self.core = [-1] * W
        self.is_early = [False] * W
        self.early: list[tuple[int, int]] = []       # (tid, core) candidates for early dispatch
        self.ingested = self.completed = self.retired = 0
        self.keep_edges = keep_edges                 # tracing / recording: every edge, kept
        self.edges: list[tuple[int, int]] = []       # (consumer, producer) when keep_edges
        self.tmap = TensorMap(self.is_done, lambda ref: C.arg_geometry(q, ref), keep_done=keep_edges)
        self.heap = Lifetimes(on_freed)
        self.ready = [deque() for _ in range(5)]     # one queue per core shape
        self.nready = 0
        self.ready_ns = 0                            # the T_READY stamp to write (0: timestamps off)
        self.ts_off = layout.ts_off
        self.n_alloc = self.n_scope = 0

    def is_done(self, tid: int) -> bool:
        return tid < self.retired or self.done_tid[tid & self.mask] == tid

    # -- ingest ----------------------------------------------------------------------------------
    def ingest(self, end: int, anydone: int = -1) -> None:
        """Take records [ingested, end): dependencies, allocations, readiness. Once LOOKAHEAD
        records are ingested ahead of completion, stop early when the word ``anydone`` says a
        worker finished something: completing it comes first (the next ingest goes on)."""
        q, raw, mask, ring_off = self.q, self.raw, self.mask, self.lay.ring_off
        access, heap, is_done = self.tmap.access, self.heap, self.is_done
        unpack, arg_head = HEADER.unpack_from, ARG_HEAD.unpack_from
        RW, AW, AO, TSW, ts_status = C.REC_WORDS, C.ARG_WORDS, C.ARGS_OFF, C.TS_WORDS, self.ts_off + C.T_STATUS
        done_tid, succ, owners_, fanin = self.done_tid, self.succ, self.owners, self.fanin
        kernel_, shape_, keep_edges = self.kernel, self.shape, self.keep_edges
        core_, is_early, early = self.core, self.is_early, self.early
        lookahead = self.completed + LOOKAHEAD
        for tid in range(self.ingested, end):
            if tid > lookahead and anydone >= 0 and q[anydone]:
                end = tid
                break
            s = tid & mask
            r = ring_off + s * RW
            _, kind, k, shape, nt, _, _, flags, hold, _, _, aux = unpack(raw, r * 8)
            done_tid[s] = -1
            succ[s] = None
            if kind == C.KIND_SCOPE_END:
                self.n_scope += 1
                heap.end_scope(aux)
                if aux == 0 and keep_edges:
                    self.tmap.clear()        # a run's end: nothing later depends on it
                owners_[s] = None
                self.finish(tid, s)
                continue
            owners = None
            if flags & C.FLAG_HEAP:
                bufs = [q[a] for a in range(r + AO, r + AO + nt * AW, AW) if q[a + C.A_OWNER] == tid]
                owners = [heap.allocate(tid, bufs, hold)]
            preds: list[int] = []
            task = kind == C.KIND_TASK
            for a in range(r + AO, r + AO + nt * AW, AW):
                buf, meta, lo, hi, owner = arg_head(raw, a * 8)
                if owner >= 0 and owner != tid:
                    rec = heap.use(owner)
                    if rec is not None:
                        if owners is None:
                            owners = [rec]
                        else:
                            owners.append(rec)
                if task:
                    access(buf, tid, meta & 3, lo, hi, meta & C.META_CONTIG, a, preds)
            owners_[s] = owners
            if not task:
                self.n_alloc += 1
                self.finish(tid, s)
                continue
            kernel_[s] = k
            shape_[s] = shape
            core_[s] = -1
            is_early[s] = False
            q[ts_status + s * TSW] = C.STATUS_OK
            n = 0
            on = -2                         # the one core all unfinished producers are on, or -1
            if preds:
                if keep_edges:
                    self.edges.extend((tid, p) for p in set(preds) if p != tid)
                for p in set(preds) if len(preds) > 1 else preds:
                    if p != tid and not is_done(p):
                        ps = p & mask
                        lst = succ[ps]
                        if lst is None:
                            succ[ps] = [tid]
                        else:
                            lst.append(tid)
                        n += 1
                        pc = core_[ps]
                        on = pc if on == -2 or on == pc else -1
            fanin[s] = n
            if n == 0:
                self.make_ready(tid, s)
            elif on >= 0 and shape <= SHAPE_AIV:
                early.append((tid, on))
        self.ingested = end

    def make_ready(self, tid: int, s: int) -> None:
        if self.ready_ns:
            self.q[self.ts_off + s * C.TS_WORDS + C.T_READY] = self.ready_ns
        self.ready[self.shape[s]].append(tid)
        self.nready += 1

    # -- completion ------------------------------------------------------------------------------
    def finish(self, tid: int, s: int) -> None:
        """A record has finished (run, skipped, or a runtime record): release its successors and
        the buffers it kept alive."""
        self.done_tid[s] = tid
        self.completed += 1
        lst = self.succ[s]
        if lst is not None:
            self.succ[s] = None
            fanin, mask = self.fanin, self.mask
            for t in lst:
                ts = t & mask
                fanin[ts] -= 1
                if fanin[ts] == 0 and not self.is_early[ts]:
                    self.make_ready(t, ts)
        own = self.owners[s]
        if own is not None:
            self.owners[s] = None
            release = self.heap.release
            for a in own:
                release(a)

    def skip_ready(self) -> None:
        """Discarding after a failure: finish every ready task without running it. Finishing one
        may make more ready, so this loops (never recurses) until the queues are empty."""
        q, mask, ts_off = self.q, self.mask, self.ts_off
        while self.nready:
            for rq in self.ready:
                while rq:
                    tid = rq.popleft()
                    self.nready -= 1
                    q[ts_off + (tid & mask) * C.TS_WORDS + C.T_STATUS] = C.STATUS_SKIPPED
                    self.finish(tid, tid & mask)

    # -- retirement ------------------------------------------------------------------------------
    def retire(self) -> bool:
        """Move ``retired`` over the oldest finished records; True if it moved."""
        r0 = r = self.retired
        end, mask, done_tid = self.ingested, self.mask, self.done_tid
        while r < end and done_tid[r & mask] == r:
            r += 1
        if r == r0:
            return False
        self.retired = r
        if r == end and not self.keep_edges:
            self.tmap.clear()              # nothing unfinished is left to depend on
        return True

    def describe(self, limit: int = 64) -> list[dict]:
        """The oldest unretired records and what each waits for (a stall diagnosis)."""
        q, mask, out = self.q, self.mask, []
        for tid in range(self.retired, min(self.ingested, self.retired + limit)):
            s = tid & mask
            kind = q[self.lay.rec(tid) + C.H_KIND]
            out.append({"tid": tid, "kind": C.KIND_NAMES[kind], "kernel": self.kernel[s] if kind == C.KIND_TASK else -1,
                        "state": "finished" if self.done_tid[s] == tid else
                        "waiting" if self.fanin[s] else "ready/running", "fanin": self.fanin[s]})
        return out
