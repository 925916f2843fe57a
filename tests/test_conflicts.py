"""The race analysis of recorded graphs (host/conflicts.py) and what compare_semantics reports.

The analysis is checked against a brute force on random graphs (every pair of accesses, exact byte
sets, a full transitive closure): it must report a race exactly when one exists, and only real
ones. Then the cases that once went wrong: a graph over 20,000 tasks reported clean unanalysed,
predicate operands left out, disjoint column writes reported as conflicts, ``ok`` true beside a
listed conflict.
"""

from __future__ import annotations

import random

import numpy as np
import pytest

from host import Device, InOut, Out, Platform
from host import conflicts as C
from host.conflicts import analyse, unordered_conflicts
from host.fuzz import compare_semantics
from host.graph import Arg, Graph, Record
from kernels import AIV, kernel

KERNELS = [{"name": "t.k", "shape": "AIV", "module": "t"}]


# -- brute force ----------------------------------------------------------------------------------

def _bytes(a: Arg) -> set[int]:
    lo, hi = a.span
    if a.strides is None:
        return set(range(lo, hi))
    item = a.nbytes // max(int(np.prod(a.shape)), 1)
    out = set()
    for ix in np.ndindex(*a.shape):
        s = lo + sum(i * st for i, st in zip(ix, a.strides))
        out.update(range(s, s + item))
    return out


def _brute(g: Graph) -> set[tuple[int, int]]:
    """Unordered conflicting (earlier tid, later tid) pairs, by definition."""
    recs = g.records
    idx = {r.tid: i for i, r in enumerate(recs)}
    anc = [set() for _ in recs]
    for i, r in enumerate(recs):
        for t in r.preds:
            j = idx[t]
            anc[i] |= anc[j] | {j}
    run = [0] * len(recs)
    for k, (a, b) in enumerate(g.runs):
        for i in range(a, b):
            run[i] = k
    acc = []
    for i, r in enumerate(recs):
        if r.kind not in ("task", "dummy"):
            continue
        args = list(r.args) + ([r.pred[0]] if r.pred else [])
        acc += [(i, a.buffer, a.dir != "In", _bytes(a)) for a in args]
    out = set()
    for x in range(len(acc)):
        for y in range(x + 1, len(acc)):
            (i, bi, wi, si), (j, bj, wj, sj) = acc[x], acc[y]
            if i != j and bi == bj and (wi or wj) and run[i] == run[j] and si & sj:
                e, l_ = min(i, j), max(i, j)
                if e not in anc[l_]:
                    out.add((recs[e].tid, recs[l_].tid))
    return out


def _random_graph(rng: random.Random, n: int) -> Graph:
    rows, cols = 4, 6
    row_bytes = cols * 4
    recs = []
    for i in range(n):
        args = []
        for _ in range(rng.randint(0, 3)):
            buf = rng.randrange(2)
            r0 = rng.randrange(rows)
            r1 = rng.randint(r0 + 1, rows)
            c0 = rng.randrange(cols)
            c1 = rng.randint(c0 + 1, cols)
            lo = r0 * row_bytes + c0 * 4
            hi = (r1 - 1) * row_bytes + c1 * 4
            nbytes = (r1 - r0) * (c1 - c0) * 4
            strides = None if hi - lo == nbytes else (row_bytes, 4)
            args.append(Arg(rng.choice(["In", "In", "Out", "InOut"]), "float32", (r1 - r0, c1 - c0), nbytes, buf,
                            -1, (lo, hi), rng.random() < 0.1, strides))
        pred = None
        if rng.random() < 0.15:
            e = rng.randrange(rows * cols) * 4
            pred = (Arg("In", "float32", (), 4, rng.randrange(2), -1, (e, e + 4)), ">", 0.0)
        preds = sorted({rng.randrange(i) for _ in range(rng.randint(0, 3))}) if i else []
        kind = "dummy" if rng.random() < 0.1 else "task"
        recs.append(Record(1000 + i, kind, 0, 0 if kind == "task" else -1, args, [], 0,
                           [1000 + p for p in preds], pred=pred if kind == "task" else None))
    cut = rng.randrange(n + 1) if rng.random() < 0.3 else n
    runs = [(0, cut), (cut, n)] if 0 < cut < n else [(0, n)]
    return Graph(KERNELS, recs, runs=runs)


@pytest.mark.timeout(120)
@pytest.mark.parametrize("short", [False, True], ids=["default", "tiny-search-and-sweeps"])
def test_analysis_finds_a_race_exactly_when_the_brute_force_does(short, monkeypatch):
    if short:               # every pair not ordered by a direct edge goes through the forward sweeps
        monkeypatch.setattr(C, "SEARCH", 0)
        monkeypatch.setattr(C, "SWEEP_BITS", 3)
    rng = random.Random(17)
    racy = clean = 0
    for _ in range(300):
        g = _random_graph(rng, rng.randint(2, 24))
        want = _brute(g)
        a = analyse(g, limit=10_000)
        got = {(c.first[0], c.second[0]) for c in a.conflicts}
        assert got <= want, (got - want, g)
        assert bool(got) == bool(want), (want, g)
        assert a.unordered == len(got)
        racy += bool(want)
        clean += not want
    assert racy > 30 and clean > 30             # both outcomes exercised


# -- what went wrong once ---------------------------------------------------------------------------

def _hidden_war(n: int) -> Graph:
    """r03's graph: task 0 reads x, n InOut tasks chain on z, the last writes x after the chain."""
    a = lambda d, b: Arg(d, "float32", (4,), 16, b, -1, (0, 16))  # noqa: E731
    recs = [Record(0, "task", 0, 0, [a("In", 0), a("Out", 1)])]
    recs += [Record(i, "task", 0, 0, [a("InOut", 2)], preds=[i - 1] if i > 1 else []) for i in range(1, n + 1)]
    recs.append(Record(n + 1, "task", 0, 0, [a("Out", 0)], preds=[n]))
    return Graph(KERNELS, recs, runs=[(0, n + 2)])


@pytest.mark.timeout(60)
def test_a_graph_over_20000_tasks_is_analysed():
    a = analyse(_hidden_war(20_001))
    assert a.tasks == 20_003 and a.unordered == 1
    c = a.conflicts[0]
    assert (c.first[0], c.second[0], c.kind) == (0, 20_002, "write after read")
    assert unordered_conflicts(_hidden_war(30_000))          # no silent cut-off any more
    with pytest.raises(ValueError, match="more than max_tasks=100"):
        unordered_conflicts(_hidden_war(200), max_tasks=100)


def _cols(d: str, c0: int, width: int, rows: int = 4, cols: int = 8, strides: bool = True) -> Arg:
    lo = c0 * 4
    hi = (rows - 1) * cols * 4 + (c0 + width) * 4
    return Arg(d, "float32", (rows, width), rows * width * 4, 0, -1, (lo, hi), False,
               (cols * 4, 4) if strides else None)


@pytest.mark.timeout(30)
def test_disjoint_column_writes_are_no_conflict_but_overlapping_ones_are():
    g = Graph(KERNELS, [Record(0, "task", 0, 0, [_cols("Out", 0, 4)]), Record(1, "task", 0, 0, [_cols("Out", 4, 4)])],
              runs=[(0, 2)])
    assert analyse(g).unordered == 0
    g.records[1].args[0] = _cols("Out", 3, 4)
    a = analyse(g)
    assert a.unordered == 1 and a.conflicts[0].kind == "write after write" and not a.conflicts[0].approx
    # A recording without strides (older files) only knows the span: flagged as a possible false alarm.
    g.records[1].args[0] = _cols("Out", 4, 4, strides=False)
    g.records[0].args[0] = _cols("Out", 0, 4, strides=False)
    a = analyse(g)
    assert a.approx == 2 and a.conflicts[0].approx and "false alarm" in str(a.conflicts[0])


# -- through a device: recorded predicate operands and views, compare_semantics ------------------------

@kernel(AIV, name="test_conflicts.fill")
def fill(out, v):
    out[...] = v


@kernel(AIV, name="test_conflicts.inc")
def inc(x):
    x += 1


def _setup(dev):
    f = dev.to_device(np.array([1.0], np.float32))
    x = dev.zeros((4, 8), np.float32)
    z = dev.zeros((4,), np.float32)
    return (f, x, z), {}, [f, x]


def _war_on_predicate(rt, f, x, z):
    rt.submit(fill, Out(x[0:1, :]), 1.0, predicate=(f, 0, "==", 1.0))       # reads f
    last = [rt.submit(inc, InOut(z)) for _ in range(5)][-1]
    rt.submit(fill, Out(f), 0.0, deps=[last])                                # writes f: no path from the read


def _column_halves(rt, f, x, z):
    rt.submit(fill, Out(x.view((4, 4), (0, 0))), 1.0)
    rt.submit(fill, Out(x.view((4, 4), (0, 4))), 2.0)


@pytest.mark.timeout(60)
def test_predicate_operands_are_recorded_and_their_races_reported(tmp_path):
    # (the device's recording: the inline engine records the edges of its own sequential rules)
    with Device(Platform(blocks=1), kernels=[fill, inc], record=True, semantics="reference") as dev:
        args, _, _ = _setup(dev)
        dev.run(_war_on_predicate, *args)
        g = dev.graph()
    op, how, value = g.records[0].pred
    assert (op.dir, op.nbytes, op.span, how, value) == ("In", 4, (0, 4), "==", 1.0)
    assert g.records[0].args[0].strides is None                      # a whole row is contiguous
    g2 = Graph.load(g.save(str(tmp_path / "g.jsonl")))
    assert g2.records[0].pred == g.records[0].pred
    c = analyse(g2).conflicts
    assert len(c) == 1 and c[0].kind == "write after read" and c[0].first[2] == "In predicate"


@pytest.mark.timeout(120)
def test_compare_semantics_ok_only_without_conflicts_and_columns_do_not_conflict():
    rep = compare_semantics(_war_on_predicate, _setup, kernels=[fill, inc], seeds=[0], jitter_us=0)
    assert rep.conflicts and not rep.ok
    assert "1 conflicting access pair(s) are unordered" in str(rep)
    rep = compare_semantics(_column_halves, _setup, kernels=[fill, inc], seeds=[0], jitter_us=0)
    assert rep.ok and not rep.conflicts, str(rep)
    assert "no unordered conflicting accesses" in str(rep) and "2 tasks" in str(rep)
