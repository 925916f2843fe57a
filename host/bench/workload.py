"""``ptoemu bench workload --workload NAME``: any catalogued workload, measured the same way.

    for each case (--cases, default the workload's smallest) and variant (--variant, default all):
        one device, the inputs built once, the golden once (timed), then --rounds runs
        (host/run.py) ──▶ median device time, tasks/s, device/golden time, PASS/FAIL
    then one more, unchecked run of the first variant on a fresh device: the peak PSS of host +
    scheduler + workers while it builds its inputs and runs (no golden, no snapshot held), against
    the inputs -- the device's own footprint

Rows: {"workload", "case", "variant", "tasks", "runtime_tasks", "device_s_{min,median,max}",
"tasks_per_s", "golden_s", "device_over_golden", "pass"}; summary: {"memory": {case:
{"inputs_bytes", "peak_pss_bytes", "peak_over_inputs"}}}.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable

from host.bench import common
from host.run import run as run_workload
from kernels.workloads import catalogue

RATIO_MIN_INPUTS = 64 << 20     # below this the processes' own memory dominates the ratio


def run(name: str, cases: list[str] | None, variant: str, blocks: int, rounds: int,
        log: Callable[[str], None] = print) -> dict:
    wl = catalogue.load(name)
    cases = cases or [wl.smallest]
    rows, memory = [], {}
    for case in cases:
        got = run_workload(name, case, variant, blocks=blocks, rounds=rounds, progress=False, log=lambda s: None)
        with common.PssSampler() as pss:
            run_workload(name, case, got[0]["variant"], blocks=blocks, rounds=1, check=False, progress=False,
                         log=lambda s: None)
        by_variant: dict[str, list[dict]] = {}
        for r in got:
            by_variant.setdefault(r["variant"], []).append(r)
        for v, rs in by_variant.items():
            t = [r["device_s"] for r in rs]
            med = statistics.median(t)
            g = rs[0]["golden_s"]
            rows.append({"workload": name, "case": case, "variant": v, "tasks": rs[0]["tasks"],
                         "runtime_tasks": sum(n for k, n in rs[0]["runtime_tasks"].items() if k != "scope_end"),
                         "device_s_min": min(t), "device_s_median": med, "device_s_max": max(t),
                         "tasks_per_s": rs[0]["tasks"] / med if med > 0 else 0.0, "golden_s": g,
                         "device_over_golden": med / g if g else None, "pass": all(r.get("pass", True) for r in rs)})
            log(f"  {case} {v}: {rows[-1]['tasks']} tasks, device {med:.3f} s"
                + (f", golden {g:.3f} s ({med / g:.2f}x)" if g else "") + f", {'PASS' if rows[-1]['pass'] else 'FAIL'}")
        inputs = got[0]["inputs_bytes"] if got else 0
        memory[case] = {"inputs_bytes": inputs, "peak_pss_bytes": pss.peak,
                        "peak_over_inputs": pss.peak / inputs if inputs >= RATIO_MIN_INPUTS else None}
    return common.results("workload", {"workload": name, "cases": cases, "variant": variant, "blocks": blocks,
                                       "rounds": rounds}, rows, {"memory": memory})


def format(r: dict) -> str:
    cols = [("case", "{}"), ("variant", "{}"), ("tasks", "{:,}"), ("runtime_tasks", "{:,}"),
            ("device_s_median", "{:.3f}"), ("tasks_per_s", "{:,.0f}"), ("golden_s", "{:.3f}"),
            ("device_over_golden", "{:.2f}x"), ("pass", "{}")]
    lines = [common.table(f"workload {r['config']['workload']}: {r['config']['blocks']} blocks, "
                          f"{r['config']['rounds']} rounds", cols, r["rows"])]
    for case, m in r["summary"]["memory"].items():
        ratio = (f"= {m['peak_over_inputs']:.2f}x the inputs" if m["peak_over_inputs"]
                 else "(inputs too small to compare)")
        lines.append(f"{case}: peak PSS (host + scheduler + workers) {m['peak_pss_bytes'] / 2**20:.0f} MiB, inputs "
                     f"{m['inputs_bytes'] / 2**20:.1f} MiB {ratio}")
    return "\n".join(lines)


def plots(r: dict, prefix: str) -> list[str]:
    return []
