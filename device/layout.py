"""Shared-memory map of one emulated device: where everything lives in the control segment.
What the words mean (records, entries, reports) is device/codec.py.

    GM (global memory)        [ host tensors (dev.empty / dev.to_device) | heap (runtime tensors) ]
    control                   [ globals | per-core lines | task ring | per-slot times | freed queue
                                | dep pool | error areas | scheduler answer area | counts rows
                                | wait area ]

Control segment, in int64 words. Every writer owns whole 64-byte lines, so two processes never
write the same cache line:

    region        words                                   written by          read by
    globals       one line per word G_*                   host: HEAD WAIT_KIND WAIT_VALUE ABORT_REQ REQ STOP
                                                          scheduler: RETIRED FREED COMPLETED IDLE ERROR
                                                          ABORT_ACK ACK SCHED_PID INGESTED SLEEP
                                                          PROBE (the last probe dummy finished)
                                                          NOTICES (notices so far: stats has them)
                                                          workers: ANYDONE (= 1 after a task; the
                                                          scheduler clears it: a hint, not a count)
                                                                              the other side
    mailbox c     line 2c: [head, slot 0 .. slot 6]       scheduler           worker c
    worker c      line 2c+1: [done, pid, running, tasks,  worker c            scheduler, host
                  busy_ns, asleep]
    task ring     WINDOW records (codec.REC_WORDS)        host                scheduler, workers
    times         WINDOW rows (codec.TS_WORDS)            scheduler, workers  scheduler
    freed queue   FREE_SLOTS tids of dead heap            scheduler           host
                  allocations (entry n at n & mask; G_FREED counts them; FREE_SLOTS exceeds the
                  most allocations the heap can hold at once, so no entry is overwritten unread)
    dep pool      DEP_SLOTS task ids of explicit deps     host                scheduler
                  (position n at n & mask; the host reuses positions of records the scheduler
                  has ingested, INGESTED)
    error areas   one per core + one for the scheduler    that process        host
    answer area   stats / diagnosis / trace replies       scheduler           host
    counts rows   per core, one row (codec.COUNT_WORDS    worker c            scheduler
                  float64 words) per mailbox slot: what the tile layer counted for the part the
                  worker ran from that slot (recording only; published by the worker's done count)
    wait area     per core: a wait line (what it sleeps   that core (its      wakers, scheduler
                  on in a kernel) and its sync words      kernel part)        (diagnosis), parts
                  (device/waits.py)

Task id t lives in ring slot t & (WINDOW-1), its times in row t & (WINDOW-1). The globals, the
mailbox heads, the worker lines and the first (length) word of every report area are what another
process waits for: they are stored only through device/ordering.py (``publish``), after the data
they make visible.
"""

from __future__ import annotations

from device.codec import COUNT_WORDS, ERR_AREA_WORDS, HEAP_ALIGN, REC_WORDS, SCHED_AREA_WORDS, TS_WORDS
from device.waits import area_words

LINE = 8                      # int64 words per 64-byte cache line

# --- globals (one cache line each) -------------------------------------------------------------
(G_HEAD, G_RETIRED, G_FREED, G_COMPLETED, G_WAIT_KIND, G_WAIT_VALUE, G_IDLE, G_ERROR,
 G_STOP, G_ABORT_REQ, G_ABORT_ACK, G_REQ, G_ACK, G_SCHED_PID, G_INGESTED, G_SLEEP, G_ANYDONE,
 G_PROBE, G_NOTICES) = range(19)
N_GLOBALS = 24

# Host wait kinds (G_WAIT_KIND): the scheduler posts the host semaphore once the condition holds
# (RETIRED, COMPLETED or FREED has reached G_WAIT_VALUE).
WAIT_NONE, WAIT_RETIRED, WAIT_COMPLETED, WAIT_FREED, WAIT_PROBE = 0, 1, 2, 3, 4
DEP_SLOTS = 1 << 16           # explicit dependencies in flight (a task may name up to this many)

# Scheduler error states (G_ERROR).
ERR_NONE, ERR_KERNEL, ERR_SCHEDULER = 0, 1, 2

# Requests from the host to the scheduler (G_REQ carries kind<<32 | sequence).
REQ_STATS, REQ_DIAG, REQ_TRACE = 1, 2, 3

# --- per-core lines ------------------------------------------------------------------------------
W_DONE, W_PID, W_RUNNING, W_TASKS, W_BUSY_NS, W_ASLEEP = range(6)   # in the worker line
MAX_DEPTH = LINE - 1


class Layout:
    """Word offsets of everything in the control segment of a device with ``ncores`` cores."""

    def __init__(self, ncores: int, window: int, cap: int, heap_bytes: int = 0) -> None:
        """``cap``: entries a core holds at once while tasks are long (Platform.mailbox_depth);
        every mailbox has MAX_DEPTH slots, all of them used while tasks are short."""
        if window < 2 or window & (window - 1):
            raise ValueError(f"task_window must be a power of two >= 2, got {window}")
        if not 1 <= cap <= MAX_DEPTH:
            raise ValueError(f"mailbox_depth must be in 1..{MAX_DEPTH}, got {cap}")
        self.ncores, self.window, self.mask = ncores, window, window - 1
        self.depth, self.cap = MAX_DEPTH, cap
        self.core_off = N_GLOBALS * LINE
        self.ring_off = self.core_off + 2 * LINE * ncores
        self.ts_off = self.ring_off + window * REC_WORDS
        self.free_off = self.ts_off + window * TS_WORDS
        self.free_slots = 1 << (heap_bytes // HEAP_ALIGN + 1).bit_length()
        self.dep_off = self.free_off + self.free_slots
        self.dep_mask = DEP_SLOTS - 1
        self.err_off = self.dep_off + DEP_SLOTS
        self.sched_area = self.err_off + (ncores + 1) * ERR_AREA_WORDS
        self.counts_off = self.sched_area + SCHED_AREA_WORDS
        self.counts_core = -(-MAX_DEPTH * COUNT_WORDS // LINE) * LINE      # whole lines per core
        self.waits_off = self.counts_off + ncores * self.counts_core
        self.words = self.waits_off + area_words(ncores)
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

    def deps(self, q, at: int, n: int) -> list[int]:
        """The explicit deps of a record: n task ids from position ``at`` of the dep pool ring."""
        i, size, off = at & self.dep_mask, self.dep_mask + 1, self.dep_off
        if i + n <= size:
            return q[off + i:off + i + n].tolist()
        return q[off + i:off + size].tolist() + q[off:off + i + n - size].tolist()

    def counts(self, core: int, slot: int) -> int:
        """Word index of the counts row of mailbox slot ``slot`` (0..depth-1) of a core."""
        return self.counts_off + core * self.counts_core + slot * COUNT_WORDS

    def err_area(self, core: int) -> int:
        """Error area of a core; ``core == ncores`` is the scheduler's own."""
        return self.err_off + core * ERR_AREA_WORDS
