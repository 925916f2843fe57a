"""The predicted timeline as Chrome Trace Event JSON, in the emulator's track layout (host/trace.py).

    Prediction + one model.Timeline per run (re-simulated with capture on)
        │  runs laid end to end (run k starts where run k-1's device time ended)
        ▼
    process "runtime" (pid 0)   tid 0 "orchestrator": one slice per submitted record, "blocked"
                                      slices while a ring is full, one "run N" slice per run
                                      (device_us) with an "effective" slice (effective_us) in it
                                tid 1+i "scheduler i": "complete" and "dispatch" slices
    process "block b" (pid 1+b) tids AIC, AIV0, AIV1: one slice per job, named by kernel, with the
                                task, its nominal (uncontended) time and HBM bytes as arguments
    flow arrows                 producer job -> consumer job, one per dependency edge

Open it beside an emulator trace of the same run in https://ui.perfetto.dev.
"""

from __future__ import annotations

from typing import Any

from host.predict import model
from host.trace import track_metadata

__all__ = ["to_chrome"]


def _label(ri: model.RunInput, i: int) -> str:
    k = ri.kind[i]
    if k == model.K_TASK:
        return ri.kernel_names[ri.kernel[i]]
    return ("task", "scope_end", "alloc", "dummy")[k]


def to_chrome(pred: Any, timelines: list[model.Timeline]) -> dict:
    """Chrome JSON (a dict ready for json.dump) of ``pred`` (a Prediction) given each run's timeline."""
    p = pred.params
    ev = track_metadata(p.clusters, ("orchestrator", *(f"scheduler {i}" for i in range(p.sched_threads))))
    offset = 0.0
    flow = 0
    for rr, ri, tl in zip(pred.runs, pred.inputs, timelines):
        ev.append({"ph": "X", "name": f"run {rr.run}", "cat": "run", "pid": 0, "tid": 0, "ts": offset,
                   "dur": rr.device_us, "args": {"effective_us": rr.effective_us,
                                                 "effective_us_range": list(rr.effective_us_range),
                                                 "device_us": rr.device_us, "device_us_range": list(rr.device_us_range),
                                                 "bound": rr.bound}})
        ev.append({"ph": "X", "name": "effective", "cat": "run", "pid": 0, "tid": 0, "ts": offset,
                   "dur": rr.effective_us, "args": {"what": "first submit to the last completion (the reference's "
                                                            "Effective); the run slice adds run_overhead_us"}})
        for i, s, e in tl.orch:
            ev.append({"ph": "X", "name": _label(ri, i), "cat": "submit", "pid": 0, "tid": 0, "ts": offset + s,
                       "dur": e - s, "args": {"record": ri.first + i, "task": ri.tid[i]}})
        for s, e, ring in tl.blocked:
            ev.append({"ph": "X", "name": f"blocked: {ring} full", "cat": "blocked", "pid": 0, "tid": 0,
                       "ts": offset + s, "dur": e - s, "args": {}})
        for th, s, e, what, i in tl.sched:
            ev.append({"ph": "X", "name": f"{what} {_label(ri, i)}", "cat": what, "pid": 0, "tid": 1 + th,
                       "ts": offset + s, "dur": e - s, "args": {"task": ri.tid[i]}})
        first_job: dict[int, tuple[int, int, float, float]] = {}
        for i, c, lanes, s, e in tl.jobs:
            args = {"task": ri.tid[i], "record": ri.first + i, "nominal_us": ri.us[i], "hbm_bytes": ri.hbm[i]}
            for ln in lanes:
                ev.append({"ph": "X", "name": _label(ri, i), "cat": "task", "pid": 1 + c, "tid": ln,
                           "ts": offset + s, "dur": e - s, "args": args})
            first_job.setdefault(i, (1 + c, lanes[0], offset + s, offset + e))
        for cons, preds in enumerate(ri.preds):
            b = first_job.get(cons)
            for prod in preds:
                a = first_job.get(prod)
                if a is None or b is None:
                    continue                        # records without a core have no slice
                link = {"from_task": ri.tid[prod], "to_task": ri.tid[cons]}
                ev.append({"ph": "s", "id": flow, "name": "dependency", "cat": "dependency", "pid": a[0],
                           "tid": a[1], "ts": a[3] - min((a[3] - a[2]) / 2, 0.001), "args": link})
                ev.append({"ph": "f", "bp": "e", "id": flow, "name": "dependency", "cat": "dependency",
                           "pid": b[0], "tid": b[1], "ts": b[2] + min((b[3] - b[2]) / 2, 0.001), "args": link})
                flow += 1
        offset += rr.device_us
    return {"traceEvents": ev, "displayTimeUnit": "ns",
            "otherData": {"ptoemu_predict": True, "source": pred.source, "headline": pred.headline(),
                          "blocks": p.clusters, "effective_us": pred.effective_us,
                          "effective_us_range": list(pred.effective_us_range), "device_us": pred.device_us,
                          "device_us_range": list(pred.device_us_range), "bound": pred.bound, "params": dict(p),
                          "clock": "predicted a2a3 time, us from the first run's first submit"}}
