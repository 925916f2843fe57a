"""What a prediction says: per-run results, the bound sentence, JSON, and comparing two predictions.

    RunStats (model.py, raw busy times) + RunInput (counts)
        │  result(): utilisation = busy / (resource count × device_us); each resource's share of the
        │  effective window, and the largest share names what bounds the run
        ▼
    RunResult per run ──combine()──▶ total (sums of times and busy times, shares recomputed)
        │
        ▼
    Prediction: runs + total + params + which law each kernel used + notes
        │  str() table · to_json() · write_trace(path) (re-simulates with the timeline captured)
        ▼
    compare(a, b) ──▶ Comparison: the numbers that moved and one sentence saying why
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from host.predict import model
from host.predict.params import Params

__all__ = ["Comparison", "Prediction", "RunResult", "combine", "compare", "result"]

CRIT = "critical path"
LATENCY = "latency"
SCHEDS = "schedulers"
LATENCY_BOUND = 0.5      # below this share no resource is said to bound the run


@dataclass
class RunResult:
    """One run's prediction (or the total over runs: run == -1). Times in microseconds."""

    run: int
    records: tuple[int, int]
    device_us: float
    orchestration_us: float
    orchestration_busy_us: float
    orchestration_blocked_us: float
    critical_path_us: float
    critical_path_tasks: int
    dependency_path_us: float       # the longest chain without submit times: what dependencies alone force
    busy: dict[str, float]          # orchestrator, sched<i>: us busy; AIC, AIV: core-us busy; HBM: bytes
    utilisation: dict[str, float]
    shares: dict[str, float]        # utilisation + the critical path's share of the effective window
    bound_resource: str
    bound: str
    counts: dict[str, Any]
    events: int = 0
    effective_us: float = 0.0       # the reference's "Effective": first submit to the last completion
    effective_us_range: tuple[float, float] = (0.0, 0.0)     # [low, high] (predict(band=True))
    device_us_range: tuple[float, float] = (0.0, 0.0)

    def to_json(self) -> dict[str, Any]:
        return {"run": self.run, "records": list(self.records), "effective_us": self.effective_us,
                "effective_us_range": list(self.effective_us_range), "device_us": self.device_us,
                "device_us_range": list(self.device_us_range),
                "orchestration_us": self.orchestration_us, "orchestration_busy_us": self.orchestration_busy_us,
                "orchestration_blocked_us": self.orchestration_blocked_us,
                "critical_path_us": self.critical_path_us, "critical_path_tasks": self.critical_path_tasks,
                "dependency_path_us": self.dependency_path_us, "bound": self.bound,
                "bound_resource": self.bound_resource, "utilisation": self.utilisation,
                "busy": self.busy, "counts": self.counts}


def _resources(p: Params) -> list[str]:
    return ["orchestrator", *(f"sched{i}" for i in range(p.sched_threads)), "AIC", "AIV", "HBM"]


def _shares(busy: dict[str, float], device_us: float, dep_us: float, p: Params) -> dict[str, float]:
    dev = device_us if device_us > 0 else 1.0
    per = {"AIC": p.clusters, "AIV": 2 * p.clusters}
    out = {}
    for r in _resources(p):
        if r == "HBM":
            out[r] = busy[r] / (p.hbm_gbps * 1e3 * dev)
        else:
            out[r] = busy[r] / (per.get(r, 1) * dev)
    # The dependency chain without submit times: with them, an orchestrator-bound run would look
    # dependency-bound (its last chain starts when the last task is submitted).
    out[CRIT] = dep_us / dev
    return out


BAND = ("Bands: the model again with every parameter at the fast end of its stated range and every kernel "
        "time at the fast end of its band (counted: the tile layer's ranges; law: +-law_band; roofline: "
        "[1/2, roofline_band]x), and at the slow ends; a band always holds its point.")


def _rng(r: tuple[float, float]) -> str:
    return f"[{r[0]:.1f}, {r[1]:.1f}]"


def _pct(x: float) -> str:
    return f"{100 * x:.0f} %"


def _name(r: str) -> str:
    if r.startswith("sched") and r != SCHEDS:
        return f"scheduler thread {r[5:]}"
    return {"orchestrator": "the orchestrator", "AIC": "AIC (cube) cores", "AIV": "AIV (vector) cores",
            "HBM": "HBM bandwidth", CRIT: "the critical path (dependencies)", SCHEDS: "the scheduler threads",
            LATENCY: "latency"}[r]


def _sentence(shares: dict[str, float], busy: dict[str, float], device_us: float, dep_us: float,
              counts: dict[str, Any], p: Params) -> tuple[str, str]:
    order = sorted(shares, key=lambda r: -shares[r])     # stable: ties keep the resource order
    top, nxt = order[0], order[1]
    u = shares[top]
    if u < LATENCY_BOUND:
        return LATENCY, (f"Bound by latency, not by a resource: nothing is busy more than {_pct(u)} of the "
                         f"{device_us:.1f} us ({_name(top)}); the time goes to the control path's latencies "
                         f"(submit, dispatch, poll sweeps, completion) along the dependency chains and the run "
                         f"overhead.")
    if top == "orchestrator":
        what = f"one AICPU thread submitting {counts['submits']} records is busy {_pct(u)} of the effective window"
    elif top.startswith("sched"):
        what = f"it spends {_pct(u)} of the effective window completing and dispatching tasks (polling not counted)"
    elif top in ("AIC", "AIV"):
        n = p.clusters * (1 if top == "AIC" else 2)
        what = f"the {n} {top} cores are busy {_pct(u)} of the effective window"
    elif top == "HBM":
        what = (f"{busy['HBM'] / 1e9:.3g} GB move at {_pct(u)} of the {p.hbm_gbps:g} GB/s cap over the device "
                f"time")
    else:
        what = f"the longest chain of dependencies alone takes {dep_us:.1f} us, {_pct(u)} of the effective window"
    return top, (f"Bound by {_name(top)}: {what} ({device_us:.1f} us); next: {_name(nxt)} at "
                 f"{_pct(shares[nxt])}.")


def result(ri: model.RunInput, st: model.RunStats, p: Params, n_edges: int) -> RunResult:
    """A RunResult from the model's raw numbers of one run."""
    busy = {"orchestrator": st.orch_busy_us, **{f"sched{i}": b for i, b in enumerate(st.sched_busy_us)},
            "AIC": st.aic_busy_us, "AIV": st.aiv_busy_us, "HBM": st.hbm_bytes}
    kinds = Counter(ri.kind)
    by_kernel = Counter(ri.kernel_names[k] for k, kind in zip(ri.kernel, ri.kind) if kind == model.K_TASK)
    counts = {"records": len(ri.kind), "tasks": kinds[model.K_TASK],
              "submits": len(ri.kind) - kinds[model.K_SCOPE_END], "scope_ends": kinds[model.K_SCOPE_END],
              "allocs": kinds[model.K_ALLOC], "dummies": kinds[model.K_DUMMY],
              "skipped": sum(1 for s, k in zip(ri.shape, ri.kind) if k == model.K_TASK and s < 0),
              "edges": n_edges, "critical_path_tasks": st.critical_path_tasks, "jobs": st.jobs,
              "tasks_by_kernel": dict(sorted(by_kernel.items()))}
    return _finish(ri.run, (ri.first, ri.end), st.device_us, st.orch_end_us, st.orch_busy_us, st.orch_blocked_us,
                   st.critical_path_us, st.critical_path_tasks, st.dependency_path_us, busy, counts, st.events, p,
                   st.effective_us, (st.effective_us, st.effective_us), (st.device_us, st.device_us))


def _finish(run: int, records: tuple[int, int], device_us: float, orch_us: float, orch_busy: float,
            orch_blocked: float, cp_us: float, cp_tasks: int, dep_us: float, busy: dict[str, float],
            counts: dict[str, Any], events: int, p: Params, effective_us: float,
            effective_range: tuple[float, float], device_range: tuple[float, float]) -> RunResult:
    window = effective_us if effective_us > 0 else device_us       # where the schedulers run
    shares = _shares(busy, window, dep_us, p)
    top, sentence = _sentence(shares, busy, window, dep_us, counts, p)
    util = {r: min(shares[r], 1.0) for r in _resources(p)}
    return RunResult(run, records, device_us, orch_us, orch_busy, orch_blocked, cp_us, cp_tasks, dep_us, busy,
                     util, shares, top, sentence, counts, events, effective_us, effective_range, device_range)


def combine(runs: list[RunResult], p: Params) -> RunResult:
    """The total over runs executed one after the other: times and busy times add up."""
    if len(runs) == 1:
        return runs[0]
    busy = {k: sum(r.busy[k] for r in runs) for k in runs[0].busy}
    counts: dict[str, Any] = {}
    for k in runs[0].counts:
        if k == "tasks_by_kernel":
            c: Counter = Counter()
            for r in runs:
                c.update(r.counts[k])
            counts[k] = dict(sorted(c.items()))
        else:
            counts[k] = sum(r.counts[k] for r in runs)
    s = sum
    return _finish(-1, (runs[0].records[0], runs[-1].records[1]), s(r.device_us for r in runs),
                   s(r.orchestration_us for r in runs), s(r.orchestration_busy_us for r in runs),
                   s(r.orchestration_blocked_us for r in runs), s(r.critical_path_us for r in runs),
                   s(r.critical_path_tasks for r in runs), s(r.dependency_path_us for r in runs), busy, counts,
                   s(r.events for r in runs), p, s(r.effective_us for r in runs),
                   (s(r.effective_us_range[0] for r in runs), s(r.effective_us_range[1] for r in runs)),
                   (s(r.device_us_range[0] for r in runs), s(r.device_us_range[1] for r in runs)))


@dataclass
class Prediction:
    """Predicted a2a3 time of a recording (see host/predict/__init__.py for the definitions)."""

    source: str
    params: Params
    runs: list[RunResult]
    total: RunResult
    laws: dict[str, str]                      # kernel -> "counted (tile layer)" | "law module.fn" | "roofline default"
    notes: list[str] = field(default_factory=list)
    inputs: list[model.RunInput] = field(default_factory=list, repr=False, compare=False)
    kernel_names: list[str] = field(default_factory=list, repr=False, compare=False)
    kernel_costs: dict[str, dict[str, int]] = field(default_factory=dict)   # short name -> tasks priced
    #                                                                         {"counted", "law", "roofline"}

    @property
    def device_us(self) -> float:
        return self.total.device_us

    @property
    def device_us_range(self) -> tuple[float, float]:
        return self.total.device_us_range

    @property
    def effective_us(self) -> float:
        return self.total.effective_us

    @property
    def effective_us_range(self) -> tuple[float, float]:
        return self.total.effective_us_range

    @property
    def roofline_kernels(self) -> list[str]:
        """Kernels (short names) some task of which was priced by the roofline default: a guess."""
        return [k for k, v in self.kernel_costs.items() if v.get("roofline")]

    def headline(self) -> str:
        """The first line: what was predicted, and whether any kernel time is a roofline guess."""
        roof = self.roofline_kernels
        warn = (f" -- ROOFLINE GUESS for kernel{'s' if len(roof) > 1 else ''} {', '.join(roof)} (no counted "
                f"costs, no cost law): band widened to [1/2, {self.params.roofline_band:g}]x their time"
                if roof else "")
        return f"predicted a2a3 time of {self.source}{warn}"

    @property
    def orchestration_us(self) -> float:
        return self.total.orchestration_us

    @property
    def orchestration_busy_us(self) -> float:
        return self.total.orchestration_busy_us

    @property
    def critical_path_us(self) -> float:
        return self.total.critical_path_us

    @property
    def bound(self) -> str:
        return self.total.bound

    @property
    def bound_resource(self) -> str:
        return self.total.bound_resource

    @property
    def utilisation(self) -> dict[str, float]:
        return self.total.utilisation

    @property
    def counts(self) -> dict[str, Any]:
        return self.total.counts

    def summary(self) -> dict[str, Any]:
        """The prediction as the columns a run or benchmark row carries (``--predict``):
        predicted_a2a3_us (= device_us, the name kept from before), predicted_effective_us,
        predicted_device_us and their ranges, predicted_bound, predicted_roofline (kernels guessed)."""
        return {"predicted_a2a3_us": self.device_us, "predicted_device_us": self.device_us,
                "predicted_device_us_range": list(self.device_us_range), "predicted_effective_us": self.effective_us,
                "predicted_effective_us_range": list(self.effective_us_range), "predicted_bound": self.bound_resource,
                "predicted_roofline": self.roofline_kernels}

    def line(self) -> str:
        """One line: both metrics with their bands, what bounds the run, and any roofline guess."""
        (el, eh), (dl, dh) = self.effective_us_range, self.device_us_range
        roof = self.roofline_kernels
        return (f"effective {self.effective_us / 1e3:.3f} ms [{el / 1e3:.3f}, {eh / 1e3:.3f}], device wall "
                f"{self.device_us / 1e3:.3f} ms [{dl / 1e3:.3f}, {dh / 1e3:.3f}] ({self.bound_resource})"
                + (f"; ROOFLINE GUESS for {', '.join(roof)}" if roof else ""))

    def run(self, n: int) -> Prediction:
        """The prediction of run n alone (index into ``runs``)."""
        if not -len(self.runs) <= n < len(self.runs):
            raise ValueError(f"run={n}: this prediction has {len(self.runs)} run(s) (0..{len(self.runs) - 1})")
        r = self.runs[n]
        return Prediction(f"{self.source} run {r.run}", self.params, [r], r, self.laws, self.notes,
                          self.inputs[n:n + 1] if self.inputs else [], self.kernel_names, self.kernel_costs)

    def to_json(self) -> dict[str, Any]:
        t = self.total
        return {"source": self.source, "headline": self.headline(), "effective_us": t.effective_us,
                "effective_us_range": list(t.effective_us_range), "device_us": t.device_us,
                "device_us_range": list(t.device_us_range), "band": BAND,
                "roofline_kernels": self.roofline_kernels, "kernel_costs": self.kernel_costs,
                "orchestration_us": t.orchestration_us,
                "orchestration_busy_us": t.orchestration_busy_us,
                "orchestration_blocked_us": t.orchestration_blocked_us, "critical_path_us": t.critical_path_us,
                "critical_path_tasks": t.critical_path_tasks, "dependency_path_us": t.dependency_path_us,
                "bound": t.bound, "bound_resource": t.bound_resource,
                "utilisation": t.utilisation, "busy": t.busy, "counts": t.counts,
                "runs": [r.to_json() for r in self.runs], "params": dict(self.params),
                "laws": self.laws, "notes": self.notes}

    def write_json(self, path: str) -> str:
        with open(path, "w") as f:
            json.dump(self.to_json(), f, indent=1)
        return path

    def write_trace(self, path: str) -> str:
        """Perfetto / chrome://tracing JSON of the predicted timeline (the runs one after the other)."""
        from host.predict import chrome
        if not self.inputs:
            raise ValueError("write_trace: this prediction has no model inputs to replay (build it with predict())")
        timelines = [model.simulate(ri, self.params, capture=True).timeline for ri in self.inputs]
        with open(path, "w") as f:
            json.dump(chrome.to_chrome(self, timelines), f)
        return path

    def __str__(self) -> str:
        p = self.params
        head = (f"{self.headline()}\n  model: {p.clusters} clusters ({p.clusters} AIC + "
                f"{2 * p.clusters} AIV), {p.sched_threads} scheduler threads, HBM cap {p.hbm_gbps:g} GB/s"
                + (f"; changed: {', '.join(f'{k}={v:g}' for k, v in p.changed().items())}" if p.changed() else ""))
        cols = ("run", "records", "tasks", "effective_us", "[low, high]", "device_us", "[low, high]", "orch_us",
                "orch_busy", "blocked", "crit_us", "crit_n", "bound")
        rows = [cols]
        for r in self.runs + ([self.total] if len(self.runs) > 1 else []):
            rows.append(("total" if r.run < 0 else str(r.run), str(r.counts["records"]), str(r.counts["tasks"]),
                         f"{r.effective_us:.1f}", _rng(r.effective_us_range), f"{r.device_us:.1f}",
                         _rng(r.device_us_range), f"{r.orchestration_us:.1f}", f"{r.orchestration_busy_us:.1f}",
                         f"{r.orchestration_blocked_us:.1f}", f"{r.critical_path_us:.1f}",
                         str(r.critical_path_tasks), r.bound_resource))
        w = [max(len(x[i]) for x in rows) for i in range(len(cols))]
        table = ["  " + "  ".join(f"{x[i]:>{w[i]}}" for i in range(len(cols))) for x in rows]
        t = self.total
        util = ", ".join(f"{k} {_pct(v)}" for k, v in t.utilisation.items())
        by_law: dict[str, list[str]] = {}
        ran = set(self.kernel_costs)
        for k, v in self.laws.items():
            if ran and k.rsplit(".", 1)[-1] not in ran:
                continue                            # loaded but never run: how it would be priced does not matter
            by_law.setdefault(v.rsplit(".", 1)[0] if v.startswith("law ") else v, []).append(k.rsplit(".", 1)[-1])
        laws = "; ".join(f"{', '.join(ks)}: {v.removeprefix('law ')}" for v, ks in by_law.items())
        lines = [head, *table, f"  {t.bound}", f"  utilisation: {util}",
                 f"  kernels by count: {', '.join(f'{k} {v}' for k, v in t.counts['tasks_by_kernel'].items())}; "
                 f"edges {t.counts['edges']}", f"  kernel times: {laws}",
                 f"  effective_us: first submit to the last completion (the reference's Effective); device_us: "
                 f"+ run_overhead_us {p.run_overhead_us:g} (preamble, prep, teardown: its device wall). {BAND}"]
        lines += [f"  note: {n}" for n in self.notes]
        return "\n".join(lines)


# -- comparing two predictions ----------------------------------------------------------------------


def _floors(r: RunResult) -> dict[str, float]:
    """Each resource's own lower bound on the effective window, in us (share x window); the scheduler
    threads as one entry, their busiest thread."""
    w = r.effective_us or r.device_us
    out = {k: v * w for k, v in r.shares.items() if not k.startswith("sched")}
    out[SCHEDS] = max(v * w for k, v in r.shares.items() if k.startswith("sched"))
    return out


@dataclass
class Comparison:
    """B against A: the metrics that moved, and one sentence naming where the difference comes from."""

    a: str
    b: str
    rows: list[tuple[str, float, float]]       # metric, A, B
    sentence: str

    def to_json(self) -> dict[str, Any]:
        return {"a": self.a, "b": self.b, "sentence": self.sentence,
                "rows": [{"metric": m, "a": x, "b": y, "delta": y - x} for m, x, y in self.rows]}

    def __str__(self) -> str:
        w = max(len(m) for m, _, _ in self.rows)
        out = [f"A = {self.a}", f"B = {self.b}", f"  {'':<{w}}  {'A':>12}  {'B':>12}  {'B - A':>12}  {'':>8}"]
        for m, x, y in self.rows:
            rel = f"{100 * (y - x) / x:+.1f} %" if x else ""
            out.append(f"  {m:<{w}}  {x:>12.6g}  {y:>12.6g}  {y - x:>+12.6g}  {rel:>8}")
        return "\n".join(out + ["", self.sentence])


def compare(a: Prediction, b: Prediction, labels: tuple[str, str] | None = None) -> Comparison:
    """Explain how B differs from A: device time, and which resource's work moved it."""
    la, lb = labels or (a.source, b.source)
    ta, tb, pa, pb = a.total, b.total, a.params, b.params
    sa, sb = sum(ta.busy[f"sched{i}"] for i in range(pa.sched_threads)), \
        sum(tb.busy[f"sched{i}"] for i in range(pb.sched_threads))
    rows = [("effective_us", ta.effective_us, tb.effective_us),
            ("device_us", ta.device_us, tb.device_us),
            ("orchestration_us", ta.orchestration_us, tb.orchestration_us),
            ("orchestrator busy us", ta.orchestration_busy_us, tb.orchestration_busy_us),
            ("orchestrator blocked us", ta.orchestration_blocked_us, tb.orchestration_blocked_us),
            ("submits", ta.counts["submits"], tb.counts["submits"]),
            ("tasks", ta.counts["tasks"], tb.counts["tasks"]),
            ("critical_path_us", ta.critical_path_us, tb.critical_path_us),
            ("critical path tasks", ta.critical_path_tasks, tb.critical_path_tasks),
            ("scheduler work us (all threads)", sa, sb),
            ("AIC core us", ta.busy["AIC"], tb.busy["AIC"]),
            ("AIV core us", ta.busy["AIV"], tb.busy["AIV"]),
            ("HBM MB", ta.busy["HBM"] / 1e6, tb.busy["HBM"] / 1e6)]
    d = tb.device_us - ta.device_us
    rel = d / ta.device_us if ta.device_us else 0.0
    if abs(rel) < 0.005:
        head = f"B takes the same time as A within 0.5 % ({ta.device_us:.1f} vs {tb.device_us:.1f} us)."
    else:
        head = (f"B is {abs(rel) * 100:.1f} % {'faster' if d < 0 else 'slower'} than A ({ta.device_us:.1f} -> "
                f"{tb.device_us:.1f} us, {d:+.1f} us).")
    fa, fb = _floors(ta), _floors(tb)
    moved = {k: fb[k] - fa[k] for k in fa}
    cause = {
        "orchestrator": f"{tb.counts['submits'] - ta.counts['submits']:+d} submits, orchestrator busy "
                        f"{tb.orchestration_busy_us - ta.orchestration_busy_us:+.1f} us",
        SCHEDS: f"{tb.counts['tasks'] - ta.counts['tasks']:+d} tasks to complete and dispatch, scheduler work "
                f"{sb - sa:+.1f} us over all threads",
        "AIC": f"AIC core time {tb.busy['AIC'] - ta.busy['AIC']:+.1f} us",
        "AIV": f"AIV core time {tb.busy['AIV'] - ta.busy['AIV']:+.1f} us",
        "HBM": f"HBM traffic {(tb.busy['HBM'] - ta.busy['HBM']) / 1e6:+.2f} MB",
        CRIT: f"longest dependency chain {tb.dependency_path_us - ta.dependency_path_us:+.1f} us",
    }
    why = f" A is bound by {_name(ta.bound_resource)}, B by {_name(tb.bound_resource)}."
    lead = SCHEDS if ta.bound_resource.startswith("sched") else ta.bound_resource
    if abs(rel) >= 0.005:
        movers = sorted((k for k in moved if moved[k] * d > 0 and abs(moved[k]) >= 0.01 * ta.device_us),
                        key=lambda k: -abs(moved[k]))
        if lead in moved and abs(moved[lead]) >= 0.5 * abs(d):
            why += f" The difference comes from {_name(lead)}: its floor moves {moved[lead]:+.1f} us ({cause[lead]})."
        elif movers:
            what = "; ".join(f"{_name(k)} {moved[k]:+.1f} us ({cause[k]})" for k in movers[:2])
            busy = (f", so {_name(lead)} wait less" if d < 0 else f", so {_name(lead)} wait more") \
                if lead in ("AIC", "AIV") else ""
            first = f"The floor of {_name(lead)} moves only {moved[lead]:+.1f} us; the" if lead in moved else "The"
            why += f" {first} floors that move are {what}{busy}."
    return Comparison(la, lb, rows, head + why)
