"""Dispatch benchmark: no-op tasks through the whole path, beside ProcessPoolExecutor.

    ptoemu bench dispatch [--tasks N] [--rounds R] [--blocks 1,24] [--json out.json]

Scenarios (every task is a no-op kernel; the runtime does all its work: records, tensor map,
ready queues, mailboxes, completions, retirement, timestamps):

    indep   N independent tasks, no tensor arguments
    chain   N tasks, each InOut on the same small buffer: a dependency chain of length N
    fanout  one writer, 64 readers, repeated (In edges from one producer)

Baselines, measured in the same process run, interleaved round by round (this machine is noisy,
so only side-by-side ratios mean anything):

    ProcessPoolExecutor(cpu_count, fork): submit N no-op calls, wait for all ("indep"), and
    submit-and-wait one call at a time ("chain": a dependent task cannot start before the result
    of the previous one is back).
"""

from __future__ import annotations

import concurrent.futures as cf
import json
import multiprocessing
import os
import statistics
import time
from collections.abc import Callable

import numpy as np

from host.device import Device
from host.platform import Platform
from kernels import AIV, In, InOut, Out, kernel


@kernel(AIV)
def noop(*args):
    """Does nothing: what is measured is the runtime around it."""


def _ppe_noop() -> None:
    return None


def orch_indep(rt, n: int) -> None:
    submit = rt.submit
    for _ in range(n):
        submit(noop)


def orch_chain(rt, buf, n: int) -> None:
    submit = rt.submit
    arg = InOut(buf)
    for _ in range(n):
        submit(noop, arg)


def orch_fanout(rt, bufs, n: int) -> None:
    src = bufs[0]
    w, r = Out(src), In(src)
    for i in range(0, n, 65):
        rt.submit(noop, w)
        for _ in range(min(64, n - i - 1)):
            rt.submit(noop, r)


def ppe_indep(pool: cf.ProcessPoolExecutor, n: int) -> None:
    cf.wait([pool.submit(_ppe_noop) for _ in range(n)])


def ppe_chain(pool: cf.ProcessPoolExecutor, n: int) -> None:
    for _ in range(n):
        pool.submit(_ppe_noop).result()


def _time(fn: Callable[[], object]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def _summary(times: list[float], n: int) -> dict:
    rates = sorted(n / t for t in times)
    return {"tasks": n, "rounds": len(times), "tasks_per_s": {
        "min": rates[0], "median": statistics.median(rates), "max": rates[-1]},
        "us_per_task": {"min": 1e6 / rates[-1], "median": 1e6 / statistics.median(rates),
                        "max": 1e6 / rates[0]}}


def run_dispatch(blocks: list[int], tasks: int, rounds: int, ppe_tasks: int | None = None,
                 log: Callable[[str], None] = print) -> dict:
    """Measure every scenario on a device of each size in ``blocks`` plus the PPE baselines."""
    ppe_n = ppe_tasks or max(1000, tasks // 10)
    workers = os.cpu_count() or 2
    results: dict = {"machine": {"cpus": workers}, "device": {}, "ppe": {}, "ratios": {}}
    ppe_times: dict[str, list[float]] = {"indep": [], "chain": []}
    ctx = multiprocessing.get_context("fork")
    with cf.ProcessPoolExecutor(workers, mp_context=ctx) as pool:
        ppe_indep(pool, 200)                      # warm the pool's workers
        for b in blocks:
            t0 = time.perf_counter()
            with Device(Platform(blocks=b), kernels=[noop]) as dev:
                start_s = time.perf_counter() - t0
                buf = dev.empty((8,), np.float32)
                bufs = [dev.empty((8,), np.float32)]
                scen = {"indep": lambda d=dev: d.run(orch_indep, tasks),
                        "chain": lambda d=dev, x=buf: d.run(orch_chain, x, tasks),
                        "fanout": lambda d=dev, x=bufs: d.run(orch_fanout, x, tasks)}
                for f in scen.values():           # warm-up: fault in the rings, fill caches
                    f()
                times: dict[str, list[float]] = {k: [] for k in scen}
                for _ in range(rounds):
                    for k, f in scen.items():
                        times[k].append(_time(f))
                    ppe_times["indep"].append(_time(lambda: ppe_indep(pool, ppe_n)))
                    ppe_times["chain"].append(_time(lambda: ppe_chain(pool, ppe_n)))
                t1 = time.perf_counter()
            stop_s = time.perf_counter() - t1
            res = {k: _summary(v, tasks) for k, v in times.items()}
            res["start_s"], res["stop_s"] = start_s, stop_s
            results["device"][str(b)] = res
            log(f"  blocks={b}: started in {start_s:.2f} s, stopped in {stop_s:.2f} s")
    results["ppe"] = {k: _summary(v, ppe_n) for k, v in ppe_times.items()}
    for b, res in results["device"].items():
        results["ratios"][b] = {
            "indep_vs_ppe": res["indep"]["tasks_per_s"]["median"]
            / results["ppe"]["indep"]["tasks_per_s"]["median"],
            "chain_vs_ppe_submit_and_wait": res["chain"]["tasks_per_s"]["median"]
            / results["ppe"]["chain"]["tasks_per_s"]["median"]}
    return results


def format_dispatch(r: dict) -> str:
    lines = [f"{'scenario':<10} {'blocks':>6} {'tasks/s min':>12} {'median':>10} {'max':>10} "
             f"{'us/task (median)':>17} {'x PPE':>7}"]
    ppe = r["ppe"]
    for b, res in r["device"].items():
        for k in ("indep", "chain", "fanout"):
            s = res[k]["tasks_per_s"]
            ratio = {"indep": r["ratios"][b]["indep_vs_ppe"],
                     "chain": r["ratios"][b]["chain_vs_ppe_submit_and_wait"]}.get(k)
            lines.append(f"{k:<10} {b:>6} {s['min']:>12,.0f} {s['median']:>10,.0f} {s['max']:>10,.0f} "
                         f"{res[k]['us_per_task']['median']:>17.2f} "
                         f"{(f'{ratio:.1f}x' if ratio else '-'):>7}")
    for k, label in (("indep", "PPE indep"), ("chain", "PPE s&w")):
        s = ppe[k]["tasks_per_s"]
        lines.append(f"{label:<10} {'-':>6} {s['min']:>12,.0f} {s['median']:>10,.0f} {s['max']:>10,.0f} "
                     f"{ppe[k]['us_per_task']['median']:>17.2f} {'1.0x':>7}")
    for b, res in r["device"].items():
        lines.append(f"device with {b} block(s): start {res['start_s']:.2f} s, stop {res['stop_s']:.2f} s")
    return "\n".join(lines)


def write_json(r: dict, path: str) -> None:
    with open(path, "w") as f:
        json.dump(r, f, indent=2)


class PssSampler:
    """Peak proportional set size (PSS) of this process and all its children, sampled in a
    background thread. PSS splits shared pages (GM) among the processes mapping them, so the sum
    counts the device's shared memory once."""

    def __init__(self, interval: float = 0.25) -> None:
        import threading
        self.interval = interval
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def sample(self) -> int:
        import psutil
        me = psutil.Process()
        total = 0
        for p in [me, *me.children(recursive=True)]:
            try:
                total += p.memory_full_info().pss
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                pass
        self.peak = max(self.peak, total)
        return total

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.sample()

    def __enter__(self) -> PssSampler:
        self.sample()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.sample()


def run_paged_attention(cases: list[str], variants: list[str], unrolls: list[int | None],
                        blocks: int, rounds: int, seed: int = 0,
                        log: Callable[[str], None] = print) -> dict:
    """hub vs first_output vs alloc on the device, beside the golden, per case and unroll."""
    import kernels.paged_attention as pa
    out: dict = {"blocks": blocks, "rounds": rounds, "runs": []}
    for case in cases:
        with PssSampler() as pss, Device(Platform(blocks=blocks), kernels=["kernels.paged_attention"]) as dev:
            data = pa.load_case(dev, case, seed)
            inputs = sum(data[n].nbytes for n in ("query", "key_cache", "value_cache", "block_table",
                                                  "context_lens"))
            h = data["host"]
            for unroll in unrolls:
                u = unroll or pa.case_params(case)["unroll"]
                g_times = []
                for _ in range(rounds):
                    t0 = time.perf_counter()
                    pa.golden(h["query"], h["key_cache"], h["value_cache"], h["block_table"],
                              h["context_lens"], data["scale"], unroll=u)
                    g_times.append(time.perf_counter() - t0)
                for variant in variants:
                    times = []
                    for _ in range(rounds):
                        before = dev.stats()
                        t0 = time.perf_counter()
                        shape = dev.run(pa.orchestrate, data["query"], data["key_cache"],
                                        data["value_cache"], data["block_table"], data["context_lens"],
                                        data["out"], scale=data["scale"], variant=variant, unroll=u)
                        times.append(time.perf_counter() - t0)
                        after = dev.stats()
                    worker = after.worker_tasks - before.worker_tasks
                    row = {"case": case, "unroll": u, "variant": variant, **shape,
                           "worker_tasks": worker,
                           "runtime_tasks": after.runtime_tasks - before.runtime_tasks,
                           "wall_s": statistics.median(times), "wall_s_all": times,
                           "golden_s": statistics.median(g_times),
                           "tasks_per_s": worker / statistics.median(times)}
                    row["device_over_golden"] = row["wall_s"] / row["golden_s"]
                    out["runs"].append(row)
                    log(f"  {case} unroll {u} {variant}: {worker} worker tasks, "
                        f"{row['wall_s'] * 1e3:.1f} ms (golden {row['golden_s'] * 1e3:.1f} ms, "
                        f"{row['device_over_golden']:.2f}x)")
        out.setdefault("memory", {})[case] = {"inputs_bytes": inputs, "peak_pss_bytes": pss.peak,
                                              "peak_over_inputs": pss.peak / inputs}
        log(f"  {case}: peak PSS of host + scheduler + workers {pss.peak / 2**20:.0f} MiB for "
            f"{inputs / 2**20:.0f} MiB of inputs ({pss.peak / inputs:.2f}x)")
    return out


def format_paged_attention(r: dict) -> str:
    lines = [f"{'case':<8} {'unroll':>6} {'variant':<13} {'tasks':>6} {'wall ms':>9} {'golden ms':>10} "
             f"{'dev/golden':>10} {'tasks/s':>9}"]
    for x in r["runs"]:
        lines.append(f"{x['case']:<8} {x['unroll']:>6} {x['variant']:<13} {x['worker_tasks']:>6} "
                     f"{x['wall_s'] * 1e3:>9.1f} {x['golden_s'] * 1e3:>10.1f} "
                     f"{x['device_over_golden']:>10.2f} {x['tasks_per_s']:>9,.0f}")
    by = {(x["case"], x["unroll"], x["variant"]): x for x in r["runs"]}
    for (case, u, v), x in by.items():
        if v == "first_output" and (case, u, "hub") in by:
            hub = by[(case, u, "hub")]
            lines.append(f"{case} unroll {u}: first_output saves {hub['worker_tasks'] - x['worker_tasks']} "
                         f"tasks and {(hub['wall_s'] - x['wall_s']) * 1e3:.1f} ms "
                         f"({(1 - x['wall_s'] / hub['wall_s']) * 100:.1f} %) over hub")
    for case, m in r.get("memory", {}).items():
        lines.append(f"{case}: peak PSS {m['peak_pss_bytes'] / 2**20:.0f} MiB = "
                     f"{m['peak_over_inputs']:.2f}x the inputs")
    return "\n".join(lines)
