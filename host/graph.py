"""Recorded task graphs: what a run submitted, in a file you can keep, diff and replay.

    Device(..., record="run.graph.jsonl")     (or record=True, then dev.graph())
      host, at every submit       one Record: kind, kernel, scope depth, tensor arguments
                                  (direction, dtype, shape, bytes, buffer, allocating task),
                                  scalars, heap bytes it allocated
      scheduler, as it ingests    every dependency edge (consumer <- producer), the tensor-map
                                  ones and the explicit ones, also to producers already finished
      workers, as tasks run       what the tile layer counted for each part (kernels/tile.py
                                  Counts: cycles per pipe, GM bytes, the modelled time and band),
                                  folded per task by the scheduler (device/accounting.py)
      dev.graph() / close()       Graph = header + records (edges folded into each record's "p")
                                  ──▶ ptoemu predict run.graph.jsonl

File format ("ptoemu-graph", version 2; version 1 files -- without counted costs -- still
read): JSON Lines, gzip-compressed when the name ends in ``.gz``.
Line 1 is the header, then one line per record in submission order (so ``diff`` of two recordings
lines up task by task):

    header  {"format": "ptoemu-graph", "version": 1, "platform": {"blocks", "task_window",
             "heap_bytes", "name"}, "semantics": "sequential", "kernels": [{"name", "shape",
             "module"}], "runs": [[first record, end record], ...], "records": N, "edges": E,
             "counted": tasks with counted costs (version 2)}
    record  {"t": task id, "k": kind, "kn": kernel index (tasks), "d": scope depth,
             "a": [[dir, dtype, shape, nbytes, buffer, owner, [lo, hi], untracked, (strides)], ...],
             "s": [scalars],
             "h": heap bytes allocated, "p": [producer task ids],
             "b": SPMD blocks, "sy": start together, "sk": skipped (predicate was false),
             "pr": [operand, op, value], "c": [AIC, AIV0, AIV1 counted costs],
             "cg": [GM bytes read, written]}

    kind    "task" (runs on cores), "alloc" (rt.alloc_tensors: allocates, completes without a
            core), "scope_end" (the end of the innermost open scope at depth "d"), "dummy"
            (rt.submit_dummy: takes part in dependencies, completes without a core once ready)
    dir     "In", "Out" or "InOut"; dtype is numpy's name ("float32", "bfloat16", ...)
    buffer  an id unique within the recording; owner is the task that allocated a runtime buffer
            (-1 for host tensors), so a reader of a runtime tensor holds its allocator alive;
            [lo, hi) the bytes of the buffer the view spans; untracked: NoDep or a manual_dep view
            (the last two were added within version 1: older files lack them); strides: the
            view's byte stride per dimension of its shape, present only when its bytes are not
            the one run [lo, hi) (a column slice, say): the view covers lo + sum(i_d * strides_d)
            + [0, itemsize) for every index i (added within version 1; without it a strided
            view's exact bytes are unknown and readers fall back to the span)
    pr      the predicate of ``rt.submit(..., predicate=(t, index, op, value))``: operand is the
            one-element view t[index] as an argument (dir "In": a tracked read when the task is
            ready), op one of == != > < >= <=, value the number compared (added within version
            1: older files lack it, and a reader that does not know it sees a task without
            predicate operand)
    s       ints, floats, bools; scalar arrays as lists
    c       (version 2) what the tile layer counted for the task, per part in lane order (AIC,
            AIV0, AIV1; null where the kernel has no such part): the Counts of the part's slowest
            SPMD block as [mte2, mte1, mte3, cube, vector, scalar (busy cycles), gm_read, gm_write
            (bytes), instructions, us, us_low, us_high, handshakes] (device/codec.py COUNT_FIELDS). Present
            only when every part that ran was written on the tile layer; ``ptoemu predict``
            prices such a task from it (kernels/a2a3.py task_time) before any cost law
    cg      (version 2) GM bytes read and written by all blocks and parts together; present only
            when that differs from the parts' own (a multi-block task)
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

from device.codec import COUNT_FIELDS, COUNT_WORDS, FLAG_SYNC, NPARTS_MAX, PRED_OPS, decode_counted

FORMAT, VERSION = "ptoemu-graph", 2
READS = (1, 2)                                    # versions this module reads
KINDS = ("task", "scope_end", "alloc", "dummy")   # index = the record's kind code (device/layout.py)
DIRS = {1: "In", 2: "Out", 3: "InOut"}
DIR_NAMES = tuple(DIRS.values())
_SCAN = json.JSONDecoder().scan_once


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
    strides: tuple[int, ...] | None = None   # byte strides per dimension, when the bytes are not [lo, hi)

    def to_json(self) -> list:
        out = [self.dir, self.dtype, list(self.shape), self.nbytes, self.buffer, self.owner,
               list(self.span), int(self.untracked)]
        if self.strides is not None:
            out.append(list(self.strides))
        return out

    @staticmethod
    def from_json(a: list) -> Arg:
        if not isinstance(a, list) or len(a) < 6:
            raise ValueError(f"tensor argument {a!r}: expected [dir, dtype, shape, nbytes, buffer, owner, "
                             "[lo, hi], untracked]")
        if a[0] not in DIR_NAMES:
            raise ValueError(f"tensor argument {a!r}: direction {a[0]!r}, expected one of {', '.join(DIR_NAMES)}")
        span = a[6] if len(a) > 6 else (0, 0)
        return Arg(a[0], str(a[1]), tuple(int(n) for n in a[2]), int(a[3]), int(a[4]), int(a[5]),
                   (int(span[0]), int(span[1])), bool(a[7]) if len(a) > 7 else False,
                   tuple(int(x) for x in a[8]) if len(a) > 8 and a[8] is not None else None)


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
    pred: tuple[Arg, str, Any] | None = None   # predicate: (operand, op, value); the operand is read
    counts: list[list[float] | None] | None = None   # counted costs per part (AIC, AIV0, AIV1), "c"
    gm: tuple[int, int] | None = None          # GM bytes read, written over all blocks, "cg"

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
        if self.pred is not None:
            d["pr"] = [self.pred[0].to_json(), self.pred[1], self.pred[2]]
        if self.counts is not None:
            d["c"] = self.counts
            if self.gm is not None and list(self.gm) != counted_gm(self.counts):
                d["cg"] = list(self.gm)
        return d

    @staticmethod
    def from_json(d: dict) -> Record:
        if not isinstance(d, dict):
            raise ValueError(f"expected a record object {{\"t\": ..., \"k\": ...}}, got {type(d).__name__}")
        if d["k"] not in KINDS:
            raise ValueError(f"kind {d['k']!r}, expected one of {', '.join(KINDS)}")
        pr = d.get("pr")
        if pr is not None:
            if not isinstance(pr, list) or len(pr) != 3 or pr[1] not in PRED_OPS:
                raise ValueError(f"predicate {pr!r}: expected [operand, op, value], op one of {' '.join(PRED_OPS)}")
            pr = (Arg.from_json(pr[0]), pr[1], pr[2])
        c = d.get("c")
        if c is not None:
            check_counted(c)
        cg = d.get("cg")
        return Record(int(d["t"]), d["k"], int(d.get("d", 0)), int(d.get("kn", -1)),
                      [Arg.from_json(a) for a in d.get("a", ())], list(d.get("s", ())),
                      int(d.get("h", 0)), [int(p) for p in d.get("p", ())], int(d.get("b", 1)),
                      bool(d.get("sy", False)), bool(d.get("sk", False)), pr, c,
                      (int(cg[0]), int(cg[1])) if cg is not None else None)


def check_counted(c: Any) -> None:
    """A record's "c" must be [AIC, AIV0, AIV1], each null or COUNT_WORDS numbers (ValueError)."""
    if (type(c) is not list or len(c) != NPARTS_MAX or all(p is None for p in c)
            or not all(p is None or (type(p) is list and len(p) == COUNT_WORDS
                                     and all(type(x) in (int, float) for x in p)) for p in c)):
        raise ValueError(f"counted costs {c!r:.100}: expected [AIC, AIV0, AIV1], each null or "
                         f"{COUNT_WORDS} numbers ({', '.join(COUNT_FIELDS)})")


def counted_gm(counts: list) -> list[int]:
    """GM bytes [read, written] of a record's counted parts (one block each)."""
    i, j = COUNT_FIELDS.index("gm_read"), COUNT_FIELDS.index("gm_write")
    return [int(sum(p[i] for p in counts if p is not None)), int(sum(p[j] for p in counts if p is not None))]


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
                "edges": self.n_edges, "counted": sum(1 for r in self.records if r.counts is not None)}

    def save(self, path: str) -> str:
        opener = gzip.open if str(path).endswith(".gz") else open
        with opener(path, "wt") as f:
            f.write(json.dumps(self.header()) + "\n")
            for r in self.records:
                f.write(json.dumps(r.to_json(), separators=(",", ":")) + "\n")
        return str(path)

    @staticmethod
    def load(path: str) -> Graph:
        """Read a whole recording (ValueError naming the file, and the line, if it is not one)."""
        with Recording(path) as rec:
            records = list(rec.records())
        return Graph(rec.kernels, records, rec.platform, rec.runs, rec.semantics)

    def extend(self, other: Graph) -> None:
        self.records += other.records
        self.runs += other.runs


class Recording:
    """A recording opened for reading: the header, checked, at once; the records one at a time
    (``ptoemu predict`` streams a million-record file this way instead of holding it).

        with Recording(path) as rec:            rec.kernels, rec.runs, rec.n_records, rec.platform
            for r in rec.records(): ...          Record objects, in file order
            for d in rec.raw(): ...              the same as parsed JSON objects (dicts), unchecked

    Every problem is a ValueError naming the file (and the line, for a record): not a recording,
    another version, a header without ``kernels``, a record that is not valid JSON or lacks a
    field, fewer or more records than the header announces.
    """

    def __init__(self, path: str) -> None:
        self.path = str(path)
        opener = gzip.open if self.path.endswith(".gz") else open
        try:
            self._f = opener(self.path, "rt")
        except OSError as e:
            raise ValueError(f"{path}: cannot read the graph recording: {e}") from e
        self.line = 0                   # lines read, for messages
        self.read = 0                   # records read
        try:
            head = self._header()
        except BaseException:
            self._f.close()
            raise
        self.head = head
        self.kernels: list[dict] = head["kernels"]
        self.platform: dict = head.get("platform") or {}
        self.semantics: str = head.get("semantics", "sequential")
        self.n_records: int | None = head.get("records")
        self.runs: list[tuple[int, int]] = [(int(a), int(b)) for a, b in head.get("runs") or ()]

    def _fail(self, what: str, e: BaseException | None = None) -> ValueError:
        where = f"{self.path}: line {self.line}: " if self.line > 1 else f"{self.path}: "
        return ValueError(where + what + (f" ({type(e).__name__}: {e})" if e is not None else ""))

    def _header(self) -> dict:
        try:
            head = None
            for text in self._f:
                self.line += 1
                if text.strip():
                    head = json.loads(text)
                    break
        except (OSError, EOFError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise self._fail("cannot read the graph recording", e) from e
        if not isinstance(head, dict) or head.get("format") != FORMAT:
            raise self._fail(f"not a ptoemu graph recording (no '{FORMAT}' header line)")
        if head.get("version") not in READS:
            raise self._fail(f"graph format version {head.get('version')}; this ptoemu reads versions "
                             f"{', '.join(map(str, READS))}")
        kernels = head.get("kernels")
        if not isinstance(kernels, list) or not all(isinstance(k, dict) and isinstance(k.get("name"), str)
                                                    for k in kernels):
            raise self._fail("the header has no 'kernels' list (one {\"name\", \"shape\", \"module\"} object "
                             f"per kernel), got {kernels!r:.80}")
        n = head.get("records")
        if n is not None and (not isinstance(n, int) or isinstance(n, bool) or n < 0):
            raise self._fail(f"the header's 'records' is {n!r}, expected a count >= 0")
        runs = head.get("runs") or []
        if not isinstance(runs, list) or not all(
                isinstance(r, list) and len(r) == 2 and all(isinstance(x, int) for x in r) for r in runs):
            raise self._fail(f"the header's 'runs' is {runs!r:.80}, expected [[first, end], ...]")
        for a, b in runs:
            if not 0 <= a <= b or (n is not None and b > n):
                raise self._fail(f"the header's run [{a}, {b}] is not a record range within 0..{n}")
        return head

    def _texts(self) -> Iterator[str]:
        """The remaining records' lines; at the end, the count checked against the header's."""
        try:
            for text in self._f:
                self.line += 1
                if text.strip():
                    self.read += 1
                    yield text
        except (OSError, EOFError, UnicodeDecodeError) as e:
            raise self._fail("cannot read the graph recording", e) from e
        if self.n_records is not None and self.read != self.n_records:
            raise ValueError(f"{self.path}: the header announces {self.n_records} records but the file holds "
                             f"{self.read} (truncated?)")

    def _parse(self, text: str) -> Any:
        """One record line as JSON (json's scanner called directly: a third faster than json.loads
        on a million short lines)."""
        try:
            obj, end = _SCAN(text, 0)
        except StopIteration:
            obj, end = None, -1
        if end < 0 or text[end:].strip():
            try:
                return json.loads(text)         # json's own message for what is wrong
            except json.JSONDecodeError as e:
                raise self._fail("a record is not valid JSON", e) from e
        return obj

    def raw(self) -> Iterator[dict]:
        """The remaining records as parsed JSON objects, in file order (shape unchecked)."""
        for text in self._texts():
            yield self._parse(text)

    def take(self, first: int, end: int | None) -> Iterator[dict]:
        """Records [first, end) (end None: to the end) as parsed JSON objects; the records before
        ``first`` are skipped unparsed. Calls must come in increasing record order."""
        if first < self.read:
            raise ValueError(f"{self.path}: record {first} was already read (runs must not overlap)")
        texts = self._texts()
        while self.read < first:
            if next(texts, None) is None:
                raise ValueError(f"{self.path}: the file ends before record {first}")
        while end is None or self.read < end:
            text = next(texts, None)
            if text is None:
                return
            yield self._parse(text)

    def finish(self) -> None:
        """Read the rest (unparsed) so that a file with fewer or more records than announced is an error."""
        for _ in self._texts():
            pass

    def records(self) -> Iterator[Record]:
        """The records as Record objects (ValueError naming the line of a malformed one)."""
        for d in self.raw():
            try:
                yield Record.from_json(d)
            except (KeyError, TypeError, ValueError, IndexError, AttributeError) as e:
                raise self.bad_record(e) from e

    def bad_record(self, e: BaseException) -> ValueError:
        """A malformed record at the current line, as the error to raise."""
        what = f"missing field {e}" if isinstance(e, KeyError) else str(e)
        return self._fail(f"malformed record: {what}")

    def close(self) -> None:
        self._f.close()

    def __enter__(self) -> Recording:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def _scalar(x: Any) -> Any:
    if isinstance(x, (bool, np.bool_)):
        return bool(x)
    if isinstance(x, (int, np.integer)):
        return int(x)
    if isinstance(x, (float, np.floating)):
        return float(x)
    return np.asarray(x).tolist()


def _pred_value(dtype: np.dtype, bits: int) -> Any:
    """The predicate's compared value from the bits the record carries (the operand's dtype)."""
    raw = int(bits).to_bytes(8, "little", signed=True)
    if dtype.itemsize > len(raw):
        return None
    v = np.frombuffer(raw[:dtype.itemsize], dtype)[0]
    if dtype.kind in "iub":
        return int(v)
    if dtype.kind == "c":
        return [float(v.real), float(v.imag)]
    return float(v)


def _rounded(row: list[float]) -> list:
    """A counted row for the file: byte and instruction counts as ints, cycles to 0.1, times to 1 ns."""
    out: list = []
    for name, x in zip(COUNT_FIELDS, row):
        out.append(int(x) if name in ("gm_read", "gm_write", "instructions") else
                   round(x, 3) if name.startswith("us") else round(x, 1))
    return out


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

    def _arg(self, t: Any, d: str, untracked: bool) -> Arg:
        b = self.buf_ids.setdefault(t.buf.id, len(self.buf_ids))
        lo, hi = t.span_rel()
        nbytes = t.nbytes
        return Arg(d, str(t.dtype), tuple(t.shape), nbytes, b, t.buf.owner if t.buf.runtime else -1, (lo, hi),
                   untracked, t.byte_strides() if hi - lo != nbytes else None)

    def add(self, tid: int, kind: int, kernel: int, args: list, scalars: Any, depth: int,
            heap: int, extra: Any = None) -> None:
        rec_args = [self._arg(a.tensor, DIRS[a.dir], bool(a.notrack or a.tensor.manual_dep)) for a in args]
        r = Record(tid, KINDS[kind], depth, kernel if KINDS[kind] == "task" else -1, rec_args,
                   [_scalar(s) for s in scalars], heap)
        if extra is not None and KINDS[kind] == "task":
            r.blocks, r.sync = extra.blocks, bool(extra.flags & FLAG_SYNC and extra.blocks > 1)
            if extra.pred is not None:
                el, op, bits = extra.pred
                r.pred = (self._arg(el, "In", False), PRED_OPS[op - 1], _pred_value(el.dtype, bits))
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

    def add_counted(self, counted: np.ndarray) -> None:
        """What the tile layer counted per task (device/codec.py COUNTED_COLUMNS), from the
        scheduler or the sequential engine."""
        for tid, parts, gm in decode_counted(counted):
            r = self.by_tid.get(tid)
            if r is not None:
                r.counts = [None if p is None else _rounded(p) for p in parts]
                r.gm = gm

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
