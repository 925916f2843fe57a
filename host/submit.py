"""Writing task records: the host end of the task ring and of the heap ring.

    rt.submit(kernel, In(a), Out(t), 3, 0.5)
      1. ring slot     wait until task id - RETIRED < window (back-pressure; wakes at a low-water
                       mark so the host is not woken once per freed slot)
      2. scalars       tags + values into the slot (may raise: nothing is published yet)
      3. heap          place every runtime tensor this task writes first (first fit; the host
                       frees what the scheduler reports dead on the FREED queue, and waits for
                       it when the heap is full)
      4. tensors       16 precomputed words per argument (Tensor.packed)
      5. extras        (only when given) explicit deps into the dep pool, the predicate's
                       operand after the tensors, SPMD blocks and flags
      6. hand over     header, publish HEAD = tid + 1; fence; post the scheduler's semaphore only if
                       it said it sleeps (SLEEP): a busy scheduler finds HEAD on its own

Scope ends and builtin allocations are records in the same ring, so the scheduler sees them in
submission order. A record that fails after step 3 (a wait for dep-pool space interrupted, its
recording failed) is taken back (``_unwrite``): its heap range and dep-pool space are free again
and its runtime tensors unwritten, so the run is as it was before the submit; every value that
could fail to pack is checked before (host/orchestration.py).
"""

from __future__ import annotations

import struct
import time
from collections import deque
from collections.abc import Sequence
from typing import Any

import numpy as np

from device import codec as C
from device import layout as L
from device.ordering import fence, observe, publish
from host.channel import Channel
from host.errors import DeviceMemoryError, fmt_bytes
from host.gm import HEAP_ALIGN, Arena
from host.tensor import Buffer

HDR = struct.Struct(f"{C.H_PRED_VAL + 1}q")


class Extra:
    """What a submit asked for beyond kernel, tensors and scalars (None in the common case)."""

    __slots__ = ("flags", "blocks", "deps", "pred")

    def __init__(self, flags: int = 0, blocks: int = 1, deps: Sequence[int] | None = None,
                 pred: tuple[Any, int, int] | None = None) -> None:
        self.flags = flags                 # FLAG_MANUAL, FLAG_SYNC, FLAG_PROBE
        self.blocks = blocks               # SPMD logical blocks
        self.deps = deps                   # explicit dependencies: task ids
        self.pred = pred                   # (one-element operand view, PRED op code, value bits)


class TaskWriter:
    """The host end of the task ring and the heap, over a control segment laid out as ``lay``.

    The views of the control segment belong to whoever made them (they are released when the
    device closes, so nothing keeps the mapping). ``channel`` is how the host waits
    (back-pressure) and hears about errors; ``sched_sem`` the
    scheduler's semaphore (None: nobody to wake, as in the sequential engine, which overrides
    ``hand_over`` and ``_wait_freed``)."""

    def __init__(self, lay: L.Layout, ctrl_buf: memoryview, q: memoryview, f: memoryview, heap_base: int,
                 heap_bytes: int, channel: Channel | None, sched_sem: object | None) -> None:
        self.lay = lay
        self.ch = channel
        self.raw, self.q, self.f = ctrl_buf, q, f  # the control segment as bytes, int64, float64
        self.i64 = np.ndarray((lay.words,), np.int64, self.raw)
        self.f64 = np.ndarray((lay.words,), np.float64, self.raw)
        self.window, self.mask, self.ring_off = lay.window, lay.mask, lay.ring_off
        self.lowwater = max(1, lay.window // 4)
        self.next_tid = 0
        self.retired = 0                           # cached RETIRED
        self.heap = Arena(heap_bytes, HEAP_ALIGN)
        self.heap_base = heap_base
        self.live: dict[int, tuple[int, int, int]] = {}   # allocating tid -> (offset, bytes, hold depth)
        self.freed = 0                             # entries of the freed queue taken so far
        self.g_head = lay.g(L.G_HEAD)
        self.g_retired = lay.g(L.G_RETIRED)
        self.g_freed = lay.g(L.G_FREED)
        self.g_error = lay.g(L.G_ERROR)
        self.g_sleep = lay.g(L.G_SLEEP)
        self.sched_sem = sched_sem
        self.submitted = 0
        self.recorder = None                       # host.graph.Recorder while recording
        self.gm: memoryview | None = None          # GM, to fill runtime tensors made with init=
        self.dep_head = self.dep_tail = 0          # dep pool: next position, oldest one in use
        self.dep_users: deque[tuple[int, int]] = deque()   # (tid, end position) of records with deps
        self.g_ingested = lay.g(L.G_INGESTED)

    # -- ring space ------------------------------------------------------------------------------
    def _wait_ring(self, tid: int) -> None:
        """The ring looks full: read RETIRED, and wait (until a low-water mark, so the host is not
        woken once per freed slot) if it really is."""
        q = self.q
        self.retired = observe(q, self.g_retired)
        if tid - self.retired >= self.window:
            need = tid - self.window + 1
            g = self.g_retired

            def ready() -> bool:
                return observe(q, g) >= need
            self.ch.wait(L.WAIT_RETIRED, need + self.lowwater - 1, ready,
                         f"waiting for a task ring slot for task {tid}", self._ring_deadlock)
            self.retired = observe(q, g)

    def _ring_deadlock(self) -> str:
        # Ring slots retire as soon as their tasks finish, and every task can finish once the
        # ones before it have: an idle scheduler with a full ring means the runtime itself is broken.
        oldest = observe(self.q, self.g_retired)
        return (f"the task ring is full ({self.window} slots) and its oldest task {oldest} has not "
                "finished although the scheduler is idle; this is a ptoemu bug, please report it")

    # -- heap space ------------------------------------------------------------------------------
    def take_freed(self) -> None:
        """Free the heap ranges of the allocations the scheduler has reported dead."""
        q = self.q
        n = observe(q, self.g_freed)
        if n == self.freed:
            return
        off, m, live, heap = self.lay.free_off, self.lay.free_slots - 1, self.live, self.heap
        for i in range(self.freed, n):
            start, size, _ = live.pop(q[off + (i & m)])
            heap.free(start, size)
        self.freed = n

    def _place(self, bufs: list[Buffer], tid: int, what: str, depth: int) -> None:
        """Give every buffer in ``bufs`` its heap space (one allocation, 1 KiB per tensor);
        ``depth`` is the scope whose end releases it."""
        heap = self.heap
        sizes = [-(-b.nbytes // HEAP_ALIGN) * HEAP_ALIGN for b in bufs]
        total = sum(sizes)
        if total > heap.size:
            raise DeviceMemoryError(
                f"{what}: the runtime tensors this task writes first need {fmt_bytes(total)} of "
                f"heap, but the heap is {fmt_bytes(heap.size)}; raise "
                f"Platform(heap_bytes=...) to at least {fmt_bytes(1 << (2 * total - 1).bit_length())}")
        self.take_freed()
        start = heap.alloc(total)
        while start is None:
            self._wait_freed(tid, total)
            start = heap.alloc(total)
        self.live[tid] = (start, total, depth)
        off = self.heap_base + start
        for b, n in zip(bufs, sizes):
            b.gm = off
            b.owner = tid
            off += n
        self.fill_init(bufs)

    def fill_init(self, bufs: list[Buffer]) -> None:
        """Runtime tensors made with ``init=``: fill them as they get their memory, before the
        record that allocates them is published (nothing can be using that memory now)."""
        for b in bufs:
            if b.init is not None:
                dt = b.init.dtype
                np.ndarray((b.nbytes // dt.itemsize,), dt, self.gm, b.gm).fill(b.init[()])

    def _wait_freed(self, tid: int, total: int) -> None:
        """Block until the scheduler reports at least one more dead allocation, then free it."""
        q, g, seen = self.q, self.g_freed, self.freed

        def ready() -> bool:
            return observe(q, g) > seen
        self.ch.wait(L.WAIT_FREED, seen + 1, ready, f"waiting for {fmt_bytes(total)} of heap",
                     lambda: self._heap_deadlock(tid, total))
        self.take_freed()

    def _heap_deadlock(self, tid: int, total: int) -> str:
        heap = self.heap
        by_depth: dict[int, list[int]] = {}
        for _, n, d in self.live.values():
            by_depth.setdefault(d, []).append(n)
        held = ", ".join(f"{fmt_bytes(sum(v))} by {len(v)} allocation(s) of tensors made at scope depth {d}"
                         + (" (the run itself)" if d == 0 else "") for d, v in sorted(by_depth.items()))
        # A size that works: with a larger heap the same placements happen at the same offsets,
        # and the room above the highest held byte grows -- whether or not the heap is fragmented.
        high = max((start + n for start, n, _ in self.live.values()), default=0)
        fix = fmt_bytes(1 << (high + total - 1).bit_length())
        free = heap.size - heap.used
        if free >= total:
            return (f"heap fragmentation: task {tid} needs one block of {fmt_bytes(total)}, and {fmt_bytes(free)} "
                    f"of the {fmt_bytes(heap.size)} heap is free, but in {len(heap.lens)} pieces, the largest "
                    f"{fmt_bytes(heap.largest_free())}: the {fmt_bytes(heap.used)} held ({held}) sits between "
                    "them, and only the end of scopes the orchestration is still in can free it. Write long-lived "
                    "runtime tensors before short-lived ones, so they sit together (rt.alloc_tensors(...) places "
                    "several at once), or raise Platform(heap_bytes=...) to at least "
                    f"{fix} (the end of the highest held block, {fmt_bytes(high)}, plus {fmt_bytes(total)}).")
        return (f"heap deadlock: task {tid} needs {fmt_bytes(total)} of heap, but {fmt_bytes(heap.used)} "
                f"of the {fmt_bytes(heap.size)} heap is held ({held}; largest free block "
                f"{fmt_bytes(heap.largest_free())}) and only the end of scopes the orchestration is still in "
                "can free it. Make runtime tensors in the innermost scope that uses them (a rt.scope() per "
                f"step), or raise Platform(heap_bytes=...) to at least {fix}.")

    # -- records ---------------------------------------------------------------------------------
    def write(self, kind: int, k: int, shape: int, args: tuple | list, scalars: tuple | list,
              depth: int, new: list[Buffer] | None, what: str, aux: int = 0,
              extra: Extra | None = None) -> int:
        """Write one record and publish it; returns its task id. This is the host's hot path:
        one clock read, one header pack, one pack per tensor argument; ``extra`` (explicit deps,
        SPMD blocks, a predicate, flags) only when the submit asked for any of them."""
        q = self.q
        if observe(q, self.g_error):
            self.ch.check_error()
        tid = self.next_tid
        if tid - self.retired >= self.window:
            self._wait_ring(tid)
        r = self.ring_off + (tid & self.mask) * C.REC_WORDS
        t0 = time.perf_counter_ns()
        nvals = C.encode_scalars(self.raw, q, self.f, self.i64, self.f64, r, scalars, what) if scalars else 0
        flags = hold = 0
        if new:
            # The allocation lives until the scope its tensors were made in ends, which may be
            # outside the scope this task is submitted in.
            hold = min(b.scope.depth for b in new)
            self._place(new, tid, what, hold)
            flags = C.FLAG_HEAP
        raw = self.raw
        a = (r + C.ARGS_OFF) * 8
        n = C.ARG_WORDS * 8
        for x in args:
            raw[a:a + n] = x.tensor.packed_bytes(x.dir, x.notrack)
            a += n
        blocks = 1 if kind == C.KIND_TASK else 0
        ndeps = deps_at = pred_op = pred_val = 0
        if extra is not None:
            flags |= extra.flags
            if kind == C.KIND_TASK:
                blocks = extra.blocks
            if extra.deps:
                ndeps = len(extra.deps)
                try:                        # it may wait for pool space: interrupted, give the heap back
                    deps_at = self._put_deps(tid, extra.deps)
                except BaseException:
                    self._unwrite(tid, new, args, extra)
                    raise
            if extra.pred is not None:
                operand, pred_op, pred_val = extra.pred
                raw[a:a + n] = operand.packed_bytes(C.DIR_IN)
                flags |= C.FLAG_PRED
        HDR.pack_into(raw, r * 8, tid, kind, k, shape, len(args), len(scalars), depth, flags, hold,
                      t0, nvals, aux, ndeps, deps_at, blocks, pred_op, pred_val)
        if self.recorder is not None:
            try:
                self.recorder.add(tid, kind, k, args, scalars, depth,
                                  sum(-(-b.nbytes // C.HEAP_ALIGN) * C.HEAP_ALIGN for b in new) if new else 0,
                                  extra)
            except BaseException:
                self._unwrite(tid, new, args, extra, ndeps)
                raise
        self.next_tid = tid + 1
        self.hand_over(tid, r)
        self.submitted += 1
        return tid

    def _unwrite(self, tid: int, new: list[Buffer] | None, args: tuple | list, extra: Extra | None,
                 ndeps: int = 0) -> None:
        """A record failed before it was published: give back its heap (and the ``ndeps`` ids it
        put in the dep pool), so the run is as it was -- its runtime tensors unwritten again, and
        no record words cached for where they were placed."""
        if ndeps:
            self.dep_head -= ndeps
            self.dep_users.pop()
        if new and tid in self.live:
            self._unplace(new, tid)
            views = [x.tensor for x in args]
            if extra is not None and extra.pred is not None:
                views.append(extra.pred[0])
            for t in views:
                if t.buf in new:
                    t._packed = None

    def _unplace(self, bufs: list[Buffer], tid: int) -> None:
        start, total, _ = self.live.pop(tid)
        self.heap.free(start, total)
        for b in bufs:
            b.gm, b.owner = None, -1

    # -- explicit dependencies -------------------------------------------------------------------
    def _put_deps(self, tid: int, deps: Sequence[int]) -> int:
        """Copy a record's explicit deps into the dep pool; returns where they start. Positions
        of records the scheduler has ingested are free again."""
        n = len(deps)
        size = self.lay.dep_mask + 1
        if self.dep_head + n - self.dep_tail > size:
            self._free_deps(n, size, tid)
        at = self.dep_head
        i, j = at & self.lay.dep_mask, self.lay.dep_off
        first = min(n, size - i)                     # the pool may wrap
        self.i64[j + i:j + i + first] = deps[:first]
        if first < n:
            self.i64[j:j + n - first] = deps[first:]
        self.dep_head = at + n
        self.dep_users.append((tid, at + n))
        return at

    def _free_deps(self, n: int, size: int, tid: int) -> None:
        users, q = self.dep_users, self.q
        while self.dep_head + n - self.dep_tail > size:
            ingested = observe(q, self.g_ingested)
            while users and users[0][0] < ingested:
                self.dep_tail = users.popleft()[1]
            if self.dep_head + n - self.dep_tail <= size:
                return
            if not users:                             # nothing in use: the pool is all ours
                self.dep_tail = self.dep_head
                return
            oldest = users[0][0]
            # Retired implies ingested: wait for the oldest record that holds pool space.
            self.ch.wait(L.WAIT_RETIRED, oldest + 1,
                         lambda o=oldest, r=self.g_retired, i=self.g_ingested: observe(q, r) > o or observe(q, i) > o,
                         f"waiting for dependency-pool space for task {tid}", self._ring_deadlock)

    def hand_over(self, tid: int, r: int) -> None:
        """Hand the record to the scheduler (publish HEAD), waking it only if it sleeps."""
        q = self.q
        publish(q, self.g_head, tid + 1)
        fence()
        if observe(q, self.g_sleep):
            self.sched_sem.release()
