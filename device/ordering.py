"""Memory ordering between the device's processes: the one module through which a process
publishes a word of shared memory to another, and through which the other observes it. No other
code stores to a shared counter (tests/test_layers.py checks it).

    writer                                       reader
    ──────                                       ──────
    data words (plain stores)                    v = observe(q, i)      acquire: no access below
    publish(q, i, v)    release: every access      data words (plain      it happens before the
                        above it is done first     loads)                 load of v
    fence()             a full barrier, for the sleep/wake handshakes (Dekker): store my flag,
                        fence, then load the other side's word -- one of the two sees the other

What each publication makes visible (the word is published last, the reader observes it first):

    word                 written by   makes visible
    HEAD                 host         task records, dep-pool entries, init= fills, host tensor data
    WAIT_KIND            host         WAIT_VALUE (what the host waits for)
    REQ, ABORT_REQ, STOP host         a request (the answer area cleared before it)
    mailbox head         scheduler    mailbox entries, dispatch stamps, sanitizer poison in GM
    COMPLETED, RETIRED   scheduler    finished work; RETIRED: the ring slots' words were read
    INGESTED             scheduler    dep-pool positions were read (the host may reuse them)
    FREED                scheduler    the FREED queue entries before it
    PROBE, IDLE, ERROR, ACK, ABORT_ACK, SLEEP, SCHED_PID   scheduler   what their names say
    W_DONE               worker       the task's time row and status, its outputs in GM, its
                                      error report; W_ASLEEP, W_PID, W_RUNNING, W_TASKS, W_BUSY_NS
    ANYDONE              worker       a hint only (the scheduler clears it, then looks at W_DONE)
    report length word   any          the pickled report before it (codec.write_report)

Where a semaphore is on the path (a sleeping process woken by a post), its post/wait pair orders
the data too; the fast paths (a spinning reader finds the word moved) rely on the above alone.

How it holds, per CPU:

    x86-64 (TSO)   Stores become visible in program order and a load is not reordered with an
                   older load; the one reordering is a load passing an older store to another
                   word. So a plain store publishes and a plain load observes: ``publish`` and
                   ``observe`` are ``operator.setitem`` / ``operator.getitem`` (as cheap as
                   ``q[i] = v``). ``fence`` is a lock round trip: a locked instruction, a full
                   barrier on x86.
    other CPUs     aarch64 reorders stores with stores and loads with loads. ``publish`` is a
    (aarch64, ...) fence, then the store; ``observe`` is the load, then a fence. ``fence`` is a
                   release followed by an acquire of a lock (``_lock_fence`` below): CPython's
                   lock is a glibc semaphore (sem_post = release RMW, sem_wait = acquire RMW;
                   CPython <= 3.12) or a PyMutex (sequentially consistent RMWs, 3.13+), and an
                   acquire round trip alone would NOT do (the "roach motel": accesses may move
                   into the critical section from both sides, so a store before it and a load
                   after it can swap). A release followed by an acquire is ordered on ARMv8
                   (store-release then load-acquire, RCsc), and release orders everything
                   before it, acquire everything after it: together a full barrier. On POWER
                   (lwsync) publication holds the same way, but the release-acquire pair is not
                   a store-load barrier, so a sleep/wake handshake there may miss a wake-up and
                   cost one timeout slice (every blocking wait has one); results stay correct.

Single-copy atomicity: every shared word is an aligned int64 that a memoryview reads and writes
with one 8-byte access, so no reader sees half a word. The compiler cannot move one memoryview
access past another: they are separate calls of the interpreter.

``PTOEMU_MEMORY_ORDER=fenced`` (or ``tso``) picks the implementation regardless of the CPU (the
tests run the fenced one on x86 too). Why not an atomics library: PyPI ``atomics`` 1.0.3 (seq_cst
loads and stores on any buffer, through cffi and its bundled patomic library) does the job, but
costs about 4 us per load or store here -- 200 times a plain word access, and dispatch does
several per task -- and is GPL-3.0 licensed; a compiled extension of our own would need a
compiler at install time. A lock costs about 70 ns and ships with Python.
"""

from __future__ import annotations

import operator
import os
import platform
import threading
from collections.abc import Callable
from typing import Any

TSO_MACHINES = ("x86_64", "amd64", "i386", "i686")
MODE = os.environ.get("PTOEMU_MEMORY_ORDER") or ("tso" if platform.machine().lower() in TSO_MACHINES
                                                  else "fenced")
if MODE not in ("tso", "fenced"):
    raise ValueError(f"PTOEMU_MEMORY_ORDER={MODE!r}: expected 'tso' or 'fenced'")

_lock = threading.Lock()


def _renew_lock() -> None:
    global _lock
    _lock = threading.Lock()        # a fork may have caught another thread inside a fence


os.register_at_fork(after_in_child=_renew_lock)


def _tso_fence() -> None:
    """A locked instruction: a full barrier on x86."""
    lock = _lock
    lock.acquire()
    lock.release()


def _lock_fence() -> None:
    """A release followed by an acquire (the middle two calls): a full barrier (module docstring)."""
    lock = _lock
    lock.acquire()
    lock.release()
    lock.acquire()
    lock.release()


def _fenced_publish(words: Any, i: int, value: int) -> None:
    _lock_fence()
    words[i] = value


def _fenced_observe(words: Any, i: int) -> int:
    v = words[i]
    _lock_fence()
    return v


def _fenced_observe_all(view: Any) -> list[int]:
    out = view.tolist()
    _lock_fence()
    return out


def _tso_observe_all(view: Any) -> list[int]:
    return view.tolist()


publish: Callable[[Any, int, int], None]
observe: Callable[[Any, int], int]
observe_all: Callable[[Any], list[int]]
fence: Callable[[], None]
if MODE == "tso":
    publish = operator.setitem                  # publish(q, i, v): q[i] = v, released
    observe = operator.getitem                  # observe(q, i): q[i], acquired
    observe_all = _tso_observe_all              # a numpy view of several words, as a list, acquired
    fence = _tso_fence
else:
    publish = _fenced_publish
    observe = _fenced_observe
    observe_all = _fenced_observe_all
    fence = _lock_fence

__all__ = ["MODE", "publish", "observe", "observe_all", "fence"]
