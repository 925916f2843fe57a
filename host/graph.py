"""Recorded task graphs: what a run submitted, in a file you can keep, diff and replay.

    Device(..., record="run.graph.jsonl")     (or record=True, then dev.graph())
      host, at every submit       one Record: kind, kernel, scope depth, tensor arguments
                                  (direction, dtype, shape, bytes, buffer, allocating task),
                                  scalars, heap bytes it allocated
      scheduler, as it ingests    every dependency edge (consumer <- producer), the tensor-map
                                  ones and the explicit ones, also to producers already finished
      dev.graph() / close()       Graph = header + records (edges folded into each record's "p")
                                  ──▶ ptoemu predict run.graph.jsonl

File format ("ptoemu-graph", version 1): JSON Lines, gzip-compressed when the name ends in ``.gz``.
Line 1 is the header, then one line per record in submission order (so ``diff`` of two recordings
lines up task by task):

    header  {"format": "ptoemu-graph", "version": 1, "platform": {"blocks", "task_window",
             "heap_bytes", "name"}, "semantics": "sequential", "kernels": [{"name", "shape",
             "module"}], "runs": [[first record, end record], ...], "records": N, "edges": E}
    record  {"t": task id, "k": kind, "kn": kernel index (tasks), "d": scope depth,
             "a": [[dir, dtype, shape, nbytes, buffer, owner, [lo, hi], untracked], ...],
             "s": [scalars],
             "h": heap bytes allocated, "p": [producer task ids],
             "b": SPMD blocks, "sy": start together, "sk": skipped (predicate was false)}

    kind    "task" (runs on cores), "alloc" (rt.alloc_tensors: allocates, completes without a
            core), "scope_end" (the end of the innermost open scope at depth "d"), "dummy"
            (rt.submit_dummy: takes part in dependencies, completes without a core once ready)
    dir     "In", "Out" or "InOut"; dtype is numpy's name ("float32", "bfloat16", ...)
    buffer  an id unique within the recording; owner is the task that allocated a runtime buffer
            (-1 for host tensors), so a reader of a runtime tensor holds its allocator alive;
            [lo, hi) the bytes of the buffer the view spans; untracked: NoDep or a manual_dep view
            (the last two were added within version 1: older files lack them)
    s       ints, floats, bools; scalar arrays as lists
    p       every task this one waits for (deduplicated, ascending); edges of "alloc" and
            "scope_end" records are empty

Keys with default values are left out of a record ("a", "s", "p": empty; "h": 0; "kn": absent for
records that are not tasks), which keeps a 65,792-task recording around 20 MB.
"""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from device.codec import FLAG_SYNC

FORMAT, VERSION = "ptoemu-graph", 1
KINDS = ("task", "scope_end", "alloc", "dummy")   # index = the record's kind code (device/layout.py)
DIRS = {1: "In", 2: "Out", 3: "InOut"}


@dataclass
class Arg:
    """One tensor argument of a recorded task."""

    dir: str                 # "In" | "Out" | "InOut"
    dtype: str
    shape: tuple[int, ...]
    nbytes: int              # bytes the view covers (its elements x itemsize)
    buffer: int
    owner: int               # task that allocated the (runtime) buffer, -1 for host tensors
    span: tuple[int, int] = (0, 0)     # [lo, hi): the bytes of the buffer the view spans
    untracked: bool = False            # NoDep(t) or a manual_dep view

    def to_json(self) -> list:
        return [self.dir, self.dtype, list(self.shape), self.nbytes, self.buffer, self.owner,
                list(self.span), int(self.untracked)]

    @staticmethod
    def from_json(a: list) -> Arg:
        span = tuple(a[6]) if len(a) > 6 else (0, 0)
        return Arg(a[0], a[1], tuple(a[2]), int(a[3]), int(a[4]), int(a[5]), (int(span[0]), int(span[1])),
                   bool(a[7]) if len(a) > 7 else False)


@dataclass
class Record:
    """One record of the task ring: a task, a builtin allocation or a scope end."""

    tid: int
    kind: str                          # "task" | "alloc" | "scope_end"
    depth: int                         # scope depth it was submitted at (0 = the run's scope)
    kernel: int = -1                   # index into Graph.kernels (tasks only)
    args: list[Arg] = field(default_factory=list)
    scalars: list = field(default_factory=list)
    heap: int = 0                      # heap-ring bytes it allocated (runtime tensors it wrote first)
    preds: list[int] = field(default_factory=list)
    blocks: int = 1                    # SPMD: logical blocks, each on its own cores
    sync: bool = False                 # SPMD: all blocks start together
    skipped: bool = False              # its predicate was false: completed without running

    def to_json(self) -> dict:
        d: dict[str, Any] = {"t": self.tid, "k": self.kind, "d": self.depth}
        if self.kernel >= 0:
            d["kn"] = self.kernel
        if self.args:
            d["a"] = [a.to_json() for a in self.args]
        if self.scalars:
            d["s"] = self.scalars
        if self.heap:
            d["h"] = self.heap
        if self.preds:
            d["p"] = self.preds
        if self.blocks != 1:
            d["b"] = self.blocks
        if self.sync:
            d["sy"] = True
        if self.skipped:
            d["sk"] = True
        return d

    @staticmethod
    def from_json(d: dict) -> Record:
        return Record(int(d["t"]), d["k"], int(d.get("d", 0)), int(d.get("kn", -1)),
                      [Arg.from_json(a) for a in d.get("a", ())], list(d.get("s", ())),
                      int(d.get("h", 0)), [int(p) for p in d.get("p", ())], int(d.get("b", 1)),
                      bool(d.get("sy", False)), bool(d.get("sk", False)))


@dataclass
class Graph:
    """A recorded run (or several): the header and the records, in submission order."""

    kernels: list[dict]                       # {"name", "shape", "module"}
    records: list[Record] = field(default_factory=list)
    platform: dict = field(default_factory=dict)
    runs: list[tuple[int, int]] = field(default_factory=list)
    semantics: str = "sequential"

    @property
    def tasks(self) -> list[Record]:
        return [r for r in self.records if r.kind == "task"]

    @property
    def n_edges(self) -> int:
        return sum(len(r.preds) for r in self.records)

    def header(self) -> dict:
        return {"format": FORMAT, "version": VERSION, "platform": self.platform,
                "semantics": self.semantics, "kernels": self.kernels,
                "runs": [list(r) for r in self.runs], "records": len(self.records),
                "edges": self.n_edges}

    def save(self, path: str) -> str:
        opener = gzip.open if str(path).endswith(".gz") else open
        with opener(path, "wt") as f:
            f.write(json.dumps(self.header()) + "\n")
            for r in self.records:
                f.write(json.dumps(r.to_json(), separators=(",", ":")) + "\n")
        return str(path)

    @staticmethod
    def load(path: str) -> Graph:
        opener = gzip.open if str(path).endswith(".gz") else open
        try:
            with opener(path, "rt") as f:
                lines = _lines(f)
                head = next(lines, None)
                if not isinstance(head, dict) or head.get("format") != FORMAT:
                    raise ValueError(f"{path}: not a ptoemu graph recording (no '{FORMAT}' header line)")
                if head.get("version") != VERSION:
                    raise ValueError(f"{path}: graph format version {head.get('version')}; this ptoemu "
                                     f"reads version {VERSION}")
                records = [Record.from_json(d) for d in lines]
        except (OSError, EOFError, json.JSONDecodeError, KeyError, TypeError) as e:
            raise ValueError(f"{path}: cannot read the graph recording: {e}") from e
        if len(records) != head.get("records", len(records)):
            raise ValueError(f"{path}: the header announces {head['records']} records but the file "
                             f"holds {len(records)} (truncated?)")
        return Graph(head["kernels"], records, head.get("platform", {}),
                     [tuple(r) for r in head.get("runs", ())], head.get("semantics", "sequential"))

    def extend(self, other: Graph) -> None:
        self.records += other.records
        self.runs += other.runs


def _lines(f: Any) -> Iterator[Any]:
    for line in f:
        if line.strip():
            yield json.loads(line)


def _scalar(x: Any) -> Any:
    if isinstance(x, (bool, np.bool_)):
        return bool(x)
    if isinstance(x, (int, np.integer)):
        return int(x)
    if isinstance(x, (float, np.floating)):
        return float(x)
    return np.asarray(x).tolist()


class Recorder:
    """Host side of recording: one Record per record written, edges attached later."""

    def __init__(self, kernels: list, platform: Any, semantics: str = "sequential") -> None:
        self.graph = Graph([{"name": k.name, "shape": k.shape_name, "module": k.module} for k in kernels],
                           platform={"name": platform.name, "blocks": platform.blocks,
                                     "task_window": platform.task_window, "heap_bytes": platform.heap_bytes},
                           semantics=semantics)
        self.by_tid: dict[int, Record] = {}
        self.run_start = 0
        self.buf_ids: dict[int, int] = {}      # Buffer.id -> id in this recording (first use order)

    def add(self, tid: int, kind: int, kernel: int, args: list, scalars: Any, depth: int,
            heap: int, extra: Any = None) -> None:
        rec_args = []
        ids = self.buf_ids
        for a in args:
            t = a.tensor
            b = ids.setdefault(t.buf.id, len(ids))
            rec_args.append(Arg(DIRS[a.dir], str(t.dtype), tuple(t.shape), t.nbytes, b,
                                t.buf.owner if t.buf.runtime else -1, t.span_rel(),
                                bool(a.notrack or t.manual_dep)))
        r = Record(tid, KINDS[kind], depth, kernel if KINDS[kind] == "task" else -1, rec_args,
                   [_scalar(s) for s in scalars], heap)
        if extra is not None and KINDS[kind] == "task":
            r.blocks, r.sync = extra.blocks, bool(extra.flags & FLAG_SYNC and extra.blocks > 1)
        self.graph.records.append(r)
        self.by_tid[tid] = r

    def begin_run(self, first: int) -> None:
        self.run_start = first

    def end_run(self, end: int) -> None:
        self.graph.runs.append((self.run_start, end))

    def add_edges(self, edges: np.ndarray) -> None:
        """(consumer, producer) pairs from the scheduler."""
        for c, p in edges.tolist():
            r = self.by_tid.get(c)
            if r is not None and p != c:
                r.preds.append(p)

    def mark_skipped(self, tids: list[int]) -> None:
        """Tasks whose predicate was false: they completed without running."""
        for t in tids:
            r = self.by_tid.get(t)
            if r is not None:
                r.skipped = True

    def finish(self) -> Graph:
        for r in self.graph.records:
            if r.preds:
                r.preds = sorted(set(r.preds))
        return self.graph
