"""Traces: every task's life on the device, as Chrome Trace Event JSON (Perfetto, chrome://tracing).

    Device(..., trace=True | "run.json")
      scheduler keeps, per retired task: submit, ready, dispatch, start/end per part, done seen,
      cores, status -- and every dependency edge of the graph (consumer, producer)
      dev.trace()          -> TraceData (rows + edges + scheduler phase times), taken from the
                              scheduler through a temporary .npz file
      dev.write_trace(p)   -> Chrome JSON:
         process "runtime": tracks "orchestrator (host)" (dev.run slices, submit instants) and
                            "scheduler" (dispatch / completion-seen instants)
         process "block b": tracks AIC, AIV0, AIV1 -- one slice per task part, named by kernel,
                            with the task id and its phase times as arguments
         flow arrows        one per dependency edge, producer slice -> consumer slice

    summarize(trace_json) -> per-task phase gaps (percentiles), core utilisation per core type,
                             scheduler time per phase (the reference's sched_overhead_analysis)

Open a trace: https://ui.perfetto.dev -> "Open trace file" -> run.json (or chrome://tracing ->
Load). Flow arrows show when a slice is selected ("Flow events" in the details panel).
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from device.codec import STATUS_NAMES, STATUS_PRED_FALSE, TRACE_COLUMNS, block_of, core_name, lane_of

C = {name: i for i, name in enumerate(TRACE_COLUMNS)}
LANES = ("AIC", "AIV0", "AIV1")


@dataclass
class TraceData:
    rows: np.ndarray                       # one row per task (TRACE_COLUMNS), ns
    edges: np.ndarray                      # (consumer, producer) task ids
    kernel_names: list[str]
    blocks: int
    phase_ns: dict = field(default_factory=dict)     # scheduler time per loop step, over the runs only
    runs: list[tuple[int, int]] = field(default_factory=list)   # (start, end) ns of each dev.run
    pred_false: list[int] = field(default_factory=list)    # tasks whose predicate was false
    counted: np.ndarray | None = None      # recording: counted costs per task (codec.COUNTED_COLUMNS)

    @staticmethod
    def load(path: str, kernel_names: list[str], blocks: int, phase_ns: dict,
             pred_false: list[int] | None = None) -> TraceData:
        with np.load(path) as z:
            rows, edges = z["rows"], z["edges"]
            counted = z["counted"] if "counted" in z.files else None
        os.unlink(path)
        return TraceData(rows, edges, kernel_names, blocks, phase_ns, pred_false=list(pred_false or ()),
                         counted=counted)

    def extend(self, other: TraceData) -> None:
        self.rows = np.concatenate([self.rows, other.rows])
        self.edges = np.concatenate([self.edges, other.edges])
        self.phase_ns = {k: self.phase_ns.get(k, 0) + other.phase_ns.get(k, 0)
                         for k in {*self.phase_ns, *other.phase_ns}}
        self.runs += other.runs
        self.pred_false += other.pred_false
        if other.counted is not None:
            self.counted = other.counted if self.counted is None else np.concatenate([self.counted, other.counted])


def _us(ns: int | float, t0: int) -> float:
    return (ns - t0) / 1000.0


def track_metadata(blocks: int, runtime_tracks: Sequence[str]) -> list[dict]:
    """The track layout every ptoemu trace shares, so an emulated and a predicted trace line up:
    process "runtime" (pid 0) with ``runtime_tracks`` (tid 0, 1, ...) and, per block b, process
    "block b" (pid 1 + b) with tracks AIC, AIV0, AIV1 (tid = lane)."""
    ev: list[dict] = [{"ph": "M", "name": "process_name", "pid": 0, "args": {"name": "runtime"}},
                      {"ph": "M", "name": "process_sort_index", "pid": 0, "args": {"sort_index": 0}}]
    for tid, name in enumerate(runtime_tracks):
        ev.append({"ph": "M", "name": "thread_name", "pid": 0, "tid": tid, "args": {"name": name}})
    for b in range(blocks):
        ev.append({"ph": "M", "name": "process_name", "pid": 1 + b, "args": {"name": f"block {b}"}})
        ev.append({"ph": "M", "name": "process_sort_index", "pid": 1 + b, "args": {"sort_index": 1 + b}})
        for lane, name in enumerate(LANES):
            ev.append({"ph": "M", "name": "thread_name", "pid": 1 + b, "tid": lane, "args": {"name": name}})
    return ev


def to_chrome(data: TraceData) -> dict:
    """Chrome Trace Event JSON (a dict ready for json.dump)."""
    rows = data.rows
    ev: list[dict] = []
    t0 = int(rows[:, C["submit"]].min()) if len(rows) else 0
    if data.runs:
        t0 = min(t0, min(s for s, _ in data.runs)) if len(rows) else min(s for s, _ in data.runs)
    ev.extend(track_metadata(data.blocks, ("orchestrator (host)", "scheduler")))
    for i, (s, e) in enumerate(data.runs):
        ev.append({"ph": "X", "name": "dev.run", "cat": "run", "pid": 0, "tid": 0, "ts": _us(s, t0),
                   "dur": (e - s) / 1000.0, "args": {"run": i}})
    where: dict[int, tuple[int, int, float, float]] = {}      # task -> (pid, lane, start, end) of 1st part
    names = data.kernel_names
    for r in rows.tolist():
        tid, k = r[C["tid"]], r[C["kernel"]]
        kname = names[k] if k < len(names) else str(k)
        args = {"task": tid, "kernel": kname,
                "submit_us": _us(r[C["submit"]], t0), "ready_us": _us(r[C["ready"]], t0),
                "dispatch_us": _us(r[C["dispatch"]], t0), "done_us": _us(r[C["done"]], t0),
                "status": STATUS_NAMES[r[C["status"]]] if 0 <= r[C["status"]] < len(STATUS_NAMES) else "?"}
        ev.append({"ph": "i", "s": "t", "name": "submit", "cat": "submit", "pid": 0, "tid": 0,
                   "ts": _us(r[C["submit"]], t0), "args": {"task": tid, "kernel": kname}})
        ev.append({"ph": "i", "s": "t", "name": f"dispatch {tid}", "cat": "dispatch", "pid": 0, "tid": 1,
                   "ts": _us(r[C["dispatch"]], t0), "args": {"task": tid}})
        ev.append({"ph": "i", "s": "t", "name": f"done {tid}", "cat": "done", "pid": 0, "tid": 1,
                   "ts": _us(r[C["done"]], t0), "args": {"task": tid}})
        if r[C["status"]] == STATUS_PRED_FALSE:   # completed on the scheduler, no core
            ev.append({"ph": "i", "s": "t", "name": f"predicated skip {kname.rsplit('.', 1)[-1]}",
                       "cat": "predicate", "pid": 0, "tid": 1, "ts": _us(r[C["done"]], t0), "args": args})
        for p in range(3):
            core = r[C[f"core{p}"]]
            if core < 0:
                continue
            st, en = _us(r[C[f"start{p}"]], t0), _us(r[C[f"end{p}"]], t0)
            pid, lane = 1 + block_of(core), lane_of(core)
            ev.append({"ph": "X", "name": kname.rsplit(".", 1)[-1], "cat": "task", "pid": pid, "tid": lane,
                       "ts": st, "dur": max(en - st, 0.0), "args": {**args, "part": p,
                                                                   "core": core_name(core)}})
            if tid not in where:
                where[tid] = (pid, lane, st, en)
    for i, (cons, prod) in enumerate(data.edges.tolist()):
        a, b = where.get(prod), where.get(cons)
        if a is None or b is None:
            continue             # runtime tasks (alloc, scope ends) have no slice
        link = {"from_task": prod, "to_task": cons}
        ev.append({"ph": "s", "id": i, "name": "dependency", "cat": "dependency", "pid": a[0], "tid": a[1],
                   "ts": a[3] - min((a[3] - a[2]) / 2, 0.001), "args": link})
        ev.append({"ph": "f", "bp": "e", "id": i, "name": "dependency", "cat": "dependency", "pid": b[0],
                   "tid": b[1], "ts": b[2] + min((b[3] - b[2]) / 2, 0.001), "args": link})
    return {"traceEvents": ev, "displayTimeUnit": "ns",
            "otherData": {"ptoemu": True, "blocks": data.blocks, "tasks": int(len(rows)),
                          "edges": int(len(data.edges)), "scheduler_phase_ns": data.phase_ns,
                          "clock": "CLOCK_MONOTONIC (perf_counter_ns), us from the first event"}}


def write_chrome(data: TraceData, path: str) -> None:
    with open(path, "w") as f:
        json.dump(to_chrome(data), f)


def _pct(x: np.ndarray) -> dict:
    if not len(x):
        return {}
    p = np.percentile(x, [50, 90, 99])
    return {"p50": float(p[0]), "p90": float(p[1]), "p99": float(p[2]), "max": float(x.max()),
            "mean": float(x.mean())}


GAPS = (("submit_to_ready", "submit_us", "ready_us"), ("ready_to_dispatch", "ready_us", "dispatch_us"),
        ("head_overhead (dispatch_to_start)", "dispatch_us", "start"),
        ("execution (start_to_end)", "start", "end"), ("tail_overhead (end_to_seen)", "end", "done_us"),
        ("latency (dispatch_to_seen)", "dispatch_us", "done_us"))


def summarize(trace: dict) -> dict:
    """The scheduler-overhead analysis of a Chrome trace written by ``write_chrome``."""
    tasks: dict[int, dict] = {}
    for e in trace["traceEvents"]:
        if e.get("ph") == "X" and e.get("cat") == "task":
            a = e["args"]
            t = tasks.setdefault(a["task"], {**a, "start": e["ts"], "end": e["ts"] + e["dur"], "lanes": []})
            t["start"], t["end"] = min(t["start"], e["ts"]), max(t["end"], e["ts"] + e["dur"])
            t["lanes"].append((e["pid"], e["tid"], e["dur"]))
    out: dict = {"tasks": len(tasks), "gaps_us": {}}
    for name, a, b in GAPS:
        out["gaps_us"][name] = _pct(np.array([t[b] - t[a] for t in tasks.values()]))
    if tasks:
        span = max(t["end"] for t in tasks.values()) - min(t["start"] for t in tasks.values())
        blocks = trace.get("otherData", {}).get("blocks", 0)
        busy = {"AIC": 0.0, "AIV": 0.0}
        for t in tasks.values():
            for _, lane, dur in t["lanes"]:
                busy["AIC" if lane == 0 else "AIV"] += dur
        ncores = {"AIC": blocks, "AIV": 2 * blocks}
        out["span_us"] = span
        out["utilisation"] = {k: busy[k] / (ncores[k] * span) if ncores[k] and span else 0.0 for k in busy}
        out["busy_us"] = busy
    ph = trace.get("otherData", {}).get("scheduler_phase_ns") or {}
    total = sum(ph.values())
    out["scheduler_phases"] = {k: {"ms": v / 1e6, "share": v / total if total else 0.0}
                               for k, v in ph.items()}
    return out


def format_summary(s: dict) -> str:
    lines = [f"{s['tasks']} tasks" + (f" over {s['span_us'] / 1e3:.1f} ms" if "span_us" in s else "")]
    lines.append(f"{'per task (us)':<36} {'p50':>9} {'p90':>9} {'p99':>9} {'max':>9} {'mean':>9}")
    for name, p in s["gaps_us"].items():
        if p:
            lines.append(f"{name:<36} {p['p50']:>9.1f} {p['p90']:>9.1f} {p['p99']:>9.1f} {p['max']:>9.1f} "
                         f"{p['mean']:>9.1f}")
    for k, u in s.get("utilisation", {}).items():
        lines.append(f"{k} core utilisation: {u * 100:.1f} %")
    if s.get("scheduler_phases"):
        lines.append("scheduler time: " + ", ".join(f"{k} {v['ms']:.1f} ms ({v['share'] * 100:.0f} %)"
                                                     for k, v in s["scheduler_phases"].items()))
    return "\n".join(lines)


def critical_path(data: TraceData) -> int:
    """Length, in tasks, of the longest dependency chain among the traced tasks."""
    if not len(data.rows):
        return 0
    preds: dict[int, list[int]] = {}
    for c, p in data.edges.tolist():
        preds.setdefault(c, []).append(p)
    depth: dict[int, int] = {}
    for tid in sorted(data.rows[:, C["tid"]].tolist()):
        depth[tid] = 1 + max((depth.get(p, 0) for p in preds.get(tid, ())), default=0)
    return max(depth.values())
