"""A device process's link to its host: every global word the host reads, written in one place,
what the scheduler answers, and noticing the host is gone.

    host                                             scheduler (HostLink)
    HEAD ───────────────────────────────────────────▶ head()
    WAIT_KIND/VALUE (what the host waits for) ──────▶ progress(completed, retired): COMPLETED;
                                                      fence; the host's condition met? post
                                                      host_sem (RETIRED / FREED / PROBE too)
    REQ = kind<<32 | seq ───────────────────────────▶ service(): answer(kind) into the answer
                                                      area, ACK = REQ, post host_sem
    ABORT_REQ += 1 ─────────────────────────────────▶ service(): abort() until it says done, then
                                                      ERROR = none, ABORT_ACK, post host_sem
    STOP ───────────────────────────────────────────▶ service() says stop
    (the host dies)                                   orphaned(): stop the workers, exit
    ◀── RETIRED, FREED (+ queue), INGESTED, PROBE, IDLE, ERROR, SLEEP, SCHED_PID, failure reports

    host ──fork──▶ scheduler, workers: child_signals()  SIGINT/SIGHUP/SIGQUIT ignored (the host's)

The scheduler hands the link what it needs and nothing more: the counters to publish (as
arguments), and callbacks to flush retired records into the statistics, to answer a request,
to abort a run and to wake the workers. Every store goes through device/ordering.py.

Nothing else is needed to clean up after a host that died: the device's memory is anonymous and
goes with the last process that maps it (device/shm.py).
"""

from __future__ import annotations

import functools
import os
import signal
import time
import traceback
from collections.abc import Callable

from device import codec as C
from device import layout as L
from device.codec import DeviceContext
from device.ordering import fence, observe, publish


def child_signals() -> None:
    """In a device process: interrupts from a terminal (Ctrl-C, Ctrl-\\, hang-up) are the host's
    business; the host decides, and its children follow it out if it dies."""
    for sig in (signal.SIGINT, signal.SIGHUP, signal.SIGQUIT):
        signal.signal(sig, signal.SIG_IGN)
    signal.pthread_sigmask(signal.SIG_SETMASK, set())      # forked while the host held SIGINT back


def orphaned(host_pid: int) -> bool:
    """Has the host (our parent) gone away?"""
    return os.getppid() != host_pid


def alive(pid: int) -> bool:
    """Is this (non-child) process still running? Zombies count as gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


class HostLink:
    """The scheduler's side of the control segment's globals (module docstring).

    flush()          fold retired records into the statistics (it calls ``retired`` back)
    answer(kind)     the report for a request (REQ_STATS / REQ_DIAG / REQ_TRACE)
    abort()          discard what has not run; True once the device is ready for the next run
    wake_workers()   one token to every worker (stop)
    release_waiters()   post every kernel part blocked in a wait (device/waits.py): it looks at
                     ERROR / ABORT_REQ / STOP, published before, and lets go"""

    def __init__(self, ctx: DeviceContext, flush: Callable[[], None], answer: Callable[[int], object],
                 abort: Callable[[], bool], wake_workers: Callable[[], None],
                 release_waiters: Callable[[], object] = lambda: None) -> None:
        self.q, self.ctx, self.lay = ctx.q, ctx, ctx.layout
        self.flush, self.answer, self.abort, self.wake_workers = flush, answer, abort, wake_workers
        self.release_waiters = release_waiters
        g = self.lay.g
        self.g_head, self.g_completed, self.g_retired, self.g_freed = g(L.G_HEAD), g(L.G_COMPLETED), \
            g(L.G_RETIRED), g(L.G_FREED)
        self.g_wait_kind, self.g_wait_value, self.g_probe = g(L.G_WAIT_KIND), g(L.G_WAIT_VALUE), g(L.G_PROBE)
        self.g_ingested, self.g_idle, self.g_sleep, self.g_error = g(L.G_INGESTED), g(L.G_IDLE), \
            g(L.G_SLEEP), g(L.G_ERROR)
        self.g_req, self.g_ack, self.g_stop = g(L.G_REQ), g(L.G_ACK), g(L.G_STOP)
        self.g_abort_req, self.g_abort_ack = g(L.G_ABORT_REQ), g(L.G_ABORT_ACK)
        self.free_off, self.free_mask = self.lay.free_off, self.lay.free_slots - 1
        self.last_abort = 0
        self.nretired = 0             # RETIRED as published: records whose times were accounted
        self.nfreed = 0               # entries put on the FREED queue
        self.nprobe = 0               # PROBE as published
        # head() -> HEAD, the records the host has published so far (observed; a C-level call:
        # the scheduler asks once a pass)
        self.head: Callable[[], int] = functools.partial(observe, self.q, self.g_head)

    # -- what the host reads ---------------------------------------------------------------------
    def started(self) -> None:
        publish(self.q, self.lay.g(L.G_SCHED_PID), os.getpid())

    def ingested(self, n: int) -> None:
        """Records [0, n) were read: their dep-pool positions are free again."""
        publish(self.q, self.g_ingested, n)

    def retired(self, n: int) -> None:
        """Records [0, n) retired and accounted: their ring slots are the host's again."""
        self.nretired = n
        publish(self.q, self.g_retired, n)

    def freed(self, tid: int) -> None:
        """The heap allocation of record ``tid`` died: the host may reuse its range."""
        n = self.nfreed
        self.q[self.free_off + (n & self.free_mask)] = tid
        self.nfreed = n + 1
        publish(self.q, self.g_freed, n + 1)

    def probe_done(self, tid: int) -> None:
        """A probe dummy (rt.get/set_tensor_data) finished: the host waits for exactly this."""
        self.nprobe = tid + 1
        publish(self.q, self.g_probe, tid + 1)

    def progress(self, completed: int, retired: int) -> None:
        """Tell the host how far things got, and wake it if what it waits for has happened
        (``retired``: records retired, some perhaps not accounted yet)."""
        q = self.q
        publish(q, self.g_completed, completed)
        fence()
        kind = observe(q, self.g_wait_kind)
        if kind:
            v = q[self.g_wait_value]
            if kind == L.WAIT_RETIRED and retired >= v > self.nretired:
                self.flush()
            if ((kind == L.WAIT_RETIRED and self.nretired >= v)
                    or (kind == L.WAIT_COMPLETED and completed >= v)
                    or (kind == L.WAIT_FREED and self.nfreed >= v)
                    or (kind == L.WAIT_PROBE and self.nprobe >= v)):
                self.ctx.host_sem.release()

    def task_failure(self, core: int, report: C.TaskFailure) -> None:
        """A failure the scheduler found itself (the sanitizer's check after a task), in the
        error area of the core that ran it, as the worker would have put it."""
        C.write_report(self.q, self.lay.err_area(core), C.ERR_AREA_WORDS, report)

    def kernel_failed(self) -> None:
        """A task (or one part of it) failed: the host hears it (it reads the workers' error
        reports), and the parts blocked in a wait -- perhaps for the part that failed -- let go."""
        if observe(self.q, self.g_error) == L.ERR_NONE:
            publish(self.q, self.g_error, L.ERR_KERNEL)
            self.ctx.host_sem.release()
            self.release_waiters()

    def notices(self, n: int) -> None:
        """There are n notices now (the host fetches them with the statistics)."""
        publish(self.q, self.lay.g(L.G_NOTICES), n)

    def sleeping(self, on: bool) -> None:
        """SLEEP: producers post the scheduler's semaphore only while it is set."""
        publish(self.q, self.g_sleep, 1 if on else 0)

    def idle(self, ingested: int) -> None:
        """Nothing in flight, nothing ready, every record read: a host still waiting waits for
        what cannot come (its channel turns that into a deadlock error)."""
        publish(self.q, self.g_idle, ingested + 1)
        fence()
        if observe(self.q, self.g_wait_kind):
            self.ctx.host_sem.release()

    def busy(self) -> None:
        publish(self.q, self.g_idle, 0)

    # -- what the host asks ----------------------------------------------------------------------
    def pending(self) -> bool:
        """A request, abort or stop the host posted (its wake-up may have been consumed)."""
        q = self.q
        return (observe(q, self.g_req) != q[self.g_ack] or observe(q, self.g_stop) != 0
                or observe(q, self.g_abort_req) != self.last_abort)

    def stop_requested(self) -> bool:
        return observe(self.q, self.g_stop) != 0

    def service(self) -> bool:
        """Stop, requests and abort from the host. True when the scheduler must stop."""
        q = self.q
        if observe(q, self.g_stop):
            return True
        req = observe(q, self.g_req)
        if req != q[self.g_ack]:
            area = self.lay.sched_area
            C.clear_report(q, area)
            self.flush()
            C.write_report(q, area, C.SCHED_AREA_WORDS, self.answer(req >> 32))
            publish(q, self.g_ack, req)
            self.ctx.host_sem.release()
        abort = observe(q, self.g_abort_req)
        if abort != self.last_abort:
            self.release_waiters()           # a part blocked in a wait would hold the abort up
        if abort != self.last_abort and self.abort():
            self.last_abort = abort
            publish(q, self.g_error, L.ERR_NONE)
            publish(q, self.g_abort_ack, abort)
            self.ctx.host_sem.release()
        return False

    # -- endings ---------------------------------------------------------------------------------
    def fail(self, error: BaseException) -> None:
        """The scheduler itself crashed: the host hears about it (DeviceLost with the traceback)."""
        q, lay = self.q, self.lay
        C.write_report(q, lay.err_area(lay.ncores), C.ERR_AREA_WORDS, C.SchedulerFailure(
            f"{type(error).__name__}: {error}", traceback.format_exc()))
        publish(q, self.g_error, L.ERR_SCHEDULER)
        self.ctx.host_sem.release()

    def orphan_exit(self) -> None:
        """The host died without closing the device: stop the workers (kill the ones still inside
        a kernel after a short grace) and leave."""
        q, lay = self.q, self.lay
        publish(q, self.g_stop, 1)
        self.wake_workers()
        self.release_waiters()
        pids = [q[lay.wline(c) + L.W_PID] for c in range(lay.ncores)]
        deadline = time.monotonic() + 0.5
        while time.monotonic() < deadline and any(alive(p) for p in pids):
            time.sleep(0.01)
        for p in pids:
            if alive(p):
                try:
                    os.kill(p, signal.SIGKILL)
                except OSError:
                    pass
