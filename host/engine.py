"""Engines: what stands behind a ``Device`` -- real processes, or the inline reference.

    Device ──memory API, run(), stats()──▶ engine
                                            ├─ ProcessEngine: segments + scheduler + 3B workers
                                            │    (launch.py), the host's channel (channel.py)
                                            │    and the task writer (submit.py)
                                            └─ InlineEngine: the same writer and the same
                                                 argument decoder, but every record is executed
                                                 right away, in this process, in submission order

The inline engine is the definition of correct: "the result of a run must equal running every
task one at a time in submission order". It shares the record packing (TaskWriter) and the
kernel-argument decoding (device.worker.ArgDecoder) with the real device, so a difference between
the two is a scheduling difference, never an encoding one. Tests and users (``Device(...,
inline=True)``) use it to check orchestrations and kernels without processes.
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from device import layout as L
from device import sanitizer
from device.worker import ArgDecoder, describe_args
from host.channel import Channel
from host.errors import DeviceMemoryError, KernelError
from host.gm import HostArena
from host.launch import DeviceProcesses
from host.platform import Platform
from host.submit import TaskWriter, _fmt_bytes
from host.tensor import Buffer
from host.trace import TraceData
from kernels.registry import Kernel


class ProcessEngine:
    """A device made of processes."""

    def __init__(self, platform: Platform, kernels: list[Kernel], **options: Any) -> None:
        self.procs = DeviceProcesses(platform, kernels, **options)
        self.channel = Channel(self.procs)
        self.writer = TaskWriter(self.procs, self.channel)
        self.gm_buf = self.procs.gm.buf
        self.host_bytes = self.procs.host_bytes
        self.arena = HostArena(self.host_bytes)
        self.tracing = bool(options.get("trace"))
        self.lay = self.procs.layout

    def reserve(self, off: int, nbytes: int) -> None:
        self.procs.gm.reserve(off, nbytes)

    def stop(self) -> None:
        self.procs.stop()

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self.procs.procs]

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

    def wait_retired(self) -> None:
        self.wait_for(L.G_RETIRED, L.WAIT_RETIRED, "waiting for the run to finish")

    def check_error(self) -> None:
        self.channel.check_error()

    def abort(self, timeout: float | None) -> None:
        self.channel.abort(timeout)
        self.writer.retired = self._g(L.G_RETIRED)
        self.writer.heap_tail = self._g(L.G_HEAP_TAIL)

    def stats(self) -> dict:
        rep = self.channel.request(L.REQ_STATS)
        assert isinstance(rep, dict)
        q, lay = self.procs.q, self.lay
        cores = {"AIC": [0, 0], "AIV": [0, 0]}          # kind -> [parts run, busy ns], from the workers
        for c in range(lay.ncores):
            k = cores["AIC" if c % 3 == 0 else "AIV"]
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
                              rep["phase_ns"])

    @property
    def wait_ns(self) -> int:
        return self.channel.wait_ns

    @property
    def waits(self) -> int:
        return self.channel.waits


class _InlineWriter(TaskWriter):
    """Packs records exactly as the device does, then runs them at once."""

    def __init__(self, procs: SimpleNamespace, kernels: list[Kernel], arena: HostArena,
                 reserve: Any, sanitize: bool) -> None:
        super().__init__(procs, None)  # type: ignore[arg-type]
        self.kernels = kernels
        self.arena = arena
        self.reserve = reserve
        self.sanitize = sanitize
        self.dec = ArgDecoder(procs.ctx, readonly_inputs=sanitize)
        self.by_depth: dict[int, list[tuple[int, int]]] = {}
        self.counts = [0] * len(kernels)
        self.n_alloc = 0
        self.n_scope = 0

    def _place(self, bufs: list[Buffer], tid: int, what: str, depth: int) -> int:
        for b in bufs:
            off = self.arena.alloc(b.nbytes)
            if off is None:
                raise DeviceMemoryError(f"{what}: inline device memory exhausted "
                                        f"({_fmt_bytes(b.nbytes)} requested)")
            self.reserve(off, b.nbytes)
            b.gm, b.owner = off, tid
            self.by_depth.setdefault(depth, []).append((off, b.nbytes))
        return self.heap.head

    def publish(self, tid: int, r: int) -> None:
        q = self.q
        self.retired = tid + 1
        kind = q[r + L.H_KIND]
        if kind == L.KIND_SCOPE_END:
            self.n_scope += 1
            for off, n in self.by_depth.pop(q[r + L.H_AUX], []):
                self.arena.free(off, n)
            return
        if kind == L.KIND_ALLOC:
            self.n_alloc += 1
            return
        k = q[r + L.H_KERNEL]
        kern, dec = self.kernels[k], self.dec
        tensors = dec.tensors(r)                 # views: every part sees (and writes) the same GM
        dirs = dec.last_dirs
        names = sanitizer.arg_names(kern.fn, len(tensors)) if self.sanitize else []
        rep = {"tid": tid, "kernel": kern.name, "core": "inline", "args": describe_args(q, r), "traceback": ""}
        if self.sanitize:
            sanitizer.poison_outs(tensors, dirs)
        for part in (p for p in kern.parts if p is not None):
            try:
                part(*dec.scalars(r, list(tensors)))
            except Exception as e:
                import traceback
                rep.update(error=f"{type(e).__name__}: {e}", traceback=traceback.format_exc())
                if self.sanitize:
                    rep["violation"] = sanitizer.written_in(e, tensors, dirs, names)
                raise KernelError.from_report(rep) from e
        if self.sanitize:
            bad = sanitizer.unwritten_outs(tensors, dirs, names)
            if bad:
                rep.update(error="direction violation", violation="; ".join(bad))
                raise KernelError.from_report(rep)
        self.counts[k] += 1


class InlineEngine:
    """Every task runs in this process, at submit, in submission order (the reference semantics)."""

    def __init__(self, platform: Platform, kernels: list[Kernel], **options: Any) -> None:
        lay = self.lay = L.Layout(3, 2, 1)
        self.host_bytes = platform.gm_bytes or 1 << 30
        # Private memory: a growable GM would move under existing views, so reserve the address
        # space once (anonymous pages cost nothing until touched).
        import mmap
        self._mm = mmap.mmap(-1, self.host_bytes)
        self.gm_buf = memoryview(self._mm)
        ctrl = memoryview(bytearray(lay.nbytes))
        ctx = SimpleNamespace(q=ctrl.cast("q"), f=ctrl.cast("d"), ctrl_buf=ctrl, gm_buf=self.gm_buf)
        procs = SimpleNamespace(layout=lay, q=ctx.q, ctrl=SimpleNamespace(buf=ctrl), ctx=ctx,
                                heap_base=0, platform=platform)
        ctx.sched_sem = None
        self.arena = HostArena(self.host_bytes)
        self.writer = _InlineWriter(procs, kernels, self.arena, self.reserve,
                                    bool(options.get("sanitize")))
        self.kernels = kernels
        self.wait_ns = 0
        self.waits = 0
        self.tracing = False

    def reserve(self, off: int, nbytes: int) -> None:
        pass

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

    def check_error(self) -> None:
        pass

    def abort(self, timeout: float | None) -> None:
        self.writer.by_depth.clear()

    def take_trace(self) -> TraceData | None:
        return None

    def stats(self) -> dict:
        w = self.writer
        return {"kernels": {k.name: {"tasks": n, "exec_ns": 0, "skipped": 0, "errors": 0}
                            for k, n in zip(self.kernels, w.counts) if n},
                "runtime_tasks": {"alloc": w.n_alloc, "scope_end": w.n_scope},
                "records": w.next_tid, "timed_tasks": 0, "phase_ns": {}}
