"""A device process's link to its host: what the scheduler answers, and noticing the host is gone.

    host                                             scheduler (HostLink)
    HEAD, WAIT_KIND/VALUE (what it waits for) ──────▶ publish(): COMPLETED; fence; the host's
                                                      condition met? post host_sem
    REQ = kind<<32 | seq ───────────────────────────▶ service(): stats / diagnosis / trace into
                                                      the answer area, ACK = REQ, post host_sem
    ABORT_REQ += 1 ─────────────────────────────────▶ service(): discard (skip what has not
                                                      started, drop scope holds); ABORT_ACK once
                                                      nothing is in flight and all is retired
    STOP ───────────────────────────────────────────▶ service() says stop
    (the host dies)                                   orphaned(): stop the workers, exit

    host ──fork──▶ scheduler, workers: child_signals()  SIGINT/SIGHUP/SIGQUIT ignored (the host's)

Nothing else is needed to clean up after a host that died: the device's memory is anonymous and
goes with the last process that maps it (device/shm.py).
"""

from __future__ import annotations

import os
import signal
import time
from typing import TYPE_CHECKING

from device import codec as C
from device import layout as L

if TYPE_CHECKING:
    from device.scheduler import Scheduler


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
    """The scheduler's side of the control segment's globals."""

    def __init__(self, sched: Scheduler) -> None:
        self.s = sched
        ctx, lay = sched.ctx, sched.lay
        self.q, self.ctx, self.lay = ctx.q, ctx, lay
        self.g = {n: lay.g(n) for n in range(L.N_GLOBALS)}
        self.last_abort = 0

    def publish(self) -> None:
        """Tell the host how far things got, and wake it if what it waits for has happened."""
        q, g, s = self.q, self.g, self.s
        q[g[L.G_COMPLETED]] = s.tasks.completed
        s.fence()
        kind = q[g[L.G_WAIT_KIND]]
        if kind:
            v = q[g[L.G_WAIT_VALUE]]
            if kind == L.WAIT_RETIRED and s.tasks.retired >= v > s.accounted:
                s.flush_retired()
            if ((kind == L.WAIT_RETIRED and s.accounted >= v)
                    or (kind == L.WAIT_COMPLETED and s.tasks.completed >= v)
                    or (kind == L.WAIT_FREED and s.nfreed >= v)
                    or (kind == L.WAIT_PROBE and q[g[L.G_PROBE]] >= v)):
                self.ctx.host_sem.release()

    def pending(self) -> bool:
        """A request, abort or stop the host posted (its wake-up may have been consumed)."""
        q, g = self.q, self.g
        return (q[g[L.G_REQ]] != q[g[L.G_ACK]] or q[g[L.G_STOP]] != 0
                or q[g[L.G_ABORT_REQ]] != self.last_abort)

    def service(self) -> bool:
        """Stop, requests and abort from the host. True when the scheduler must stop."""
        q, g, s = self.q, self.g, self.s
        if q[g[L.G_STOP]]:
            return True
        req = q[g[L.G_REQ]]
        if req != q[g[L.G_ACK]]:
            kind = req >> 32
            area = self.lay.sched_area
            q[area] = 0
            s.flush_retired()
            answer = (s.stats() if kind == L.REQ_STATS else s.diagnose() if kind == L.REQ_DIAG
                      else s.take_trace())
            C.write_report(q, area, C.SCHED_AREA_WORDS, answer)
            q[g[L.G_ACK]] = req
            self.ctx.host_sem.release()
        abort = q[g[L.G_ABORT_REQ]]
        if abort != self.last_abort and s.abort():
            self.last_abort = abort
            q[g[L.G_ERROR]] = L.ERR_NONE
            q[g[L.G_ABORT_ACK]] = abort
            self.publish()
            self.ctx.host_sem.release()
        return False

    def fail(self, error: BaseException) -> None:
        """The scheduler itself crashed: the host hears about it (DeviceLost with the traceback)."""
        import traceback
        q, lay = self.q, self.lay
        C.write_report(q, lay.err_area(lay.ncores), C.ERR_AREA_WORDS, {
            "where": "scheduler", "error": f"{type(error).__name__}: {error}",
            "traceback": traceback.format_exc()})
        q[self.g[L.G_ERROR]] = L.ERR_SCHEDULER
        self.ctx.host_sem.release()

    def orphan_exit(self) -> None:
        """The host died without closing the device: stop the workers (kill the ones still inside
        a kernel after a short grace) and leave."""
        q, lay = self.q, self.lay
        q[self.g[L.G_STOP]] = 1
        self.s.cores.wake_all()
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
