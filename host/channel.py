"""The host's side of the control segment: how it waits, and how it hears about trouble.

    host                                             scheduler
    ────                                             ─────────
    wait(kind, value, ready):
      yield-spin while ready() is false (bounded)
      WAIT_KIND/VALUE = what it needs ─────────────▶ after each step: fence; if RETIRED /
      fence; check ready() once more                  COMPLETED / FREED reached the value,
      block on host_sem (0.1 s slices) ◀──────────── post host_sem; also when it goes idle
      on every wake-up or slice:
        ERROR set?            -> KernelError / DeviceLost (scheduler crashed)
        scheduler idle with everything ingested and ready() still false
                              -> DeadlockError (nothing can ever change: the host is the one
                                 holding the resources it waits for), with a diagnosis
        a child process gone -> DeviceLost
        no progress for stall_timeout -> DeadlockError with the scheduler's diagnosis

Both sides store, fence, then load (a Dekker handshake, device/ordering.py), so a wake-up cannot be
lost; the 0.1 s slices only bound how fast a dead process is noticed.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable

import psutil

from device import layout as L
from device.codec import Diagnosis, SchedulerFailure, TaskFailure, clear_report, read_report
from device.ordering import fence, observe, publish
from host.errors import DeadlockError, DeviceLost, KernelError
from host.launch import DeviceProcesses

SLICE = 0.1          # seconds between liveness checks while blocked
SPIN_NS = 50_000     # yield-spin before blocking


def format_diagnosis(diag: object) -> str:
    """The scheduler's state (a codec.Diagnosis) as a few readable lines."""
    if not isinstance(diag, Diagnosis):
        return f"  scheduler state: {diag}"
    lines = [f"  scheduler: {diag.ingested} of {diag.head} records read, {diag.completed} "
             f"finished, {diag.retired} retired, {diag.in_flight} in flight, {diag.ready} ready"
             + (", discarding" if diag.discarding else "")]
    for r in diag.running:
        since = f" for {r.for_s:.1f} s" if r.for_s is not None else ""
        blocked = f" -- blocked: {r.waiting}" if r.waiting else ""
        lines.append(f"  running: task {r.tid} ({r.kernel}) on {r.core}{since}{blocked}")
    for t in diag.oldest[:8]:
        lines.append(f"  unretired: task {t.tid} ({t.kernel}) {t.state}, waits for {t.fanin} task(s)")
    for a in diag.heap_allocations[:4]:
        lines.append(f"  heap held by task {a.tid}'s allocation: {a.users} unfinished user(s)"
                     + (", its tensors' scope still open" if a.held_by_scope else ""))
    return "\n".join(lines)


class Channel:
    def __init__(self, procs: DeviceProcesses) -> None:
        self.procs = procs
        self.lay = procs.layout
        self.q = procs.q
        self.ctx = procs.ctx
        self.host_sem = procs.ctx.host_sem
        self.sched_sem = procs.ctx.sched_sem
        self.stall_timeout = procs.platform.stall_timeout
        self._req = 0
        self.g = {n: self.lay.g(n) for n in range(L.N_GLOBALS)}
        self.wait_ns = 0              # time the host spent waiting (back-pressure, sync)
        self.waits = 0
        self.first_error: tuple[dict, int] | None = None    # (report, others) of this run's failure

    # -- waiting ---------------------------------------------------------------------------------
    def wait(self, kind: int, value: int, ready: Callable[[], bool], what: str,
             deadlock: Callable[[], str] | None = None, timeout: float | None = None,
             errors: bool = True, diagnose: bool = True) -> None:
        """Block until ``ready()``; ``what`` names the wait in errors. ``deadlock()`` explains why
        the wait can never end when the scheduler has gone idle; None disables that check. After
        ``timeout`` (default: the stall timeout) without progress: a DeadlockError with the
        scheduler's diagnosis, or -- ``diagnose=False``, for waits on the scheduler itself -- a
        TimeoutError (asking an unresponsive scheduler for a diagnosis would wait forever)."""
        if ready():
            return
        t0 = time.perf_counter_ns()
        self.waits += 1
        yield_ = os.sched_yield
        q, g = self.q, self.g
        while time.perf_counter_ns() - t0 < SPIN_NS:
            yield_()
            if ready():
                self.wait_ns += time.perf_counter_ns() - t0
                return
            if errors and observe(q, g[L.G_ERROR]):
                break
        progress = (observe(q, g[L.G_COMPLETED]), observe(q, g[L.G_RETIRED]))
        last_move = time.monotonic()
        limit = self.stall_timeout if timeout is None else timeout
        try:
            while True:
                publish(q, g[L.G_WAIT_VALUE], value)
                publish(q, g[L.G_WAIT_KIND], kind)
                fence()
                if ready():
                    return
                if errors:
                    self.check_error()
                if deadlock is not None and observe(q, g[L.G_IDLE]) == q[g[L.G_HEAD]] + 1:
                    if ready():      # the scheduler's last retirement may have just landed
                        return
                    raise DeadlockError(f"{what}: {deadlock()}")
                if self.host_sem.acquire(True, SLICE):
                    while self.host_sem.acquire(False):
                        pass
                    continue
                dead = self.procs.dead()
                if dead:
                    raise DeviceLost(f"{what}: {dead}; the device is shut down")
                now_progress = (observe(q, g[L.G_COMPLETED]), observe(q, g[L.G_RETIRED]))
                if now_progress != progress:
                    progress, last_move = now_progress, time.monotonic()
                elif limit and time.monotonic() - last_move > limit:
                    if not diagnose:
                        raise TimeoutError(f"{what}: no answer within {limit:g} s; {self.sched_state()}")
                    raise DeadlockError(self.stall_message(what, limit))
        finally:
            publish(q, g[L.G_WAIT_KIND], L.WAIT_NONE)
            self.wait_ns += time.perf_counter_ns() - t0

    def sched_state(self) -> str:
        """What the OS says the scheduler process is doing (it may be stopped, say by SIGSTOP)."""
        pid = self.procs.pids[0] if self.procs.pids else 0
        try:
            return f"the scheduler (pid {pid}) is {psutil.Process(pid).status()}"
        except (psutil.Error, ValueError):
            return f"the scheduler (pid {pid}) cannot be inspected"

    def stall_message(self, what: str, limit: float) -> str:
        try:
            diag = self.request(L.REQ_DIAG, timeout=1.0)
        except DeviceLost:
            raise
        except Exception as e:  # noqa: BLE001 - a diagnosis is best effort
            diag = f"(the scheduler did not answer: {e})"
        blocked = [r for r in diag.running if r.waiting] if isinstance(diag, Diagnosis) else []
        head = "".join(f"\n  kernel {r.kernel} (task {r.tid}) on {r.core} is blocked: {r.waiting}" for r in blocked)
        return (f"{what}: no task finished or retired for {limit:.0f} s "
                f"(Platform(stall_timeout=...)); a kernel may be stuck or the graph cannot "
                f"progress.{head}\n{format_diagnosis(diag)}")

    # -- errors ----------------------------------------------------------------------------------
    def check_error(self) -> None:
        """Raise what went wrong on the device, if anything. The first kernel failure of a run is
        kept: every later check in the same run raises it again (a caught KernelError does not
        make the run usable: it was aborted), until ``abort`` has cleaned up."""
        err = observe(self.q, self.g[L.G_ERROR])
        if err == L.ERR_NONE:
            return
        if err == L.ERR_SCHEDULER:
            rep = read_report(self.q, self.lay.err_area(self.lay.ncores), clear=False)
            what = (f"{rep.error}\n{rep.traceback}" if isinstance(rep, SchedulerFailure)
                    else f"{rep} (its report did not arrive whole)")
            raise DeviceLost(f"the scheduler crashed: {what}")
        if self.first_error is None:
            reports = self._take_reports()
            reports.sort(key=lambda r: r.tid)
            first: object = reports[0] if reports else {"error": "a kernel failed, but its report did not arrive"}
            self.first_error = (first, len(reports) - 1)
            raise KernelError.from_report(first, others=max(0, len(reports) - 1))
        first, others = self.first_error
        e = KernelError.from_report(first, others=others)
        e.add_note("This is the run's first failure again: it aborted the run, and calls that touch the "
                   "device keep raising it until the run has ended.")
        raise e

    def _take_reports(self) -> list[TaskFailure]:
        """Error reports of failed tasks; the error flag can be seen before the first report
        lands, so look for up to a second."""
        deadline = time.monotonic() + 1.0
        while True:
            reports = [r for c in range(self.lay.ncores)
                       if isinstance(r := read_report(self.q, self.lay.err_area(c)), TaskFailure)]
            if reports or time.monotonic() > deadline:
                return reports
            time.sleep(0.001)

    # -- requests --------------------------------------------------------------------------------
    def request(self, kind: int, timeout: float = 10.0) -> object:
        """Ask the scheduler for a report (a codec.StatsReply, Diagnosis or TraceReply)."""
        self._req += 1
        req = kind << 32 | self._req
        q, g = self.q, self.g
        clear_report(q, self.lay.sched_area)
        publish(q, g[L.G_REQ], req)
        self.sched_sem.release()
        self.wait(L.WAIT_NONE, 0, lambda: observe(q, g[L.G_ACK]) == req, "waiting for the scheduler",
                  timeout=timeout, errors=False, diagnose=False)
        return read_report(q, self.lay.sched_area)

    def abort(self, timeout: float | None = None) -> None:
        """Discard everything submitted and not yet run; return once all has retired."""
        q, g = self.q, self.g
        n = q[g[L.G_ABORT_REQ]] + 1
        publish(q, g[L.G_ABORT_REQ], n)
        self.sched_sem.release()
        self.wait(L.WAIT_NONE, 0, lambda: observe(q, g[L.G_ABORT_ACK]) == n, "aborting the run",
                  timeout=timeout, errors=False, diagnose=False)
        for c in range(self.lay.ncores):            # reports of the aborted run are stale now
            read_report(q, self.lay.err_area(c))
        self.first_error = None
