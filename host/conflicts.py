"""Unordered conflicting accesses in a recorded task graph: the races its dependency edges allow.

    Graph (host/graph.py): records in submission order, tensor arguments (and predicate operands)
        │  each access -> (task, buffer, read / write, its exact bytes: runs [a, b) of the buffer)
        ▼
    VERSION MAP per buffer, accesses in submission order: the buffer's bytes cut into segments,
        │  each with its last writer and the readers since. An access meets the segments its
        │  bytes cover and yields the ADJACENT PAIRS it must come after:
        │      a read   after the segment's last writer                 (read after write)
        │      a write  after every reader since the last writer, or,
        │               when there is none, after the last writer        (write after read / write)
        │  then a write becomes the segment's only version; a read joins its readers
        ▼
    task pairs (e, l), e submitted before l ──REACHABILITY──▶ is there a path of edges e → … → l?
        │  a direct edge; else a short search back from l; else a forward sweep over the
        │  records e..l carrying one bit per source task (4096 sources per sweep)
        ▼
    the pairs without a path: Conflict records (each a real race), first by submission order

Why adjacent pairs are enough (so that "no conflict" is a proof, not a sample). Fix one byte and
its accesses in submission order, writes W1 < W2 < ... By induction on k, every access before Wk
is an ancestor of Wk when the adjacent pairs are ordered: Wk comes after the reads since W(k-1)
(or, without such reads, after W(k-1) itself), each of those reads after W(k-1), and W(k-1) after
everything before it. Now take any conflicting pair (e, l) on that byte, at least one a write: if
l is a write Wk, e comes before Wk and is its ancestor; if l is a read, e is a write at or before
the last write Wj before l, l comes after Wj (adjacent pair) and Wj after e. So every conflicting
pair is ordered iff every adjacent pair is: the graph has a race iff some adjacent pair is
unordered, and every unordered adjacent pair is a race. The version map depends only on the order
of submission and the bytes, not on the edges, so the pairs are collected first and the edges
consulted once per pair.

Records of different runs are ordered by the run boundary (a run ends when its last task does);
the version map starts afresh at each run. A task is never in conflict with itself. Edges that do
not point to an earlier record are ignored (fewer paths: more pairs reported, never fewer).

Exact bytes: a view's bytes are the runs of its innermost contiguous stretch (a column slice of a
matrix is one run per row), from the recorded strides. A view without recorded strides whose span
is wider than its bytes (recordings older than the strides field), or one of more than RUN_CAP
runs, is taken as its whole span [lo, hi): a superset, so "no conflict" still holds, but a
conflict found on such a span may be a false alarm and says so (``approx``).

Cost, with A accesses, R runs, P adjacent pairs (at most one per access and segment it meets,
plus one per reader a write meets: the edges sequential semantics would give), n records and E
edges: O((R + P) log S) for the version maps (S segments of a buffer), O(P) for pairs ordered by a
direct edge (in recordings of ptoemu's tensor map, most), O(SEARCH) per later task for the short
searches, and O((n + E) * ceil(H / 4096)) for the H source tasks left to the sweeps, each sweep
limited to the records between its first source and its last target.
"""

from __future__ import annotations

import gc
import math
from bisect import bisect_right
from dataclasses import dataclass, field
from typing import Any

import numpy as np

RUN_CAP = 1 << 14          # runs of one view kept exact; a view with more is taken as its span
SEARCH = 256               # records a short search back from a task may visit
SWEEP_BITS = 4096          # source tasks per forward sweep

READ, WRITE, READWRITE = 1, 2, 3
_MODE = {"In": READ, "Out": WRITE, "InOut": READWRITE}


@dataclass
class Conflict:
    """Two tasks whose accesses to one buffer meet, at least one a write, that the graph's edges
    leave unordered (no path of edges between them)."""

    first: tuple[int, str, str]            # (task id, kernel, direction), the earlier submitted
    second: tuple[int, str, str]
    kind: str                              # "write after read", "read after write", "write after write"
    buffer: int
    bytes: tuple[int, int]                 # [lo, hi) of the bytes where they were found to meet
    approx: bool = False                   # one view was taken as its whole span: may be a false alarm

    def __str__(self) -> str:
        (a, ka, da), (b, kb, db) = self.first, self.second
        return (f"{self.kind} not ordered: task {a} ({ka}, {da}) and task {b} ({kb}, {db}) on bytes "
                f"[{self.bytes[0]}, {self.bytes[1]}) of buffer {self.buffer}"
                + (" (a strided view compared by its whole span: may be a false alarm)" if self.approx else ""))


@dataclass
class Analysis:
    """What ``analyse`` looked at and found."""

    conflicts: list[Conflict] = field(default_factory=list)   # the first ``limit`` unordered pairs
    unordered: int = 0                      # unordered task pairs in all (may exceed the list)
    tasks: int = 0                          # task and dummy records analysed
    accesses: int = 0                       # tensor arguments and predicate operands
    buffers: int = 0
    pairs: int = 0                          # adjacent task pairs checked for a path
    approx: int = 0                         # accesses taken as their whole span

    def __str__(self) -> str:
        head = (f"{self.tasks} tasks, {self.accesses} accesses to {self.buffers} buffers analysed, {self.pairs} "
                "task pairs checked for a path")
        if self.approx:
            head += f"; {self.approx} strided access(es) compared by their whole span"
        return head


def _runs(a: Any, cap: int) -> tuple[list[tuple[int, int]], bool]:
    """The byte runs [a, b) of a recorded view, ascending and disjoint, and whether they are its
    span instead of its exact bytes."""
    lo, hi = a.span
    if hi <= lo:
        return [], False
    if a.strides is None:
        return [(lo, hi)], hi - lo != a.nbytes
    itemsize = a.nbytes // max(math.prod(a.shape), 1)
    dims = [(n, s) for n, s in zip(a.shape, a.strides) if n != 1]
    dims.sort(key=lambda d: d[1])                 # innermost first (a view's strides are >= 0)
    run = itemsize
    while dims and dims[0][1] == run:             # fold dimensions that continue the run
        n, s = dims.pop(0)
        run = n * s
    if not dims:
        return [(lo, lo + run)], False
    if math.prod(n for n, _ in dims) > cap or any(s < run for _, s in dims):
        return [(lo, hi)], True                   # too many runs, or runs that overlap: the span
    starts = np.zeros(1, np.int64)
    for n, s in dims:
        starts = (starts[:, None] + np.arange(n, dtype=np.int64) * s).reshape(-1)
    starts = np.unique(starts) + lo
    return [(int(x), int(x) + run) for x in starts], False


class _Versions:
    """One buffer's version map: segment i covers [starts[i], starts[i + 1]) (the last one to the
    end), with its last writer (an access number, -1 for none) and the readers since (or None)."""

    __slots__ = ("starts", "writer", "readers")

    def __init__(self) -> None:
        self.starts = [0]
        self.writer = [-1]
        self.readers: list[list[int] | None] = [None]

    def _split(self, x: int) -> int:
        """Make a segment start at x; its index."""
        st = self.starts
        i = bisect_right(st, x) - 1
        if st[i] == x:
            return i
        st.insert(i + 1, x)
        self.writer.insert(i + 1, self.writer[i])
        r = self.readers[i]
        self.readers.insert(i + 1, None if r is None else list(r))
        return i + 1

    def access(self, runs: list[tuple[int, int]], acc: int, mode: int, node: list[int], met: dict) -> None:
        """Access number ``acc`` (of task node[acc]) meets its bytes, ``runs``: record in ``met``
        each earlier access it must come after (its adjacent pairs), with the hull [lo, hi) of the
        bytes where they meet, and update the map."""
        me = node[acc]
        st, writer, readers, split = self.starts, self.writer, self.readers, self._split
        write = mode & WRITE
        for a, b in runs:
            i = split(a)
            j = split(b)                        # after a's split: inserting there would move b's index
            for k in range(i, j):
                w = writer[k]
                rs = readers[k]
                hi = st[k + 1]
                meets = []
                if write:
                    if rs:
                        meets = [r for r in rs if node[r] != me]
                    if not meets and w >= 0 and node[w] != me:
                        meets = (w,)
                else:
                    if w >= 0 and node[w] != me:
                        meets = (w,)
                    if rs is None:
                        readers[k] = [acc]
                    elif rs[-1] != acc:
                        rs.append(acc)
                for e in meets:
                    h = met.get(e)
                    if h is None:
                        met[e] = [st[k], hi]
                    elif hi > h[1]:
                        h[1] = hi
            if write:
                st[i:j] = [a]
                writer[i:j] = [acc]
                readers[i:j] = [None]


def _reachable(pairs: set[tuple[int, int]], preds: list[list[int]]) -> set[tuple[int, int]]:
    """The pairs (e, l), e < l (record indices), with a path of edges from e to l."""
    ordered: set[tuple[int, int]] = set()
    hard: dict[int, set[int]] = {}              # l -> sources not ordered by a direct edge
    for e, l in pairs:
        if e in preds[l]:
            ordered.add((e, l))
        else:
            hard.setdefault(l, set()).add(e)
    left: dict[int, set[int]] = {}              # e -> targets the short searches did not settle
    for l, srcs in hard.items():
        lo = min(srcs)
        seen = {l}
        stack = [l]
        steps = 0
        while stack and steps <= SEARCH:
            x = stack.pop()
            steps += 1
            for p in preds[x]:
                if p >= lo and p not in seen:
                    seen.add(p)
                    stack.append(p)
        if not stack:                           # searched every record between lo and l: settled
            ordered.update((e, l) for e in srcs if e in seen)
            continue
        for e in srcs:
            if e in seen:
                ordered.add((e, l))
            else:
                left.setdefault(e, set()).add(l)
    sources = sorted(left)
    for c in range(0, len(sources), SWEEP_BITS):
        chunk = sources[c:c + SWEEP_BITS]
        bit = {e: 1 << i for i, e in enumerate(chunk)}
        lo = chunk[0]
        hi = max(max(left[e]) for e in chunk)
        bits = [0] * (hi - lo + 1)              # bits[x - lo]: the chunk's sources that reach x
        for x in range(lo, hi + 1):
            v = bit.get(x, 0)
            for p in preds[x]:
                if p >= lo:
                    v |= bits[p - lo]
            bits[x - lo] = v
        for e in chunk:
            m = bit[e]
            ordered.update((e, l) for l in left[e] if bits[l - lo] & m)
    return ordered


def analyse(g: Any, limit: int = 50) -> Analysis:
    """Every race the recorded graph's edges allow, found exactly (see the module docstring);
    the first ``limit`` unordered pairs are listed, all are counted."""
    enabled = gc.isenabled()
    gc.disable()            # many small lists, no cycles: collecting would walk the whole graph again and again
    try:
        return _analyse(g, limit)
    finally:
        if enabled:
            gc.enable()


def _analyse(g: Any, limit: int) -> Analysis:
    recs = g.records
    index = {r.tid: i for i, r in enumerate(recs)}
    get = index.get
    preds = [[j for j in map(get, r.preds) if j is not None and j < i] if r.preds else []
             for i, r in enumerate(recs)]
    run_starts = {first for first, _ in g.runs or ()}
    res = Analysis()
    node: list[int] = []                        # access -> record index
    arg_of: list[Any] = []                      # access -> its Arg
    mode: list[int] = []                        # access -> READ | WRITE | READWRITE
    wide: list[bool] = []                       # access -> taken as its span
    preds_read: set[int] = set()                # accesses that are predicate operands
    bufs: dict[int, _Versions] = {}
    met: dict[int, list[int]] = {}              # earlier access -> bytes [lo, hi) the current one meets
    witness: dict[tuple[int, int], list] = {}   # (e, l) records -> [e access, l access, buffer, lo, hi]
    buffers: set[int] = set()
    for i, r in enumerate(recs):
        if i in run_starts:
            bufs = {}                           # a run boundary orders everything before it
        if r.kind != "task" and r.kind != "dummy":
            continue
        res.tasks += 1
        args = r.args if r.pred is None else [*r.args, r.pred[0]]
        for a in args:
            m = _MODE.get(a.dir)
            if m is None:
                continue
            runs, approx = _runs(a, RUN_CAP)
            if not runs:
                continue
            acc = len(node)
            if r.pred is not None and a is r.pred[0]:
                preds_read.add(acc)
            node.append(i)
            arg_of.append(a)
            mode.append(m)
            wide.append(approx)
            res.approx += approx
            b = a.buffer
            vm = bufs.get(b)
            if vm is None:
                vm = bufs[b] = _Versions()
                buffers.add(b)
            vm.access(runs, acc, m, node, met)
            if met:
                for e_acc, (lo, hi) in met.items():
                    key = (node[e_acc], i)
                    w = witness.get(key)
                    if w is None:
                        witness[key] = [e_acc, acc, b, lo, hi]
                    elif w[2] == b:
                        w[3], w[4] = min(w[3], lo), max(w[4], hi)
                met.clear()
    res.accesses, res.buffers, res.pairs = len(node), len(buffers), len(witness)
    ordered = _reachable(set(witness), preds)
    bad = sorted(k for k in witness if k not in ordered)
    res.unordered = len(bad)
    names = [k["name"].rsplit(".", 1)[-1] for k in g.kernels]

    def who(acc: int) -> tuple[int, str, str]:
        rec, a = recs[node[acc]], arg_of[acc]
        shown = "In predicate" if acc in preds_read else a.dir + (" untracked" if a.untracked else "")
        return rec.tid, names[rec.kernel] if rec.kind == "task" else "dummy", shown

    for key in bad[:limit]:
        e_acc, l_acc, buf, lo, hi = witness[key]
        we, wl = mode[e_acc] & WRITE, mode[l_acc] & WRITE
        kind = "write after write" if we and wl else "write after read" if wl else "read after write"
        res.conflicts.append(Conflict(who(e_acc), who(l_acc), kind, buf, (lo, hi), wide[e_acc] or wide[l_acc]))
    return res


def unordered_conflicts(g: Any, limit: int = 50, max_tasks: int | None = None) -> list[Conflict]:
    """Pairs of tasks of a recorded graph whose bytes on one buffer meet (at least one writing) with
    no path of dependency edges between them: the first ``limit`` races the graph allows (none
    means there are none; see ``analyse``). ``max_tasks``: refuse a graph with more task records
    (ValueError) instead of analysing it."""
    if max_tasks is not None:
        n = sum(1 for r in g.records if r.kind in ("task", "dummy"))
        if n > max_tasks:
            raise ValueError(f"unordered_conflicts: the graph has {n} tasks, more than max_tasks={max_tasks}")
    return analyse(g, limit).conflicts
