"""A worker process: one emulated core (AIC or AIV) of one block.

    scheduler ── mailbox[head] += 1, slot = tid*4+part ──┐
              ── worker semaphore: one token per entry ──┤
                                                         ▼
    worker:  yield-spin on mailbox head (bounded) ─▶ take the token ─▶ read the task record
             ─▶ numpy views into GM (zero copy) + scalars ─▶ kernel(*tensors, *scalars)
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
import signal
import time
import traceback
from types import SimpleNamespace

import numpy as np

from device import layout as L
from device import sanitizer
from device.shm import write_report
from kernels.registry import CoreInfo, _set_core

CORE_KINDS = ("AIC", "AIV", "AIV")


def core_name(core: int) -> str:
    lane = core % 3
    return f"{CORE_KINDS[lane]}{'' if lane == 0 else lane - 1} of block {core // 3} (core {core})"


class ArgDecoder:
    """Turns the tensor and scalar words of a task record into kernel arguments."""

    def __init__(self, ctx: SimpleNamespace, readonly_inputs: bool = False) -> None:
        self.q, self.f = ctx.q, ctx.f
        self.tags = ctx.ctrl_buf
        self.ctrl_buf = ctx.ctrl_buf
        self.gm = ctx.gm_buf
        self.meta_cache: dict[int, tuple] = {}
        self.readonly_inputs = readonly_inputs

    def _meta(self, meta: int) -> tuple:
        m = self.meta_cache.get(meta)
        if m is None:
            nd = (meta >> 16) & 7
            drop = (meta >> 20) & 31
            keep = tuple(d for d in range(nd) if not drop >> d & 1)
            m = self.meta_cache[meta] = (L.DTYPES[(meta >> 8) & 255], keep, meta & 3)
        return m

    def tensors(self, r: int) -> list:
        """Numpy views of the record's tensor arguments (their directions in ``last_dirs``)."""
        q, gm = self.q, self.gm
        out = []
        self.last_dirs = dirs = []
        for i in range(q[r + L.H_NTENSORS]):
            a = r + L.ARGS_OFF + i * L.ARG_WORDS
            dt, keep, d = self._meta(q[a + L.A_META])
            shape = [q[a + L.A_SHAPE + k] for k in keep]
            strides = [q[a + L.A_STRIDES + k] for k in keep]
            arr = np.ndarray(shape, dt, gm, q[a + L.A_LO], strides)
            dirs.append(d)
            if d == L.DIR_IN and self.readonly_inputs:
                arr.flags.writeable = False
            out.append(arr)
        return out

    def scalars(self, r: int, out: list) -> list:
        q, f = self.q, self.f
        ns = q[r + L.H_NSCALARS]
        if not ns:
            return out
        tb = (r + L.TAGS_OFF) * 8
        tags = self.tags
        v = r + L.VALUES_OFF
        for j in range(ns):
            t = tags[tb + j]
            if t == L.TAG_INT:
                out.append(q[v])
                v += 1
            elif t == L.TAG_FLOAT:
                out.append(f[v])
                v += 1
            elif t == L.TAG_BOOL:
                out.append(bool(q[v]))
                v += 1
            else:
                n = q[v]
                dt = L.DTYPES[t - L.TAG_ARRAY]
                wire = np.float64 if dt.kind in "fc" else np.int64
                out.append(np.frombuffer(self.ctrl_buf, wire, n, (v + 1) * 8).astype(dt))
                v += 1 + n
        return out


def describe_args(q, r: int) -> list[str]:
    """'shape dtype dir' of each tensor argument of the record at word r (for error reports)."""
    out = []
    for i in range(q[r + L.H_NTENSORS]):
        a = r + L.ARGS_OFF + i * L.ARG_WORDS
        meta = q[a + L.A_META]
        nd, drop = (meta >> 16) & 7, (meta >> 20) & 31
        shape = tuple(q[a + L.A_SHAPE + d] for d in range(nd) if not drop >> d & 1)
        out.append(f"{L.DIR_NAMES.get(meta & 3, '?')}{shape} {L.DTYPES[(meta >> 8) & 255]}")
    return out


def run(ctx: SimpleNamespace, core: int) -> None:
    """Entry point of a worker process (forked from the host)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)      # Ctrl-C is the host's business
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
    dec = ArgDecoder(ctx, ctx.sanitize)
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
            if os.getppid() != host_pid or q[g_stop]:
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
        tensors = []
        try:
            tensors = dec.tensors(r)
            fn(*dec.scalars(r, list(tensors)))
        except BaseException as e:  # noqa: BLE001 - a kernel may raise anything; report it all
            q[t + L.T_STATUS] = L.STATUS_ERROR
            rep = {"tid": tid, "kernel": names[q[r + L.H_KERNEL]], "core": core_name(core),
                   "part": part, "args": describe_args(q, r),
                   "error": f"{type(e).__name__}: {e}", "traceback": traceback.format_exc()}
            if ctx.sanitize:
                rep["violation"] = sanitizer.written_in(
                    e, tensors, dec.last_dirs, sanitizer.arg_names(fn, len(tensors)))
            write_report(q, err_area, L.ERR_AREA_WORDS, rep)
        end = perf()
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
