"""Engines: what stands behind a ``Device`` -- real processes, or the inline reference.

    Device ──memory API, run(), stats()──▶ engine
                                            ├─ ProcessEngine: segments + scheduler + 3B workers
                                            │    (launch.py), the host's channel (channel.py)
                                            │    and the task writer (submit.py)
                                            └─ InlineEngine: the same writer (and heap
                                                 placement) and the same argument decoder, but
                                                 every record is executed right away, in this
                                                 process, in submission order

The inline engine is the definition of correct: "the result of a run must equal running every
task one at a time in submission order". It shares the record packing (TaskWriter) and the
kernel-argument decoding and the running of a task part (device/execute.py) with the real device,
so a difference between the two is a scheduling difference, never an encoding one. Kernels run
with one BLAS thread, as on the workers, so the two agree bit for bit. Tests and users (``Device(...,
inline=True)``) use it to check orchestrations and kernels without processes.
"""

from __future__ import annotations

import mmap
import time
from typing import Any

import numpy as np
from threadpoolctl import threadpool_limits

from device import codec as C
from device import layout as L
from device import sanitizer
from device.accounting import Accounting
from device.execute import ArgDecoder, predicate_holds, run_part, unwritten_report
from device.tensormap import TensorMap
from host.channel import Channel
from host.errors import DeadlockError, KernelError
from host.gm import Arena
from host.launch import DeviceProcesses
from host.platform import Platform
from host.submit import TaskWriter, _fmt_bytes
from host.tensor import Buffer
from host.trace import TraceData
from kernels.registry import CoreInfo, Kernel, _set_block, _set_core


class ProcessEngine:
    """A device made of processes."""

    def __init__(self, platform: Platform, kernels: list[Kernel], **options: Any) -> None:
        options.pop("dry_run", None)
        self.procs = DeviceProcesses(platform, kernels, **options)
        self.channel = Channel(self.procs)
        ctx = self.procs.ctx
        self.writer = TaskWriter(ctx.layout, ctx.ctrl_buf, ctx.q, ctx.f, self.procs.heap_base, platform.heap_bytes,
                                 self.channel, ctx.sched_sem)
        self.gm_buf = self.writer.gm = self.procs.gm.buf
        self.host_bytes = self.procs.host_bytes
        self.arena = Arena(self.host_bytes)
        self.tracing = bool(options.get("trace"))
        self.recording = bool(options.get("record"))
        self.lay = self.procs.layout

    def reserve(self, off: int, nbytes: int) -> None:
        self.procs.gm.reserve(off, nbytes)

    def begin_run(self) -> None:
        pass

    def end_run(self) -> None:
        pass

    def stop(self) -> None:
        self.procs.stop()

    @property
    def pids(self) -> list[int]:
        return list(self.procs.pids)

    @property
    def segment_names(self) -> list[str]:
        return [s.name for s in self.procs.segments]

    def _g(self, name: int) -> int:
        return self.procs.q[self.lay.g(name)]

    def outstanding(self) -> bool:
        return self.writer.next_tid != self._g(L.G_COMPLETED)

    def finished(self) -> int:
        return self._g(L.G_COMPLETED)

    def wait_for(self, counter: int, kind: int, what: str) -> None:
        """Wait until the global ``counter`` reaches the last submitted task."""
        q, g = self.procs.q, self.lay.g(counter)
        head = self.writer.next_tid
        self.channel.wait(kind, head, lambda: q[g] >= head, what)

    def wait_completed(self) -> None:
        self.wait_for(L.G_COMPLETED, L.WAIT_COMPLETED, "waiting for submitted tasks to finish")

    def wait_probe(self, tid: int) -> None:
        """Wait until the probe dummy ``tid`` (rt.get/set_tensor_data) has finished."""
        q, g = self.procs.q, self.lay.g(L.G_PROBE)
        self.channel.wait(L.WAIT_PROBE, tid + 1, lambda: q[g] > tid,
                          f"waiting for the writers of a tensor element (probe task {tid})")
        self.channel.check_error()

    def wait_retired(self) -> None:
        self.wait_for(L.G_RETIRED, L.WAIT_RETIRED, "waiting for the run to finish")

    def check_error(self) -> None:
        self.channel.check_error()

    def abort(self, timeout: float | None) -> None:
        self.channel.abort(timeout)
        self.writer.retired = self._g(L.G_RETIRED)
        self.writer._take_freed()

    def stats(self) -> dict:
        rep = self.channel.request(L.REQ_STATS)
        assert isinstance(rep, dict)
        q, lay = self.procs.q, self.lay
        cores = {"AIC": [0, 0], "AIV": [0, 0]}          # kind -> [parts run, busy ns], from the workers
        for c in range(lay.ncores):
            k = cores["AIC" if C.is_aic(c) else "AIV"]
            k[0] += q[lay.wline(c) + L.W_TASKS]
            k[1] += q[lay.wline(c) + L.W_BUSY_NS]
        rep["cores"] = {k: {"parts_run": n, "busy_s": ns / 1e9} for k, (n, ns) in cores.items()}
        return rep

    def take_trace(self) -> TraceData | None:
        rep = self.channel.request(L.REQ_TRACE)
        assert isinstance(rep, dict)
        if not rep.get("path"):
            return None
        return TraceData.load(rep["path"], rep["kernel_names"], self.procs.platform.blocks,
                              rep["phase_ns"], rep.get("pred_false"))

    @property
    def wait_ns(self) -> int:
        return self.channel.wait_ns

    @property
    def waits(self) -> int:
        return self.channel.waits


class _InlineWriter(TaskWriter):
    """Packs records exactly as the device does, then runs them at once."""

    def __init__(self, lay: L.Layout, gm_buf: memoryview, kernels: list[Kernel], heap_base: int,
                 heap_bytes: int, sanitize: bool, dry_run: bool = False, blocks: int = 1) -> None:
        ctrl = memoryview(bytearray(lay.nbytes))
        super().__init__(lay, ctrl, ctrl.cast("q"), ctrl.cast("d"), heap_base, heap_bytes, None, None)
        self.kernels = kernels
        self.sanitize = sanitize
        self.dry_run = dry_run                       # pack, track and count tasks; run no kernel
        self.blocks = blocks                         # the platform's, for core_info().block
        self.dec = ArgDecoder(self.q, self.f, self.raw, gm_buf)
        self.by_depth: dict[int, list[int]] = {}     # scope depth -> allocating tids it holds
        self.acct = Accounting([k.name for k in kernels])       # the device's statistics layout
        self.parts_run = {"AIC": [0, 0], "AIV": [0, 0]}         # core kind -> [parts, busy ns]
        self.edges: list[tuple[int, int]] = []       # (consumer, producer) while recording
        self.tmap = TensorMap(lambda t: True, lambda ref: C.arg_geometry(self.q, ref), keep_done=True)

    def _place(self, bufs: list[Buffer], tid: int, what: str, depth: int) -> None:
        """The device's heap, placed as the device places it; every task has run, so only the
        end of a scope frees anything (publish)."""
        super()._place(bufs, tid, what, depth)
        self.by_depth.setdefault(depth, []).append(tid)

    def _wait_freed(self, tid: int, total: int) -> None:
        # Nothing is running that could free heap: what the device would wait for forever.
        raise DeadlockError(f"waiting for {_fmt_bytes(total)} of heap: {self._heap_deadlock(tid, total)}")

    def _unplace(self, bufs: list[Buffer], tid: int) -> None:
        self.by_depth[self.live[tid][2]].remove(tid)
        super()._unplace(bufs, tid)

    def free_scope(self, depth: int) -> None:
        live, heap = self.live, self.heap
        for t in self.by_depth.pop(depth, ()):
            start, n, _ = live.pop(t)
            heap.free(start, n)

    def publish(self, tid: int, r: int) -> None:
        q = self.q
        self.retired = tid + 1
        q[self.g_ingested] = tid + 1                 # its dep-pool space is free again
        kind = q[r + C.H_KIND]
        self.acct.records += 1
        if kind == C.KIND_SCOPE_END:
            self.acct.n_scope += 1
            self.free_scope(q[r + C.H_AUX])
            if q[r + C.H_AUX] == 0:
                self.tmap.clear()            # a run's end: nothing later depends on it
            return
        if kind == C.KIND_ALLOC:
            self.acct.n_alloc += 1
            return
        if self.recorder is not None:
            self._edges(tid, r)
        if kind == C.KIND_DUMMY:
            if q[r + C.H_FLAGS] & C.FLAG_PROBE:
                self.acct.n_probe += 1
            else:
                self.acct.n_dummy += 1
            return
        k = q[r + C.H_KERNEL]
        if q[r + C.H_FLAGS] & C.FLAG_PRED and not predicate_holds(q, r, self.dec.gm):
            self.acct.add(k, C.STATUS_PRED_FALSE)
            if self.recorder is not None:
                self.recorder.mark_skipped([tid])
            return
        if self.dry_run:
            self.acct.add(k, C.STATUS_OK, 0)
            return
        kern, dec = self.kernels[k], self.dec
        nblocks = q[r + C.H_BLOCKS]
        check = None
        if self.sanitize:          # (start-together blocks get no write map, as on the device)
            check = sanitizer.TaskCheck(dec.tensors(r), dec.last_dirs, 1 if q[r + C.H_FLAGS] & C.FLAG_SYNC else nblocks)
        exec_ns = 0
        try:
            for b in range(nblocks):                 # SPMD: the blocks one after the other
                for part, fn in enumerate(kern.parts):   # the parts share the task's views of GM
                    if fn is None:
                        continue
                    _set_core(CoreInfo(b % self.blocks, "AIC" if part == 0 else "AIV", max(part - 1, 0), -1))
                    _set_block(b, nblocks)
                    t0 = time.perf_counter_ns()
                    rep = run_part(fn, dec, r, tid, kern.name, "inline", part)
                    dt = time.perf_counter_ns() - t0
                    exec_ns += dt
                    run = self.parts_run["AIC" if part == 0 else "AIV"]
                    run[0] += 1
                    run[1] += dt
                    if rep is not None:
                        self.acct.add(k, C.STATUS_ERROR)
                        raise KernelError.from_report(rep)
                if check is not None and check.blocks > 1:
                    check.block_done(b, dec.tensors(r))
        finally:
            _set_core(None)
            _set_block(0, 1)
        if self.sanitize:
            rep = unwritten_report(dec, r, kern.fn, tid, kern.name, "inline", check)
            if rep is not None:
                self.acct.add(k, C.STATUS_ERROR)
                raise KernelError.from_report(rep)
        self.acct.add(k, C.STATUS_OK, exec_ns)

    def _edges(self, tid: int, r: int) -> None:
        """The dependency edges of a task (recording), from the same tensor map and explicit deps
        the scheduler uses, under sequential semantics (the inline engine's own)."""
        q, preds = self.q, []
        nt = q[r + C.H_NTENSORS] + (1 if q[r + C.H_FLAGS] & C.FLAG_PRED else 0)
        for i in range(nt):
            a = r + C.ARGS_OFF + i * C.ARG_WORDS
            meta = q[a + C.A_META]
            self.tmap.access(q[a], tid, meta & 3, q[a + C.A_LO], q[a + C.A_HI], meta & C.META_CONTIG, a, preds)
        if q[r + C.H_NDEPS]:
            preds += self.lay.deps(q, q[r + C.H_DEPS_AT], q[r + C.H_NDEPS])
        self.edges.extend((tid, p) for p in set(preds) if p != tid)


class InlineEngine:
    """Every task runs in this process, at submit, in submission order (the reference semantics)."""

    def __init__(self, platform: Platform, kernels: list[Kernel], **options: Any) -> None:
        lay = self.lay = L.Layout(3, 2, 1)
        self.host_bytes = platform.host_bytes()
        # Private memory: a growable GM would move under existing views, so reserve the address
        # space once (anonymous pages cost nothing until touched).
        self._mm = mmap.mmap(-1, self.host_bytes + platform.heap_bytes)     # [host tensors | heap]
        self.gm_buf = memoryview(self._mm)
        self.arena = Arena(self.host_bytes)
        self.writer = _InlineWriter(lay, self.gm_buf, kernels, self.host_bytes, platform.heap_bytes,
                                    bool(options.get("sanitize")), bool(options.get("dry_run")), platform.blocks)
        self.writer.gm = self.gm_buf
        self.kernels = kernels
        self.wait_ns = 0
        self.waits = 0
        self.tracing = False
        self._blas: threadpool_limits | None = None

    def reserve(self, off: int, nbytes: int) -> None:
        pass

    def begin_run(self) -> None:
        # One BLAS thread while kernels run here, as on the workers: same summation order, same bits.
        self._blas = threadpool_limits(limits=1)

    def end_run(self) -> None:
        blas, self._blas = self._blas, None
        if blas is not None:
            blas.restore_original_limits()

    def stop(self) -> None:
        pass

    pids: list[int] = []
    segment_names: list[str] = []

    def outstanding(self) -> bool:
        return False

    def finished(self) -> int:
        return self.writer.next_tid

    def wait_completed(self) -> None:
        pass

    def wait_retired(self) -> None:
        pass

    def wait_probe(self, tid: int) -> None:
        pass

    def check_error(self) -> None:
        pass

    def abort(self, timeout: float | None) -> None:
        w = self.writer
        for depth in list(w.by_depth):              # every scope of the failed run is gone
            w.free_scope(depth)

    def take_trace(self) -> TraceData | None:
        w = self.writer
        if w.recorder is None:
            return None
        edges = np.array(w.edges, np.int64).reshape(-1, 2)
        w.edges = []
        return TraceData(np.zeros((0, 0), np.int64), edges, [k.name for k in self.kernels], 0)

    def stats(self) -> dict:
        w = self.writer
        rep = w.acct.report()
        rep["cores"] = {k: {"parts_run": n, "busy_s": ns / 1e9} for k, (n, ns) in w.parts_run.items()}
        return rep
