"""The task table, one row per task-ring slot, and what each kind of record does: the record
interpreter of both engines -- the scheduler process runs it with cores behind it
(device/dispatch.py), the sequential engine with a synchronous executor (device/sequential.py).

    record tid in slot s = tid & mask
      ingest   header ──▶ lifetimes (device/lifetime.py) ──▶ gather (device/deps.py) ──▶ link:
               fanin[s] = unfinished producers, tid in their succ ──▶ route: fanin 0 ──▶ ready
      settle   ready records that need no core: predicates evaluated, dummies finish
      finish   ──▶ done_tid[s] = tid; successors' fanin - 1 (0 ──▶ ready); buffer users released
      retire   ──▶ the host may reuse the slot once every older record has finished too

What each kind of record does:

    kind             at ingest                                when ready
    task             lifetimes, dependencies; the ready       a core runs it (or, the sequential
                     queue of its core shape                  engine, this process)
      SPMD           ... Q_SPMD, or Q_SYNC (start together)   blocks on cores, in waves / at once
      predicated     ... Q_PRED                               settle: the operand's element
                                                              holds? its queue : finishes without
                                                              a core (STATUS_PRED_FALSE)
    dummy            lifetimes, dependencies; Q_INSTANT       settle: finishes without a core
      probe          a dummy the host waits for               ... and on_probe(tid) tells it
                     (rt.get/set_tensor_data)
    alloc            lifetimes (it allocates); finishes
    scope end        the scope's holds on heap allocations end (device/lifetime.py); depth 0,
                     a run's end, also clears the tensor map when edges are kept; finishes

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
    core_shape[s] core shape code (AIC, AIV, ...; not a tensor's dimensions)              -
    queue[s]      its ready queue: the core shape for a plain task, else Q_PRED (predicate
                  to evaluate), Q_INSTANT (no core: dummies, false predicates), Q_SPMD
                  (several blocks), Q_SYNC (several blocks starting together)           -
    flags[s]      the record's FLAG_* word                                              -
    blocks[s]     SPMD logical blocks; next_block[s] the next one to post               -
    core[s]       the core a single-core task was posted to, else -1                   -
    is_early[s]   posted early (see ``early``): finishing its producers does not make it
                  ready again                                                           -

Early dispatch: a single-core task whose unfinished producers are all single-core tasks posted
to one core may be posted to that core's mailbox right behind them (gated): the core runs its
mailbox in order, so the producers finish first. Candidates (tid, core) come from ingest (all
producers already posted to one core) and from posting (a successor whose only unfinished
producer is the task just posted); the dispatcher posts those whose core has room, keeps the
ones that wait for room, and drops the ones that became ready the usual way.

Records are ingested, finished and retired in task-id order; ``retired`` <= finished <= ``ingested``.
"""

from __future__ import annotations

import struct
from collections import deque
from collections.abc import Callable

from device import codec as C
from device.deps import Gatherer
from device.execute import predicate_holds
from device.lifetime import BUFS, TID, Lifetimes
from device.tensormap import TensorMap
from kernels.registry import SHAPE_AIV

NPARTS = (1, 1, 2, 2, 3)        # cores (parts) one block of each core shape takes

HEADER = struct.Struct(f"{C.H_BLOCKS + 1}q")
ARG_HEAD = struct.Struct(f"5q{(C.ARG_WORDS - 5) * 8}x")  # buffer, meta, lo, hi, owner of an argument
Q_INSTANT, Q_SPMD, Q_SYNC, Q_PRED = 5, 6, 7, 8          # ready queues after the five shapes
# Codec names the hot paths use, bound here once (a module global is one lookup, C.X two).
KIND_TASK, KIND_SCOPE_END, KIND_ALLOC = C.KIND_TASK, C.KIND_SCOPE_END, C.KIND_ALLOC
FLAG_HEAP, FLAG_PRED, FLAG_SYNC, FLAG_PROBE = C.FLAG_HEAP, C.FLAG_PRED, C.FLAG_SYNC, C.FLAG_PROBE
TS_WORDS, STATUS_OK = C.TS_WORDS, C.STATUS_OK
LOOKAHEAD = 64              # records ingested ahead of completion before completions take precedence


class TaskTable:
    """The state of every record between ingest and retirement (see the module docstring).

    on_freed(tid)   the heap allocation of record tid died (its buffers are forgotten here)
    on_probe(tid)   the probe dummy tid finished
    reference       the reference's dependency rules (device/deps.py)
    track           gather dependencies (the sequential engine needs them only to record them:
                    everything before a record has finished when it is ingested)"""

    def __init__(self, q, raw, layout, keep_edges: bool, on_freed: Callable[[int], None],
                 on_probe: Callable[[int], None], reference: bool = False, track: bool = True) -> None:
        W = layout.window
        self.q, self.raw, self.lay, self.mask = q, raw, layout, W - 1
        self.done_tid = [-1] * W
        self.fanin = [0] * W
        self.succ: list[list | None] = [None] * W
        self.parts = [0] * W
        self.owners: list[list | None] = [None] * W
        self.kernel = [0] * W
        self.core_shape = [0] * W
        self.queue = [0] * W
        self.flags = [0] * W
        self.blocks = [1] * W
        self.next_block = [0] * W
        self.core = [-1] * W
        self.is_early = [False] * W
        self.cols = (self.kernel, self.core_shape, self.queue, self.core, self.is_early, self.flags, q)
        self.early: list[tuple[int, int]] = []       # (tid, core) candidates for early dispatch
        self.ingested = self.completed = self.retired = 0
        self.keep_edges = keep_edges                 # tracing / recording: every edge, kept
        self.edges: list[tuple[int, int]] = []       # (consumer, producer) when keep_edges
        self.tmap = TensorMap(self.is_done, lambda ref: C.arg_geometry(q, ref), keep_done=keep_edges)
        self.deps = Gatherer(self.tmap, q, layout, reference)
        self.track = track
        self.on_freed, self.on_probe = on_freed, on_probe
        self.heap = Lifetimes(self._dead)
        self.ready = [deque() for _ in range(Q_PRED + 1)]   # one queue per core shape, then Q_*
        self.nready = 0
        self.ready_ns = 0                            # the T_READY stamp to write (0: timestamps off)
        self.ts_off = layout.ts_off
        self.status_at = layout.ts_off + C.T_STATUS          # slot s's status: + s * TS_WORDS
        self.n_alloc = self.n_scope = self.n_dummy = self.n_probe = 0
        self.pred_false: list[int] = []              # tids whose predicate was false (recording)

    def is_done(self, tid: int) -> bool:
        return tid < self.retired or self.done_tid[tid & self.mask] == tid

    def _dead(self, a: list) -> None:
        """A heap allocation died: forget its buffers, tell the owner of the memory."""
        drop = self.tmap.drop
        for b in a[BUFS]:
            drop(b)
        self.on_freed(a[TID])

    def runtime_counts(self) -> dict[str, int]:
        """Records that ran on no core, by kind (dev.stats()["runtime_tasks"])."""
        return {"alloc": self.n_alloc, "scope_end": self.n_scope, "dummy": self.n_dummy,
                "tensor_data": self.n_probe}

    # -- ingest ----------------------------------------------------------------------------------
    def ingest(self, end: int, anydone: int = -1) -> None:
        """Take records [ingested, end): header ──▶ lifetimes ──▶ gather ──▶ admit (link, route).
        Once LOOKAHEAD records are ingested ahead of completion, stop early when the word
        ``anydone`` says a worker finished something: completing it comes first (the next ingest
        goes on)."""
        q, raw, mask, ring_off = self.q, self.raw, self.mask, self.lay.ring_off
        unpack, head, heads = HEADER.unpack_from, ARG_HEAD.unpack_from, ARG_HEAD.iter_unpack
        lifetimes, gather, admit = self._lifetimes, self.deps.gather, self._admit
        RW, AW, AO = C.REC_WORDS, C.ARG_WORDS, C.ARGS_OFF
        done_tid, succ, owners, track = self.done_tid, self.succ, self.owners, self.track
        lookahead = self.completed + LOOKAHEAD
        for tid in range(self.ingested, end):
            if tid > lookahead and anydone >= 0 and q[anydone]:     # a hint: no ordering needed
                end = tid
                break
            s = tid & mask
            r = ring_off + s * RW
            _, kind, k, core_shape, nt, _, _, flags, hold, _, _, aux, ndeps, deps_at, blocks = unpack(raw, r * 8)
            done_tid[s] = -1
            succ[s] = None
            if kind == KIND_SCOPE_END:
                self._scope_end(tid, s, aux)
                continue
            if flags & FLAG_PRED:
                nt += 1                      # the operand, after the tensors: kept alive, a tracked read
            base = r + AO
            args = ([head(raw, base * 8)] if nt == 1 else list(heads(raw[base * 8:(base + nt * AW) * 8])) if nt
                    else ())
            for a in args:                   # lifetimes: only if it names a runtime buffer (owner)
                if a[4] >= 0:
                    owners[s] = lifetimes(tid, args, flags, hold)
                    break
            else:
                owners[s] = lifetimes(tid, args, flags, hold) if flags & FLAG_HEAP else None
            if kind == KIND_ALLOC:
                self.n_alloc += 1
                self.finish(tid, s)
                continue
            preds = gather(tid, base, args, flags, ndeps, deps_at) if track and (nt or ndeps) else ()
            admit(tid, s, preds, kind, k, core_shape, flags, blocks)
        self.ingested = end

    def _scope_end(self, tid: int, s: int, depth: int) -> None:
        self.n_scope += 1
        self.heap.end_scope(depth)
        if depth == 0 and self.keep_edges:
            self.tmap.clear()                # a run's end: nothing later depends on it
        self.owners[s] = None
        self.finish(tid, s)

    def _lifetimes(self, tid: int, args: list[tuple], flags: int, hold: int) -> list | None:
        """The allocation records the record keeps alive until it finishes: its own (FLAG_HEAP:
        it allocated the buffers it names as their owner, held by scope depth ``hold``) and
        those of other records' buffers it names."""
        heap, owners = self.heap, None
        if flags & C.FLAG_HEAP:
            owners = [heap.allocate(tid, [a[0] for a in args if a[4] == tid], hold)]
        for a in args:
            owner = a[4]
            if owner >= 0 and owner != tid:
                rec = heap.use(owner)
                if rec is not None:
                    if owners is None:
                        owners = [rec]
                    else:
                        owners.append(rec)
        return owners

    def _admit(self, tid: int, s: int, preds: list[int] | tuple, kind: int, k: int, core_shape: int, flags: int,
               blocks: int) -> None:
        """The record's per-slot state; link: wait for the unfinished producers among ``preds``;
        route: none left, into its ready queue (module docstring); all of them posted to one
        core, an early-dispatch candidate."""
        kernel, shapes, queue, core, is_early, flags_, q = self.cols
        if kind == KIND_TASK:
            kernel[s] = k
            shapes[s] = core_shape
            qi = core_shape
            if blocks > 1 or flags & FLAG_PRED:       # (flags and blocks matter only then)
                qi = Q_PRED if flags & FLAG_PRED else Q_SYNC if flags & FLAG_SYNC else Q_SPMD
                flags_[s] = flags
                self.blocks[s] = blocks
                self.next_block[s] = 0
        else:
            if flags & FLAG_PROBE:
                self.n_probe += 1
            else:
                self.n_dummy += 1
            qi = Q_INSTANT
            flags_[s] = flags
        queue[s] = qi
        core[s] = -1
        is_early[s] = False
        q[self.status_at + s * TS_WORDS] = STATUS_OK
        n = 0
        on = -2                         # the one core all unfinished producers are on, or -1
        if preds:
            if self.keep_edges:
                self.edges.extend((tid, p) for p in set(preds) if p != tid)
            succ, is_done, mask = self.succ, self.is_done, self.mask
            for p in set(preds) if len(preds) > 1 else preds:
                if p != tid and not is_done(p):
                    ps = p & mask
                    lst = succ[ps]
                    if lst is None:
                        succ[ps] = [tid]
                    else:
                        lst.append(tid)
                    n += 1
                    pc = core[ps]
                    on = pc if on == -2 or on == pc else -1
        self.fanin[s] = n
        if n == 0:
            self.make_ready(tid, s)
        elif on >= 0 and qi <= SHAPE_AIV:
            self.early.append((tid, on))

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

    def settle(self, gm, now: int) -> bool:
        """Predicates of ready tasks (read in ``gm``; a false one makes its task need no core),
        then every ready record that needs no core finishes -- which may make more of both
        ready. True if any record finished."""
        ready, mask, q = self.ready, self.mask, self.q
        preds, instant = ready[Q_PRED], ready[Q_INSTANT]
        did = False
        while preds or instant:
            while preds:
                tid = preds.popleft()
                s = tid & mask
                if predicate_holds(q, self.lay.rec(tid), gm):
                    ready[self.route(s)].append(tid)
                else:
                    q[self.ts_off + s * C.TS_WORDS + C.T_STATUS] = C.STATUS_PRED_FALSE
                    if self.keep_edges:
                        self.pred_false.append(tid)
                    instant.append(tid)
            while instant:
                tid = instant.popleft()
                self.nready -= 1
                self.finish_instant(tid, tid & mask, now)
                did = True
        return did

    def finish_instant(self, tid: int, s: int, now: int) -> None:
        """A record that runs on no core (a dummy, a task whose predicate was false) is done."""
        if now:
            t = self.ts_off + s * C.TS_WORDS
            self.q[t + C.T_DISPATCH] = self.q[t + C.T_DONE] = now
        self.finish(tid, s)
        if self.flags[s] & C.FLAG_PROBE:
            self.on_probe(tid)                       # the host waits for this one

    def route(self, s: int) -> int:
        """The queue a predicated task goes to once its predicate held."""
        if self.blocks[s] > 1:
            return Q_SYNC if self.flags[s] & C.FLAG_SYNC else Q_SPMD
        return self.core_shape[s]

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
                        self.parts[s] -= (n - b) * NPARTS[self.core_shape[s]]
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

    def describe(self, names: list[str], limit: int = 64) -> tuple[C.Unretired, ...]:
        """The oldest unretired records and what each waits for (a stall diagnosis); ``names``
        are the kernels' names."""
        q, mask, out = self.q, self.mask, []
        for tid in range(self.retired, min(self.ingested, self.retired + limit)):
            s = tid & mask
            kind = q[self.lay.rec(tid) + C.H_KIND]
            out.append(C.Unretired(tid, C.KIND_NAMES[kind], names[self.kernel[s]] if kind == C.KIND_TASK
                                   else C.KIND_NAMES[kind],
                                   "finished" if self.done_tid[s] == tid else
                                   "waiting" if self.fanin[s] else "ready/running", self.fanin[s]))
        return tuple(out)
