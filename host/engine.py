"""Engines: what stands behind a ``Device`` -- real processes, or the sequential engine.

    Device ──memory API, run(), stats()──▶ Engine (the protocol below)
                                            ├─ ProcessEngine: segments + scheduler + 3B workers
                                            │    (launch.py), the host's channel (channel.py)
                                            │    and the task writer (submit.py)
                                            └─ SequentialEngine: the same writer, and the
                                                 scheduler's own task table run by a synchronous
                                                 executor in this process (device/sequential.py):
                                                 every record takes effect as it is written

The sequential engine is the oracle ("the result of a run must equal running every task one at
a time in submission order"), reached with ``Device(..., inline=True)`` (``--inline`` on the
command line). It shares with the device the record packing (TaskWriter), the heap and its
lifetimes, the per-kind effects of records and the dependency gathering (device/tasks.py,
device/deps.py) and the running of a task part (device/execute.py), so a difference between the
two is a scheduling difference, never an encoding one. Kernels run with one BLAS thread, as on
the workers, so the two agree bit for bit.

Each engine refuses the ``Device`` options it cannot honour, naming the argument.
"""

from __future__ import annotations

import mmap
from typing import Any, Protocol, runtime_checkable

import numpy as np
from threadpoolctl import threadpool_limits

from device import codec as C
from device import layout as L
from device.ordering import observe, publish
from device.sequential import SequentialDevice
from device.waits import WaitArea
from host.channel import Channel
from host.errors import DeadlockError, KernelError, fmt_bytes
from host.gm import Arena
from host.launch import DeviceProcesses
from host.platform import Platform
from host.submit import TaskWriter
from host.trace import TraceData
from kernels.registry import Kernel


@runtime_checkable
class Engine(Protocol):
    """What a ``Device`` drives. Built as ``Engine(platform, kernels, **options)`` with the
    options of ``Device`` (timestamps, trace, sanitize, schedule, seed, jitter_us, record,
    dry_run, semantics); one it does not support raises a ValueError naming it."""

    writer: TaskWriter            # the host end of the task ring and the heap
    arena: Arena                  # host tensors' GM
    gm_buf: memoryview            # GM, for host views
    tracing: bool                 # keeps trace rows (dev.trace())
    wait_ns: int                  # time the host spent waiting on the device
    waits: int

    @property
    def pids(self) -> list[int]: ...
    @property
    def segment_names(self) -> list[str]: ...
    def reserve(self, off: int, nbytes: int) -> None: ...     # make GM pages real (or OSError)
    def begin_run(self) -> None: ...
    def end_run(self) -> None: ...
    def stop(self) -> None: ...
    def outstanding(self) -> bool: ...                          # submitted and not finished?
    def finished(self) -> int: ...                              # records finished so far
    def wait_completed(self) -> None: ...
    def wait_retired(self) -> None: ...
    def wait_probe(self, tid: int) -> None: ...
    def check_error(self) -> None: ...
    def abort(self, timeout: float | None) -> None: ...
    def take_trace(self) -> TraceData | None: ...               # edges (recording), rows (tracing)
    def stats(self) -> dict: ...
    def notices(self) -> list[str]: ...                         # new since the last call (pipes left full)


def _cores(parts_and_ns: dict[str, list[int]]) -> dict:
    return {k: {"parts_run": n, "busy_s": ns / 1e9} for k, (n, ns) in parts_and_ns.items()}


class ProcessEngine:
    """A device made of processes."""

    def __init__(self, platform: Platform, kernels: list[Kernel], *, dry_run: bool = False,
                 **options: Any) -> None:
        if dry_run:
            raise ValueError("Device(dry_run=True) needs inline=True: a process device always runs its kernels")
        self.procs = DeviceProcesses(platform, kernels, **options)
        self.channel = Channel(self.procs)
        ctx = self.procs.ctx
        self.writer = TaskWriter(ctx.layout, ctx.ctrl_buf, ctx.q, ctx.f, self.procs.heap_base, platform.heap_bytes,
                                 self.channel, ctx.sched_sem)
        self.gm_buf = self.writer.gm = self.procs.gm.buf
        self.arena = Arena(self.procs.host_bytes)
        self.tracing = bool(options.get("trace"))
        self.lay = self.procs.layout
        self.wait_area = WaitArea(ctx.q, self.lay.waits_off, self.lay.ncores, ctx.wait_sems)
        self.notices_seen = 0

    def reserve(self, off: int, nbytes: int) -> None:
        self.procs.gm.reserve(off, nbytes)

    def begin_run(self) -> None:
        self.wait_area.reset()       # pipes empty, barriers at 0: no kernel runs between runs

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
        return observe(self.procs.q, self.lay.g(name))

    def outstanding(self) -> bool:
        return self.writer.next_tid != self._g(L.G_COMPLETED)

    def finished(self) -> int:
        return self._g(L.G_COMPLETED)

    def _wait_for(self, counter: int, kind: int, what: str) -> None:
        """Wait until the global ``counter`` reaches the last submitted task."""
        q, g = self.procs.q, self.lay.g(counter)
        head = self.writer.next_tid
        self.channel.wait(kind, head, lambda: observe(q, g) >= head, what)

    def wait_completed(self) -> None:
        self._wait_for(L.G_COMPLETED, L.WAIT_COMPLETED, "waiting for submitted tasks to finish")

    def wait_probe(self, tid: int) -> None:
        """Wait until the probe dummy ``tid`` (rt.get/set_tensor_data) has finished."""
        q, g = self.procs.q, self.lay.g(L.G_PROBE)
        self.channel.wait(L.WAIT_PROBE, tid + 1, lambda: observe(q, g) > tid,
                          f"waiting for the writers of a tensor element (probe task {tid})")
        self.channel.check_error()

    def wait_retired(self) -> None:
        self._wait_for(L.G_RETIRED, L.WAIT_RETIRED, "waiting for the run to finish")

    def check_error(self) -> None:
        self.channel.check_error()

    def abort(self, timeout: float | None) -> None:
        self.channel.abort(timeout)
        self.writer.retired = self._g(L.G_RETIRED)
        self.writer.take_freed()

    def stats(self) -> dict:
        rep = self.channel.request(L.REQ_STATS)
        assert isinstance(rep, C.StatsReply), rep
        q, lay = self.procs.q, self.lay
        cores = {"AIC": [0, 0], "AIV": [0, 0]}          # kind -> [parts run, busy ns], from the workers
        for c in range(lay.ncores):
            k = cores["AIC" if C.is_aic(c) else "AIV"]
            k[0] += q[lay.wline(c) + L.W_TASKS]
            k[1] += q[lay.wline(c) + L.W_BUSY_NS]
        out = rep.to_dict()
        out["cores"] = _cores(cores)
        return out

    def notices(self) -> list[str]:
        n = self._g(L.G_NOTICES)
        if n <= self.notices_seen:
            return []
        rep = self.channel.request(L.REQ_STATS)
        assert isinstance(rep, C.StatsReply), rep
        new, self.notices_seen = list(rep.notices[self.notices_seen:n]), n
        return new

    def take_trace(self) -> TraceData | None:
        rep = self.channel.request(L.REQ_TRACE)
        assert isinstance(rep, C.TraceReply), rep
        if not rep.path:
            return None
        return TraceData.load(rep.path, list(rep.kernel_names), self.procs.platform.blocks,
                              rep.phase_ns, list(rep.pred_false))

    @property
    def wait_ns(self) -> int:
        return self.channel.wait_ns

    @property
    def waits(self) -> int:
        return self.channel.waits


class _SequentialWriter(TaskWriter):
    """Packs records exactly as for the device, then hands each to the sequential device, which
    carries it out at once. The heap is the device's (same size, same placement); what frees it
    is the allocation's death in the task table."""

    def __init__(self, lay: L.Layout, gm: memoryview, heap_base: int, heap_bytes: int) -> None:
        ctrl = memoryview(bytearray(lay.nbytes))
        super().__init__(lay, ctrl, ctrl.cast("q"), ctrl.cast("d"), heap_base, heap_bytes, None, None)
        self.gm = gm
        self.device: SequentialDevice | None = None

    def hand_over(self, tid: int, r: int) -> None:
        """Hand record ``tid`` to the sequential device: it takes effect now."""
        assert self.device is not None
        rep = self.device.run(tid)
        self.retired = self.device.tasks.retired
        publish(self.q, self.g_ingested, tid + 1)        # its dep-pool positions are free again
        if isinstance(rep, C.Stall):
            raise DeadlockError(rep.message)
        if rep is not None:
            raise KernelError.from_report(rep)

    def free_allocation(self, tid: int) -> None:
        """The heap allocation of record ``tid`` died (device/lifetime.py)."""
        start, size, _ = self.live.pop(tid)
        self.heap.free(start, size)

    def _wait_freed(self, tid: int, total: int) -> None:
        # Nothing runs behind the host's back here: only the end of a scope the orchestration is
        # still in could free heap, so a full heap is the deadlock the device would report.
        raise DeadlockError(f"waiting for {fmt_bytes(total)} of heap: {self._heap_deadlock(tid, total)}")


class SequentialEngine:
    """Every record takes effect in this process as it is written, in submission order
    (``Device(..., inline=True)``). Under ``semantics="reference"`` the recorded graph has the
    reference's edges; the run itself is sequential, one of the orders those edges allow."""

    def __init__(self, platform: Platform, kernels: list[Kernel], *, timestamps: bool = True,
                 trace: bool = False, sanitize: bool = False, schedule: str = "fifo", seed: int = 0,
                 jitter_us: float = 0.0, record: bool = False, dry_run: bool = False,
                 semantics: str = "sequential", skew: str | None = None, skew_us: float = 0.0) -> None:
        for bad, why in ((trace, "trace=...: the sequential engine keeps no times (record= keeps its graph)"),
                         (schedule != "fifo", f"schedule={schedule!r}: the sequential engine runs in "
                                              "submission order only"),
                         (jitter_us, f"jitter_us={jitter_us!r}: the sequential engine runs no schedule to "
                                     "shake up")):
            if bad:
                raise ValueError(f"Device(inline=True, {why}; use a process device (inline=False) for it")
        lay = self.lay = L.Layout(3, 2, 1)
        self.host_bytes = platform.host_bytes()
        # Private memory: a growable GM would move under existing views, so reserve the address
        # space once (anonymous pages cost nothing until touched).
        self._mm = mmap.mmap(-1, self.host_bytes + platform.heap_bytes)     # [host tensors | heap]
        self.gm_buf = memoryview(self._mm)
        self.arena = Arena(self.host_bytes)
        w = self.writer = _SequentialWriter(lay, self.gm_buf, self.host_bytes, platform.heap_bytes)
        self.device = w.device = SequentialDevice(
            lay, w.raw, self.gm_buf, [(k.parts, k.name) for k in kernels], platform.blocks, w.free_allocation,
            sanitize=sanitize, dry_run=dry_run, record=record, reference=semantics == "reference",
            stall_timeout=platform.stall_timeout, skew=skew, skew_us=skew_us, seed=seed)
        self.kernels = kernels
        self.notices_seen = 0
        self.wait_ns = 0
        self.waits = 0
        self.tracing = False
        self._blas: threadpool_limits | None = None

    def reserve(self, off: int, nbytes: int) -> None:
        pass

    def begin_run(self) -> None:
        # One BLAS thread while kernels run here, as on the workers: same summation order, same bits.
        self._blas = threadpool_limits(limits=1)
        self.device.begin_run()

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
        self.device.abort()

    def notices(self) -> list[str]:
        got = self.device.waits.notices
        new, self.notices_seen = got[self.notices_seen:], len(got)
        return new

    def take_trace(self) -> TraceData | None:
        edges, pred_false, counted = self.device.take_edges()
        return TraceData(np.zeros((0, 0), np.int64), np.array(edges, np.int64).reshape(-1, 2),
                         [k.name for k in self.kernels], 0, pred_false=pred_false, counted=counted)

    def stats(self) -> dict:
        rep = self.device.stats().to_dict()
        rep["cores"] = _cores(self.device.parts_run)
        return rep


__all__ = ["Engine", "ProcessEngine", "SequentialEngine"]
