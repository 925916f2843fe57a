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
    shape[s]      core shape code                                                       -
    queue[s]      its ready queue: the shape for a plain task, else Q_PRED (predicate
                  to evaluate), Q_INSTANT (no core: dummies, false predicates), Q_SPMD
                  (several blocks), Q_SYNC (several blocks starting together)           -
    flags[s]      the record's FLAG_* word                                              -
    blocks[s]     SPMD logical blocks; next_block[s] the next one to post               -
    core[s]       the core a single-core task was posted to, else -1                   -
    early[s]      posted early (see ``early``): finishing its producers does not make it
                  ready again                                                           -

Early dispatch: a single-core task whose unfinished producers are all single-core tasks posted
to one core may be posted to that core's mailbox right behind them (gated): the core runs its
mailbox in order, so the producers finish first. Candidates (tid, core) come from ingest (all
producers already posted to one core) and from posting (a successor whose only unfinished
producer is the task just posted); the scheduler posts those whose core has room, keeps the
ones that wait for room, and drops the ones that became ready the usual way.

Dependencies come from three places: the tensor map (sequential semantics: every overlap;
reference semantics: the reference's rules, device/tensormap.py, plus an edge to the task that
allocated each runtime buffer -- none at all for records made in a manual scope), a predicate's
operand (always a tracked read), and the explicit deps in the dep pool.

A scope end or an alloc finishes as it is ingested; a dummy as soon as it is ready. Records are
ingested, finished and retired in task-id order; ``retired`` <= finished <= ``ingested``.
"""

from __future__ import annotations

import struct
from collections import deque
from collections.abc import Callable

from device import codec as C
from device.layout import G_PROBE
from device.lifetime import Lifetimes
from device.tensormap import TensorMap
from kernels.registry import SHAPE_AIV

NPARTS = (1, 1, 2, 2, 3)        # cores (parts) one block of each core shape takes

HEADER = struct.Struct(f"{C.H_BLOCKS + 1}q")
Q_INSTANT, Q_SPMD, Q_SYNC, Q_PRED = 5, 6, 7, 8          # ready queues after the five shapes
LOOKAHEAD = 64              # records ingested ahead of completion before completions take precedence
ARG_HEAD = struct.Struct("5q")              # buffer, meta, lo, hi, owner


class TaskTable:
    """The state of every record between ingest and retirement (see the module docstring)."""

    def __init__(self, q, raw, layout, keep_edges: bool, on_freed: Callable[[list], None],
                 reference: bool = False) -> None:
        W = layout.window
        self.q, self.raw, self.lay, self.mask = q, raw, layout, W - 1
        self.done_tid = [-1] * W
        self.fanin = [0] * W
        self.succ: list[list | None] = [None] * W
        self.parts = [0] * W
        self.owners: list[list | None] = [None] * W
        self.kernel = [0] * W
        self.shape = [0] * W
        self.queue = [0] * W
        self.flags = [0] * W
        self.blocks = [1] * W
        self.next_block = [0] * W
        self.core = [-1] * W
        self.is_early = [False] * W
        self.early: list[tuple[int, int]] = []       # (tid, core) candidates for early dispatch
        self.ingested = self.completed = self.retired = 0
        self.keep_edges = keep_edges                 # tracing / recording: every edge, kept
        self.edges: list[tuple[int, int]] = []       # (consumer, producer) when keep_edges
        self.tmap = TensorMap(self.is_done, lambda ref: C.arg_geometry(q, ref), keep_done=keep_edges)
        self.heap = Lifetimes(on_freed)
        self.ready = [deque() for _ in range(Q_PRED + 1)]   # one queue per core shape, then Q_*
        self.nready = 0
        self.ready_ns = 0                            # the T_READY stamp to write (0: timestamps off)
        self.ts_off = layout.ts_off
        self.n_alloc = self.n_scope = self.n_dummy = self.n_probe = 0
        self.reference = reference                   # the reference's dependency rules
        self.pred_false: list[int] = []              # tids whose predicate was false (recording)
        self.g_probe = layout.g(G_PROBE)

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
        kernel_, shape_, queue_, keep_edges = self.kernel, self.shape, self.queue, self.keep_edges
        core_, is_early, early = self.core, self.is_early, self.early
        reference = self.reference
        lookahead = self.completed + LOOKAHEAD
        for tid in range(self.ingested, end):
            if tid > lookahead and anydone >= 0 and q[anydone]:
                end = tid
                break
            s = tid & mask
            r = ring_off + s * RW
            _, kind, k, shape, nt, _, _, flags, hold, _, _, aux, ndeps, deps_at, blocks = unpack(raw, r * 8)
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
            if flags & C.FLAG_PRED:
                nt += 1                      # the operand: kept alive, and (below) a tracked read
            if kind == C.KIND_ALLOC or (reference and flags & (C.FLAG_MANUAL | C.FLAG_PRED)):
                track = None                 # lifetimes only; (reference) the slow way
            else:
                track = access
            for a in range(r + AO, r + AO + nt * AW, AW):
                buf, meta, lo, hi, owner = arg_head(raw, a * 8)
                if owner >= 0 and owner != tid:
                    rec = heap.use(owner)
                    if rec is not None:
                        if owners is None:
                            owners = [rec]
                        else:
                            owners.append(rec)
                if track is not None:
                    if reference:
                        self._access_ref(buf, tid, meta, lo, hi, owner, a, preds)
                    else:
                        access(buf, tid, meta & 3, lo, hi, meta & C.META_CONTIG, a, preds)
            owners_[s] = owners
            if kind == C.KIND_ALLOC:
                self.n_alloc += 1
                self.finish(tid, s)
                continue
            if track is None:
                self._special_ref(r, tid, nt, flags, preds)
            if ndeps:
                preds += self.lay.deps(q, deps_at, ndeps)
            if task:
                kernel_[s] = k
                shape_[s] = shape
                qi = shape
                if blocks > 1 or flags & C.FLAG_PRED:     # (flags and blocks matter only then)
                    qi = Q_PRED if flags & C.FLAG_PRED else Q_SYNC if flags & C.FLAG_SYNC else Q_SPMD
                    self.flags[s] = flags
                    self.blocks[s] = blocks
                    self.next_block[s] = 0
            else:
                if flags & C.FLAG_PROBE:
                    self.n_probe += 1
                else:
                    self.n_dummy += 1
                qi = Q_INSTANT
                self.flags[s] = flags
            queue_[s] = qi
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
            elif on >= 0 and qi <= SHAPE_AIV:
                early.append((tid, on))
        self.ingested = end

    def _access_ref(self, buf: int, tid: int, meta: int, lo: int, hi: int, owner: int, a: int,
                    preds: list) -> None:
        """One argument under reference semantics: the creator edge, then (unless untracked)
        the reference's tensor-map rules."""
        if owner >= 0 and owner != tid:
            preds.append(owner)
        if not meta & C.META_NOTRACK:
            self.tmap.access_ref(buf, tid, meta & 3, lo, hi, meta & C.META_CONTIG, a, preds, owner == tid)

    def _special_ref(self, r: int, tid: int, nt: int, flags: int, preds: list) -> None:
        """Reference semantics for a record made in a manual scope (no automatic edge) or with a
        predicate (its operand, the last argument, is a tracked read either way)."""
        AW = C.ARG_WORDS
        last = r + C.ARGS_OFF + (nt - 1) * AW
        for a in range(r + C.ARGS_OFF, last + AW, AW):
            buf, meta, lo, hi, owner = ARG_HEAD.unpack_from(self.raw, a * 8)
            if a == last and flags & C.FLAG_PRED:
                self.tmap.access_ref(buf, tid, C.DIR_IN, lo, hi, meta & C.META_CONTIG, a, preds, False)
            elif not flags & C.FLAG_MANUAL:
                self._access_ref(buf, tid, meta, lo, hi, owner, a, preds)

    def make_ready(self, tid: int, s: int) -> None:
        if self.ready_ns:
            self.q[self.ts_off + s * C.TS_WORDS + C.T_READY] = self.ready_ns
        self.ready[self.queue[s]].append(tid)
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

    def finish_instant(self, tid: int, s: int, now: int) -> None:
        """A record that runs on no core (a dummy, a task whose predicate was false) is done."""
        if now:
            t = self.ts_off + s * C.TS_WORDS
            self.q[t + C.T_DISPATCH] = self.q[t + C.T_DONE] = now
        if self.flags[s] & C.FLAG_PROBE:
            self.q[self.g_probe] = tid + 1           # the host waits for this one (G_PROBE)
        self.finish(tid, s)

    def route(self, s: int) -> int:
        """The queue a predicated task goes to once its predicate held."""
        if self.blocks[s] > 1:
            return Q_SYNC if self.flags[s] & C.FLAG_SYNC else Q_SPMD
        return self.shape[s]

    def skip_ready(self) -> None:
        """Discarding after a failure: finish every ready task without running it. Finishing one
        may make more ready, so this loops (never recurses) until the queues are empty. An SPMD
        task some of whose blocks are running finishes when those have."""
        q, mask, ts_off = self.q, self.mask, self.ts_off
        while self.nready:
            for qi, rq in enumerate(self.ready):
                while rq:
                    tid = rq.popleft()
                    self.nready -= 1
                    s = tid & mask
                    if qi != Q_INSTANT:
                        q[ts_off + s * C.TS_WORDS + C.T_STATUS] = C.STATUS_SKIPPED
                    if qi < Q_INSTANT:
                        self.finish(tid, s)
                        continue
                    b, n = self.next_block[s], self.blocks[s]
                    if (qi == Q_SPMD or qi == Q_SYNC) and b:
                        self.parts[s] -= (n - b) * NPARTS[self.shape[s]]
                        self.next_block[s] = n
                        if self.parts[s]:
                            continue
                    self.finish_instant(tid, s, 0)

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
