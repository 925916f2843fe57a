"""A worker process: one emulated core (AIC or AIV) of one block.

    scheduler ── slot = entry (codec.entry), publish head + 1 (+ post, only if this worker sleeps) ─┐
                                                                                              ▼
    worker:  entries in the mailbox? ─▶ read the task record ─▶ run_part (device/execute.py):
             numpy views into GM + scalars ─▶ kernel(...) ─▶ times + status into the task's
             time row (recording: what the tile layer counted into the slot's counts row)
             ─▶ publish done + 1 ─▶ fence; post the scheduler only if it sleeps
             none: yield-spin (bounded) ─▶ ASLEEP = 1, fence, look once more ─▶ block

Every word another process reads is published (and every word it waits for observed) through
device/ordering.py: the time row, status, outputs and error report of a task are visible before
its done count.

Nothing here is pickled on the way to a kernel: the record is read from the control segment and
the tensors are ``np.ndarray`` views built over the inherited GM mapping. A kernel that raises is
reported (task, kernel, core, argument shapes, traceback) in this core's error area; the worker
carries on. An idle worker uses no CPU: it blocks on its semaphore, waking once a second only to
notice that its host has died. A post can arrive for a wake-up the worker no longer needs (it
found its entry before blocking): that costs one extra look, nothing more. A kernel part that
waits for another part (a pipe, a barrier) blocks on the core's wait semaphore through its
``Waiter`` (device/waits.py); a part an abort released from such a wait ends as "skipped".
"""

from __future__ import annotations

import os
import random
import time

from device import codec as C
from device import layout as L
from device.atomics import StripedAdd
from device.codec import DeviceContext
from device.execute import ArgDecoder, run_part
from device.hostlink import child_signals, orphaned
from device.ordering import fence, observe, publish
from device.waits import WaitArea, Waiter, gm_range, process_aborted
from kernels import atomic
from kernels import waits as kernel_waits
from kernels.registry import CoreInfo, set_block, set_core


def run(ctx: DeviceContext, core: int) -> None:
    """Entry point of a worker process (forked from the host). ``PTOEMU_PROFILE_WORKERS=PREFIX``
    (a developer aid, as the scheduler's) cProfiles every core into PREFIX-<core>.prof."""
    prof_prefix = os.environ.get("PTOEMU_PROFILE_WORKERS")
    if prof_prefix:
        import cProfile
        cProfile.runctx("loop(ctx, core)", globals(), {"ctx": ctx, "core": core}, f"{prof_prefix}-{core}.prof")
    else:
        loop(ctx, core)


def loop(ctx: DeviceContext, core: int) -> None:
    """The set-up, then the loop.

    One function on purpose, longer than the others: it is the hot loop of every core, and the
    names it touches per task are bound once, here, as locals (the fastest lookup CPython has);
    splitting it would turn them into attribute or argument lookups on every task."""
    child_signals()
    lay = ctx.layout
    lane = C.lane_of(core)
    set_core(CoreInfo(block=C.block_of(core), kind=C.CORE_KINDS[lane], lane=max(lane - 1, 0), core=core))
    if ctx.atomic_locks is not None:                # kernels' atomic adds exclude each other
        atomic.set_hook(StripedAdd(ctx.atomic_locks, ctx.gm_buf).add)
    q = ctx.q
    mb = lay.mailbox(core)                          # its head word; the slots follow it
    slots = mb + 1
    wl = lay.wline(core)
    asleep, w_done, w_running = wl + L.W_ASLEEP, wl + L.W_DONE, wl + L.W_RUNNING
    w_tasks, w_busy = wl + L.W_TASKS, wl + L.W_BUSY_NS
    D = lay.depth
    sem = ctx.worker_sems[core]
    sched_sem = ctx.sched_sem
    g_sleep = lay.g(L.G_SLEEP)
    g_stop = lay.g(L.G_STOP)
    g_anydone = lay.g(L.G_ANYDONE)
    g_abort_ack = lay.g(L.G_ABORT_ACK)
    parts = ctx.kernel_parts
    kslots = [tuple(p is not None for p in ps) for ps in parts]       # the parts each kernel has
    # a part's sync-word slot (kernels/waits.py): its part index in a mixed task (whichever
    # vector core it landed on), its own lane for a single-core kernel
    kmulti = [sum(s) > 1 for s in kslots]
    names = ctx.kernel_names
    dec = ArgDecoder(ctx.q, ctx.f, ctx.ctrl_buf, ctx.gm_buf)
    dec.count = recording = ctx.record
    f = ctx.f
    where = C.core_name(core)
    spin_ns = ctx.spin_ns
    jitter = ctx.jitter_ns / 1e9
    rng = random.Random(ctx.seed * 1_000_003 + core) if jitter else None
    host_pid = ctx.host_pid
    # A kernel part that waits for another part (a pipe, a barrier) blocks through this
    # (device/waits.py); a part released by an abort is not a failure of its own.
    waiter = Waiter(WaitArea(q, lay.waits_off, lay.ncores, ctx.wait_sems), core,
                    process_aborted(q, g_stop, lay.g(L.G_ERROR), lay.g(L.G_ABORT_REQ), g_abort_ack, host_pid),
                    spin_ns=spin_ns, gm=gm_range(ctx.gm_buf), skew=ctx.skew, skew_us=ctx.skew_us, seed=ctx.seed)
    kernel_waits.install(waiter)
    block = C.block_of(core)
    err_area = lay.err_area(core)
    ring_off, ts_off, mask = lay.ring_off, lay.ts_off, lay.mask
    perf = time.perf_counter_ns
    yield_ = os.sched_yield
    tail = ntasks = busy = 0
    spmd = False                    # the last task run was a block of a multi-block task
    ENTRY_SPMD, ENTRY_GATED, ENTRY_SHIFT, ENTRY_PART = C.ENTRY_SPMD, C.ENTRY_GATED, C.ENTRY_SHIFT, C.ENTRY_PART
    REC_WORDS, TS_WORDS = C.REC_WORDS, C.TS_WORDS
    failed_at = -1                  # ABORT_ACK when a task of ours last failed (-1: never)
    publish(q, wl + L.W_PID, os.getpid())
    while True:
        if observe(q, mb) == tail:
            t0 = perf()
            while observe(q, mb) == tail and perf() - t0 < spin_ns:
                yield_()
            if observe(q, mb) == tail:
                publish(q, asleep, 1)
                fence()
                if observe(q, mb) == tail:              # nothing came in between: block
                    while not sem.acquire(True, 1.0):
                        if orphaned(host_pid) or observe(q, g_stop):
                            return
                publish(q, asleep, 0)
                if observe(q, g_stop):
                    return
                continue
        entry = q[slots + tail % D]
        tid, part = entry >> ENTRY_SHIFT, entry & ENTRY_PART
        s = tid & mask
        r = ring_off + s * REC_WORDS
        t = ts_off + s * TS_WORDS
        blk = 0
        if entry & ENTRY_SPMD:                         # core_info() tells the kernel its block
            blk = (entry >> C.BLOCK_SHIFT) & C.BLOCK_MASK
            spmd = True
            set_block(blk, q[r + C.H_BLOCKS], bool(q[r + C.H_FLAGS] & C.FLAG_SYNC))
        elif spmd:
            spmd = False
            set_block(0, 1)
        if entry & ENTRY_GATED and failed_at == observe(q, g_abort_ack):
            # Posted early behind its producers on this core, and a task here failed since the
            # last abort: its inputs may not be what it expects, and the run is being aborted.
            q[t + C.T_STATUS] = C.STATUS_SKIPPED
            if recording:
                C.write_counts(f, lay.counts(core, tail % D), None)
        else:
            publish(q, w_running, tid + 1)
            k = q[r + C.H_KERNEL]
            if rng:
                time.sleep(rng.random() * jitter)      # fuzzing: a late start shakes up the order
            waiter.begin(tid, block, part if kmulti[k] else lane, kslots[k])
            start = perf()
            rep = run_part(parts[k][part], dec, r, tid, names[k], where, part)
            end = perf()
            if waiter.released:                        # let go by an abort: the cause is reported
                waiter.released = False
                rep = None
                if q[t + C.T_STATUS] == C.STATUS_OK:
                    q[t + C.T_STATUS] = C.STATUS_SKIPPED
            if rep is not None:
                failed_at = observe(q, g_abort_ack)
                q[t + C.T_STATUS] = C.STATUS_ERROR
                C.write_report(q, err_area, C.ERR_AREA_WORDS, rep)
            if blk == 0:                               # a multi-block task shows its block 0
                q[t + C.T_START0 + 2 * part] = start
                q[t + C.T_END0 + 2 * part] = end
                q[t + C.T_CORE0 + part] = core
            busy += end - start
            ntasks += 1
            if recording:                              # published with the done count below
                C.write_counts(f, lay.counts(core, tail % D), dec.counts)
        publish(q, w_running, 0)
        publish(q, w_tasks, ntasks)
        publish(q, w_busy, busy)
        tail += 1
        publish(q, w_done, tail)                       # the time row, status and outputs above
        publish(q, g_anydone, 1)
        fence()
        if observe(q, g_sleep):
            sched_sem.release()
        if observe(q, g_stop):
            return
