"""``ptoemu bench granularity``: how big must a task be for the runtime to be worth it?

Kernels busy-compute for 0, 10, 30, 100, 300, 1000 us of their own CPU time (the thread's CPU
clock, so a kernel that is descheduled does not get credit for work it did not do: on a machine
with fewer CPUs than emulated cores, wall-clock spinning would count oversubscription as useful
work). For each device size and task size, N independent tasks run and

    efficiency = useful work / (cores x wall) = N x task_us / (P x wall)

where P = min(worker processes, CPUs): emulated cores share the machine's CPUs, so P is the
parallelism actually available (2 on a 2-CPU box, however many blocks). METG(50 %) -- the minimum
effective task granularity, as the Task Bench paper defines it -- is the smallest task size at
which efficiency reaches 50 %, interpolated log-linearly between measured sizes.

Rows: {"blocks", "cores", "task_us", "tasks", "wall_s", "efficiency"};
summary: {"metg_us": {blocks: METG or null when 50 % is never reached}}.
"""

from __future__ import annotations

import math
import os
import statistics
import time
from collections.abc import Callable

from host.bench import common
from host.device import Device
from host.platform import Platform
from host.progress import progress
from kernels import AIV, kernel

SIZES_US = (0, 10, 30, 100, 300, 1000)


@kernel(AIV, name="bench.busy")
def busy(us):
    """Busy-compute for ``us`` microseconds of this thread's CPU time (the useful work)."""
    if us <= 0:
        return
    end = time.thread_time_ns() + int(us * 1000)
    while time.thread_time_ns() < end:
        pass


def orch(rt, n: int, us: float) -> None:
    for _ in range(n):
        rt.submit(busy, us)


def metg(points: list[tuple[float, float]], target: float = 0.5) -> float | None:
    """Smallest task size (us) with efficiency >= target, interpolated on a log axis."""
    pts = sorted(points)
    prev = None
    for us, eff in pts:
        if eff >= target:
            if prev is None or prev[0] <= 0:
                return us
            (u0, e0), (u1, e1) = prev, (us, eff)
            f = (target - e0) / (e1 - e0) if e1 != e0 else 1.0
            return math.exp(math.log(u0) + f * (math.log(u1) - math.log(u0)))
        prev = (us, eff)
    return None


def run(blocks: list[int], sizes: list[float], rounds: int, work_s: float = 0.5,
        log: Callable[[str], None] = print) -> dict:
    cpus = os.cpu_count() or 1
    rows = []
    with progress("granularity", len(blocks) * len(sizes)) as advance:
        for b in blocks:
            P = min(Platform(blocks=b).cores, cpus)
            with Device(Platform(blocks=b), kernels=[busy]) as dev:
                dev.run(orch, 200, 0)                      # warm-up
                for us in sizes:
                    n = int(min(20000, max(200, work_s * P * 1e6 / max(us, 5))))
                    walls = [common.timed(lambda n=n, us=us: dev.run(orch, n, us)) for _ in range(rounds)]
                    wall = statistics.median(walls)
                    eff = n * us / 1e6 / (P * wall)
                    rows.append({"blocks": b, "cores": P, "task_us": us, "tasks": n, "wall_s": wall,
                                 "us_per_task": wall / n * 1e6, "efficiency": eff})
                    advance()
            m = metg([(r["task_us"], r["efficiency"]) for r in rows if r["blocks"] == b])
            log(f"  {b} block(s): METG(50%) = " + (f"{m:.1f} us" if m is not None else "not reached"))
    summary = {"metg_us": {str(b): metg([(r["task_us"], r["efficiency"]) for r in rows if r["blocks"] == b])
                           for b in blocks}}
    return common.results("granularity", {"blocks": blocks, "sizes_us": sizes, "rounds": rounds}, rows,
                          summary)


def format(r: dict) -> str:
    cols = [("blocks", "{}"), ("cores", "{}"), ("task_us", "{:g}"), ("tasks", "{}"), ("wall_s", "{:.3f}"),
            ("us_per_task", "{:.1f}"), ("efficiency", "{:.2f}")]
    lines = [common.table("granularity: efficiency = useful work / (cores x wall)", cols, r["rows"])]
    lines.append("METG(50%): " + ", ".join(
        f"{b} blocks {m:.1f} us" if m is not None else f"{b} blocks not reached"
        for b, m in r["summary"]["metg_us"].items()))
    return "\n".join(lines)


def plots(r: dict, prefix: str) -> list[str]:
    def draw(ax):
        for b in sorted({x["blocks"] for x in r["rows"]}):
            pts = sorted((max(x["task_us"], 1), x["efficiency"]) for x in r["rows"] if x["blocks"] == b)
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=f"{b} blocks")
        ax.axhline(0.5, ls="--", lw=1, color="grey")
        ax.set_xscale("log")
        ax.set_xlabel("task size (us of busy compute; 0 plotted at 1)")
        ax.set_ylabel("efficiency")
        ax.set_title("efficiency vs task size (METG at the dashed line)")
        ax.legend()
    p = common.plot(f"{prefix}-efficiency.png", draw)
    return [p] if p else []
