"""The discrete-event model of one run on an a2a3 chip: orchestrator, schedulers, cores, HBM.
It follows the reference runtime (hw-native-sys/simpler, src/a2a3/runtime/tensormap_and_ringbuffer)
as of August 2026: fan-in wired in the orchestrator's submit path (PR #1263), ready tasks in shared
per-shape queues (PR #1245), a busy core's pending slot (scheduler_dispatch.cpp).

    records of one run (prepare: flat per-record lists, run-local indices)
        │
        ▼                         one heap of events, ordered (time, priority, sequence number)
    ORCHESTRATOR (1 thread) ─── submits records in order; a record costs orch_submit_us +
        │  orch_arg_us × tensor args + orch_edge_us × producers it waits for (the tensor-map lookups
        │  and inserts, then claiming and wiring each producer: submit_task's steps); a scope end
        │  orch_scope_end_us + orch_scope_task_us × records it releases. It blocks while the task
        │  ring (task_window) or the heap ring (heap_bytes) is full; records retire in order
        │  (finished, no unfinished user of a buffer they allocated, and, if they allocated heap,
        │  their scope ended) and give their slot and heap back
        ▼ submitted + all predecessors complete = READY
    ready queues, global: core-less (dummy / skipped) first, then sync SPMD launches (which hold
        │  back everything else until all their blocks fit at once), then one queue per shape,
        │  widest first (AIC_AIV_X2, AIC_AIV, AIV_X2, AIC, AIV), FIFO inside a shape
        ▼
    SCHEDULER THREADS (sched_threads, thread i owns clusters c with c mod threads == i)
        │  loop: DISPATCH phase at each sweep boundary (sched_dispatch_us per block onto idle
        │  owned cores of one cluster, then -- core_slots 2 -- single-core tasks into the second
        │  (pending) slot of owned busy cores, unless another thread has an idle core for them;
        │  core-less tasks cost sched_complete_us and complete), then a SWEEP reading each owned
        │  core's completion register (sched_poll_us per read, serial); a finished job costs
        │  sched_complete_us + sched_edge_us × consumers on its fanout list when its last core
        │  is read (one read sees both ends when the second slot's task ended too)
        ▼  dispatch write + dispatch_start_us
    CORES (3 per cluster) run one job (one SPMD block, all its parts start together) for its
        │  kernel time (counted, law or roofline: laws.py); a task waiting in a core's second slot
        │  starts core_switch_us after the running one ends, without the scheduler. Memory jobs
        │  share HBM: while their demand Σ B/T exceeds hbm_gbps each progresses at cap / demand
        │  (one "work clock" for all of them; compute-only jobs never slow)
        ▼  end + fin_visible_us = visible; noticed when the sweep next reads that core
    task complete (all blocks handled) ──▶ successors' predecessor counts, buffer users, retirement

Thread timing without simulating idle sweeps: a thread sweeps with period P = cores × poll from
an origin t0; position j of sweep k is read at t0 + k·P + j·poll. Handling a completion shifts t0
by its cost, a dispatch phase by its length. So a thread's next event is computed, not stepped:
the earliest read of a core whose end is visible, or the next sweep boundary if it has something
to dispatch. Events per task: one submit, one start (memory jobs) or end, one read, one done,
about one dispatch phase.

Per core lane (a sweep position of its thread): ``run_on`` the job running there, ``next_on`` the
job in its second slot, ``fin_q`` the ended jobs whose end no read has seen yet; the lane is idle
(its bit in ``masks``) once all three are empty and the last end was handled. ``open2`` counts a
thread's busy lanes with a free second slot, per core kind.

Rings as the reference's: a record at scope depth d takes a slot of ring min(d, 3)'s task window
and its heap from that ring's heap (each ring ``task_window`` slots and ``heap_bytes``; depth 0 is
the run's own scope). Simplified on purpose (say so when it matters): records retire in submission
order across all rings (the reference retires each ring on its own, so an old record of one ring
does not hold back another's -- the model may block the orchestrator where the chip would not,
never the other way), and the heap is a byte count (no 1 KiB alignment, no wrap-around waste); the
orchestrator does not become a fourth scheduler after its last submit; a sweep reads every owned
core, busy or idle; a mixed job's completion is handled once, when its last core is read, and mixed
jobs never take second slots; no first-task start penalty; L2 only as the share of runtime tensors'
traffic it serves (laws.py); HBM shared in proportion to demand.
"""

from __future__ import annotations

import gc
import itertools
import math
from array import array
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field, replace
from heapq import heappop, heappush
from typing import Any

from host.predict.laws import RecordedArg, TaskCosts
from host.predict.params import Params
from kernels.registry import SHAPE_AIC, SHAPE_AIC_AIV, SHAPE_AIC_AIV_X2, SHAPE_AIV, SHAPE_AIV_X2, SHAPE_NAMES

__all__ = ["ModelDeadlock", "RunInput", "RunStats", "Timeline", "critical_path", "prepare", "simulate"]

K_TASK, K_SCOPE_END, K_ALLOC, K_DUMMY = 0, 1, 2, 3
_KIND = {"task": K_TASK, "scope_end": K_SCOPE_END, "alloc": K_ALLOC, "dummy": K_DUMMY}
DISPATCH_ORDER = (SHAPE_AIC_AIV_X2, SHAPE_AIC_AIV, SHAPE_AIV_X2, SHAPE_AIC, SHAPE_AIV)
SECOND_ORDER = ((SHAPE_AIC, SHAPE_AIV), (SHAPE_AIV, SHAPE_AIC))     # second slots, by thread parity
INF = math.inf
RINGS = 4                 # the reference's PTO2_MAX_RING_DEPTH: scope depth d uses ring min(d, 3)

# Lanes of a cluster: 0 = AIC, 1 = AIV0, 2 = AIV1; an idle mask has bit l set when lane l is idle.
# FIT[shape][mask] = the lanes a job of that shape takes in a cluster with that idle mask (lowest
# lanes first), or None. A mixed job takes its cores in ONE cluster, all idle at once.


def _fit(shape: int, m: int) -> tuple[int, ...] | None:
    a, v0, v1 = m & 1, m & 2, m & 4
    if shape == SHAPE_AIC:
        return (0,) if a else None
    if shape == SHAPE_AIV:
        return (1,) if v0 else (2,) if v1 else None
    if shape == SHAPE_AIV_X2:
        return (1, 2) if v0 and v1 else None
    if shape == SHAPE_AIC_AIV:
        return (0, 1) if a and v0 else (0, 2) if a and v1 else None
    return (0, 1, 2) if m == 7 else None


FIT = [[_fit(s, m) for m in range(8)] for s in range(len(SHAPE_NAMES))]
PER_CLUSTER = [2 if s == SHAPE_AIV else 1 for s in range(len(SHAPE_NAMES))]   # jobs one idle cluster hosts

# Event kinds and their priority at equal times: core-level first, then completions, then submits,
# then scheduler threads (so a thread at time t sees everything that happened at t).
EV_START, EV_END, EV_HBM, EV_DONE, EV_SUBMIT, EV_THREAD = range(6)
PRIO = (0, 0, 0, 1, 2, 3)
PRIO_THREAD, PRIO_HBM, PRIO_CORE, PRIO_DONE = PRIO[EV_THREAD], PRIO[EV_HBM], PRIO[EV_START], PRIO[EV_DONE]
assert PRIO[EV_END] == PRIO_CORE
READ, DISPATCH = 0, 1


class ModelDeadlock(RuntimeError):
    """The orchestrator blocks on a full ring and nothing left in the run can free it."""


class Adjacency:
    """Record indices per record, packed (CSR): row i is ``idx[start[i]:start[i + 1]]``. A million
    records' predecessors as two arrays of C ints instead of a million Python lists."""

    __slots__ = ("start", "idx")

    def __init__(self, start: array | None = None, idx: array | None = None) -> None:
        self.start = start if start is not None else array("l", [0])
        self.idx = idx if idx is not None else array("l")

    def __getitem__(self, i: int) -> array:
        return self.idx[self.start[i]:self.start[i + 1]]

    def __len__(self) -> int:
        return len(self.start) - 1

    def __iter__(self) -> Iterator[array]:
        st, idx = self.start, self.idx
        for i in range(len(st) - 1):
            yield idx[st[i]:st[i + 1]]


@dataclass
class RunInput:
    """One run's records as flat columns (run-local indices), ready to simulate."""

    run: int
    first: int                      # record index range [first, end) in the graph
    end: int
    tid: array                      # q
    kind: array                     # b: K_*
    kernel: array                   # l: index into kernel_names, -1 for records that are not tasks
    depth: array                    # l
    shape: array                    # b: core shape code, -1 = no core (dummy, skipped, alloc, scope end)
    blocks: array                   # l
    sync: array                     # b
    heap: array                     # q
    ocost: array                    # d: orchestrator time to submit the record (costed())
    onargs: array                   # l: tensor args (scope end: records it releases) ...
    onpred: array                   # l: ... and producers, which its submit cost counts
    us: array                       # d: nominal kernel time of one block (counted, law or roofline × law_scale)
    us_lo: array                    # d: ... at the fast end of its band
    us_hi: array                    # d: ... at the slow end
    hbm: array                      # d: HBM bytes of one block: hbm_host + (1 - l2_hit) x hbm_rt (costed())
    hbm_host: array                 # d: GM bytes of one block to host tensors (HBM) ...
    hbm_rt: array                   # d: ... and to runtime tensors (L2 while it hits)
    preds: Adjacency                # records it waits for, ascending
    owners: Adjacency               # records that allocated a buffer this task uses (not itself)
    kernel_names: list[str]

    @staticmethod
    def empty(run: int, first: int, kernels: list[dict]) -> RunInput:
        """No records yet (a Flattener or a reader process fills the columns)."""
        return RunInput(run, first, first, array("q"), array("b"), array("l"), array("l"), array("b"), array("l"),
                        array("b"), array("q"), array("d"), array("l"), array("l"), array("d"), array("d"),
                        array("d"), array("d"), array("d"), array("d"), Adjacency(), Adjacency(),
                        [k["name"].rsplit(".", 1)[-1] for k in kernels])

    def at(self, corner: str, p: Params) -> RunInput:
        """The same run for the model at parameters ``p``, every kernel time at the "fast" or "slow"
        end of its band ("value": as flattened): submit costs and HBM bytes recomputed from p."""
        us = self.us_lo if corner == "fast" else self.us_hi if corner == "slow" else self.us
        sub, arg, edge, se, st, miss = (p.orch_submit_us, p.orch_arg_us, p.orch_edge_us, p.orch_scope_end_us,
                                        p.orch_scope_task_us, 1.0 - p.l2_hit)
        ocost = array("d", [se + st * a if k == K_SCOPE_END else sub + arg * a + edge * e
                            for k, a, e in zip(self.kind, self.onargs, self.onpred)])
        hbm = array("d", [h + miss * r for h, r in zip(self.hbm_host, self.hbm_rt)])
        return replace(self, us=us, ocost=ocost, hbm=hbm)


@dataclass
class Timeline:
    """What happened when, for the predicted trace (captured only on request)."""

    orch: list[tuple[int, float, float]] = field(default_factory=list)        # record, start, end
    blocked: list[tuple[float, float, str]] = field(default_factory=list)     # start, end, ring
    sched: list[tuple[int, float, float, str, int]] = field(default_factory=list)  # thread, start, end, what, rec
    jobs: list[tuple[int, int, tuple[int, ...], float, float]] = field(default_factory=list)  # rec, cluster,
    #                                                                            lanes, start, end


@dataclass
class RunStats:
    """Raw results of simulating one run (times in us from the run's first submit)."""

    device_us: float
    last_done_us: float
    orch_end_us: float
    orch_busy_us: float
    orch_blocked_us: float
    sched_busy_us: list[float]
    aic_busy_us: float
    aiv_busy_us: float
    hbm_bytes: float
    critical_path_us: float
    critical_path_tasks: int
    dependency_path_us: float
    jobs: int
    events: int
    timeline: Timeline | None = None
    effective_us: float = 0.0       # device_us without run_overhead_us: first submit to the last completion


class Flattener:
    """One run's records -- JSON objects in the recording's format (host/graph.py), in order,
    records [first, end) of the graph (``end`` None: as many as come) -- flattened into the columns
    of ``ri`` a chunk at a time (``more()``); ``costs`` gives each task's kernel time
    (laws.TaskCosts). Nothing of the JSON is kept: millions of records stream through, and the
    model (``simulate(..., feed=flattener.more)``) can start on the first chunk."""

    CHUNK = 4096

    def __init__(self, run: int, first: int, end: int | None, records: Iterable[dict], kernels: list[dict],
                 costs: TaskCosts, p: Params) -> None:
        self.shape_of = []
        for k in kernels:
            if k.get("shape") not in SHAPE_NAMES:
                raise ValueError(f"kernel {k.get('name')!r}: unknown core shape {k.get('shape')!r}; expected one "
                                 f"of {', '.join(SHAPE_NAMES)}")
            self.shape_of.append(SHAPE_NAMES.index(k["shape"]))
        self.ri = RunInput.empty(run, first, kernels)
        self.end, self.kernels, self.costs = end, kernels, costs
        self.records: Iterator[dict] | None = iter(records)
        self.where = _Where(self.ri.tid)
        self.later: list[tuple[int, int]] = []      # (record, producer id not seen yet): an edge to a later record?
        self.c = (p.orch_submit_us, p.orch_arg_us, p.orch_scope_end_us, p.heap_bytes, p.clusters, p.orch_edge_us,
                  p.orch_scope_task_us, 1.0 - p.l2_hit)
        self.in_scope: dict[int, int] = {}         # scope depth -> records submitted at it since its last end

    def more(self, k: int = CHUNK) -> bool:
        """Flatten up to k more records; False once there are none (the run's checks then done)."""
        if self.records is None:
            return False
        ri, first, i0 = self.ri, self.ri.first, len(self.ri.kind)
        i = i0
        for d in itertools.islice(self.records, k):
            try:
                _flatten(ri, i, first + i, d, self.kernels, self.shape_of, self.costs, self.where, self.later, self.c,
                         self.in_scope)
            except (KeyError, TypeError, IndexError, AttributeError, OverflowError) as e:
                what = f"no field {e}" if isinstance(e, KeyError) else f"{type(e).__name__}: {e}"
                raise ValueError(f"record {first + i}: malformed ({what})") from e
            i += 1
        if i > i0:
            return True
        self.records = None
        n, end = len(ri.kind), self.end
        if end is not None and n != end - first:
            raise ValueError(f"run {ri.run}: records [{first}, {end}) announced, the recording ends after {first + n}")
        ri.end = first + n
        for j, q in self.later:
            x = self.where.get(q)
            if x is not None:
                raise ValueError(f"record {first + j} (task {ri.tid[j]}) waits for task {q}, recorded after it "
                                 f"(record {first + x}): a dependency cycle, or edges that are not a recording's")
        return False


def prepare(run: int, first: int, end: int | None, records: Iterable[dict], kernels: list[dict], costs: TaskCosts,
            p: Params) -> RunInput:
    """A whole run flattened (Flattener) before simulating it."""
    f = Flattener(run, first, end, records, kernels, costs, p)
    while f.more():
        pass
    return f.ri


def _flatten(ri: RunInput, i: int, rec: int, d: dict, kernels: list[dict], shape_of: list[int], costs: TaskCosts,
             where: _Where, later: list[tuple[int, int]], c: tuple, in_scope: dict[int, int]) -> None:
    """Append record ``d`` (run-local index i, record rec of the graph) to the columns of ri;
    ``c``: orch_submit_us, orch_arg_us, orch_scope_end_us, heap_bytes, clusters, orch_edge_us,
    orch_scope_task_us, the L2 miss rate; ``in_scope``: records submitted per scope depth since that scope's last
    end. (Called once per record of a million: plain locals, the common case first.)"""
    get = d.get
    t, k = d["t"], _KIND.get(d["k"])
    heap, blocks = get("h", 0), get("b", 1)
    if type(t) is not int or k is None or type(heap) is not int or heap > c[3] or type(blocks) is not int \
            or blocks < 1:
        _bad_record(rec, d, t, k, heap, blocks, c[3])
    args = get("a") or ()
    pr = get("pr")
    try:
        views = [RecordedArg(a) for a in args]
        if pr is not None:
            views.append(RecordedArg(pr[0]))       # the predicate's operand: one more tracked read
    except ValueError as e:
        raise ValueError(f"record {rec} (task {t}): {e}") from None
    where.add(t, i)
    kern, shape, us, lo, hi, hh, hr, sync = -1, -1, 0.0, 0.0, 0.0, 0.0, 0.0, False
    pidx = ri.preds.idx
    ps = None
    if k == K_TASK or k == K_DUMMY:
        kern = get("kn", -1)
        if k == K_TASK:
            if type(kern) is not int or not 0 <= kern < len(kernels):
                raise ValueError(f"record {rec} (task {t}): kernel index {kern!r} is not in the header's "
                                 f"{len(kernels)} kernels")
            costs.used.add(kern)
            if not get("sk"):
                us, lo, hi, hh, hr = costs(t, kern, views[:len(args)] if pr is not None else views, get("s") or (),
                                           blocks, get("c"), get("cg"))
                shape = shape_of[kern]
                sync = bool(get("sy"))
                if sync and blocks > c[4] * PER_CLUSTER[shape]:
                    raise ValueError(f"task {t}: a sync SPMD launch of {blocks} {SHAPE_NAMES[shape]} blocks needs "
                                     f"them all idle at once; {c[4]} clusters hold at most "
                                     f"{c[4] * PER_CLUSTER[shape]} (--set clusters=...)")
            else:
                blocks = 1
        else:
            blocks = 1
        ps = get("p")
        if ps:
            if len(ps) == 1 and where.map is None and type(ps[0]) is int and 0 <= ps[0] - where.t0 < i:
                pidx.append(ps[0] - where.t0)      # where.rows(), for the common single producer
            else:
                pidx.extend(where.rows(ps, i, t, later))
    else:
        blocks = 1
    ri.tid.append(t)
    ri.kind.append(k)
    ri.depth.append(get("d", 0))
    ri.heap.append(heap)
    dep = get("d", 0)
    if k == K_SCOPE_END:                 # releases the scope's reference on every record it holds
        n = 0
        for x in [x for x in in_scope if x >= dep]:
            n += in_scope.pop(x)
        ri.ocost.append(c[2] + c[6] * n)
        ri.onargs.append(n)
        ri.onpred.append(0)
    else:
        in_scope[dep] = in_scope.get(dep, 0) + 1
        npred = len(ps) if ps else 0
        ri.ocost.append(c[0] + c[1] * len(views) + c[5] * npred)
        ri.onargs.append(len(views))
        ri.onpred.append(npred)
    ri.kernel.append(kern)
    ri.shape.append(shape)
    ri.blocks.append(blocks)
    ri.sync.append(sync)
    ri.us.append(us)
    ri.us_lo.append(lo)
    ri.us_hi.append(hi)
    ri.hbm.append(hh + c[7] * hr)
    ri.hbm_host.append(hh)
    ri.hbm_rt.append(hr)
    ri.preds.start.append(len(pidx))
    if views and k != K_SCOPE_END:
        owners = [a[5] for a in args if a[5] >= 0]
        if pr is not None and pr[0][5] >= 0:
            owners.append(pr[0][5])
        if len(owners) == 1 and where.map is None and 0 <= owners[0] - where.t0 < i:
            ri.owners.idx.append(owners[0] - where.t0)     # where.rows(), for the common single owner
        elif owners:
            ri.owners.idx.extend(where.rows(owners, i + 1, t, None, i))
    ri.owners.start.append(len(ri.owners.idx))


def _bad_record(rec: int, d: dict, t: Any, k: int | None, heap: Any, blocks: Any, heap_bytes: int) -> None:
    if type(t) is not int or k is None:
        raise ValueError(f"record {rec}: task id {t!r}, kind {d['k']!r}: expected an int and one of "
                         f"{', '.join(_KIND)}")
    if type(heap) is not int:
        raise ValueError(f"record {rec} (task {t}): heap {heap!r}, expected a byte count")
    if heap > heap_bytes:
        raise ValueError(f"record {rec} (task {t}) allocates {heap} bytes of heap, more than heap_bytes="
                         f"{heap_bytes}: raise it, e.g. --set heap_bytes={2 * heap}")
    raise ValueError(f"record {rec} (task {t}): blocks={blocks!r}, expected >= 1")


class _Where:
    """Task id -> run-local record index. Ids of a recording count up by one per record, so the index
    is the id minus the first; a dict only if a run breaks that (merged recordings)."""

    __slots__ = ("tids", "t0", "map")

    def __init__(self, tids: array) -> None:
        self.tids, self.t0, self.map = tids, None, None

    def add(self, t: int, i: int) -> None:
        if self.t0 is None:
            self.t0 = t - i
        if self.map is None and t != self.t0 + i:
            self.map = {x: j for j, x in enumerate(self.tids)}
        if self.map is not None:
            self.map[t] = i

    def get(self, t: int) -> int | None:
        if self.map is not None:
            return self.map.get(t)
        j = t - self.t0 if type(t) is int else -1
        return j if 0 <= j < len(self.tids) else None

    def rows(self, ids: list, n: int, t: int, later: list[tuple[int, int]] | None, skip: int = -1) -> list[int]:
        """The indices below n of these task ids, ascending and once each, without ``skip``; an id not
        seen yet and above t (the current record's) goes to ``later`` with the current index."""
        m, t0, out = self.map, self.t0, set()
        for q in ids:
            j = (m.get(q) if m is not None else q - t0 if type(q) is int else None)
            if j is not None and 0 <= j < n and j != skip:
                out.add(j)
            elif later is not None and (j is None or j >= n):
                if type(q) is not int:
                    raise ValueError(f"task {t}: producer {q!r} is not a task id")
                if q > t:
                    later.append((n, q))
        return sorted(out)


def critical_path(ri: RunInput, p: Params) -> tuple[float, int, float]:
    """Longest path through the run: (us, tasks on it, us of the longest path of dependencies alone).

    Each record starts at max(the end of its own submit on an orchestrator that never blocks, its
    predecessors' ends). A task on a core costs sched_dispatch_us + dispatch_start_us + kernel time
    (uncontended, one block) + fin_visible_us + sched_complete_us; a dummy or skipped task
    sched_complete_us; alloc and scope-end records nothing. No poll phase, no queueing. The third
    value drops the submit times: what the dependencies alone force, whoever submits.
    """
    n = len(ri.kind)
    on_core = p.sched_dispatch_us + p.dispatch_start_us + p.fin_visible_us + p.sched_complete_us
    fin = [0.0] * n
    dep = [0.0] * n
    cnt = [0] * n
    t_sub = 0.0
    best, best_n, best_dep = 0.0, 0, 0.0
    p_start, p_idx = ri.preds.start, ri.preds.idx
    for i in range(n):
        t_sub += ri.ocost[i]
        k = ri.kind[i]
        start, c, d = t_sub, 0, 0.0
        for x in range(p_start[i], p_start[i + 1]):
            q = p_idx[x]
            if fin[q] > start:
                start, c = fin[q], cnt[q]
            if dep[q] > d:
                d = dep[q]
        if k == K_TASK or k == K_DUMMY:
            cost = on_core + ri.us[i] if ri.shape[i] >= 0 else p.sched_complete_us
            c += 1
        else:
            cost = 0.0
        fin[i], cnt[i], dep[i] = start + cost, c, d + cost
        if fin[i] > best:
            best, best_n = fin[i], c
        if dep[i] > best_dep:
            best_dep = dep[i]
    return best, best_n, best_dep


class _Thread:
    __slots__ = ("idx", "clusters", "masks", "P", "t0", "busy_until", "pend_t", "pend_kind", "pend_arg",
                 "ver", "visible", "run_on", "next_on", "fin_q", "open2", "pos_at", "busy")

    def __init__(self, idx: int, clusters: list[int], poll: float) -> None:
        self.idx = idx
        self.clusters = clusters
        self.masks = [7] * len(clusters)          # idle lanes per owned cluster
        self.P = 3 * len(clusters) * poll          # one sweep over every owned core
        self.t0 = 0.0                              # sweep origin (see module docstring)
        self.busy_until = 0.0                      # end of the completion handling / dispatch in progress
        self.pend_t, self.pend_kind, self.pend_arg, self.ver = INF, READ, 0, 0
        self.visible: dict[int, float] = {}        # sweep position -> when the oldest unread end there became visible
        n = 3 * len(clusters)
        self.run_on = [-1] * n                     # sweep position -> job running there (not ended), or -1
        self.next_on = [-1] * n                    # ... job in the core's second slot, started when it ends
        self.fin_q: list[deque[tuple[int, float]]] = [deque() for _ in range(n)]   # ended, not read: (job, visible)
        self.open2 = [0, 0]                        # AIC / AIV lanes busy with a free second slot
        self.pos_at = [pos * poll for pos in range(3 * len(clusters))]   # a position's offset in a sweep
        self.busy = 0.0                            # time spent handling completions and dispatching


class _Sim:
    """One run. Plain lists and small ints; see the module docstring for the model."""

    def __init__(self, ri: RunInput, p: Params, capture: bool, feed: Callable[[], bool] | None = None) -> None:
        self.ri, self.p = ri, p
        self.feed = feed                            # adds records to ri; False once there are no more
        n = self.n = len(ri.kind)
        self.poll, self.fin, self.dstart = p.sched_poll_us, p.fin_visible_us, p.dispatch_start_us
        self.comp, self.disp, self.edge = p.sched_complete_us, p.sched_dispatch_us, p.sched_edge_us
        self.two = p.core_slots >= 2               # a busy core takes a second task (the reference's pending slot)
        self.pickup = p.core_switch_us
        self.cap = p.hbm_gbps * 1e3                # bytes per us
        self.window, self.heap_cap = p.task_window, p.heap_bytes
        T = self.T = p.sched_threads
        self.threads = [_Thread(i, list(range(i, p.clusters, T)), self.poll) for i in range(T)]
        self.ev: list[tuple] = []
        self.seq = itertools.count(1)              # ties at one time and priority: first pushed, first
        self.events = 0
        # records (the columns grow with ri when a feed adds records: more())
        self.npred = [0] * n                        # predecessors not complete (counted at submit)
        self.waiting: dict[int, list[int]] = {}     # record -> submitted records waiting for it, in order
        self.submitted = bytearray(n)               # flags: 0 / 1
        self.done = bytearray(n)
        self.users = [0] * n
        self.scope_ended = bytearray(n)
        self.open_scopes: dict[int, list[int]] = {}
        self.to_dispatch = list(ri.blocks)          # blocks not yet dispatched
        self.blocks_left = list(ri.blocks)          # blocks not yet complete
        # orchestrator and rings
        self.R = 0                                  # records [0, R) retired
        self.ring_tasks = [0] * RINGS               # unretired records per ring (ring of depth d: min(d, 3))
        self.heap_used = [0] * RINGS                # heap bytes they hold
        self.blocked, self.blocked_since, self.blocked_ring = -1, 0.0, ""
        self.orch_end = self.orch_busy = self.orch_blocked = 0.0
        self.last_done = 0.0
        # ready queues
        self.queues: list[deque[int]] = [deque() for _ in SHAPE_NAMES]
        self.nocore: deque[int] = deque()
        self.syncq: deque[int] = deque()
        # jobs (one SPMD block on the cores of one cluster)
        self.job_rec = array("l")
        self.job_cluster = array("l")
        self.job_lanes: list[tuple[int, ...]] = []
        self.job_start = array("d")
        self.job_end = array("d")
        self.job_left = array("l")
        # HBM: W is the work clock (nominal us of progress of every memory job), rate f = min(1, cap/D)
        self.W = self.tw = self.D = 0.0
        self.f = 1.0
        self.pool: list[tuple[float, int]] = []     # (W at which the job ends, job)
        self.rate: dict[int, float] = {}
        self.hbm_ver = 0
        self.tl = Timeline() if capture else None

    # -- plumbing --------------------------------------------------------------------------------

    def push(self, t: float, kind: int, a: int, b: int = 0) -> None:
        heappush(self.ev, (t, PRIO[kind], next(self.seq), kind, a, b))

    def more(self) -> bool:
        """More records from the feed (the orchestrator reached the end of those flattened so far)."""
        if self.feed is None or not self.feed():
            return False
        ri, n0 = self.ri, self.n
        k = len(ri.kind) - n0
        self.n = n0 + k
        self.npred += [0] * k
        self.submitted += bytearray(k)
        self.done += bytearray(k)
        self.users += [0] * k
        self.scope_ended += bytearray(k)
        self.to_dispatch += ri.blocks[n0:]
        self.blocks_left += ri.blocks[n0:]
        return True

    def run(self) -> None:
        self.orch_next(0, 0.0)
        ev, threads = self.ev, self.threads
        read, dispatch, hbm_tick, submitted, job_done, hbm_start, job_ended = (
            self.read, self.dispatch, self.hbm_tick, self.submitted_, self.job_done, self.hbm_start, self.job_ended)
        events = 0
        while ev:
            t, _, _, kind, a, b = heappop(ev)
            events += 1
            if kind == EV_THREAD:                   # (the kinds by how often they come)
                th = threads[a]
                if b != th.ver:
                    continue                        # superseded
                th.pend_t = INF
                if th.pend_kind == READ:
                    read(th, t, th.pend_arg)
                else:
                    dispatch(th, t)
            elif kind == EV_HBM:
                if a == self.hbm_ver:               # not superseded
                    hbm_tick(t)
            elif kind == EV_SUBMIT:
                submitted(a, t)
            elif kind == EV_DONE:
                job_done(a, b, t)
            elif kind == EV_START:
                hbm_start(a, t)
            else:
                job_ended(a, t)
        self.events += events
        if self.blocked >= 0:
            raise ModelDeadlock(self.deadlock_message())
        if self.R < self.n and not all(self.done[i] for i in range(self.n) if self.ri.kind[i] != K_SCOPE_END):
            stuck = next(i for i in range(self.n) if not self.done[i] and self.ri.kind[i] != K_SCOPE_END)
            raise RuntimeError(f"model: run {self.ri.run}: record {self.ri.first + stuck} (task "
                               f"{self.ri.tid[stuck]}) never completed; it waits for run-local records "
                               f"{[q for q in self.ri.preds[stuck] if not self.done[q]]}")

    # -- orchestrator and rings --------------------------------------------------------------------

    def ring_full(self, i: int) -> str:
        d = min(self.ri.depth[i], RINGS - 1)
        if self.ring_tasks[d] >= self.window:
            return "task ring"
        if self.heap_used[d] + self.ri.heap[i] > self.heap_cap:
            return "heap ring"
        return ""

    def orch_next(self, i: int, t: float) -> None:
        if i >= self.n and not self.more():
            self.orch_end = t
            return
        full = self.ring_full(i)
        if full:
            self.blocked, self.blocked_since, self.blocked_ring = i, t, full
            return
        d = min(self.ri.depth[i], RINGS - 1)
        self.ring_tasks[d] += 1
        self.heap_used[d] += self.ri.heap[i]
        c = self.ri.ocost[i]
        self.orch_busy += c
        if self.tl:
            self.tl.orch.append((i, t, t + c))
        self.push(t + c, EV_SUBMIT, i)

    def submitted_(self, i: int, t: float) -> None:
        ri = self.ri
        self.submitted[i] = True
        k = ri.kind[i]
        if k == K_SCOPE_END:
            self.done[i] = True
            d = ri.depth[i]
            for dd in [x for x in self.open_scopes if x >= d]:
                for r in self.open_scopes.pop(dd):
                    self.scope_ended[r] = True
            self.retire(t)
        else:
            if ri.heap[i]:
                self.open_scopes.setdefault(ri.depth[i], []).append(i)
            users, ost, oix = self.users, ri.owners.start, ri.owners.idx
            for x in range(ost[i], ost[i + 1]):
                users[oix[x]] += 1
            if k == K_ALLOC:
                self.complete(i, t)
                self.orch_next(i + 1, t)
                return
            pst, pix, done, waiting = ri.preds.start, ri.preds.idx, self.done, self.waiting
            left = 0
            for x in range(pst[i], pst[i + 1]):
                q = pix[x]
                if not done[q]:
                    left += 1
                    w = waiting.get(q)
                    if w is None:
                        waiting[q] = [i]
                    else:
                        w.append(i)
            self.npred[i] = left
            if left == 0:
                self.ready(i, t)
        self.orch_next(i + 1, t)

    def retire(self, t: float) -> None:
        R, n, ri = self.R, self.n, self.ri
        sub, done, users, ended, heap = self.submitted, self.done, self.users, self.scope_ended, ri.heap
        depth, tasks, used = ri.depth, self.ring_tasks, self.heap_used
        while R < n and sub[R] and done[R] and users[R] == 0 and (heap[R] == 0 or ended[R]):
            d = min(depth[R], RINGS - 1)
            tasks[d] -= 1
            used[d] -= heap[R]
            R += 1
        if R == self.R:
            return
        self.R = R
        b = self.blocked
        if b >= 0 and not self.ring_full(b):
            self.blocked = -1
            self.orch_blocked += t - self.blocked_since
            if self.tl:
                self.tl.blocked.append((self.blocked_since, t, self.blocked_ring))
            self.orch_next(b, t)

    def deadlock_message(self) -> str:
        while self.more():                          # (the records after the blocked one, for the message)
            pass
        ri, p, i, R = self.ri, self.p, self.blocked, self.R
        what = ri.kernel_names[ri.kernel[R]] if ri.kernel[R] >= 0 else ("alloc" if ri.kind[R] == K_ALLOC
                                                                         else "record")
        later = next((j for j in range(i, self.n) if ri.kind[j] == K_SCOPE_END and ri.depth[j] <= ri.depth[R]),
                     None)
        why = (f"it allocated heap and its scope (depth {ri.depth[R]}) ends only at record "
               f"{ri.first + later}, which the orchestrator has not reached" if later is not None and
               not self.scope_ended[R] else "it is waiting for its scope to end")
        d = min(ri.depth[i], RINGS - 1)
        if self.blocked_ring == "task ring":
            fix = (f"raise task_window (now {p.task_window}), e.g. --set task_window={2 * p.task_window}, or "
                   f"split the scope")
            full = (f"ring {d}'s task window is full: its records among {ri.first + R}..{ri.first + i - 1} fill "
                    f"its {p.task_window} slots")
        else:
            fix = f"raise heap_bytes (now {p.heap_bytes}), e.g. --set heap_bytes={2 * p.heap_bytes}"
            full = (f"ring {d}'s heap is full: {self.heap_used[d]} bytes held by its records among "
                    f"{ri.first + R}..{ri.first + i - 1}, record {ri.first + i} (scope depth {ri.depth[i]}) needs "
                    f"{ri.heap[i]} more of heap_bytes={p.heap_bytes}")
        return (f"run {ri.run}: the orchestrator blocks forever before record {ri.first + i}: {full}, and the "
                f"oldest, record {ri.first + R} ({what}, task {ri.tid[R]}), cannot retire because {why}. "
                f"One scope holds more than the ring: {fix}.")

    # -- readiness and completion ------------------------------------------------------------------

    def ready(self, j: int, t: float) -> None:
        s = self.ri.shape[j]
        if s < 0:
            self.nocore.append(j)
            for th in self.threads:
                self.offer(th, t)
            return
        if self.ri.sync[j]:
            self.syncq.append(j)
            if self.sync_placeable():
                for th in self.threads:
                    self.offer(th, t)
            return
        self.queues[s].append(j)
        if self.syncq:
            return                                  # held back behind a sync launch
        fit = FIT[s]
        two = self.two and s <= SHAPE_AIV            # single-core shapes also fit a busy core's second slot
        for th in self.threads:
            if two and th.open2[s]:
                self.offer(th, t)
                continue
            for m in th.masks:
                if fit[m]:
                    self.offer(th, t)
                    break

    def complete(self, j: int, t: float) -> None:
        ri = self.ri
        self.done[j] = True
        if t > self.last_done:
            self.last_done = t
        waiting = self.waiting.pop(j, None)
        if waiting:
            npred = self.npred
            for s in waiting:                       # submitted, in submission order
                npred[s] -= 1
                if npred[s] == 0:
                    self.ready(s, t)
        users, ost, oix = self.users, ri.owners.start, ri.owners.idx
        for x in range(ost[j], ost[j + 1]):
            users[oix[x]] -= 1
        self.retire(t)

    # -- scheduler threads -------------------------------------------------------------------------

    def boundary(self, th: _Thread, x: float) -> float:
        """The first sweep boundary (dispatch phase) at or after x."""
        P = th.P
        if P <= 0.0:
            return x
        b = th.t0 + math.ceil((x - th.t0) / P) * P
        if b < x - 1e-9:
            b += P
        return b if b > x else x

    def read_time(self, th: _Thread, pos: int, x: float) -> float:
        """When the sweep next reads sweep position ``pos`` at or after x."""
        P = th.P
        if P <= 0.0:
            return x
        off = th.t0 + pos * self.poll
        r = off + math.ceil((x - off) / P) * P
        if r < x - 1e-9:
            r += P
        return r if r > x else x

    def set_pending(self, th: _Thread, t: float, kind: int, arg: int) -> None:
        th.ver = v = th.ver + 1
        th.pend_t, th.pend_kind, th.pend_arg = t, kind, arg
        heappush(self.ev, (t, PRIO_THREAD, next(self.seq), EV_THREAD, th.idx, v))     # push(), inlined

    def offer(self, th: _Thread, t: float) -> None:
        """Work th can dispatch appeared at t: its next sweep boundary is a candidate event."""
        x = t if t > th.busy_until else th.busy_until
        P = th.P
        if P <= 0.0:                               # boundary(), inlined
            b = x
        else:
            b = th.t0 + math.ceil((x - th.t0) / P) * P
            if b < x - 1e-9:
                b += P
            if b <= x:
                b = x
        if b < th.pend_t or (b == th.pend_t and th.pend_kind == READ):
            self.set_pending(th, b, DISPATCH, 0)

    def can_take(self, th: _Thread) -> bool:
        if self.nocore:
            return True
        if self.syncq:
            return self.sync_placeable()            # sync launches go first; the rest waits
        queues = self.queues
        for s in DISPATCH_ORDER:
            if queues[s]:
                if self.two and s <= SHAPE_AIV and th.open2[s] and not self.other_idle(th, s):
                    return True
                fit = FIT[s]
                for m in th.masks:
                    if fit[m]:
                        return True
        return False

    def recompute(self, th: _Thread, x: float) -> None:
        """th's next event at or after x: the earliest read that finds a visible end, or a dispatch."""
        if th.busy_until > x:
            x = th.busy_until
        P = th.P
        if P > 0.0 and x - th.t0 > P:
            th.t0 += math.floor((x - th.t0) / P) * P     # keeps k·P small (float precision)
        best, kind, arg = INF, READ, 0
        if th.visible:
            if P <= 0.0:
                for pos, v in th.visible.items():
                    r = v if v > x else x
                    if r < best or (r == best and pos < arg):
                        best, arg = r, pos
            else:
                at, t0, ceil = th.pos_at, th.t0, math.ceil
                for pos, v in th.visible.items():      # read_time(), inlined: this is the hot loop
                    y = v if v > x else x
                    if y > best:
                        continue                        # read at or after y > best: cannot win
                    off = t0 + at[pos]
                    r = off + ceil((y - off) / P) * P
                    if r < y - 1e-9:
                        r += P
                    if r < y:
                        r = y
                    if r < best or (r == best and pos < arg):
                        best, arg = r, pos
        if self.can_take(th):
            b = self.boundary(th, x)
            if b <= best:
                best, kind = b, DISPATCH
        if best < INF:
            self.set_pending(th, best, kind, arg)
        else:
            th.ver += 1
            th.pend_t = INF

    def read(self, th: _Thread, r: float, pos: int) -> None:
        """The sweep reads position pos at r and finds the ends visible by then (its running job's,
        and the second slot's if that one ended too: one register holds the latest FIN)."""
        fq = th.fin_q[pos]
        jid = fq.popleft()[0]
        last = [jid]
        while fq and fq[0][1] <= r + 1e-9:
            last.append(fq.popleft()[0])
        if fq:
            th.visible[pos] = fq[0][1]
        else:
            del th.visible[pos]
        h = r + self.poll
        handled = False
        for jid in last:
            left = self.job_left[jid] - 1
            self.job_left[jid] = left
            if left:
                continue                            # other cores of this job not seen yet
            handled = True
            j = self.job_rec[jid]
            w = self.waiting.get(j)
            comp = self.comp + self.edge * len(w) if w else self.comp     # + each consumer on its fanout list
            if self.tl:
                self.tl.sched.append((th.idx, h, h + comp, "complete", j))
            h += comp
            th.t0 += comp
            th.busy += comp
            heappush(self.ev, (h, PRIO_DONE, next(self.seq), EV_DONE, jid, j))
        if not handled:
            self.recompute(th, h)
            return
        th.busy_until = h
        # No recompute(th, h) here: the EV_DONE just pushed comes first at h (its priority is lower
        # than a thread event's), and job_done ends with recompute(th, h) from the same state;
        # what happens in between can only compare against th's pending event, which that
        # recompute replaces. (Half the recomputes, the same results.)

    def dispatch(self, th: _Thread, b: float) -> None:
        """Dispatch phase at sweep boundary b: core-less tasks, a sync launch, then widest shapes first."""
        t = b
        tl = self.tl
        nocore = self.nocore
        while nocore:
            j = nocore.popleft()
            t0 = t
            w = self.waiting.get(j)
            t += self.comp + self.edge * len(w) if w else self.comp
            if tl:
                tl.sched.append((th.idx, t0, t, "complete", j))
            self.push(t, EV_DONE, -1, j)
        if self.syncq and self.sync_placeable():
            j = self.syncq.popleft()
            s = self.ri.shape[j]
            fit = FIT[s]
            placed = 0
            for c in range(self.p.clusters):        # any cluster: one thread writes all the registers
                owner = self.threads[c % self.T]
                k = c // self.T
                while placed < self.ri.blocks[j] and fit[owner.masks[k]]:
                    t0 = t
                    t += self.disp
                    self.start_job(j, c, fit[owner.masks[k]], t)
                    placed += 1
                    if tl:
                        tl.sched.append((th.idx, t0, t, "dispatch", j))
            self.to_dispatch[j] = 0
        if not self.syncq:
            queues, masks, T, i = self.queues, th.masks, self.T, th.idx
            n_jobs = len(self.job_rec)
            for s in DISPATCH_ORDER:
                q = queues[s]
                if not q:
                    continue
                fit = FIT[s]
                k = 0
                nk = len(masks)
                while q and k < nk:
                    lanes = fit[masks[k]]
                    if lanes is None:
                        k += 1
                        continue
                    t = self.place(q, i, i + T * k, lanes, t)
            if self.two:                            # then busy cores' second slots (idle > pending)
                placed = len(self.job_rec) > n_jobs
                t = self.dispatch_second(th, t)
                if placed and (queues[SHAPE_AIC] or queues[SHAPE_AIV]):
                    for other in self.threads:      # fewer idle cores here: the others' gate may open
                        if other is not th and (other.open2[SHAPE_AIC] or other.open2[SHAPE_AIV]):
                            self.offer(other, t)
        if t > b:
            th.t0 += t - b
            th.busy_until = t
            th.busy += t - b
        self.recompute(th, t)

    def sync_placeable(self) -> bool:
        j = self.syncq[0]
        fit = FIT[self.ri.shape[j]]
        need = self.ri.blocks[j]
        have = 0
        for th in self.threads:
            for m in th.masks:
                lanes = fit[m]
                while lanes is not None:
                    have += 1
                    for ln in lanes:
                        m &= ~(1 << ln)
                    lanes = fit[m]
        return have >= need

    # -- cores and HBM -----------------------------------------------------------------------------

    def place(self, q: deque[int], i: int, c: int, lanes: tuple[int, ...], t: float, second: bool = False) -> float:
        """Thread i's dispatch phase, at t, writes one block of the task at the head of q onto
        ``lanes`` of cluster c (``second``: a busy core's second slot); the phase's new end."""
        j = q[0]
        self.to_dispatch[j] -= 1
        if not self.to_dispatch[j]:
            q.popleft()
        t0 = t
        t += self.disp
        self.start_job(j, c, lanes, t, second)
        if self.tl:
            self.tl.sched.append((i, t0, t, "dispatch", j))
        return t

    def other_idle(self, th: _Thread, s: int) -> bool:
        """Does another thread own an idle core for shape s? Then th leaves its second slots alone:
        that thread takes the task at its next dispatch (the reference's peer-idle gate)."""
        fit = FIT[s]
        for other in self.threads:
            if other is not th:
                for m in other.masks:
                    if fit[m]:
                        return True
        return False

    def dispatch_second(self, th: _Thread, t: float) -> float:
        """Single-core tasks into the second slot of owned cores that are busy (in the scheduler's
        view: dispatched, end not read) and have it free -- unless another thread has an idle core
        for them; AIC first on even threads, AIV first on odd ones (as the reference alternates
        shapes by thread parity). Returns the phase's new end."""
        queues, T, i = self.queues, self.T, th.idx
        for s in SECOND_ORDER[i & 1]:
            q = queues[s]
            if not q or not th.open2[s] or self.other_idle(th, s):
                continue
            for pos in range(len(th.run_on)):
                ln = pos % 3
                if (ln != 0) != (s == SHAPE_AIV) or th.masks[pos // 3] >> ln & 1 or th.next_on[pos] >= 0:
                    continue
                t = self.place(q, i, i + T * (pos // 3), (ln,), t, second=True)
                if not q or not th.open2[s]:
                    break
        return t

    def start_job(self, j: int, c: int, lanes: tuple[int, ...], w: float, second: bool = False) -> None:
        """Dispatch written at w: the job occupies ``lanes`` of cluster c and starts dispatch_start
        later -- or, ``second``: it takes the second slot of a busy core (one lane) and starts when
        the running job there ends (job_ended), core_switch_us after its end."""
        T = self.T
        th = self.threads[c % T]
        k = c // T
        rec = self.job_rec
        jid = len(rec)
        rec.append(j)
        self.job_cluster.append(c)
        self.job_lanes.append(lanes)
        start = w + self.dstart
        self.job_start.append(start)
        self.job_end.append(start)
        self.job_left.append(len(lanes))
        if second:
            pos = 3 * k + lanes[0]
            if th.run_on[pos] >= 0:                 # it waits for the running job
                th.next_on[pos] = jid
                th.open2[min(lanes[0], 1)] -= 1
                return
            th.run_on[pos] = jid                    # that job ended, its end not read yet: start now
        else:
            m = th.masks[k]
            for ln in lanes:
                m &= ~(1 << ln)
                th.run_on[3 * k + ln] = jid
                th.open2[min(ln, 1)] += 1
            th.masks[k] = m
        self.begin(jid, j, start)

    def begin(self, jid: int, j: int, start: float) -> None:
        """Job jid (of record j) starts running at ``start``."""
        self.job_start[jid] = self.job_end[jid] = start
        ri = self.ri
        if ri.hbm[j] > 0.0:
            heappush(self.ev, (start, PRIO_CORE, next(self.seq), EV_START, jid, 0))
        else:
            heappush(self.ev, (start + ri.us[j], PRIO_CORE, next(self.seq), EV_END, jid, 0))

    def job_ended(self, jid: int, e: float) -> None:
        """The job's kernel ended at e on every core it holds; each becomes visible fin_visible_us
        later, and a task waiting in a core's second slot starts core_switch_us after e."""
        self.job_end[jid] = e
        c = self.job_cluster[jid]
        th = self.threads[c % self.T]
        base = 3 * (c // self.T)
        v = e + self.fin
        x = e if e > th.busy_until else th.busy_until
        y = v if v > x else x
        for ln in self.job_lanes[jid]:
            pos = base + ln
            th.fin_q[pos].append((jid, v))
            nxt = th.next_on[pos]
            if nxt >= 0:                            # the core picks its second task up by itself
                th.next_on[pos] = -1
                th.run_on[pos] = nxt
                th.open2[min(ln, 1)] += 1
                st = e + self.pickup
                self.begin(nxt, self.job_rec[nxt], st if st > self.job_start[nxt] else self.job_start[nxt])
            else:
                th.run_on[pos] = -1
            if pos in th.visible:
                continue                            # an earlier end there is not read yet
            th.visible[pos] = v
            r = self.read_time(th, pos, y)
            if r < th.pend_t or (r == th.pend_t and th.pend_kind == READ and pos < th.pend_arg):
                self.set_pending(th, r, READ, pos)

    def job_done(self, jid: int, j: int, t: float) -> None:
        """A completion was handled at t (jid < 0: a core-less task): free the cores that have nothing
        more to run or to report, maybe complete j."""
        if jid >= 0:
            c = self.job_cluster[jid]
            th = self.threads[c % self.T]
            k = c // self.T
            for ln in self.job_lanes[jid]:
                pos = 3 * k + ln
                if (th.run_on[pos] < 0 and th.next_on[pos] < 0 and not th.fin_q[pos]
                        and not th.masks[k] >> ln & 1):      # (two ends read at once free it once)
                    th.masks[k] |= 1 << ln
                    th.open2[min(ln, 1)] -= 1
            self.blocks_left[j] -= 1
            if self.syncq:                          # freed cores may complete a waiting sync launch
                for other in self.threads:
                    if other is not th and self.sync_placeable():
                        self.offer(other, t)
            if self.blocks_left[j]:
                self.recompute(th, t)
                return
            self.complete(j, t)
            self.recompute(th, t)
        else:
            self.complete(j, t)

    def hbm_advance(self, t: float) -> None:
        self.W += (t - self.tw) * self.f
        self.tw = t

    def hbm_reschedule(self) -> None:
        self.hbm_ver = v = self.hbm_ver + 1
        if self.pool:
            heappush(self.ev, (self.tw + (self.pool[0][0] - self.W) / self.f, PRIO_HBM, next(self.seq), EV_HBM, v, 0))

    def hbm_start(self, jid: int, t: float) -> None:
        j = self.job_rec[jid]
        self.hbm_advance(t)
        T = max(self.ri.us[j], 1e-6)
        heappush(self.pool, (self.W + T, jid))
        d = self.rate[jid] = self.ri.hbm[j] / T
        self.D += d
        self.f = 1.0 if self.D <= self.cap else self.cap / self.D
        self.hbm_reschedule()

    def hbm_tick(self, t: float) -> None:
        self.hbm_advance(t)
        pool = self.pool
        limit = self.W + 1e-9 * max(1.0, self.W)
        while pool and pool[0][0] <= limit:
            _, jid = heappop(pool)
            self.D -= self.rate.pop(jid)
            self.job_ended(jid, t)
        if not pool:
            self.D = 0.0                            # no float residue between busy periods
        self.f = 1.0 if self.D <= self.cap else self.cap / self.D
        self.hbm_reschedule()

    # -- result ------------------------------------------------------------------------------------

    def stats(self, crit: bool = True) -> RunStats:
        aic = aiv = hbm = 0.0
        us_hbm = self.ri.hbm
        for jid, lanes in enumerate(self.job_lanes):
            d = self.job_end[jid] - self.job_start[jid]
            for ln in lanes:
                if ln:
                    aiv += d
                else:
                    aic += d
            hbm += us_hbm[self.job_rec[jid]]
        if self.tl:
            self.tl.jobs = list(zip(self.job_rec, self.job_cluster, self.job_lanes, self.job_start, self.job_end))
        end = max(self.last_done, self.orch_end)
        cp, cp_n, dep = critical_path(self.ri, self.p) if crit else (0.0, 0, 0.0)
        ro = self.p.run_overhead_us
        return RunStats(end + ro, self.last_done, self.orch_end, self.orch_busy, self.orch_blocked,
                        [th.busy for th in self.threads], aic, aiv, hbm, cp + ro, cp_n, dep, len(self.job_rec),
                        self.events, self.tl, end)


def simulate(ri: RunInput, p: Params, capture: bool = False, feed: Callable[[], bool] | None = None,
             crit: bool = True) -> RunStats:
    """Simulate one run from an empty device; ``capture`` keeps the timeline for a trace. ``feed``
    adds records to ``ri`` when the orchestrator has submitted all it holds (Flattener.more, or
    stream.py's reader process), returning False once the run has no more. ``crit``: also the
    critical path (off: its fields are 0)."""
    sim = _Sim(ri, p, capture, feed)
    enabled = gc.isenabled()
    gc.disable()            # millions of short-lived event tuples, no cycles: collection is pure cost
    try:
        sim.run()
    finally:
        if enabled:
            gc.enable()
    return sim.stats(crit)
