"""Blocking inside a kernel, the device's half: the wait area every core publishes what it waits
on in, and the ``Waiter`` each thread that runs kernel parts gets (kernels/waits.py is the
kernel's half: what a kernel calls, the kinds of wait, the sync-word offsets).

    wait area (shared words: the control segment on a process device, private memory inline)
      lines   one 8-word line per core, written by that core only:
              [WAITING, KIND, OBJ, D0..D3, SINCE] -- WAITING = 1 while it sleeps in a wait
      sync    SYNC_WORDS words per sync core (3 * cluster + part slot): the sync objects'
              counters, each word written by one core (kernels/waits.py claim)

    waiter (part on core c)                           waker (a part that changed a sync word)
    ───────────────────────                           ──────────────────────────────────────
    ready()? ─ yes ─▶ return                          set(i, v)          publish the word
    yield-spin up to spin_ns, ready()? ─▶ return      wake(clusters[, obj])  fence; every core
    drain c's semaphore (stale posts)                                    of those clusters with
    KIND, OBJ, D*, SINCE; publish WAITING = 1                            WAITING = 1 (and OBJ =
    fence                                                                obj): post its semaphore
    loop: ready()? ─▶ return
          aborted()? ─▶ raise WaitAborted
          block on c's semaphore (SLICE s at most)
    publish WAITING = 0

The waiter stores WAITING, fences, then reads the words ``ready`` looks at; the waker stores a
word, fences, then reads WAITING: one of the two sees the other's store (device/ordering.py), so
no wake-up is lost and nobody spins while blocked. A post only ever means "look again": a stale
one costs one look. The semaphores are the device's ``wait_sems`` (one per core, not the mailbox
ones), or ``threading.Semaphore``s in the sequential engine.

Release on abort. ``aborted()`` is the engine's: on a process device (``process_aborted``) the
device is stopping, a kernel failed in this run (the scheduler sets ERROR as soon as any part of
any task fails -- the other parts of that task may be waiting for it), or the host asked for an
abort (after a KernelError, Ctrl-C, or a stall: the stall detector fails the run with a
DeadlockError naming what every core waits on, then aborts it). Whoever raises the condition
posts every waiting core (``WaitArea.release``): the scheduler on a failure or an abort request,
the host's stop on its way out; a waiter also looks every SLICE seconds. A released part raises
``WaitAborted``; the engine records it as released (``Waiter.released``), not as a failure: the
run reports the error that caused the release.

What a stall shows: ``WaitArea.describe(core)`` -- the kind's own words for the wait
(kernels.waits.describe), how long it has been waiting, the sync core and task.

Lane skew (schedule fuzzing): ``pause()`` -- which kernels call at their sync operations -- sleeps
a random time up to ``skew_us`` in the chosen part slot ("aic", "aiv0", "aiv1", or "random": one
slot per task drawn from the seed and task id), from a generator seeded per core: the delays a
seed gives are the same every run.
"""

from __future__ import annotations

import os
import random
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np

from device.ordering import fence, observe, publish
from kernels import ffts as _ffts  # noqa: F401 - its sync words and end-of-task check, before any device
from kernels import pipe as _pipe  # noqa: F401 - registers the pipes' end-of-task check (task_end)
from kernels import waits as kw
from kernels.waits import SYNC_WORDS, WaitAborted

LINE_WORDS = 8
L_WAITING, L_KIND, L_OBJ, L_DETAIL, L_SINCE = 0, 1, 2, 3, 7     # L_DETAIL .. L_DETAIL + 3
SLICE = 0.1                     # s: a blocked waiter looks at aborted() at least this often
SKEW_SLOTS = {"aic": 0, "aiv0": 1, "aiv1": 2}
SKEW_CHOICES = (None, "aic", "aiv0", "aiv1", "random")
# 1 once a part on the core set any of its sync words this run: a mixed task's end checks skip
# clusters none of whose cores did (most tasks use no pipe: the checks would read zeros)
TOUCHED = kw.claim("touched", 1)


def area_words(ncores: int) -> int:
    """Words a wait area for ``ncores`` cores takes."""
    return ncores * (LINE_WORDS + SYNC_WORDS)


class WaitArea:
    """The wait lines and sync words of ``ncores`` cores at word ``off`` of ``words`` (an int64
    memoryview); ``sems``: one semaphore per core."""

    MAX_NOTICES = 100

    def __init__(self, words: Any, off: int, ncores: int, sems: list) -> None:
        self.q, self.ncores, self.sems = words, ncores, sems
        self.lines = off
        self.sync = off + ncores * LINE_WORDS
        self.nsync = ncores * SYNC_WORDS
        self.notices: list[str] = []     # what task_end found (kept by the scheduler / inline engine)

    def line(self, core: int) -> int:
        return self.lines + core * LINE_WORDS

    def reset(self) -> None:
        """A run starts: every sync word is 0 (pipes empty, barriers at generation 0). Called
        while no kernel runs; the run's first records publish the zeros (device/ordering.py)."""
        self.q[self.sync:self.sync + self.nsync] = memoryview(bytes(8 * self.nsync)).cast("q")

    def waiting(self, core: int) -> tuple[int, int, tuple[int, ...], int] | None:
        """(kind, obj, detail, since ns) of what ``core`` sleeps on, or None."""
        q, ln = self.q, self.line(core)
        if not observe(q, ln + L_WAITING):
            return None
        return (q[ln + L_KIND], q[ln + L_OBJ], tuple(q[ln + L_DETAIL:ln + L_DETAIL + kw.DETAIL_WORDS]),
                q[ln + L_SINCE])

    def describe(self, core: int, now_ns: int | None = None) -> str:
        """What ``core`` is blocked on, in words ("" if it is not waiting)."""
        w = self.waiting(core)
        if w is None:
            return ""
        kind, obj, detail, since = w
        now = time.perf_counter_ns() if now_ns is None else now_ns
        return f"{kw.describe(kind, obj, detail)} (blocked for {(now - since) / 1e9:.1f} s)"

    def blocked(self) -> list[int]:
        """The cores sleeping in a wait now."""
        q, lines = self.q, self.lines
        return [c for c in range(self.ncores) if observe(q, lines + c * LINE_WORDS + L_WAITING)]

    def task_end(self, clusters: Iterable[int]) -> int:
        """A mixed task that ran on ``clusters`` has ended: the registered end checks
        (kernels.waits.task_end_check) look at its sync words; their new notices are kept in
        ``notices`` (the first MAX_NOTICES distinct ones). Returns how many were new."""
        q, sync = self.q, self.sync
        # (read after the parts' done counters were observed: their sync words are visible)
        t = sync + TOUCHED
        clusters = sorted(b for b in set(clusters) if q[t + 3 * b * SYNC_WORDS] or q[t + (3 * b + 1) * SYNC_WORDS]
                          or q[t + (3 * b + 2) * SYNC_WORDS])
        if not clusters:
            return 0
        new = 0
        for check in kw.task_end_checks():
            for text in check(lambda i: observe(q, sync + i), clusters):
                if text not in self.notices and len(self.notices) < self.MAX_NOTICES:
                    self.notices.append(text)
                    new += 1
        return new

    def release(self) -> int:
        """Post every core that sleeps in a wait (after the abort condition was published:
        each looks at it). Returns how many."""
        fence()
        n = 0
        for c in self.blocked():
            self.sems[c].release()
            n += 1
        return n


def process_aborted(q: Any, g_stop: int, g_error: int, g_abort_req: int, g_abort_ack: int,
                    host_pid: int) -> Callable[[], str]:
    """``aborted()`` of a process device, from its global words: why waits must end, or ""."""
    def aborted() -> str:
        if observe(q, g_stop):
            return "the device is shutting down"
        if observe(q, g_error):
            return "a kernel failed in this run (this task's other part, or another task), so the run is aborted"
        if observe(q, g_abort_req) != observe(q, g_abort_ack):
            return "the run is being aborted (a failure, a stall, or an interrupt in the host)"
        if os.getppid() != host_pid:
            return "the host process is gone"
        return ""
    return aborted


class Waiter:
    """kernels.waits.Waits for the kernel parts one thread runs on core ``phys`` (its wait
    line and semaphore). Whatever runs the parts sets, per task part: ``task``, ``cluster``,
    ``slot`` (0 AIC, 1 / 2 the vector parts), ``slots`` (the parts the task has) -- ``begin``."""

    __slots__ = ("area", "phys", "core", "cluster", "slot", "slots", "ncores", "task", "aborted", "spin_ns",
                 "released", "sem", "q", "sync", "ln", "gm", "skew_slot", "skew_s", "seed", "rng", "chosen",
                 "moves", "solo", "others")

    def __init__(self, area: WaitArea, phys: int, aborted: Callable[[], str], *, spin_ns: int = 0,
                 gm: tuple[int, int] = (0, 0), skew: str | None = None, skew_us: float = 0.0,
                 seed: int = 0, solo: bool = False) -> None:
        """``gm``: (address, bytes) of device memory; ``solo``: no other part can run while this
        one waits (a single-part task in the sequential engine) -- a wait that is not ready at
        once can never end, and says so."""
        if skew not in SKEW_CHOICES:
            raise ValueError(f"skew={skew!r}: expected one of {', '.join(repr(s) for s in SKEW_CHOICES)}")
        self.area, self.phys, self.aborted, self.spin_ns, self.gm, self.solo = area, phys, aborted, spin_ns, gm, solo
        self.q, self.sync, self.ln, self.sem = area.q, area.sync, area.line(phys), area.sems[phys]
        self.ncores = area.ncores
        self.core, self.cluster, self.slot, self.slots, self.task = phys, phys // 3, phys % 3, (True, True, True), -1
        self.released = False
        self.skew_slot = -1 if skew is None else -2 if skew == "random" else SKEW_SLOTS[skew]
        self.skew_s, self.seed = skew_us / 1e6, seed
        self.rng = random.Random(seed * 1_000_003 + phys)
        self.chosen = (-1, -1)        # (task, slot) last drawn for skew="random"
        self.moves = 0                # sync words this waiter set (progress, for a watchdog)
        # per cluster: (core, wait line) of its cores but this one -- whom a wake() looks at
        self.others = [tuple((c, area.line(c)) for c in range(3 * b, 3 * b + 3) if c != phys)
                       for b in range(area.ncores // 3)]

    def begin(self, task: int, cluster: int, slot: int, slots: tuple[bool, bool, bool]) -> None:
        """The part about to run: task id, physical block, its part slot, the task's parts."""
        self.task, self.cluster, self.slot, self.slots = task, cluster, slot, slots
        self.core = 3 * cluster + slot

    # -- sync words ------------------------------------------------------------------------------
    def get(self, i: int) -> int:
        return observe(self.q, self.sync + i)

    def set(self, i: int, value: int) -> None:
        q = self.q
        publish(q, self.sync + i, value)
        t = self.sync + i - i % SYNC_WORDS + TOUCHED          # (the word's core is this part's: one writer)
        if not q[t]:
            publish(q, t, 1)
        self.moves += 1

    def in_device_memory(self, address: int, nbytes: int) -> bool:
        lo, size = self.gm
        return lo <= address and address + nbytes <= lo + size

    # -- waiting ---------------------------------------------------------------------------------
    def wait(self, ready: Callable[[], bool], kind: int, obj: int, detail: tuple[int, ...] = ()) -> None:
        if ready():
            return
        if self.solo:
            raise WaitAborted(f"{kw.describe(kind, obj, tuple(detail))}: this part waits for another part, "
                              "but it is the only part of its task running (a single-core task): the wait "
                              "could never end")
        if self.spin_ns:
            t0 = time.perf_counter_ns()
            while time.perf_counter_ns() - t0 < self.spin_ns:
                os.sched_yield()
                if ready():
                    return
        q, ln, sem = self.q, self.ln, self.sem
        while sem.acquire(False):          # posts from earlier waits: each only says "look again"
            pass
        q[ln + L_KIND], q[ln + L_OBJ] = kind, obj
        d = tuple(detail)[:kw.DETAIL_WORDS]
        for j in range(kw.DETAIL_WORDS):
            q[ln + L_DETAIL + j] = int(d[j]) if j < len(d) else 0
        q[ln + L_SINCE] = time.perf_counter_ns()
        publish(q, ln + L_WAITING, 1)
        fence()
        try:
            while True:
                if ready():
                    return
                why = self.aborted()
                if why:
                    self.released = True
                    raise WaitAborted(f"released from a wait ({kw.describe(kind, obj, tuple(detail))}): {why}")
                sem.acquire(True, SLICE)
        finally:
            publish(q, ln + L_WAITING, 0)

    def wake(self, clusters: Iterable[int], obj: int | None = None) -> None:
        q, sems, lines = self.q, self.area.sems, self.others
        fence()
        for b in clusters:
            for c, ln in lines[b]:
                # (OBJ was written before WAITING = 1 and is read after it: it is this wait's)
                if observe(q, ln + L_WAITING) and (obj is None or observe(q, ln + L_OBJ) == obj):
                    sems[c].release()

    def pause(self) -> None:
        if self.skew_slot == -1:
            return
        slot = self.skew_slot
        if slot == -2:                    # "random": one part slot per task, drawn from the seed
            if self.chosen[0] != self.task:
                present = [s for s in range(3) if self.slots[s]]
                pick = random.Random(self.seed * 7_919 + self.task * 104_729 + self.cluster)
                self.chosen = (self.task, pick.choice(present) if present else 0)
            slot = self.chosen[1]
        if slot == self.slot:
            time.sleep(self.rng.random() * self.skew_s)


def thread_semaphores(n: int) -> list[threading.Semaphore]:
    """Semaphores for the sequential engine's part threads (one process)."""
    return [threading.Semaphore(0) for _ in range(n)]


def gm_range(gm: Any) -> tuple[int, int]:
    """(address, bytes) of a GM buffer in this process."""
    a = np.frombuffer(gm, np.uint8)
    return (a.__array_interface__["data"][0], a.size) if a.size else (0, 0)


__all__ = ["WaitArea", "Waiter", "WaitAborted", "area_words", "gm_range", "process_aborted", "thread_semaphores",
           "SKEW_CHOICES", "SLICE"]
