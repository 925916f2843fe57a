"""How long the race analysis of a recorded graph takes (host/conflicts.py), on synthetic graphs.

    python -m host.bench.conflicts [N ...]          default: 20000 100000 tasks

Patterns (each a host.graph.Graph built here, edges as a recording would carry them):

    hidden_war     r03's graph: task 0 reads x, N InOut tasks chain on z, the last task writes x
                   after the chain (deps=): one write after read, ordered by no path
    one_buffer     every task on one buffer: a writer (InOut) then three readers, repeated; readers
                   wait for the writer, the next writer for a dummy that waits for the readers
                   (so every write-after-read pair is ordered by a path, not an edge)
    column_tiles   a matrix written in column tiles (strided views, 16 rows each) and read in row
                   blocks: disjoint tiles need no ordering, overlapping ones have their edges
    far_war        N/4 tasks read one buffer each, a chain of N/2 tasks after them all, then N/4
                   tasks write those buffers after the chain: every write-after-read pair ordered
                   only by the long chain (the forward sweeps' worst case)

Prints one line per (pattern, N): tasks, accesses, pairs checked, conflicts, seconds.
"""

from __future__ import annotations

import sys
import time

from host.conflicts import analyse
from host.graph import Arg, Graph, Record

KERNELS = [{"name": "bench.k", "shape": "AIV", "module": "bench"}]


def _arg(d: str, buf: int, lo: int, hi: int, shape: tuple[int, ...] | None = None,
         strides: tuple[int, ...] | None = None, nbytes: int | None = None) -> Arg:
    n = nbytes if nbytes is not None else hi - lo
    return Arg(d, "float32", shape or (n // 4,), n, buf, -1, (lo, hi), False, strides)


def hidden_war(n: int) -> Graph:
    recs = [Record(0, "task", 0, 0, [_arg("In", 0, 0, 16), _arg("Out", 1, 0, 16)])]
    for i in range(1, n - 1):
        recs.append(Record(i, "task", 0, 0, [_arg("InOut", 2, 0, 16)], preds=[i - 1] if i > 1 else []))
    recs.append(Record(n - 1, "task", 0, 0, [_arg("Out", 0, 0, 16)], preds=[n - 2]))
    return Graph(KERNELS, recs, runs=[(0, n)])


def one_buffer(n: int) -> Graph:
    recs: list[Record] = []
    writer, readers = -1, []
    while len(recs) < n:
        t = len(recs)
        if t % 5 == 0:
            if readers:                                  # a dummy after the readers, the writer after it
                recs.append(Record(t, "dummy", 0, -1, [], preds=list(readers)))
                writer_preds = [t]
                t += 1
            else:
                writer_preds = [writer] if writer >= 0 else []
            recs.append(Record(t, "task", 0, 0, [_arg("InOut", 0, 0, 4096)], preds=writer_preds))
            writer, readers = t, []
        else:
            recs.append(Record(t, "task", 0, 0, [_arg("In", 0, 0, 4096), _arg("Out", 1 + t, 0, 64)],
                               preds=[writer]))
            readers.append(t)
    return Graph(KERNELS, recs[:n], runs=[(0, min(n, len(recs)))])


def column_tiles(n: int) -> Graph:
    cols, tile, rows = 64, 8, 16                 # float32 matrix of (rows * blocks, 64), tiles (16, 8)
    row_bytes = cols * 4
    recs: list[Record] = []
    last: dict[tuple[int, int], int] = {}        # (row block, tile) -> last writer
    readers: dict[int, list[int]] = {}
    rb = 0
    while len(recs) < n:
        before = readers.pop(rb, [])
        for c in range(cols // tile):
            t = len(recs)
            lo = rb * rows * row_bytes + c * tile * 4
            hi = lo + (rows - 1) * row_bytes + tile * 4
            a = _arg("Out", 0, lo, hi, (rows, tile), (row_bytes, 4), rows * tile * 4)
            preds = before + ([last[(rb, c)]] if (rb, c) in last else [])
            recs.append(Record(t, "task", 0, 0, [a], preds=sorted(set(preds))))
            last[(rb, c)] = t
        t = len(recs)
        lo = rb * rows * row_bytes
        recs.append(Record(t, "task", 0, 0, [_arg("In", 0, lo, lo + rows * row_bytes)],
                           preds=sorted(last[(rb, c)] for c in range(cols // tile))))
        readers.setdefault(rb, []).append(t)
        rb = (rb + 1) % 64                       # 64 row blocks, rewritten again and again
    return Graph(KERNELS, recs[:n], runs=[(0, n)])


def far_war(n: int) -> Graph:
    k = n // 4
    recs = [Record(i, "task", 0, 0, [_arg("In", 1 + i, 0, 64)]) for i in range(k)]
    for i in range(k, n - k):
        recs.append(Record(i, "task", 0, 0, [_arg("InOut", 0, 0, 64)], preds=[i - 1] if i > k else list(range(k))))
    for j in range(k):
        t = n - k + j
        recs.append(Record(t, "task", 0, 0, [_arg("Out", 1 + j, 0, 64)], preds=[n - k - 1]))
    return Graph(KERNELS, recs, runs=[(0, n)])


PATTERNS = {"hidden_war": hidden_war, "one_buffer": one_buffer, "column_tiles": column_tiles, "far_war": far_war}


def main(argv: list[str]) -> int:
    sizes = [int(x) for x in argv] or [20000, 100000]
    print(f"{'pattern':<14} {'tasks':>8} {'accesses':>9} {'pairs':>8} {'conflicts':>9} {'seconds':>8}")
    for n in sizes:
        for name, make in PATTERNS.items():
            g = make(n)
            t0 = time.perf_counter()
            a = analyse(g)
            s = time.perf_counter() - t0
            print(f"{name:<14} {a.tasks:>8} {a.accesses:>9} {a.pairs:>8} {a.unordered:>9} {s:>8.2f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
