"""A worker process: one emulated core (AIC or AIV) of one block.

    scheduler ── mailbox[head] += 1, slot = tid*4+part ──┐
              ── worker semaphore: one token per entry ──┤
                                                         ▼
    worker:  yield-spin on mailbox head (bounded) ─▶ take the token ─▶ read the task record
             ─▶ run_part (device/execute.py): numpy views into GM + scalars ─▶ kernel(...)
             ─▶ times + status into the task's time row ─▶ done += 1, post the scheduler

Nothing here is pickled on the way to a kernel: the record is read word by word from the control
segment and the tensors are ``np.ndarray`` views built over the inherited GM mapping. A kernel
that raises is reported (task, kernel, core, argument shapes, traceback) in this core's error
area; the worker carries on. An idle worker uses no CPU: it blocks on its semaphore, waking once a
second only to notice that its host has died.
"""

from __future__ import annotations

import os
import random
import time
from types import SimpleNamespace

from device import layout as L
from device.execute import ArgDecoder, run_part
from device.hostlink import child_signals, orphaned
from device.shm import write_report
from kernels.registry import CoreInfo, _set_core

CORE_KINDS = ("AIC", "AIV", "AIV")


def core_name(core: int) -> str:
    lane = core % 3
    return f"{CORE_KINDS[lane]}{'' if lane == 0 else lane - 1} of block {core // 3} (core {core})"


def run(ctx: SimpleNamespace, core: int) -> None:
    """Entry point of a worker process (forked from the host)."""
    child_signals()
    lay: L.Layout = ctx.layout
    lane = core % 3
    _set_core(CoreInfo(block=core // 3, kind=CORE_KINDS[lane], lane=max(lane - 1, 0), core=core))
    q = ctx.q
    mb = lay.mailbox(core)
    wl = lay.wline(core)
    D = lay.depth
    sem = ctx.worker_sems[core]
    sched_sem = ctx.sched_sem
    parts = ctx.kernel_parts
    names = ctx.kernel_names
    dec = ArgDecoder(ctx)
    where = core_name(core)
    spin_ns = ctx.spin_ns
    jitter = ctx.jitter_ns / 1e9
    rng = random.Random(ctx.seed * 1_000_003 + core) if jitter else None
    g_stop = lay.g(L.G_STOP)
    host_pid = ctx.host_pid
    err_area = lay.err_area(core)
    perf = time.perf_counter_ns
    yield_ = os.sched_yield
    tail = 0
    ntasks = 0
    busy = 0
    q[wl + L.W_PID] = os.getpid()
    while True:
        if q[mb] == tail:
            t0 = perf()
            while q[mb] == tail and perf() - t0 < spin_ns:
                yield_()
        while not sem.acquire(True, 1.0):               # one token per mailbox entry
            if orphaned(host_pid) or q[g_stop]:
                return
        if q[mb] == tail:                               # a token with no entry: stop request
            if q[g_stop]:
                return
            continue
        entry = q[mb + 1 + tail % D]
        tid, part = entry >> 2, entry & 3
        r = lay.rec(tid)
        t = lay.ts(tid)
        q[wl + L.W_RUNNING] = tid + 1
        fn = parts[q[r + L.H_KERNEL]][part]
        if rng:
            time.sleep(rng.random() * jitter)      # fuzzing: a late start shakes up the order
        start = perf()
        rep = run_part(fn, dec, r, tid, names[q[r + L.H_KERNEL]], where, part)
        end = perf()
        if rep is not None:
            q[t + L.T_STATUS] = L.STATUS_ERROR
            write_report(q, err_area, L.ERR_AREA_WORDS, rep)
        q[t + L.T_START0 + 2 * part] = start
        q[t + L.T_END0 + 2 * part] = end
        q[t + L.T_CORE0 + part] = core
        busy += end - start
        ntasks += 1
        q[wl + L.W_RUNNING] = 0
        q[wl + L.W_TASKS] = ntasks
        q[wl + L.W_BUSY_NS] = busy
        tail += 1
        q[wl + L.W_DONE] = tail
        sched_sem.release()
        if q[g_stop]:
            return
