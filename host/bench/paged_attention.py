"""``ptoemu bench paged-attention``: hub vs first_output vs alloc, per case and unroll factor.

For every (case, unroll, variant): tasks, wall time of the device run (median of rounds), tasks/s,
critical-path length in tasks (from a traced run's dependency edges), scheduler busy time,
per-task runtime overhead (head: dispatch->start, plus tail: end->completion seen), the golden's
time in the same process run, and the saving of first_output over hub in tasks and wall time.
Peak PSS of host + scheduler + workers is sampled for each case.

Rows: {"case", "unroll", "variant", "groups", "chunks", "worker_tasks", "runtime_tasks",
"critical_path", "wall_s", "tasks_per_s", "golden_s", "device_over_golden", "scheduler_busy_s",
"overhead_us_per_task"}; summary: {"savings": [...], "memory": {case: {...}}}.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import numpy as np

import kernels.workloads.paged_attention as pa
from host.bench import common
from host.device import Device
from host.platform import Platform
from host.predict import predict as predict_graph
from host.run import FILL_KERNELS, build_on
from host.trace import C, TraceData, critical_path

INPUTS = pa.INPUTS
RATIO_MIN_INPUTS = 64 << 20


def _load(dev: Device, case: str, seed: int) -> dict:
    """A case built on the device as the runner builds it (host.run.build_on): its tensors, their
    host views under "host", and its scale."""
    params = pa.case_params(case)
    views, tensors = build_on(dev, pa.WORKLOAD, params, seed)
    return {**tensors, "host": views, "scale": pa.scale_of(params)}


def _run(dev: Device, data: dict, variant: str, unroll: int) -> dict:
    return dev.run(pa.orchestrate, *(data[n] for n in INPUTS), data["out"], scale=data["scale"],
                   variant=variant, unroll=unroll)


def run(cases: list[str], variants: list[str], unrolls: list[int | None], blocks: int, rounds: int,
        seed: int = 0, trace_prefix: str | None = None, predict: bool = False,
        log: Callable[[str], None] = print) -> dict:
    rows: list[dict] = []
    memory: dict = {}
    traces: dict[str, TraceData] = {}
    for case in cases:
        with common.PssSampler() as pss, \
                Device(Platform(blocks=blocks), kernels=["kernels.workloads.paged_attention", FILL_KERNELS]) as dev:
            data = _load(dev, case, seed)
            inputs = sum(data[n].nbytes for n in INPUTS)
            h = data["host"]
            for unroll in unrolls:
                u = unroll or pa.case_params(case)["unroll"]
                args = (*(h[n] for n in INPUTS), data["scale"])
                g_times = [common.timed(lambda u=u, a=args: pa.golden(*a, unroll=u)) for _ in range(rounds)]
                for variant in variants:
                    _run(dev, data, variant, u)                       # warm-up
                    times, busy, over, ntimed = [], 0, 0, 0
                    for _ in range(rounds):
                        before = dev.stats()
                        t0 = time.perf_counter()
                        shape = _run(dev, data, variant, u)
                        times.append(time.perf_counter() - t0)
                        after = dev.stats()
                        busy += after["scheduler_busy_ns"] - before["scheduler_busy_ns"]
                        for ph in ("dispatch_to_start", "end_to_seen"):
                            over += after["phase_ns"][ph] - before["phase_ns"][ph]
                        ntimed += after["timed_tasks"] - before["timed_tasks"]
                    worker = after.worker_tasks - before.worker_tasks
                    wall = statistics.median(times)
                    rows.append({"case": case, "unroll": u, "variant": variant, **shape, "worker_tasks": worker,
                                 "runtime_tasks": after.runtime_tasks - before.runtime_tasks,
                                 "critical_path": None, "wall_s": wall, "tasks_per_s": worker / wall,
                                 "golden_s": statistics.median(g_times),
                                 "device_over_golden": wall / statistics.median(g_times),
                                 "scheduler_busy_s": busy / rounds / 1e9,
                                 "overhead_us_per_task": over / max(ntimed, 1) / 1e3})
                    log(f"  {case} unroll {u} {variant}: {worker} worker tasks, {wall * 1e3:.1f} ms "
                        f"(golden {rows[-1]['golden_s'] * 1e3:.1f} ms)")
        # Below RATIO_MIN_INPUTS the processes' own baseline (~2.5 MiB each) dwarfs the inputs, and
        # a ratio would say nothing about what the emulator adds to them.
        memory[case] = {"inputs_bytes": inputs, "peak_pss_bytes": pss.peak,
                        "peak_over_inputs": pss.peak / inputs if inputs >= RATIO_MIN_INPUTS else None}
        # The dependency graph, from one traced run per point (tracing keeps every edge); the
        # same run recorded is what the a2a3 prediction replays.
        with Device(Platform(blocks=blocks), kernels=["kernels.workloads.paged_attention"], trace=True,
                    record=predict) as dev:
            data = _load(dev, case, seed)
            for r in (r for r in rows if r["case"] == case):
                _run(dev, data, r["variant"], r["unroll"])          # warm-up, not kept
                dev.trace(clear=True)
                _run(dev, data, r["variant"], r["unroll"])
                tr = dev.trace(clear=True)
                r["critical_path"] = critical_path(tr)
                traces[f"{case}-u{r['unroll']}-{r['variant']}"] = tr
                if predict:
                    g = dev.graph()
                    pr = predict_graph(g, run=len(g.runs) - 1)
                    r.update(pr.summary())
    if trace_prefix:
        from host.trace import write_chrome
        for name, tr in traces.items():
            write_chrome(tr, f"{trace_prefix}-{name}.json")
    savings = []
    by = {(r["case"], r["unroll"], r["variant"]): r for r in rows}
    for (case, u, v), r in by.items():
        hub = by.get((case, u, "hub"))
        if v == "first_output" and hub:
            savings.append({"case": case, "unroll": u, "tasks": hub["worker_tasks"] - r["worker_tasks"],
                            "critical_path": hub["critical_path"] - r["critical_path"],
                            "wall_s": hub["wall_s"] - r["wall_s"], "wall_share": 1 - r["wall_s"] / hub["wall_s"]})
    out = common.results("paged-attention", {"cases": cases, "variants": variants, "unroll": unrolls,
                                             "blocks": blocks, "rounds": rounds}, rows,
                         {"savings": savings, "memory": memory})
    out["traces"] = traces                       # not serialised; for plots
    return out


def format(r: dict) -> str:
    cols = [("case", "{}"), ("unroll", "{}"), ("variant", "{}"), ("worker_tasks", "{}"),
            ("runtime_tasks", "{}"), ("critical_path", "{}"), ("wall_s", "{:.3f}"), ("tasks_per_s", "{:,.0f}"),
            ("golden_s", "{:.3f}"), ("device_over_golden", "{:.2f}"), ("scheduler_busy_s", "{:.3f}"),
            ("overhead_us_per_task", "{:.1f}")]
    if any("predicted_a2a3_us" in row for row in r["rows"]):
        cols += [("predicted_effective_us", "{:.0f}"), ("predicted_a2a3_us", "{:.0f}"), ("predicted_bound", "{}")]
    lines = [common.table("paged attention on the emulated device", cols, r["rows"])]
    for s in r["summary"]["savings"]:
        lines.append(f"{s['case']} unroll {s['unroll']}: first_output saves {s['tasks']} tasks, "
                     f"{s['critical_path']} on the critical path, {s['wall_s'] * 1e3:.1f} ms "
                     f"({s['wall_share'] * 100:.1f} %) of wall time over hub")
    for case, m in r["summary"]["memory"].items():
        ratio = (f"= {m['peak_over_inputs']:.2f}x the {m['inputs_bytes'] / 2**20:.0f} MiB of inputs"
                 if m["peak_over_inputs"] is not None else
                 f"(inputs {m['inputs_bytes'] / 2**20:.1f} MiB: too small for a meaningful ratio)")
        lines.append(f"{case}: peak PSS (host + scheduler + workers) {m['peak_pss_bytes'] / 2**20:.0f} MiB {ratio}")
    return "\n".join(lines)


def plots(r: dict, prefix: str) -> list[str]:
    out = []
    for name, tr in r.get("traces", {}).items():
        if not name.endswith("first_output"):
            continue

        def draw(ax, tr=tr, name=name):
            rows = tr.rows
            t0 = rows[:, C["submit"]].min()
            spans: dict[tuple[int, int], list] = {}          # (core, kernel) -> [(start, width)]
            for p in range(3):
                ran = rows[rows[:, C[f"core{p}"]] >= 0]
                for core, k, st, en in zip(ran[:, C[f"core{p}"]].tolist(), ran[:, C["kernel"]].tolist(),
                                           ran[:, C[f"start{p}"]].tolist(), ran[:, C[f"end{p}"]].tolist()):
                    spans.setdefault((core, k), []).append(((st - t0) / 1e6, max((en - st) / 1e6, 1e-3)))
            colors: dict[int, str] = {}
            for (core, k), bars in sorted(spans.items()):
                c = colors.setdefault(k, f"C{len(colors)}")
                ax.broken_barh(bars, (core - 0.4, 0.8), color=c)
            for k, c in colors.items():
                ax.plot([], [], color=c, lw=6, label=tr.kernel_names[k].rsplit(".", 1)[-1])
            ax.set_xlabel("ms")
            ax.set_ylabel("core (AIC = 3b, AIV = 3b+1, 3b+2)")
            ax.set_title(f"per-core timeline: {name}")
            ax.legend(loc="upper right")
        p = common.plot(f"{prefix}-timeline-{name}.png", draw)
        if p:
            out.append(p)
    return out


__all__ = ["run", "format", "plots", "np"]
