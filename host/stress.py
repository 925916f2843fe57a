"""Soak test: millions of tiny tasks through a tiny task ring and heap, checked as it goes.

    ptoemu stress --seconds 600 [--blocks 2] [--window 16] [--heap-kib 16]

Each round submits ``tasks`` tasks in scopes of 4 pairs: make a runtime tensor (heap ring), fill it
(Out), add it into one of 8 counters (InOut chains). After every round:

    results    every counter equals its closed-form value (no task lost, doubled or misordered)
    memory     resident set of the host, the scheduler and every worker (must stay flat)
    segments   the device's shared-memory segments mapped here (must stay two, same size)
    fds        open file descriptors of the host (must stay flat)

The verdict compares the last rounds with the first ones (after a warm-up round), so slow growth
-- a leak of a few bytes per task -- shows up over a long soak.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable

import numpy as np
import psutil

from host.device import Device
from host.platform import Platform
from kernels import AIV, In, InOut, Out, kernel

COUNTERS = 8
GROUP = 4            # 8 tasks + a scope end per scope: fits the 16-slot ring


@kernel(AIV)
def fill(out, value):
    out[...] = value


@kernel(AIV)
def bump(x, acc):
    acc += x[0]


def orch(rt, counters, first: int, n: int) -> None:
    for g in range(first, first + n, GROUP):
        with rt.scope():
            for i in range(g, min(g + GROUP, first + n)):
                t = rt.make_tensor((8,), np.int64)
                rt.submit(fill, Out(t), i)
                rt.submit(bump, In(t), InOut(counters[i % COUNTERS]))


def expected(total: int) -> np.ndarray:
    """Counter k holds the sum of all i < total with i % COUNTERS == k (in element 0)."""
    i = np.arange(total, dtype=np.int64)
    return np.bincount(i % COUNTERS, weights=i, minlength=COUNTERS).astype(np.int64)


def rss_mib(pids: list[int]) -> list[float]:
    out = []
    for p in pids:
        try:
            out.append(psutil.Process(p).memory_info().rss / 2**20)
        except psutil.NoSuchProcess:
            out.append(float("nan"))
    return out


def _mapped(names: set[str]) -> dict:
    """How many of the device's segments this process maps, and their bytes (from /proc)."""
    seen: dict[str, int] = {}
    with open("/proc/self/maps") as f:
        for line in f:
            i = line.find("/memfd:")
            if i >= 0 and line[i + 7:].split()[0] in names:
                lo, hi = (int(x, 16) for x in line.split()[0].split("-"))
                name = line[i + 7:].split()[0]
                seen[name] = seen.get(name, 0) + hi - lo
    return {"segments": len(seen), "segment_bytes": sum(seen.values())}


def soak(seconds: float, blocks: int = 2, window: int = 16, heap_kib: int = 16, tasks: int = 20000,
         log: Callable[[str], None] = print) -> dict:
    platform = Platform(blocks=blocks, task_window=window, heap_bytes=heap_kib * 1024, gm_bytes=16 << 20)
    rounds = []
    with Device(platform, kernels=[fill, bump]) as dev:
        counters = [dev.zeros((1,), np.int64) for _ in range(COUNTERS)]
        pids = [os.getpid(), *dev.pids]
        segs = set(dev.segment_names)
        t_end = time.monotonic() + seconds
        done = 0
        while True:
            t0 = time.perf_counter()
            dev.run(orch, counters, done, tasks // 2)
            wall = time.perf_counter() - t0
            done += tasks // 2
            got = np.array([dev.to_host(c)[0] for c in counters])
            ok = bool((got == expected(done)).all())
            rss = rss_mib(pids)
            rounds.append({"tasks": done * 2, "tasks_per_s": tasks / wall, "ok": ok,
                           "rss_host": rss[0], "rss_scheduler": rss[1], "rss_workers_max": max(rss[2:]),
                           "rss_total": sum(rss), "fds": len(os.listdir("/proc/self/fd")),
                           **_mapped(segs)})
            r = rounds[-1]
            log(f"  {r['tasks']:>10,} tasks  {r['tasks_per_s']:>9,.0f}/s  results {'ok' if ok else 'WRONG'}"
                f"  rss host {r['rss_host']:.1f} sched {r['rss_scheduler']:.1f} worker(max) "
                f"{r['rss_workers_max']:.1f} MiB  fds {r['fds']}  segments {r['segments']}")
            if not ok or time.monotonic() >= t_end:
                break
    return verdict(rounds)


def verdict(rounds: list[dict]) -> dict:
    """Flat means: the last rounds are within 5 MiB (per process kind) of the first ones after the
    warm-up round, the fd count and segments did not change, and every result was right."""
    base = rounds[1] if len(rounds) > 2 else rounds[0]
    last = rounds[-1]
    growth = {k: last[k] - base[k] for k in ("rss_host", "rss_scheduler", "rss_workers_max", "rss_total")}
    problems = []
    if not all(r["ok"] for r in rounds):
        problems.append("wrong results")
    for k in ("rss_host", "rss_scheduler", "rss_workers_max"):
        if growth[k] > 5.0:
            problems.append(f"{k} grew by {growth[k]:.1f} MiB")
    if last["fds"] != base["fds"]:
        problems.append(f"open fds changed {base['fds']} -> {last['fds']}")
    if last["segments"] != 2 or last["segment_bytes"] != base["segment_bytes"]:
        problems.append("shared-memory segments changed")
    return {"rounds": rounds, "tasks": last["tasks"], "growth_mib": growth, "problems": problems,
            "ok": not problems}
