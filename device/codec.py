"""Everything that crosses a process boundary, and how it is encoded: one module, imported by
the host and by every device process alike.

    host ──task record──▶ scheduler ──mailbox entry──▶ worker ──times + status──▶ scheduler
                                                        └──error report──▶ host
    scheduler ──stats / diagnosis / trace (reports)──▶ host

    task record      REC_WORDS int64 words; the host writes it, scheduler and workers read it
      header         H_* words (below)
      tensors        ARG_SLOTS x ARG_WORDS: [buffer id, meta, lo, hi, owner tid, base,
                     shape[5], strides[5]]; meta packs direction, contiguity, no-tracking, dtype,
                     ndim and the dims indexed away (pack_meta / unpack_meta); lo/hi bound the
                     bytes the view covers in GM; shape/strides are the footprint box in the
                     coordinates of ``base``. H_NTENSORS of them reach the kernel; a predicate's
                     operand (a one-element view) follows them
      tags           MAX_SCALARS bytes: TAG_INT, TAG_FLOAT, TAG_BOOL, TAG_ARRAY + dtype code
      values         VALUE_WORDS words: an int/float/bool takes one, an array its length then
                     its elements (int64 or float64 on the wire)
    mailbox entry    ``tid << 19 | spmd << 18 | block << 3 | gated << 2 | part``: part 0 = the
                     AIC function, 1/2 = the vector functions; spmd + block = a block of a
                     multi-block task and its index; gated = posted
                     early, behind its producers on the same core (skipped if one of this core's
                     tasks failed in the meantime)
    dep pool         task ids of explicit dependencies (a ring of words, layout.py)
    core index       ``3 * block + lane``: lane 0 = AIC, 1 = AIV0, 2 = AIV1 (block_of, lane_of, is_aic)
    time row         TS_WORDS words per task slot: when each phase happened (ns) and the status
    counts row       COUNT_WORDS float64 words per mailbox slot of a core, while recording: what
                     the tile layer counted for the part the worker ran (kernels.tile.Counts,
                     field for field; all zero = no tile instruction ran)
    counted array    per finished task, what the host puts into the recorded graph: tid, the
                     slowest block's row per part (NaN: no such part), GM bytes over all blocks
    trace rows       TRACE_COLUMNS, one row per retired task (device/accounting.py)
    reports          a pickled frozen record (TaskFailure, SchedulerFailure, StatsReply,
                     Diagnosis, TraceReply) in a fixed area: [nbytes, pickle ...] (write_report)
    DeviceContext    what a forked device process starts with (typed, not a namespace)

Times are ``time.perf_counter_ns()`` (CLOCK_MONOTONIC): one clock for every process.
"""

from __future__ import annotations

import pickle
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from typing import Any

import ml_dtypes
import numpy as np

from device.ordering import observe, publish
from kernels.args import DIR_IN, DIR_INOUT, DIR_NAMES, DIR_OUT  # noqa: F401  (one definition)
from kernels.tile import Counts

# --- dtypes that may live in GM --------------------------------------------------------------------
DTYPES = (np.dtype(np.bool_), np.dtype(np.int8), np.dtype(np.uint8), np.dtype(np.int16),
          np.dtype(np.uint16), np.dtype(np.int32), np.dtype(np.uint32), np.dtype(np.int64),
          np.dtype(np.uint64), np.dtype(np.float16), np.dtype(np.float32), np.dtype(np.float64),
          np.dtype(ml_dtypes.bfloat16), np.dtype(np.complex64), np.dtype(np.complex128))
DTYPE_CODE = {dt: i for i, dt in enumerate(DTYPES)}
HEAP_ALIGN = 1024             # every runtime tensor starts on this boundary, as in the reference

# --- task record -----------------------------------------------------------------------------------
(H_TID, H_KIND, H_KERNEL, H_CORE_SHAPE, H_NTENSORS, H_NSCALARS, H_DEPTH, H_FLAGS, H_HOLD,
 H_SUBMIT_NS, H_NVALS, H_AUX, H_NDEPS, H_DEPS_AT, H_BLOCKS, H_PRED_OP, H_PRED_VAL) = range(17)
# H_CORE_SHAPE  the kernel's core shape code (kernels.registry SHAPE_*; "shape" alone, here and in
#          the trace columns, is that code -- a tensor's dimensions are its footprint's A_SHAPE words)
# H_DEPTH  scope depth it was submitted at;  H_HOLD  the scope depth whose end releases the heap
# space this record allocated (where its tensors were made);  H_AUX  a scope end's depth
# H_NDEPS / H_DEPS_AT  explicit dependencies (rt.submit(deps=...)): that many task ids in the dep
#          pool from position H_DEPS_AT on (layout.py; the pool is a ring, positions grow forever)
# H_BLOCKS  SPMD: logical blocks (1 for a plain task, 0 for records that run on no core)
# H_PRED_OP / H_PRED_VAL  predicate: PRED_* code, and the compared value's bytes in the operand's
#          dtype (little-endian, zero-padded); the operand is the hidden argument after the tensors
HEADER_WORDS = 24
KIND_TASK, KIND_SCOPE_END, KIND_ALLOC, KIND_DUMMY = 0, 1, 2, 3
KIND_NAMES = ("task", "scope_end", "alloc", "dummy")
FLAG_HEAP = 1                 # the record allocated heap space (device/lifetime.py)
FLAG_MANUAL = 2               # submitted inside rt.scope(manual=True)
FLAG_SYNC = 4                 # SPMD: all blocks start together (sync_start)
FLAG_PRED = 8                 # predicated: the operand is argument H_NTENSORS (hidden)
FLAG_PROBE = 16               # a dummy the host waits for (rt.get/set_tensor_data): G_PROBE

PRED_OPS = ("==", "!=", ">", "<", ">=", "<=")     # PRED_OP codes are 1 + the index here

MAX_TENSORS = 32              # tensor arguments a kernel receives (the reference's limit)
ARG_SLOTS = MAX_TENSORS + 1   # + the predicate's operand
MAX_SCALARS = 128
MAX_DIMS = 5
MAX_BLOCKS = 32767            # SPMD blocks of one task (the reference's int16)
ARG_WORDS = 16
A_BUF, A_META, A_LO, A_HI, A_OWNER, A_BASE, A_SHAPE, A_STRIDES = 0, 1, 2, 3, 4, 5, 6, 11
META_CONTIG = 1 << 2
META_NOTRACK = 1 << 3         # NoDep(t) or a manual_dep view: creator-only tracking (reference rules)

TAG_INT, TAG_FLOAT, TAG_BOOL, TAG_ARRAY = 0, 1, 2, 16
ARGS_OFF = HEADER_WORDS
TAGS_OFF = ARGS_OFF + ARG_SLOTS * ARG_WORDS             # word offset of the tag bytes
VALUES_OFF = TAGS_OFF + MAX_SCALARS // 8
VALUE_WORDS = 2 * MAX_SCALARS                            # room for length words of arrays
REC_WORDS = VALUES_OFF + VALUE_WORDS


def pack_meta(direction: int, contiguous: bool, dtype: np.dtype, ndim: int, drop_mask: int,
              notrack: bool = False) -> int:
    """The meta word of a tensor argument."""
    return (direction | (META_CONTIG if contiguous else 0) | (META_NOTRACK if notrack else 0)
            | DTYPE_CODE[dtype] << 8 | ndim << 16 | drop_mask << 20)


def unpack_meta(meta: int) -> tuple[int, bool, np.dtype, int, int]:
    """(direction, contiguous, dtype, ndim, drop mask) of a meta word."""
    return meta & 3, bool(meta & META_CONTIG), DTYPES[(meta >> 8) & 255], (meta >> 16) & 7, (meta >> 20) & 31


def arg_geometry(q: Any, ref: int) -> tuple:
    """(base, shape, strides) of the footprint box of the tensor argument at word ``ref``."""
    nd = (q[ref + A_META] >> 16) & 7
    return (q[ref + A_BASE], tuple(q[ref + A_SHAPE + d] for d in range(nd)),
            tuple(q[ref + A_STRIDES + d] for d in range(nd)))


def describe_args(q: Any, r: int) -> list[str]:
    """'Dir(shape) dtype' of each tensor argument of the record at word r (for error reports)."""
    out = []
    for i in range(q[r + H_NTENSORS]):
        a = r + ARGS_OFF + i * ARG_WORDS
        d, _, dt, nd, drop = unpack_meta(q[a + A_META])
        shape = tuple(q[a + A_SHAPE + k] for k in range(nd) if not drop >> k & 1)
        out.append(f"{DIR_NAMES.get(d, '?')}{shape} {dt}")
    return out


# --- scalars ---------------------------------------------------------------------------------------
INT64_MIN, INT64_MAX = -(1 << 63), (1 << 63) - 1


def short(value: Any, limit: int = 60) -> str:
    """``repr(value)`` cut to a readable length for an error message (an int of 400 digits is
    named by its size)."""
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) >= 10 ** limit:
        return f"an int of {len(str(abs(value)))} digits"
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."


def encode_scalars(raw: Any, q: Any, f: Any, i64: np.ndarray, f64: np.ndarray, r: int,
                   scalars: tuple | list, what: str) -> int:
    """Encode scalars into the record at word r (tags and values; ``raw``/``q``/``f``/``i64``/
    ``f64``: the control segment as bytes, int64 and float64 words, and numpy views of the same);
    returns the number of value words used. Raises (naming the argument) before anything of the
    record is published."""
    if len(scalars) > MAX_SCALARS:
        raise ValueError(f"{what}: {len(scalars)} scalar arguments; at most {MAX_SCALARS}")
    tb = (r + TAGS_OFF) * 8
    v0 = v = r + VALUES_OFF
    vend = v0 + VALUE_WORDS
    for j, x in enumerate(scalars):
        t = type(x)
        if v >= vend:
            raise ValueError(f"{what}: the scalars need more than {VALUE_WORDS} words "
                             f"(arrays count their length + 1); pass fewer or smaller arrays")
        if t is int or (isinstance(x, (int, np.integer)) and t is not bool):
            x = int(x)
            if not INT64_MIN <= x <= INT64_MAX:
                raise ValueError(f"{what}: scalar argument {j} = {short(x)} does not fit in int64")
            raw[tb + j] = TAG_INT
            q[v] = x
            v += 1
        elif t is float or isinstance(x, np.floating):
            raw[tb + j] = TAG_FLOAT
            f[v] = float(x)
            v += 1
        elif t is bool or t is np.bool_:
            raw[tb + j] = TAG_BOOL
            q[v] = int(x)
            v += 1
        elif isinstance(x, (np.ndarray, list, tuple)):
            arr = scalar_array(x, j, what)
            n = arr.shape[0]
            if v + 1 + n > vend:
                raise ValueError(f"{what}: scalar argument {j} (an array of {n}) does not fit: "
                                 f"scalars may take {VALUE_WORDS} words in all")
            raw[tb + j] = TAG_ARRAY + DTYPE_CODE[arr.dtype]
            q[v] = n
            (f64 if arr.dtype.kind == "f" else i64)[v + 1:v + 1 + n] = arr
            v += 1 + n
        else:
            raise TypeError(f"{what}: scalar argument {j} has type {t.__name__}; expected int, "
                            "float, bool or a small 1-D int/float array (tensors must be wrapped "
                            "in In/Out/InOut and come before the scalars)")
    return v - v0


def scalar_array(x: object, j: int, what: str) -> np.ndarray:
    """Scalar argument ``j`` given as an array: checked to be 1-D int or float."""
    try:
        arr = np.asarray(x)
    except (ValueError, TypeError, OverflowError):
        arr = None                        # ragged or nested: numpy cannot make one array of it
    if arr is None or arr.dtype == object:
        flat = isinstance(x, (list, tuple)) and all(isinstance(v, (int, float, np.number)) for v in x)
        big = [v for v in x if isinstance(v, int) and not INT64_MIN <= v <= INT64_MAX] if flat else []
        if big:
            raise ValueError(f"{what}: scalar argument {j} holds an int beyond int64 ({short(big[0])})")
        raise TypeError(f"{what}: scalar argument {j} is {type(x).__name__} {short(x)}; a scalar array "
                        "is a flat list (or 1-D array) of ints or floats")
    if arr.ndim != 1 or arr.dtype.kind not in "iuf" or arr.dtype not in DTYPE_CODE:
        raise TypeError(f"{what}: scalar argument {j} is an array of shape {arr.shape} dtype "
                        f"{arr.dtype}; scalar arrays must be 1-D int or float")
    if arr.dtype.kind == "u" and arr.dtype.itemsize == 8 and arr.size and arr.max() > INT64_MAX:
        raise ValueError(f"{what}: scalar argument {j} has uint64 values beyond int64")
    return arr


def decode_scalars(q: Any, f: Any, raw: Any, r: int, out: list) -> list:
    """Append the scalars of the record at word r to ``out`` (as the kernel receives them)."""
    ns = q[r + H_NSCALARS]
    if not ns:
        return out
    tb = (r + TAGS_OFF) * 8
    v = r + VALUES_OFF
    for j in range(ns):
        t = raw[tb + j]
        if t == TAG_INT:
            out.append(q[v])
            v += 1
        elif t == TAG_FLOAT:
            out.append(f[v])
            v += 1
        elif t == TAG_BOOL:
            out.append(bool(q[v]))
            v += 1
        else:
            n = q[v]
            dt = DTYPES[t - TAG_ARRAY]
            wire = np.float64 if dt.kind in "fc" else np.int64
            out.append(np.frombuffer(raw, wire, n, (v + 1) * 8).astype(dt))
            v += 1 + n
    return out


# --- mailbox entries and the core topology ---------------------------------------------------------
LANES = 3                     # cores per block: AIC, AIV0, AIV1
CORE_KINDS = ("AIC", "AIV", "AIV")


ENTRY_SHIFT = 19             # entry >> ENTRY_SHIFT is the task id
ENTRY_SPMD = 1 << 18         # a block of a multi-block task: the worker reads its block count
BLOCK_SHIFT, BLOCK_MASK = 3, 0x7FFF     # (entry >> BLOCK_SHIFT) & BLOCK_MASK: the SPMD block index
ENTRY_GATED = 4
ENTRY_PART = 3


def entry(tid: int, part: int, gated: bool = False, block: int = -1) -> int:
    """A mailbox entry; ``block`` >= 0 for a block of a multi-block task."""
    spmd = ENTRY_SPMD | block << BLOCK_SHIFT if block >= 0 else 0
    return tid << ENTRY_SHIFT | spmd | (ENTRY_GATED if gated else 0) | part


def entry_tid(e: int) -> int:
    return e >> ENTRY_SHIFT


def entry_part(e: int) -> int:
    return e & ENTRY_PART


def block_of(core: int) -> int:
    return core // LANES


def lane_of(core: int) -> int:
    return core % LANES


def is_aic(core: int) -> bool:
    return core % LANES == 0


def core_name(core: int) -> str:
    lane = core % LANES
    return f"{CORE_KINDS[lane]}{'' if lane == 0 else lane - 1} of block {core // LANES} (core {core})"


# --- per-slot times and status ---------------------------------------------------------------------
(T_READY, T_DISPATCH, T_START0, T_END0, T_START1, T_END1, T_START2, T_END2, T_DONE,
 T_CORE0, T_CORE1, T_CORE2, T_STATUS) = range(13)
TS_WORDS = 16
STATUS_OK, STATUS_ERROR, STATUS_SKIPPED, STATUS_PRED_FALSE = 0, 1, 2, 3
STATUS_NAMES = ("ok", "error", "skipped", "predicate false")

# Trace rows: tid kernel shape submit ready dispatch done status core0..2 start0..2 end0..2 (ns;
# a part that did not run has core -1).
TRACE_COLUMNS = ("tid", "kernel", "shape", "submit", "ready", "dispatch", "done", "status",
                 "core0", "core1", "core2", "start0", "start1", "start2", "end0", "end1", "end2")

# --- counted costs (recording) ---------------------------------------------------------------------
# A worker that ran a part while recording writes its Counts (or zeros) into the counts row of the
# mailbox slot it took (layout.counts), before it publishes its done count; the scheduler reads the
# row as it collects the entry (device/accounting.py CountedCosts folds a task's rows). Only the
# scheduler and the worker of that core touch the row, one after the other, in mailbox order.
# The fields carried, in order (the recorded graph's "c" rows, host/graph.py): fixed here, so a field
# Counts gains later is not carried until this list (and the graph format) says so.
COUNT_FIELDS: tuple[str, ...] = ("mte2", "mte1", "mte3", "cube", "vector", "scalar", "gm_read", "gm_write",
                                 "instructions", "us", "us_low", "us_high", "handshakes")
COUNT_WORDS = len(COUNT_FIELDS)
CNT_GM_READ, CNT_GM_WRITE, CNT_INSTR, CNT_US = (COUNT_FIELDS.index(n) for n in
                                                ("gm_read", "gm_write", "instructions", "us"))
NPARTS_MAX = 3                # AIC, AIV0, AIV1
# counted array columns: tid | part 0 row | part 1 row | part 2 row | GM read, write (all blocks)
COUNTED_COLUMNS = 1 + NPARTS_MAX * COUNT_WORDS + 2


def counts_row(counts: Counts | None) -> tuple[float, ...]:
    """A part's Counts as a row of COUNT_WORDS floats (zeros: nothing counted)."""
    if counts is None:
        return (0.0,) * COUNT_WORDS
    return tuple(float(getattr(counts, name)) for name in COUNT_FIELDS)


def write_counts(f: Any, off: int, counts: Counts | None) -> None:
    """A part's Counts into the float64 words at ``off`` (zeros: nothing counted)."""
    for i, v in enumerate(counts_row(counts)):
        f[off + i] = v


def read_counts(f: Any, off: int) -> tuple[float, ...]:
    """The row at ``off`` (instructions 0: the part ran no tile instruction)."""
    return tuple(f[off:off + COUNT_WORDS].tolist())


def counts_from_row(row: Any) -> Counts:
    """A row (a sequence of COUNT_WORDS numbers, as in the recorded graph) as Counts."""
    if len(row) != COUNT_WORDS:
        raise ValueError(f"counted costs {list(row)!r:.80}: expected {COUNT_WORDS} numbers "
                         f"({', '.join(COUNT_FIELDS)})")
    v: dict[str, Any] = {name: float(x) for name, x in zip(COUNT_FIELDS, row)}
    for name in ("gm_read", "gm_write", "instructions", "handshakes"):
        v[name] = int(v[name])
    return Counts(**{name: v.get(name, 0) for name in Counts.__slots__})


def decode_counted(arr: np.ndarray) -> list[tuple[int, list[list[float] | None], tuple[int, int]]]:
    """(tid, per part its row or None, (GM bytes read, written over all blocks)) per counted task."""
    out = []
    for r in np.asarray(arr, np.float64).reshape(-1, COUNTED_COLUMNS).tolist():
        parts = [None if r[1 + i * COUNT_WORDS] != r[1 + i * COUNT_WORDS] else r[1 + i * COUNT_WORDS:
                                                                                  1 + (i + 1) * COUNT_WORDS]
                 for i in range(NPARTS_MAX)]
        out.append((int(r[0]), parts, (int(r[-2]), int(r[-1]))))
    return out


# --- reports ---------------------------------------------------------------------------------------
ERR_AREA_WORDS = 2048         # 16 KiB per process for a pickled error report
SCHED_AREA_WORDS = 1 << 17    # 1 MiB for scheduler answers (stats, diagnostics)

# What goes into a report area: one of these frozen records, pickled. The host turns them into its
# exceptions (host/errors.py), messages (host/channel.py) and the public dicts of dev.stats().


@dataclass(frozen=True)
class TaskFailure:
    """A task part failed: the kernel raised, or broke its directions (``violation``)."""

    tid: int
    kernel: str
    core: str
    part: int
    args: tuple[str, ...]            # 'Dir(shape) dtype' of each tensor argument
    error: str                       # 'Type: message', cut to fit
    traceback: str
    violation: str = ""              # the sanitizer's finding, if it was one

    def to_dict(self) -> dict:
        d = asdict(self)
        d["args"] = list(self.args)
        if not self.violation:
            del d["violation"]
        return d


@dataclass(frozen=True)
class Stall:
    """The sequential engine found the parts of a task blocked for good (or without progress for
    the stall timeout): ``message`` names what each waits on. The host raises DeadlockError."""

    tid: int
    message: str


@dataclass(frozen=True)
class SchedulerFailure:
    """The scheduler process itself raised."""

    error: str
    traceback: str


@dataclass(frozen=True)
class Truncated:
    """A report too large for its area: the start of its repr."""

    summary: str


@dataclass(frozen=True)
class KernelCounts:
    tasks: int                       # ran
    exec_ns: int
    skipped: int                     # discarded after a failure
    errors: int
    predicate_false: int             # completed without running


@dataclass(frozen=True)
class StatsReply:
    """What ``dev.stats()`` reports of the device (device/accounting.py fills it; ``to_dict``
    gives the public keys)."""

    kernels: dict[str, KernelCounts]
    runtime_tasks: dict[str, int]    # alloc, scope_end, dummy, tensor_data
    records: int
    timed_tasks: int
    phase_ns: dict[str, int]
    scheduler_busy_ns: int = 0
    scheduler_loops: int = 0
    scheduler_phase_ns: dict[str, int] | None = None
    notices: tuple[str, ...] = ()    # what tasks' end checks found (kernels/waits.py task_end_check)

    def to_dict(self) -> dict:
        d = {f.name: getattr(self, f.name) for f in fields(self)}
        d["kernels"] = {k: asdict(v) for k, v in self.kernels.items()}
        d["runtime_tasks"], d["phase_ns"] = dict(self.runtime_tasks), dict(self.phase_ns)
        d["notices"] = list(self.notices)
        return d


@dataclass(frozen=True)
class Unretired:
    """One record a stall diagnosis shows: what it is and what it waits for."""

    tid: int
    kind: str
    kernel: str                      # its kernel's name, or its kind for a runtime record
    state: str                       # finished / waiting / ready/running
    fanin: int                       # producers it still waits for


@dataclass(frozen=True)
class Running:
    tid: int
    kernel: str
    core: str
    for_s: float | None              # since its dispatch (None without timestamps)
    waiting: str = ""                # what its kernel part is blocked on (device/waits.py), if anything


@dataclass(frozen=True)
class HeapHold:
    tid: int                         # the allocating record
    users: int                       # unfinished tasks using it
    held_by_scope: bool              # its tensors' scope still open


@dataclass(frozen=True)
class Diagnosis:
    """What every unretired record waits for and what every core does (a stall)."""

    head: int
    ingested: int
    retired: int
    completed: int
    in_flight: int
    ready: int
    discarding: bool
    oldest: tuple[Unretired, ...]
    running: tuple[Running, ...]
    heap_allocations: tuple[HeapHold, ...]
    short_tasks: bool
    mailbox_cap: int
    tensormap_buffers: int
    tensormap_entries: int


@dataclass(frozen=True)
class TraceReply:
    """Trace rows and edges collected since the last take, handed over in a file (``path``;
    None when nothing is kept), with the tids whose predicate was false and the loop's phase
    times over the same span."""

    path: str | None
    pred_false: tuple[int, ...] = ()
    phase_ns: dict[str, int] = field(default_factory=dict)
    kernel_names: tuple[str, ...] = ()


def write_report(words: Any, off: int, nwords: int, report: object) -> bool:
    """Pickle ``report`` into an area of ``nwords`` words at word ``off``; False if the area is
    still full (its reader has not taken the previous report) -- the first report wins."""
    if observe(words, off) != 0:
        return False
    data = pickle.dumps(report, protocol=pickle.HIGHEST_PROTOCOL)
    room = (nwords - 1) * 8
    if len(data) > room:
        data = pickle.dumps(Truncated(repr(report)[: room // 2]))
    raw = words.cast("B")
    start = (off + 1) * 8
    raw[start:start + len(data)] = data
    publish(words, off, len(data))  # length last: the reader sees a whole report or none
    return True


def read_report(words: Any, off: int, clear: bool = True) -> object | None:
    n = observe(words, off)
    if n <= 0:
        return None
    raw = words.cast("B")
    start = (off + 1) * 8
    report = pickle.loads(bytes(raw[start:start + n]))
    if clear:
        publish(words, off, 0)      # the area is free again (its words were read above)
    return report


def clear_report(words: Any, off: int) -> None:
    """Empty a report area (its reader is about to ask for a new report)."""
    publish(words, off, 0)


# --- what a device process starts with -------------------------------------------------------------
@dataclass
class DeviceContext:
    """Everything a forked scheduler or worker needs, inherited through fork (never pickled)."""

    layout: Any                          # device.layout.Layout
    q: Any                               # the control segment as int64 words (memoryview)
    f: Any                               # ... as float64 words
    ctrl_buf: Any                        # ... as bytes
    gm_buf: Any                          # GM as bytes
    sched_sem: Any                       # the scheduler's wake-up semaphore
    host_sem: Any                        # the host's
    worker_sems: list                    # one per core: mailbox posts
    kernel_parts: list[tuple[Callable | None, Callable | None, Callable | None]]
    kernel_names: list[str]
    spin_ns: int                         # yield-spin before blocking
    host_pid: int
    timestamps: bool = True
    trace: bool = False                  # keep trace rows and loop phase times
    record: bool = False                 # keep dependency edges (graph recording)
    sanitize: bool = False
    trace_dir: str = "/tmp"
    schedule: str = "fifo"               # or "random": fuzzing
    seed: int = 0
    jitter_ns: int = 0
    skew: str | None = None              # lane skew: the part slot delayed at sync points (device/waits.py)
    skew_us: float = 0.0
    wait_sems: list = field(default_factory=list)   # one per core: wake-ups of a part blocked in a wait
    reference: bool = False              # the reference runtime's dependency rules (device/deps.py)
    atomic_locks: list | None = None     # process-shared locks of atomic adds (device/atomics.py)
