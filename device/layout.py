"""Shared-memory layout of one emulated device: the control segment and the task record.

Two segments, created by the host and inherited by every forked process (nobody attaches by name):

    GM (global memory)        [ host tensors (dev.empty / dev.to_device) | heap ring (runtime tensors) ]
    control                   [ globals | per-core lines | task ring | per-slot times | freed queue
                                | error areas ]

Control segment, in int64 words; every writer owns whole 64-byte lines so two processes never
write the same cache line:

    globals      one line per word (G_*): host writes HEAD/WAIT_*/ABORT_REQ/REQ/STOP,
                 the scheduler writes RETIRED/FREED/COMPLETED/IDLE/ERROR/ACKs
    per core c   line 2c:   mailbox, written by the scheduler: [head, slot 0 .. slot D-1]
                 line 2c+1: written by the worker: [done, pid, running, tasks, busy_ns]
    task ring    WINDOW records of REC_WORDS words; task id t lives in slot t & (WINDOW-1)
    times        WINDOW rows of TS_WORDS words: when each phase of the task in that slot happened
    freed queue  FREE_SLOTS words: the tids of dead heap allocations, in the order they died
                 (entry n at n & (FREE_SLOTS-1); G_FREED counts them). The host frees their
                 ranges. FREE_SLOTS exceeds the most allocations the heap can hold at once, so
                 the scheduler never overwrites an entry the host has not read.
    error areas  one per core plus one for the scheduler: [nbytes, pickled report ...]

A mailbox slot holds ``tid * 4 + part`` (part 0 = the AIC function, 1/2 = the vector functions).
The worker bumps ``done`` after each entry and posts the scheduler's semaphore.

Task record (REC_WORDS int64 words; the host writes it, scheduler and workers only read it):

    header   H_TID H_KIND H_KERNEL H_SHAPE H_NTENSORS H_NSCALARS H_DEPTH H_FLAGS H_HOLD
             H_SUBMIT_NS H_NVALS H_AUX; H_HOLD is the scope depth whose end releases the heap
             space this record allocated: where its tensors were made, not where it was submitted
    tensors  MAX_TENSORS x ARG_WORDS: [buffer id, meta, lo, hi, owner tid, base, shape[5], strides[5]]
             meta = dir | contiguous<<2 | dtype code<<8 | ndim<<16 | drop mask<<20
             lo/hi bound the bytes the view covers in GM; shape/strides describe the footprint box
             in the coordinates of ``base`` (dims in the drop mask are indexed away for the kernel)
    tags     MAX_SCALARS bytes: 0 int, 1 float, 2 bool, 16+code array of that dtype
    values   VALUE_WORDS words: an int/float/bool takes one word, an array its length then elements
"""

from __future__ import annotations

import ml_dtypes
import numpy as np

from kernels.args import DIR_IN, DIR_INOUT, DIR_NAMES, DIR_OUT  # noqa: F401  (one definition)

LINE = 8                      # int64 words per 64-byte cache line
HEAP_ALIGN = 1024             # every runtime tensor starts on this boundary, as in the reference

# --- globals (one cache line each) -------------------------------------------------------------
(G_HEAD, G_RETIRED, G_FREED, G_COMPLETED, G_WAIT_KIND, G_WAIT_VALUE, G_IDLE, G_ERROR,
 G_STOP, G_ABORT_REQ, G_ABORT_ACK, G_REQ, G_ACK, G_SCHED_PID, G_INGESTED) = range(15)
N_GLOBALS = 16

# Host wait kinds (G_WAIT_KIND): the scheduler posts the host semaphore once the condition holds
# (RETIRED, COMPLETED or FREED has reached G_WAIT_VALUE).
WAIT_NONE, WAIT_RETIRED, WAIT_COMPLETED, WAIT_FREED = 0, 1, 2, 3

# Scheduler error states (G_ERROR).
ERR_NONE, ERR_KERNEL, ERR_SCHEDULER = 0, 1, 2

# Requests from the host to the scheduler (G_REQ carries kind<<32 | sequence).
REQ_STATS, REQ_DIAG, REQ_TRACE = 1, 2, 3

# --- per-core lines ------------------------------------------------------------------------------
MB_HEAD = 0                   # in the mailbox line
W_DONE, W_PID, W_RUNNING, W_TASKS, W_BUSY_NS = range(5)   # in the worker line
MAX_DEPTH = LINE - 1

# --- task record ---------------------------------------------------------------------------------
(H_TID, H_KIND, H_KERNEL, H_SHAPE, H_NTENSORS, H_NSCALARS, H_DEPTH, H_FLAGS, H_HOLD,
 H_SUBMIT_NS, H_NVALS, H_AUX) = range(12)
HEADER_WORDS = 16
KIND_TASK, KIND_SCOPE_END, KIND_ALLOC = 0, 1, 2
KIND_NAMES = ("task", "scope_end", "alloc")
FLAG_HEAP = 1                 # the task allocated heap space, so its scope holds it

MAX_TENSORS = 16
MAX_SCALARS = 128
MAX_DIMS = 5
ARG_WORDS = 16
A_BUF, A_META, A_LO, A_HI, A_OWNER, A_BASE, A_SHAPE, A_STRIDES = 0, 1, 2, 3, 4, 5, 6, 11

META_CONTIG = 1 << 2

TAG_INT, TAG_FLOAT, TAG_BOOL, TAG_ARRAY = 0, 1, 2, 16
ARGS_OFF = HEADER_WORDS
TAGS_OFF = ARGS_OFF + MAX_TENSORS * ARG_WORDS           # word offset of the tag bytes
VALUES_OFF = TAGS_OFF + MAX_SCALARS // 8
VALUE_WORDS = 2 * MAX_SCALARS                            # room for length words of arrays
REC_WORDS = VALUES_OFF + VALUE_WORDS

# --- per-slot timestamps (ns, time.perf_counter_ns: CLOCK_MONOTONIC, common to all processes) ---
(T_READY, T_DISPATCH, T_START0, T_END0, T_START1, T_END1, T_START2, T_END2, T_DONE,
 T_CORE0, T_CORE1, T_CORE2, T_STATUS) = range(13)
TS_WORDS = 16
STATUS_OK, STATUS_ERROR, STATUS_SKIPPED = 0, 1, 2

ERR_AREA_WORDS = 2048         # 16 KiB per process for a pickled error report
SCHED_AREA_WORDS = 1 << 17    # 1 MiB for scheduler answers (stats, diagnostics)

# --- dtypes that may live in GM --------------------------------------------------------------------
DTYPES = (np.dtype(np.bool_), np.dtype(np.int8), np.dtype(np.uint8), np.dtype(np.int16),
          np.dtype(np.uint16), np.dtype(np.int32), np.dtype(np.uint32), np.dtype(np.int64),
          np.dtype(np.uint64), np.dtype(np.float16), np.dtype(np.float32), np.dtype(np.float64),
          np.dtype(ml_dtypes.bfloat16), np.dtype(np.complex64), np.dtype(np.complex128))
DTYPE_CODE = {dt: i for i, dt in enumerate(DTYPES)}


def dtype_code(dt: np.dtype) -> int:
    """Code of a GM dtype; KeyError for one that cannot live in GM."""
    return DTYPE_CODE[np.dtype(dt)]


def arg_geometry(q, ref: int) -> tuple:
    """(base, shape, strides) of the footprint box of the tensor argument at word ``ref``."""
    nd = (q[ref + A_META] >> 16) & 7
    return (q[ref + A_BASE], tuple(q[ref + A_SHAPE + d] for d in range(nd)),
            tuple(q[ref + A_STRIDES + d] for d in range(nd)))


class Layout:
    """Word offsets of everything in the control segment of a device with ``ncores`` cores."""

    def __init__(self, ncores: int, window: int, depth: int, heap_bytes: int = 0) -> None:
        if window < 2 or window & (window - 1):
            raise ValueError(f"task_window must be a power of two >= 2, got {window}")
        if not 1 <= depth <= MAX_DEPTH:
            raise ValueError(f"mailbox_depth must be in 1..{MAX_DEPTH}, got {depth}")
        self.ncores, self.window, self.mask, self.depth = ncores, window, window - 1, depth
        self.core_off = N_GLOBALS * LINE
        self.ring_off = self.core_off + 2 * LINE * ncores
        self.ts_off = self.ring_off + window * REC_WORDS
        self.free_off = self.ts_off + window * TS_WORDS
        self.free_slots = 1 << (heap_bytes // HEAP_ALIGN + 1).bit_length()
        self.err_off = self.free_off + self.free_slots
        self.sched_area = self.err_off + (ncores + 1) * ERR_AREA_WORDS
        self.words = self.sched_area + SCHED_AREA_WORDS
        self.nbytes = self.words * 8

    def g(self, name: int) -> int:
        """Word index of a global."""
        return name * LINE

    def mailbox(self, core: int) -> int:
        return self.core_off + 2 * LINE * core

    def wline(self, core: int) -> int:
        return self.core_off + 2 * LINE * core + LINE

    def rec(self, tid: int) -> int:
        return self.ring_off + (tid & self.mask) * REC_WORDS

    def ts(self, tid: int) -> int:
        return self.ts_off + (tid & self.mask) * TS_WORDS

    def err_area(self, core: int) -> int:
        """Error area of a core; ``core == ncores`` is the scheduler's own."""
        return self.err_off + core * ERR_AREA_WORDS
