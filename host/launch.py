"""Bring-up and tear-down of a device's processes and segments.

    DeviceProcesses(platform, kernels, options)
      1. create the control and GM segments (named POSIX shm, see device/shm.py)
      2. fork the scheduler and 3*B workers from this (host) process -- fork start method,
         pinned explicitly: children inherit the mappings, the semaphores and the kernel table,
         and BLAS is limited to one thread per worker while they fork
      3. wait until every child has written its pid (or report the one that failed to start)
    stop()   STOP flag + one token per semaphore, join briefly, SIGKILL stragglers, unlink

``weakref.finalize`` runs ``stop`` if the host forgets to close the device (or exits with an
exception); children are daemonic, so the interpreter's own exit hook terminates them too; and a
child whose host disappeared exits on its own within a second (scheduler/worker poll getppid).
"""

from __future__ import annotations

import gc
import os
import signal
import tempfile
import time
from types import SimpleNamespace

import multiprocess
from threadpoolctl import threadpool_limits

from device import layout as L
from device import scheduler, worker
from device.shm import Segment, read_report
from host.errors import DeviceLost
from host.platform import Platform
from kernels.registry import Kernel

MP = multiprocess.get_context("fork")     # pinned: workers must inherit mappings and kernels
START_TIMEOUT = 30.0


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
                 jitter_us: float = 0.0) -> None:
        self.platform = platform
        lay = self.layout = L.Layout(platform.cores, platform.task_window, platform.mailbox_depth)
        self.host_bytes = platform.host_bytes()
        self.heap_base = self.host_bytes
        self.segments: list[Segment] = []
        self.procs: list = []
        self.stopped = False
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
            raise MemoryError(f"cannot create the device's shared memory in /dev/shm "
                              f"({lay.nbytes + self.host_bytes + platform.heap_bytes} bytes): {e}; "
                              "use a smaller Platform(heap_bytes=..., gm_bytes=..., task_window=...)"
                              ) from e
        ctrl_buf = self.ctrl.buf
        self.q = ctrl_buf.cast("q")
        self.ctx = SimpleNamespace(
            layout=lay, q=self.q, f=ctrl_buf.cast("d"), ctrl_buf=ctrl_buf, gm_buf=self.gm.buf,
            sched_sem=MP.Semaphore(0), host_sem=MP.Semaphore(0),
            worker_sems=[MP.Semaphore(0) for _ in range(lay.ncores)],
            kernel_parts=[k.parts for k in kernels],
            kernel_names=[k.name for k in kernels],
            spin_ns=int(platform.spin_us * 1000), host_pid=os.getpid(),
            segment_names=[s.name for s in self.segments],
            timestamps=timestamps or trace, trace=trace, sanitize=sanitize,
            trace_dir=tempfile.gettempdir(),
            schedule=schedule, seed=seed, jitter_ns=int(jitter_us * 1000))
        self._fork()

    def _fork(self) -> None:
        lay = self.layout
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
                                   name=f"ptoemu-{worker.core_name(c)}")
                    p.start()
                    self.procs.append(p)
        except BaseException:
            self.stop()
            raise
        finally:
            gc.unfreeze()
        self._wait_started()

    def _wait_started(self) -> None:
        q, lay = self.q, self.layout
        pid_words = [lay.g(L.G_SCHED_PID)] + [lay.wline(c) + L.W_PID for c in range(lay.ncores)]
        deadline = time.monotonic() + START_TIMEOUT
        while not all(q[w] for w in pid_words):
            dead = self.dead()
            if dead:
                self.stop()
                raise DeviceLost(f"device failed to start: {dead}")
            if time.monotonic() > deadline:
                self.stop()
                raise DeviceLost(f"device failed to start within {START_TIMEOUT:.0f} s")
            time.sleep(0.001)

    def role(self, i: int) -> str:
        return "the scheduler" if i == 0 else f"worker {worker.core_name(i - 1)}"

    def dead(self) -> str | None:
        """Describe the first process that has exited, or None if all are alive."""
        for i, p in enumerate(self.procs):
            if p.exitcode is not None:
                what = f"{self.role(i)} (pid {p.pid}) died with {signame(p.exitcode)}"
                if i > 0:
                    running = self.q[self.layout.wline(i - 1) + L.W_RUNNING]
                    if running:
                        what += f" while running task {running - 1}"
                else:
                    rep = read_report(self.q, self.layout.err_area(self.layout.ncores), clear=False)
                    if rep:
                        what += f": {rep.get('error')}\n{rep.get('traceback', '')}"
                return what
        return None

    def stop(self, grace: float = 1.0) -> None:
        """Stop every process and unlink every segment. Idempotent; safe on a half-built device."""
        if self.stopped:
            return
        self.stopped = True
        if self.procs:
            try:
                self.q[self.layout.g(L.G_STOP)] = 1
                self.ctx.sched_sem.release()
                for s in self.ctx.worker_sems:
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
        for s in self.segments:
            s.unlink()
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
