"""Bring-up and tear-down of a device's processes and segments.

    DeviceProcesses(platform, kernels, options)
      1. create the control and GM segments (anonymous memfd, see device/shm.py)
      2. fork the scheduler and 3*B workers from this (host) process -- fork start method,
         pinned explicitly: children inherit the mappings, the semaphores and the kernel table,
         and BLAS is limited to one thread per worker while they fork
      3. wait until every child has written its pid (or report the one that failed to start)
    stop()   STOP flag + one token per semaphore, join briefly, SIGKILL stragglers, release the
             processes' pipes, unmap and close the segments

What guarantees that nothing outlives the host:
  - ``weakref.finalize`` runs ``stop`` if the host forgets to close the device;
  - Ctrl-C cannot land half-way through a start or a stop: SIGINT is held back (``no_interrupts``)
    until the device is whole or gone, then delivered;
  - a child whose host disappeared (kill -9, SIGHUP, SIGTERM) exits on its own: the scheduler
    polls getppid and stops the workers, which poll it too; children ignore SIGINT, SIGHUP and
    SIGQUIT, so a closed terminal or Ctrl-\\ reaches the host, which decides;
  - the segments are anonymous: the memory goes with the last process that maps it;
  - a process made by ``os.fork()`` in user code inherits neither the duty nor the right to stop
    the device: ``stop`` does nothing outside the owner, and multiprocess forgets our children
    there (it would otherwise terminate them when the fork exits).
"""

from __future__ import annotations

import contextlib
import gc
import os
import signal
import tempfile
import threading
import time
import weakref
from collections.abc import Iterator

import multiprocess
from multiprocess import process as mp_process
from threadpoolctl import threadpool_limits

from device import layout as L
from device import scheduler, worker
from device.codec import DeviceContext, SchedulerFailure, core_name, read_report
from device.ordering import observe, publish
from device.shm import Segment
from host.errors import DeviceLost
from host.platform import Platform
from kernels.registry import Kernel

MP = multiprocess.get_context("fork")     # pinned: workers must inherit mappings and kernels
START_TIMEOUT = 30.0
_LIVE: weakref.WeakSet[DeviceProcesses] = weakref.WeakSet()


@contextlib.contextmanager
def no_interrupts() -> Iterator[None]:
    """Hold Ctrl-C back while resources are being made or released, so it cannot leave a
    half-started or half-stopped device; a Ctrl-C that came meanwhile is raised on the way out.

    The Python handler is swapped rather than the signal blocked: a signal sent to the process
    lands on any thread that does not block it, and Python then raises KeyboardInterrupt in the
    main thread whatever that thread's mask says."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    held: list[tuple] = []
    old = signal.signal(signal.SIGINT, lambda signum, frame: held.append((signum, frame)))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, old)
        if held and callable(old):
            old(*held[0])                  # the default handler raises KeyboardInterrupt here


def _forget_in_fork_child() -> None:
    for procs in list(_LIVE):
        for p in procs.procs:
            mp_process._children.discard(p)


os.register_at_fork(after_in_child=_forget_in_fork_child)


def signame(code: int | None) -> str:
    if code is None:
        return "still running"
    if code < 0:
        try:
            return f"signal {signal.Signals(-code).name}"
        except ValueError:
            return f"signal {-code}"
    return f"exit code {code}"


class DeviceProcesses:
    """The segments, semaphores and processes of one device."""

    def __init__(self, platform: Platform, kernels: list[Kernel], *, timestamps: bool = True,
                 trace: bool = False, sanitize: bool = False, schedule: str = "fifo", seed: int = 0,
                 jitter_us: float = 0.0, record: bool = False, semantics: str = "sequential",
                 skew: str | None = None, skew_us: float = 0.0) -> None:
        self.platform = platform
        lay = self.layout = L.Layout(platform.cores, platform.task_window, platform.mailbox_depth,
                                     platform.heap_bytes)
        self.host_bytes = platform.host_bytes()
        self.heap_base = self.host_bytes
        self.segments: list[Segment] = []
        self.procs: list = []
        self.pids: list[int] = []
        self.stopped = False
        self.owner_pid = os.getpid()
        try:
            self.ctrl = Segment("ctrl", lay.nbytes)
            self.segments.append(self.ctrl)
            self.gm = Segment("gm", self.host_bytes + platform.heap_bytes)
            self.segments.append(self.gm)
            # The whole control segment is hot from the first task: fault it in once, here
            # (a first touch of shared memory costs 10x a later one).
            self.ctrl.prefault(0, lay.nbytes)
            self.gm.reserve(self.heap_base, platform.heap_bytes)
        except OSError as e:
            self.stop()
            raise MemoryError(f"cannot create the device's shared memory "
                              f"({lay.nbytes + self.host_bytes + platform.heap_bytes} bytes): {e}; "
                              "use a smaller Platform(heap_bytes=..., gm_bytes=..., task_window=...)"
                              ) from e
        ctrl_buf = self.ctrl.buf
        self.q = ctrl_buf.cast("q")
        self.ctx = DeviceContext(
            layout=lay, q=self.q, f=ctrl_buf.cast("d"), ctrl_buf=ctrl_buf, gm_buf=self.gm.buf,
            sched_sem=MP.Semaphore(0), host_sem=MP.Semaphore(0),
            worker_sems=[MP.Semaphore(0) for _ in range(lay.ncores)],
            wait_sems=[MP.Semaphore(0) for _ in range(lay.ncores)],
            kernel_parts=[k.parts for k in kernels],
            kernel_names=[k.name for k in kernels],
            spin_ns=int(platform.spin_us * 1000), host_pid=os.getpid(),
            timestamps=timestamps or trace, trace=trace, record=record, sanitize=sanitize,
            trace_dir=tempfile.gettempdir(),
            schedule=schedule, seed=seed, jitter_ns=int(jitter_us * 1000),
            reference=semantics == "reference", skew=skew, skew_us=skew_us)
        self._fork()

    def _fork(self) -> None:
        lay = self.layout
        _LIVE.add(self)
        gc.collect()
        gc.freeze()           # children never touch (copy) the host's existing objects in a GC
        try:
            with threadpool_limits(limits=1):
                p = MP.Process(target=scheduler.run, args=(self.ctx,), name="ptoemu-scheduler",
                               daemon=True)
                p.start()
                self.procs.append(p)
                for c in range(lay.ncores):
                    p = MP.Process(target=worker.run, args=(self.ctx, c), daemon=True,
                                   name=f"ptoemu-{core_name(c)}")
                    p.start()
                    self.procs.append(p)
        except BaseException:
            self.stop()
            raise
        finally:
            gc.unfreeze()
        self.pids = [p.pid for p in self.procs]
        self._wait_started()

    def _wait_started(self) -> None:
        q, lay = self.q, self.layout
        pid_words = [lay.g(L.G_SCHED_PID)] + [lay.wline(c) + L.W_PID for c in range(lay.ncores)]
        deadline = time.monotonic() + START_TIMEOUT
        while not all(observe(q, w) for w in pid_words):
            dead = self.dead()
            if dead:
                self.stop()
                raise DeviceLost(f"device failed to start: {dead}")
            if time.monotonic() > deadline:
                self.stop()
                raise DeviceLost(f"device failed to start within {START_TIMEOUT:.0f} s")
            time.sleep(0.001)

    def role(self, i: int) -> str:
        return "the scheduler" if i == 0 else f"worker {core_name(i - 1)}"

    def dead(self) -> str | None:
        """Describe the first process that has exited, or None if all are alive."""
        if self.stopped:
            return None
        for i, p in enumerate(self.procs):
            if p.exitcode is not None:
                what = f"{self.role(i)} (pid {p.pid}) died with {signame(p.exitcode)}"
                if i > 0:
                    running = observe(self.q, self.layout.wline(i - 1) + L.W_RUNNING)
                    if running:
                        what += f" while running task {running - 1}"
                else:
                    rep = read_report(self.q, self.layout.err_area(self.layout.ncores), clear=False)
                    if isinstance(rep, SchedulerFailure):
                        what += f": {rep.error}\n{rep.traceback}"
                return what
        return None

    def stop(self, grace: float = 1.0) -> None:
        """Stop every process and release every segment. Idempotent; safe on a half-built device;
        does nothing in a process forked from the owner."""
        if self.stopped or os.getpid() != self.owner_pid:
            return
        with no_interrupts():
            self._stop(grace)

    def _stop(self, grace: float) -> None:
        self.stopped = True
        if self.procs:
            try:
                publish(self.q, self.layout.g(L.G_STOP), 1)
                self.ctx.sched_sem.release()
                for s in self.ctx.worker_sems + self.ctx.wait_sems:
                    s.release()
            except (ValueError, AttributeError, TypeError):
                pass
            deadline = time.monotonic() + grace
            for p in self.procs:
                p.join(max(0.0, deadline - time.monotonic()))
            for p in self.procs:
                if p.exitcode is None:
                    p.kill()
            for p in self.procs:
                p.join(5.0)
                if p.exitcode is not None:
                    p.close()             # its sentinel pipe: close releases every OS resource
        # Release our views before unmapping; a user's leftover numpy view keeps its mapping
        # alive (Segment.close then leaves the unmap to the garbage collector).
        if hasattr(self, "ctx"):
            for v in (self.ctx.q, self.ctx.f):
                if v is not None:
                    v.release()
            self.ctx.q = self.ctx.f = self.ctx.ctrl_buf = self.ctx.gm_buf = None
        self.q = None
        for s in self.segments:
            s.close()
