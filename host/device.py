"""``Device``: an emulated a2a3 device that runs in ordinary processes.

    with Device(Platform(blocks=24), kernels=["kernels.workloads.paged_attention"]) as dev:
        q = dev.to_device(query)          numpy ─copy─▶ host tensor in GM
        out = dev.empty(shape, dtype)     host tensor in GM (contents undefined)
        dev.run(orchestrate, q, out)      orchestrate(rt, q, out) here; tasks on the device;
                                          returns when every task has finished and retired
        result = dev.to_host(out)         GM ─copy─▶ numpy
        print(dev.stats())

Lifecycle: ``Device(...)`` creates the segments and forks the scheduler and 3*B workers
(host/launch.py); ``close()`` (or leaving the ``with``) stops them and releases the segments, also
on exceptions and Ctrl-C.

When a run fails:
  the orchestration raises (its own bug, a rejected submit)  the tasks it submitted still run to
                                                             completion, then the exception is
                                                             re-raised; nothing is lost
  KernelError, DeadlockError, Ctrl-C                         the run is aborted: tasks not yet
                                                             started are skipped
  DeviceLost (a process died)                                the device shuts down
In every case but the last the device stays usable for the next run.
"""

from __future__ import annotations

import ctypes
import math
import os
import time
import warnings
import weakref
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np

from device import codec as C
from device.waits import SKEW_CHOICES
from host.cliargs import unwritable
from host.engine import Engine, ProcessEngine, SequentialEngine
from host.errors import DeadlockError, DeviceClosed, DeviceError, DeviceLost, DeviceMemoryError, fmt_bytes
from host.graph import Graph, Recorder
from host.launch import no_interrupts
from host.orchestration import RunSession, Runtime, ScopeEnd
from host.platform import Platform
from host.stats import Stats
from host.tensor import Buffer, Tensor, check_dtype, check_shape
from host.trace import TraceData, write_chrome
from kernels.registry import Kernel, resolve

ABORT_TIMEOUT_ON_INTERRUPT = 5.0
ABORT_TIMEOUT_ON_STALL = 1.0


def _check_writable(path: str | os.PathLike, what: str) -> None:
    """Fail now, not at close, if a file cannot be written at ``path``."""
    problem = unwritable(path)
    if problem:
        raise ValueError(f"{what}: {problem}")


class Device:
    """An emulated device: one scheduler process and 3 * ``platform.blocks`` worker processes.

    kernels     Kernel objects and/or names of modules whose kernels are loaded
    timestamps  record submit/ready/dispatch/start/end/done times of every task (on by default)
    trace       True: keep every task's times and dependencies for ``dev.trace()`` /
                ``dev.write_trace(path)``; a path: also write the Chrome trace there at close
    sanitize    direction sanitizer: In tensors read-only, Out tensors poisoned before each
                task and checked after it (device/sanitizer.py); a violation fails the run
    schedule    "fifo" (default) or "random": ready tasks and free cores are taken in a random
                order drawn from ``seed``; ``jitter_us`` adds a random delay up to that long
                before every kernel. Any correct graph gives bit-identical results for every seed.
    skew        lane skew, for kernels whose parts wait for each other (pipes, barriers): the part
                "aic", "aiv0" or "aiv1" of every task -- or "random": one part per task, drawn
                from ``seed`` -- sleeps a random time up to ``skew_us`` at each of its sync
                operations (a pipe push or pop), the delays drawn from ``seed``: the slow-lane
                interleavings a chip shows, on demand (device/waits.py)
    inline      no processes: the sequential engine runs every task in this process at submit,
                in submission order -- the oracle every device run must equal (host/engine.py)
    record      keep the task graph of every run (host/graph.py) for ``dev.graph()``; a path:
                also write it there (JSON Lines, ``.gz`` to compress) at close -- the input of
                ``ptoemu predict``
    semantics   "sequential" (default): a run's result is that of running its tasks one at a
                time in submission order, whatever the hints; "reference": the reference
                runtime's own dependency rules (no write-after-read ordering, Out on an existing
                buffer does not wait, NoDep / manual_dep / manual scopes untracked), so that
                with ``schedule="random"`` a run shows the races a chip could show
                (host/orchestration.py, "Semantics"; host/fuzz.py compare_semantics)
    dry_run     with ``inline``: tasks are packed, tracked and counted, but no kernel runs
                (``ptoemu list --counts`` counts a full-size case this way in seconds)
    """

    def __init__(self, platform: Platform | None = None, kernels: Iterable[Kernel | str] = (), *,
                 timestamps: bool = True, trace: bool | str = False, sanitize: bool = False,
                 schedule: str = "fifo", seed: int = 0, jitter_us: float = 0.0,
                 inline: bool = False, record: bool | str = False, dry_run: bool = False,
                 semantics: str = "sequential", skew: str | None = None, skew_us: float = 100.0) -> None:
        if platform is None:
            platform = Platform()
        if not isinstance(platform, Platform):
            raise TypeError(f"Device(platform=...) expects a Platform, got {type(platform).__name__}")
        if schedule not in ("fifo", "random"):
            raise ValueError(f"Device(schedule={schedule!r}): expected 'fifo' or 'random'")
        if not isinstance(seed, int) or isinstance(seed, bool):
            raise TypeError(f"Device(seed=...) expects an int, got {type(seed).__name__}")
        if not isinstance(jitter_us, (int, float)) or jitter_us < 0:
            raise ValueError(f"Device(jitter_us={jitter_us!r}): expected a number >= 0")
        if semantics not in ("sequential", "reference"):
            raise ValueError(f"Device(semantics={semantics!r}): expected 'sequential' or 'reference'")
        if skew not in SKEW_CHOICES:
            raise ValueError(f"Device(skew={skew!r}): expected None, 'aic', 'aiv0', 'aiv1' or 'random'")
        if not isinstance(skew_us, (int, float)) or isinstance(skew_us, bool) or not 0 <= skew_us <= 1e6:
            raise ValueError(f"Device(skew_us={skew_us!r}): expected a number of microseconds in 0..1e6")
        self.platform = platform
        self.semantics = semantics
        self.kernels = resolve(kernels)
        self._kernel_index = {k: i for i, k in enumerate(self.kernels)}
        self._closed = False
        self._lost: str | None = None
        self._running = False
        self._buffers: weakref.WeakSet[Buffer] = weakref.WeakSet()
        self._pending_free: list[tuple[int, int]] = []
        self._runs = 0
        self._host_busy_s = 0.0                  # time runs spent in the orchestration, not waiting
        self._last_run: dict = {}
        t0 = time.perf_counter()
        engine: type[Engine] = SequentialEngine if inline else ProcessEngine
        self._trace_path = trace if isinstance(trace, (str, os.PathLike)) else None
        self._trace: TraceData | None = None
        self._record_path = record if isinstance(record, (str, os.PathLike)) else None
        for what, path in (("trace", self._trace_path), ("record", self._record_path)):
            if path is not None:
                _check_writable(path, f"Device({what}={str(path)!r})")
        self._owner_pid = os.getpid()
        try:
            with no_interrupts():      # a Ctrl-C now is raised once the device is whole
                self._engine: Engine = engine(platform, self.kernels, timestamps=timestamps, trace=bool(trace),
                                      sanitize=sanitize, schedule=schedule, seed=seed, jitter_us=jitter_us,
                                      record=bool(record), dry_run=dry_run, semantics=semantics,
                                      skew=skew, skew_us=float(skew_us))
                self._finalizer = weakref.finalize(self, self._engine.stop)
        except BaseException:
            if hasattr(self, "_finalizer"):      # whole, then interrupted: nobody will get to close it
                with no_interrupts():
                    self._finalizer()
            raise
        self.start_seconds = time.perf_counter() - t0
        self._arena = self._engine.arena
        self._writer = self._engine.writer
        self._recorder = Recorder(self.kernels, platform, semantics) if record else None
        self._writer.recorder = self._recorder

    # -- lifecycle -------------------------------------------------------------------------------
    def __enter__(self) -> Device:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Stop every process and release every segment (idempotent). A device made with
        ``trace="path"`` writes its trace first."""
        if self._closed or os.getpid() != self._owner_pid:
            return
        try:
            if not self._lost:
                self._write_outputs()
        finally:
            # Whatever happened above, the processes stop and the segments go: close never fails
            # half-way and never replaces the exception a ``with`` body is raising.
            with no_interrupts():      # a Ctrl-C now is raised once the device is gone
                self._closed = True
                for b in list(self._buffers):
                    b.alive = False
                    b.why_dead = "the device was closed"
                self._finalizer()

    def _write_outputs(self) -> None:
        """The trace and graph files asked for at construction; a failure is a warning, not an
        exception (close must always complete)."""
        for path, write in ((self._trace_path, self.write_trace), (self._record_path, self._save_graph)):
            if not path:
                continue
            try:
                write(path)
            except Exception as e:  # noqa: BLE001 - report and go on closing
                warnings.warn(f"Device.close(): could not write {path}: {type(e).__name__}: {e}",
                              RuntimeWarning, stacklevel=3)

    def _save_graph(self, path: str) -> str:
        return self.graph().save(path)

    @property
    def closed(self) -> bool:
        return self._closed

    def _check_open(self, what: str) -> None:
        if os.getpid() != self._owner_pid:
            raise DeviceClosed(f"{what}: this device belongs to process {self._owner_pid}; a process "
                               "forked from it cannot use it (make a new Device there)")
        if self._closed:
            why = f" (lost: {self._lost})" if self._lost else ""
            raise DeviceClosed(f"{what}: the device is closed{why}")

    def _lose(self, err: DeviceLost) -> None:
        self._lost = str(err).splitlines()[0]
        self.close()

    @property
    def pids(self) -> list[int]:
        """Process ids: the scheduler first, then the workers in core order."""
        return list(self._engine.pids)

    @property
    def segment_names(self) -> list[str]:
        return list(self._engine.segment_names)

    # -- memory ----------------------------------------------------------------------------------
    def _new_host_buffer(self, nbytes: int, what: str) -> Buffer:
        self._check_open(what)
        self._reclaim()
        off = self._arena.alloc(nbytes)
        if off is None:
            raise DeviceMemoryError(
                f"{what}: GM exhausted: {fmt_bytes(nbytes)} requested, largest free block "
                f"{fmt_bytes(self._arena.largest_free())}, {fmt_bytes(self._arena.used)} of "
                f"{fmt_bytes(self._arena.size)} in use; free tensors (dev.free) or raise "
                "Platform(gm_bytes=...)")
        try:
            self._engine.reserve(off, nbytes)
        except OSError as e:
            self._arena.free(off, nbytes)
            raise DeviceMemoryError(f"{what}: /dev/shm cannot hold {fmt_bytes(nbytes)} more: {e}; "
                                    "free tensors or use a smaller Platform(gm_bytes=...)") from e
        buf = Buffer(self, nbytes, off, False)
        self._buffers.add(buf)
        weakref.finalize(buf, self._pending_free.append, (off, nbytes))
        return buf

    def _reclaim(self) -> None:
        """Return GM of host tensors nobody references, once no task can still be using it."""
        if self._pending_free and not self._outstanding():
            while self._pending_free:
                self._arena.free(*self._pending_free.pop())

    def empty(self, shape: Any, dtype: Any = np.float32) -> Tensor:
        """A host tensor in GM; contents undefined."""
        shape = check_shape(shape, "dev.empty(shape=...)")
        dt = check_dtype(dtype, "dev.empty(dtype=...)")
        buf = self._new_host_buffer(math.prod(shape) * dt.itemsize, "dev.empty()")
        return Tensor.whole(buf, shape, dt)

    def zeros(self, shape: Any, dtype: Any = np.float32) -> Tensor:
        t = self.empty(shape, dtype)
        self._view(t, "dev.zeros()")[...] = 0
        return t

    def to_device(self, array: Any) -> Tensor:
        """Copy a numpy array into a new host tensor in GM."""
        if not isinstance(array, np.ndarray):
            if isinstance(array, Tensor):
                raise TypeError("dev.to_device(array): got a device Tensor; it is already on the "
                                "device (use dev.to_host to read it)")
            try:
                array = np.asarray(array)
            except Exception as e:  # noqa: BLE001
                raise TypeError(f"dev.to_device(array): cannot make a numpy array from "
                                f"{type(array).__name__}: {e}") from None
        if array.dtype == object:
            raise TypeError("dev.to_device(array): object arrays cannot live in device memory; "
                            "convert to a numeric dtype first")
        shape = check_shape(array.shape, "dev.to_device(array)")
        dt = check_dtype(array.dtype, "dev.to_device(array)")
        t = Tensor.whole(self._new_host_buffer(array.nbytes, "dev.to_device()"), shape, dt)
        np.copyto(self._view(t, "dev.to_device()"), array)
        return t

    def to_host(self, tensor: Tensor) -> np.ndarray:
        """A numpy copy of a tensor, after every task submitted so far has finished."""
        return np.array(self.host_view(tensor, "dev.to_host()"), copy=True)

    def host_view(self, tensor: Tensor, what: str = "dev.host_view()") -> np.ndarray:
        """A writable numpy view of a tensor's bytes in GM (zero copy), e.g. to fill a large
        input in place. Waits for submitted tasks first; do not use it across a later run. The
        view stays readable after the device is closed (it keeps its memory mapped)."""
        if not isinstance(tensor, Tensor):
            raise TypeError(f"{what}: expected a device Tensor, got {type(tensor).__name__}")
        self._check_open(what)
        if not tensor.buf.alive:
            raise ValueError(f"{what}: {tensor!r} is no longer valid: {tensor.buf.why_dead}")
        if tensor.buf.device is not self:
            raise ValueError(f"{what}: the tensor belongs to another device")
        if tensor.buf.gm is None:
            raise ValueError(f"{what}: runtime tensor {tensor!r} has not been written by any task")
        if self._outstanding():
            self._wait_completed()
        return self._view(tensor, what)

    def _view(self, t: Tensor, what: str) -> np.ndarray:
        w = t.packed(C.DIR_IN)
        keep = [d for d in range(len(t._fshape)) if not t._drop[d]]
        shape = [w[C.A_SHAPE + d] for d in keep]
        strides = [w[C.A_STRIDES + d] for d in keep]
        # numpy keeps a reference to its buffer's underlying object (the mmap), not an export of
        # it, so an array made over GM directly would let close() unmap the memory under it (a
        # segfault on the next use). A ctypes array over the range holds an export and is what
        # numpy keeps: the mapping cannot go while any view of it is alive.
        lo, n = w[C.A_LO], w[C.A_HI] - w[C.A_LO]
        if n <= 0:
            return np.empty(shape, t.dtype)
        return np.ndarray(shape, t.dtype, (ctypes.c_char * n).from_buffer(self._engine.gm_buf, lo), 0, strides)

    def _element(self, t: Tensor) -> np.ndarray:
        """A writable 0-d view of the one element ``t`` covers (rt.get/set_tensor_data)."""
        lo = t.packed(C.DIR_IN)[C.A_LO]
        return np.ndarray((), t.dtype, self._engine.gm_buf, lo)

    def free(self, tensor: Tensor) -> None:
        """Release a host tensor's GM now (it is also released when no view of it is left)."""
        b = tensor.buf
        if b.runtime:
            raise ValueError("dev.free(): runtime tensors are released by their scope, not freed")
        if b.alive:
            if self._outstanding():
                self._wait_completed()
            b.alive = False
            b.why_dead = "it was freed with dev.free()"
        self._reclaim()

    # -- running ---------------------------------------------------------------------------------
    def _outstanding(self) -> bool:
        return not self._closed and self._engine.outstanding()

    def _wait_completed(self) -> None:
        self._guarded(self._engine.wait_completed)

    def synchronize(self) -> None:
        """Wait for every submitted task to finish (raises a pending kernel error)."""
        self._check_open("dev.synchronize()")
        self._wait_completed()
        self._engine.check_error()

    def _guarded(self, fn: Callable[[], Any]) -> Any:
        try:
            return fn()
        except DeviceLost as e:
            self._lose(e)
            raise

    def run(self, orchestration: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Run ``orchestration(rt, *args, **kwargs)`` in this process; its tasks run on the
        device. Returns the orchestration's return value once every task has finished."""
        self._check_open("dev.run()")
        if not callable(orchestration):
            raise TypeError(f"dev.run(orchestration): expected a function, got "
                            f"{type(orchestration).__name__}")
        if self._running:
            raise RuntimeError("dev.run(): a run is already in progress on this device "
                               "(runs do not nest; call rt.submit from the running orchestration)")
        self._running = True
        rt = Runtime(RunSession(self, self._writer, self.kernels, self._kernel_index, self.platform.heap_bytes,
                                self._wait_completed, self.to_host, self.platform.blocks,
                                lambda tid: self._guarded(lambda: self._engine.wait_probe(tid)),
                                self._element))
        w = self._writer
        t0 = time.perf_counter()
        first = w.next_tid
        if self._recorder:
            self._recorder.begin_run(first)
        if self._engine.tracing:
            self._take_trace(phases=False)   # what happened before this run is not the run's time
        wait0 = self._engine.wait_ns
        self._engine.begin_run()
        try:
            rt.begin_run()
            result = orchestration(rt, *args, **kwargs)
            rt.end_run()
            self._guarded(self._engine.wait_retired)
            self._engine.check_error()
            rt.check_misuse()
            for text in self._guarded(self._engine.notices):
                warnings.warn(f"ptoemu: {text}", RuntimeWarning, stacklevel=2)
        except DeviceLost as e:
            self._lose(e)
            raise
        except (DeviceError, KeyboardInterrupt) as e:
            self._abort(rt, e)
            raise
        except BaseException as e:
            if os.getpid() != self._owner_pid:
                raise                # a forked copy left the orchestration: the device is not its own
            # The orchestration itself failed (a bug, a rejected submit): what it submitted still
            # runs to completion before the exception reaches the caller; nothing is lost.
            try:
                rt.close_scopes(ScopeEnd.ENDED)
                self._guarded(self._engine.wait_retired)
                self._engine.check_error()
            except BaseException as e2:  # noqa: BLE001 - report the orchestration's error, with this
                if not isinstance(e2, DeviceLost):
                    self._abort(rt, e2)
                if isinstance(e2, DeviceError):
                    e.add_note(f"The device failed in this run as well: {str(e2).splitlines()[0]}")
                    if e.__cause__ is None:
                        e.__cause__ = e2
            raise
        finally:
            self._running = False
            rt.active = False
            self._engine.end_run()
        wall = time.perf_counter() - t0
        if self._engine.tracing or self._recorder:
            self._take_trace([(int(t0 * 1e9), time.perf_counter_ns())])
        if self._recorder:
            self._recorder.end_run(w.next_tid)
        self._runs += 1
        self._host_busy_s += wall - (self._engine.wait_ns - wait0) / 1e9
        self._last_run = {"wall_s": wall, "records": w.next_tid - first, "tasks": rt.tasks,
                          "tasks_per_s": rt.tasks / wall if wall > 0 else 0.0,
                          "host_submit_s": wall - (self._engine.wait_ns - wait0) / 1e9,
                          "host_wait_s": (self._engine.wait_ns - wait0) / 1e9}
        self._reclaim()
        return result

    def _abort(self, rt: Runtime, exc: BaseException) -> None:
        """The run failed: close its scopes, have the scheduler discard what has not run, and
        keep the device usable -- or shut it down if that is no longer possible."""
        rt.close_scopes(ScopeEnd.RUN_FAILED)
        if self._closed or os.getpid() != self._owner_pid:
            return                   # (a forked copy must not abort its parent's run)
        timeout = None
        if isinstance(exc, KeyboardInterrupt):
            timeout = ABORT_TIMEOUT_ON_INTERRUPT
        elif isinstance(exc, DeadlockError):           # after a stall a kernel is likely stuck
            timeout = min(self.platform.stall_timeout, ABORT_TIMEOUT_ON_STALL)
        try:
            self._engine.abort(timeout)
        except DeviceLost as e:
            self._lose(e)
            exc.add_note(f"The device was lost while the run was being aborted: {e}")
        except BaseException:  # noqa: BLE001 - a stuck kernel or a second Ctrl-C: shut down
            self.close()
            exc.add_note("A task was still running when the run was aborted, so the device was shut "
                         "down (its processes stopped); make a new Device to go on.")

    # -- tracing ---------------------------------------------------------------------------------
    def _take_trace(self, runs: list[tuple[int, int]] | None = None, phases: bool = True) -> None:
        part = self._guarded(self._engine.take_trace)
        if part is None:
            return
        if not phases:
            part.phase_ns = {}
        if self._recorder:
            self._recorder.add_edges(part.edges)
            self._recorder.mark_skipped(part.pred_false)
            if part.counted is not None:
                self._recorder.add_counted(part.counted)
        if not self._engine.tracing:
            return
        part.runs = runs or []
        if self._trace is None:
            self._trace = part
        else:
            self._trace.extend(part)

    def trace(self, clear: bool = False) -> TraceData:
        """Everything traced so far (needs ``Device(..., trace=True)``); ``clear`` starts afresh."""
        self._check_open("dev.trace()")
        if not self._engine.tracing:
            raise RuntimeError("dev.trace(): this device was made without Device(..., trace=True)")
        self._take_trace()
        data = self._trace
        assert data is not None
        if clear:
            self._trace = None
        return data

    def graph(self) -> Graph:
        """The task graph of every run so far (needs ``Device(..., record=...)``)."""
        self._check_open("dev.graph()")
        if self._recorder is None:
            raise RuntimeError("dev.graph(): this device was made without Device(..., record=True)")
        return self._recorder.finish()

    def write_trace(self, path: str) -> str:
        """Write the trace as Chrome Trace Event JSON (open it in https://ui.perfetto.dev)."""
        write_chrome(self.trace(), str(path))
        return str(path)

    # -- reporting -------------------------------------------------------------------------------
    def progress(self) -> tuple[int, int]:
        """(records finished, records submitted) so far -- safe to call from another thread."""
        if self._closed:
            return (0, 0)
        return self._engine.finished(), self._writer.next_tid

    def stats(self) -> Stats:
        """Task counts per kernel, runtime (builtin) tasks, per-phase times, last run's rate."""
        self._check_open("dev.stats()")
        rep = self._guarded(self._engine.stats)
        rep["device"] = {"blocks": self.platform.blocks, "cores": self.platform.cores,
                         "task_window": self.platform.task_window,
                         "heap_bytes": self.platform.heap_bytes, "start_s": self.start_seconds}
        rep["last_run"] = dict(self._last_run)
        rep["runs"] = self._runs
        rep["submitted"] = self._writer.submitted
        rep["host"] = {"records": self._writer.submitted, "submit_s": self._host_busy_s,
                       "waits": self._engine.waits, "wait_s": self._engine.wait_ns / 1e9}
        return Stats(rep)

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        return f"<Device {self.platform.name} blocks={self.platform.blocks} {state}>"
