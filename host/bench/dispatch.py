"""``ptoemu bench dispatch``: no-op tasks through the whole path, beside ProcessPoolExecutor.

Every task is a no-op kernel, so what is measured is the runtime: record, tensor map, ready
queue, mailbox, wake-up, completion, retirement, timestamps.

    scenario    graph                                                     per round
    indep       independent tasks, no arguments                           N tasks
    chain       each task InOut on the same buffer: one chain of N        N tasks
    fanout      one writer (Out), then 64 readers (In) of it; repeated    N tasks
    fanin       64 writers of disjoint rows, one reader of all; repeated  N tasks
    shape_*     independent tasks of one core shape (AIC, AIV, AIV_X2,    N/4 tasks each
                AIC_AIV, AIC_AIV_X2): mixed shapes need idle cores of one block
    deps64      64 independent producers, then 64 consumers each with     N tasks
                deps= all 64 producers (4,096 explicit edges); repeated
    spmd24      tasks of 24 SPMD blocks each (rate counted in blocks)     N blocks

Baselines in the same run, interleaved round by round: ProcessPoolExecutor(cpu_count, fork)
on N/10 no-op calls -- all submitted then waited ("indep"), and submit-and-wait one at a time
(a dependent task cannot start before the previous result is back: the baseline for "chain").
The cost of timestamps is measured on a second device without them, alive beside the first,
its indep/chain rounds interleaved with the first one's. Every row also says how much CPU the
host, the scheduler and all workers spent per task (median over rounds, from /proc).

Rows: {"scenario", "blocks", "timestamps", tasks/s and us/task min/median/max, "x_ppe",
"host_cpu_us", "scheduler_cpu_us", "workers_cpu_us", "cpu_us"}; summary: indep_x_ppe,
chain_x_ppe_submit_and_wait, timestamp_cost, readonly_inputs (decode_us_in / decode_us_inout),
device_lifecycle_s.
"""

from __future__ import annotations

import concurrent.futures as cf
import contextlib
import multiprocessing
import os
import statistics
import time
from collections.abc import Callable

import numpy as np

from device import codec as C
from device import layout as L
from device.execute import ArgDecoder
from host.bench import common
from host.device import Device
from host.platform import Platform
from host.progress import progress
from host.submit import TaskWriter
from host.tensor import Buffer, Tensor
from kernels import AIC, AIV, In, InOut, Mixed, Out, kernel


def _nothing(*args):
    """Does nothing: what is measured is the runtime around it."""


noop = kernel(AIV, name="bench.noop")(_nothing)
noop_aic = kernel(AIC, name="bench.noop_aic")(_nothing)
noop_aiv_x2 = kernel(Mixed(aiv0=_nothing, aiv1=_nothing), name="bench.noop_aiv_x2")
noop_aic_aiv = kernel(Mixed(aic=_nothing, aiv=_nothing), name="bench.noop_aic_aiv")
noop_aic_aiv_x2 = kernel(Mixed(aic=_nothing, aiv0=_nothing, aiv1=_nothing), name="bench.noop_aic_aiv_x2")
SHAPES = {"AIC": noop_aic, "AIV": noop, "AIV_X2": noop_aiv_x2, "AIC_AIV": noop_aic_aiv,
          "AIC_AIV_X2": noop_aic_aiv_x2}
KERNELS = [noop, *SHAPES.values()]


def orch_indep(rt, n: int, k=noop) -> None:
    submit = rt.submit
    for _ in range(n):
        submit(k)


def orch_chain(rt, buf, n: int) -> None:
    submit = rt.submit
    arg = InOut(buf)
    for _ in range(n):
        submit(noop, arg)


def orch_fanout(rt, buf, n: int) -> None:
    w, r = Out(buf), In(buf)
    for i in range(0, n, 65):
        rt.submit(noop, w)
        for _ in range(min(64, n - i - 1)):
            rt.submit(noop, r)


def orch_fanin(rt, rows, n: int) -> None:
    outs = [Out(rows[j]) for j in range(64)]
    whole = In(rows)
    for i in range(0, n, 65):
        for j in range(min(64, n - i)):
            rt.submit(noop, outs[j])
        rt.submit(noop, whole)


def orch_deps64(rt, n: int) -> None:
    submit = rt.submit
    for _ in range(0, n, 128):
        prods = [submit(noop) for _ in range(64)]
        for _ in range(64):
            submit(noop, deps=prods)


def orch_spmd(rt, n: int, blocks: int = 24) -> None:
    submit = rt.submit
    for _ in range(n // blocks):
        submit(noop, blocks=blocks)


def _ppe_noop() -> None:
    return None


def ppe_indep(pool: cf.ProcessPoolExecutor, n: int) -> None:
    cf.wait([pool.submit(_ppe_noop) for _ in range(n)])


def ppe_chain(pool: cf.ProcessPoolExecutor, n: int) -> None:
    for _ in range(n):
        pool.submit(_ppe_noop).result()


def scenarios(dev: Device, n: int) -> dict[str, Callable[[], object]]:
    buf = dev.empty((8,), np.float32)
    rows = dev.empty((64, 8), np.float32)
    out = {"indep": lambda: dev.run(orch_indep, n),
           "chain": lambda: dev.run(orch_chain, buf, n),
           "fanout": lambda: dev.run(orch_fanout, buf, n),
           "fanin": lambda: dev.run(orch_fanin, rows, n),
           "deps64": lambda: dev.run(orch_deps64, n),
           "spmd24": lambda: dev.run(orch_spmd, n)}
    for name, k in SHAPES.items():
        out[f"shape_{name}"] = lambda k=k: dev.run(orch_indep, n // 4, k)
    return out


class _Timed:
    """One device's scenarios, timed with the CPU each process spent on them."""

    def __init__(self, dev: Device, scen: dict[str, Callable[[], object]]) -> None:
        self.dev, self.scen = dev, scen
        self.pids = [os.getpid(), *dev.pids]
        self.times: dict[str, list[float]] = {k: [] for k in scen}
        self.cpu: dict[str, list[list[int]]] = {k: [] for k in scen}

    def round(self) -> None:
        for k, f in self.scen.items():
            c0 = common.cpu_ns(self.pids)
            self.times[k].append(common.timed(f))
            c1 = common.cpu_ns(self.pids)
            d = [b - a for a, b in zip(c0, c1)]
            self.cpu[k].append([d[0], d[1], sum(d[2:])])

    def rows(self, blocks: int, ts: bool, tasks: int) -> list[dict]:
        out = []
        for k, v in self.times.items():
            n = tasks // 4 if k.startswith("shape_") else tasks
            cpu = [statistics.median(c[i] for c in self.cpu[k]) / n / 1e3 for i in range(3)]
            out.append({"scenario": k, "blocks": blocks, "timestamps": ts, **common.rate_summary(v, n),
                        "host_cpu_us": cpu[0], "scheduler_cpu_us": cpu[1], "workers_cpu_us": cpu[2],
                        "cpu_us": sum(cpu)})
        return out


def view_decode_cost(n: int = 20000) -> dict:
    """What read-only In views cost: decoding a record of two In arguments against one of two
    InOut arguments, in this process (microseconds per record)."""
    lay = L.Layout(3, 4, 2, 1 << 16)
    ctrl = memoryview(bytearray(lay.nbytes))
    q, f = ctrl.cast("q"), ctrl.cast("d")
    gm = memoryview(bytearray(1 << 16))
    w = TaskWriter(lay, ctrl, q, f, 1 << 15, 1 << 15, None, None)
    w.hand_over = lambda tid, r: None
    dec = ArgDecoder(q, f, ctrl, gm)
    a = Tensor.whole(Buffer(None, 256, 0, False), (64,), np.dtype(np.float32))
    b = Tensor.whole(Buffer(None, 256, 512, False), (64,), np.dtype(np.float32))
    out = {}
    for name, d in (("in", In), ("inout", InOut)):
        tid = w.write(C.KIND_TASK, 0, 1, [d(a), d(b)], (), 0, None, "bench")
        r = lay.rec(tid)
        t0 = time.perf_counter()
        for _ in range(n):
            dec.tensors(r)
        out[f"decode_us_{name}"] = (time.perf_counter() - t0) / n * 1e6
    return out


def run(blocks: list[int], tasks: int, rounds: int, log: Callable[[str], None] = print) -> dict:
    ppe_n = max(1000, tasks // 10)
    workers = os.cpu_count() or 2
    rows: list[dict] = []
    ppe_times: dict[str, list[float]] = {"indep": [], "chain": []}
    life: dict[str, dict] = {}
    big = max(blocks)
    with cf.ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("fork")) as pool, \
            progress("dispatch", len(blocks) * rounds) as advance:
        ppe_indep(pool, 200)                          # warm the pool's workers
        for b in blocks:
            t0 = time.perf_counter()
            with Device(Platform(blocks=b), kernels=KERNELS) as dev, contextlib.ExitStack() as more:
                start_s = time.perf_counter() - t0
                timed = [_Timed(dev, scenarios(dev, tasks))]
                if b == big:                          # timestamp cost: the same rounds, interleaved
                    bare = more.enter_context(Device(Platform(blocks=b), kernels=KERNELS, timestamps=False))
                    scen = scenarios(bare, tasks)
                    timed.append(_Timed(bare, {k: scen[k] for k in ("indep", "chain")}))
                for t in timed:                       # warm-up: fault in the ring, fill caches
                    for f in t.scen.values():
                        f()
                for _ in range(rounds):
                    for t in timed:
                        t.round()
                    ppe_times["indep"].append(common.timed(lambda: ppe_indep(pool, ppe_n)))
                    ppe_times["chain"].append(common.timed(lambda: ppe_chain(pool, ppe_n)))
                    advance()
                t1 = time.perf_counter()
            life[str(b)] = {"start_s": start_s, "stop_s": time.perf_counter() - t1}
            log(f"  {b} block(s): device started in {start_s:.2f} s, stopped in {life[str(b)]['stop_s']:.2f} s")
            for t, ts in zip(timed, (True, False)):
                rows.extend(t.rows(b, ts, tasks))
    ppe = {k: common.rate_summary(v, ppe_n) for k, v in ppe_times.items()}
    for r in rows:
        base = {"indep": ppe["indep"], "chain": ppe["chain"]}.get(r["scenario"])
        r["x_ppe"] = r["tasks_per_s_median"] / base["tasks_per_s_median"] if base and r["timestamps"] else None
    for k, p in ppe.items():
        rows.append({"scenario": f"ppe_{k}", "blocks": None, "timestamps": None, **p, "x_ppe": 1.0})
    med = {(r["scenario"], r["blocks"], r["timestamps"]): r["tasks_per_s_median"] for r in rows}
    summary = {
        "indep_x_ppe": {str(b): med[("indep", b, True)] / ppe["indep"]["tasks_per_s_median"] for b in blocks},
        "chain_x_ppe_submit_and_wait": {str(b): med[("chain", b, True)] / ppe["chain"]["tasks_per_s_median"]
                                        for b in blocks},
        "timestamp_cost": {k: 1 - med[(k, big, True)] / med[(k, big, False)] for k in ("indep", "chain")},
        # The newer API's targets: an explicit 64 x 64 fan-in, and SPMD blocks, against
        # independent single-block tasks on the same device (>= 0.5 each).
        "deps64_vs_indep": {str(b): med[("deps64", b, True)] / med[("indep", b, True)] for b in blocks},
        "spmd24_blocks_vs_indep": {str(b): med[("spmd24", b, True)] / med[("indep", b, True)] for b in blocks},
        "readonly_inputs": view_decode_cost(),
        "device_lifecycle_s": life}
    return common.results("dispatch", {"blocks": blocks, "tasks": tasks, "rounds": rounds}, rows, summary)


def format(r: dict) -> str:
    cols = [("scenario", "{}"), ("blocks", "{}"), ("timestamps", "{}"), ("tasks_per_s_min", "{:,.0f}"),
            ("tasks_per_s_median", "{:,.0f}"), ("tasks_per_s_max", "{:,.0f}"),
            ("us_per_task_median", "{:.2f}"), ("x_ppe", "{:.1f}x"), ("host_cpu_us", "{:.2f}"),
            ("scheduler_cpu_us", "{:.2f}"), ("workers_cpu_us", "{:.2f}")]
    s = r["summary"]
    lines = [common.table("dispatch: no-op tasks through the whole path", cols, r["rows"])]
    lines.append("timestamps cost (tasks/s lost with them on, rounds interleaved): " + ", ".join(
        f"{k} {v * 100:+.1f} %" for k, v in s["timestamp_cost"].items()))
    if "deps64_vs_indep" in s:
        lines.append("explicit 64 x 64 fan-in vs independent tasks: " + ", ".join(
            f"{b} blocks {x:.2f}" for b, x in s["deps64_vs_indep"].items()))
        lines.append("SPMD blocks (24 per task) vs independent tasks: " + ", ".join(
            f"{b} blocks {x:.2f}" for b, x in s["spmd24_blocks_vs_indep"].items()))
    ro = s["readonly_inputs"]
    lines.append(f"read-only In views: decoding two In arguments {ro['decode_us_in']:.2f} us, two InOut "
                 f"{ro['decode_us_inout']:.2f} us per task")
    for b, x in s["device_lifecycle_s"].items():
        lines.append(f"{b} block(s): start {x['start_s']:.2f} s, stop {x['stop_s']:.2f} s")
    return "\n".join(lines)


def plots(r: dict, prefix: str) -> list[str]:
    def draw(ax):
        for scen in ("indep", "chain", "fanout", "fanin"):
            pts = sorted((x["blocks"], x["tasks_per_s_median"]) for x in r["rows"]
                         if x["scenario"] == scen and x["timestamps"])
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=scen)
        for k in ("indep", "chain"):
            p = next(x for x in r["rows"] if x["scenario"] == f"ppe_{k}")
            ax.axhline(p["tasks_per_s_median"], ls="--", lw=1, label=f"ProcessPoolExecutor {k}")
        ax.set_xlabel("blocks (3 worker processes each)")
        ax.set_ylabel("tasks/s (median)")
        ax.set_yscale("log")
        ax.set_title("no-op task throughput")
        ax.legend()
    p = common.plot(f"{prefix}-tasks_per_s.png", draw)
    return [p] if p else []
