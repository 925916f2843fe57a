"""``ptoemu predict --validate``: the calibration set, recorded and predicted end to end, against the
published a2a3 figures; and (``--catalogue``) every other catalogue workload's full-size case.

    CALIBRATION (the only figures the model's constants were fitted to; README "Validation")
        │  record each workload case on the sequential engine (host.run, inline: the same graph
        │  and counted costs as a process device, without its processes), into a scratch folder
        ▼
    predict(recording) ──▶ the matching metric: effective_us for an "Effective" figure, device_us
        │                  for a device wall, the median counted time of a kernel for a kernel median
        ▼
    rows: published, predicted [band], signed error ──▶ table (format_rows) / JSON

A published range (the fine-grained paged attention's 25.4-30.6 ms) counts as met inside it; its
error is the distance to the nearer end (0 inside). ``catalogue_rows`` predicts the last (full-size)
case of every other catalogue workload (and, where ptoemu's case of a name differs in shape from
the reference's, that case at the reference's shape too) and says what bounds it and how its
kernels were priced; no published figure is compared there.
"""

from __future__ import annotations

import os
import statistics
import tempfile
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from device.codec import counts_from_row
from host.graph import Graph
from host.predict import predict
from host.predict.report import Prediction
from kernels.a2a3 import task_time

__all__ = ["CALIBRATION", "Figure", "Row", "TOLERANCE", "calibration_rows", "catalogue_rows",
           "format_catalogue", "format_rows", "kernel_medians", "record"]

TOLERANCE = 0.10          # the target for calibration points: within +-10 % of the matching metric
PR = "hw-native-sys/simpler PR"


@dataclass(frozen=True)
class Figure:
    """One published a2a3 figure: a workload case, the metric it matches, its value (or range)."""

    workload: str
    case: str
    variant: str | None
    metric: str               # "effective_us" | "device_us" | "kernel:<name>"
    value: float | tuple[float, float]
    what: str
    source: str


# paged_attention_unroll in the reference's orchestration: alloc_tensors + 4 tasks per group.
CALIBRATION: tuple[Figure, ...] = (
    Figure("paged_attention_unroll", "Case1", "alloc", "effective_us", 1098.7, "Effective, 100 rounds",
           f"{PR} #1575 (comment, 2026-08-17)"),
    Figure("paged_attention_unroll", "Case1", "alloc", "device_us", 1386.0, "device wall",
           f"{PR} #1784 (2026-08-11)"),
    Figure("paged_attention_unroll", "Case1", "alloc", "kernel:qk", 55.0, "QK median, 64 KV blocks",
           "hardware swimlane"),
    Figure("paged_attention_unroll", "Case1", "alloc", "kernel:sf", 61.0, "SF median, 64 KV blocks",
           "hardware swimlane"),
    Figure("paged_attention_unroll", "Case1", "alloc", "kernel:pv", 58.0, "PV median, 64 KV blocks",
           "hardware swimlane"),
    Figure("paged_attention_unroll", "Case1", "alloc", "kernel:up", 4.0, "UP median (~4 us)", "hardware swimlane"),
    Figure("alternating_matmul_add", "Case1", None, "effective_us", 772.0, "Effective, 100 rounds",
           f"{PR} #1575 (comment, 2026-08-17)"),
    Figure("paged_attention", "Case1", None, "effective_us", (25400.0, 30600.0), "one die, 65,536 tasks",
           f"{PR} #1544 (host-built graph 25.4-29.5 ms), #1107 (device-orchestrated 27.5-30.6 ms)"),
)


@dataclass
class Row:
    figure: Figure
    predicted: float
    band: tuple[float, float]
    error: float              # signed, relative; for a range: to its nearer end, 0 inside
    bound: str = ""

    @property
    def met(self) -> bool:
        return abs(self.error) <= TOLERANCE

    def to_json(self) -> dict[str, Any]:
        f = self.figure
        return {"workload": f.workload, "case": f.case, "variant": f.variant, "metric": f.metric,
                "published": list(f.value) if isinstance(f.value, tuple) else f.value, "what": f.what,
                "source": f.source, "predicted": self.predicted, "band": list(self.band), "error": self.error,
                "within_tolerance": self.met, "bound": self.bound}


def record(workload: str, case: str, variant: str | None, path: str, log: Callable[[str], None] = print) -> float:
    """Run ``workload`` ``case`` on the sequential engine, recording its graph (and counted costs)
    to ``path``; the seconds it took. The result is not checked against the golden (the CI tests
    do that on the small cases; the recording is the same either way)."""
    from host.run import run
    t0 = time.perf_counter()
    run(workload, case, variant, inline=True, record=path, check=False, progress=False, log=lambda s: None)
    took = time.perf_counter() - t0
    log(f"  recorded {workload} {case}{f' ({variant})' if variant else ''} in {took:.1f} s")
    return took


def kernel_medians(graph: Graph) -> dict[str, tuple[float, float, float]]:
    """Per kernel (short name): the median over its counted tasks of (us, low, high) -- what a
    hardware swimlane's median of that kernel is compared with."""
    by: dict[str, list[tuple[float, float, float]]] = {}
    for r in graph.records:
        if r.counts is not None:
            t = task_time([None if c is None else counts_from_row(c) for c in r.counts])
            by.setdefault(graph.kernels[r.kernel]["name"].rsplit(".", 1)[-1], []).append(t)
    return {k: tuple(statistics.median(x[i] for x in v) for i in range(3)) for k, v in by.items()}


def _error(pred: float, value: float | tuple[float, float]) -> float:
    if isinstance(value, tuple):
        lo, hi = value
        return 0.0 if lo <= pred <= hi else (pred - (lo if pred < lo else hi)) / (lo if pred < lo else hi)
    return pred / value - 1.0


@dataclass
class _Case:
    path: str
    graph: Graph | None = None
    prediction: Prediction | None = None
    seconds: float = 0.0
    extra: dict = field(default_factory=dict)


def calibration_rows(workdir: str | None = None, log: Callable[[str], None] = print,
                     figures: Iterable[Figure] = CALIBRATION, params: dict | None = None) -> list[Row]:
    """Record and predict every case of ``figures`` (once each), one Row per figure. Recordings go
    to ``workdir`` (kept) or a temporary folder (removed)."""
    with tempfile.TemporaryDirectory(prefix="ptoemu-validate-") as tmp:
        where = workdir or tmp
        os.makedirs(where, exist_ok=True)
        cases: dict[tuple, _Case] = {}
        rows = []
        for f in figures:
            key = (f.workload, f.case, f.variant)
            c = cases.get(key)
            if c is None:
                name = f"{f.workload}-{f.case}{'-' + f.variant if f.variant else ''}.graph.jsonl"
                c = cases[key] = _Case(os.path.join(where, name))
                if not os.path.exists(c.path) or workdir is None:
                    c.seconds = record(f.workload, f.case, f.variant, c.path, log)
                t0 = time.perf_counter()
                c.prediction = predict(c.path, params)
                log(f"  predicted it in {time.perf_counter() - t0:.1f} s: {c.prediction.line()}")
            pr = c.prediction
            assert pr is not None
            if f.metric.startswith("kernel:"):
                if c.graph is None:
                    c.graph = Graph.load(c.path)
                    c.extra = kernel_medians(c.graph)
                us, lo, hi = c.extra[f.metric.split(":", 1)[1]]
                rows.append(Row(f, us, (lo, hi), _error(us, f.value), "one task, counted"))
            else:
                v = pr.effective_us if f.metric == "effective_us" else pr.device_us
                band = pr.effective_us_range if f.metric == "effective_us" else pr.device_us_range
                rows.append(Row(f, v, band, _error(v, f.value), pr.bound_resource))
        return rows


def format_rows(rows: list[Row]) -> str:
    """The validation table: published against predicted, signed errors."""
    head = ("workload", "case", "metric", "published", "predicted [band]", "error", "", "source")
    out = [head]
    for r in rows:
        f = r.figure
        pub = f"{f.value[0]:,.1f}-{f.value[1]:,.1f}" if isinstance(f.value, tuple) else f"{f.value:,.1f}"
        metric = f"{f.metric.split(':')[1].upper()} median us" if f.metric.startswith("kernel:") else f.metric
        out.append((f.workload + (f" ({f.variant})" if f.variant else ""), f.case, metric, pub,
                    f"{r.predicted:,.1f} [{r.band[0]:,.1f}, {r.band[1]:,.1f}]",
                    ("inside" if isinstance(f.value, tuple) and r.error == 0 else f"{100 * r.error:+.1f} %"),
                    "ok" if r.met else f"OFF (>{100 * TOLERANCE:.0f} %)", f.source))
    w = [max(len(str(x[i])) for x in out) for i in range(len(head))]
    lines = ["  ".join(f"{str(x[i]):<{w[i]}}" for i in range(len(head))).rstrip() for x in out]
    worst = max(abs(r.error) for r in rows) if rows else 0.0
    return "\n".join(lines + [f"largest error {100 * worst:.1f} % (target: every figure within "
                              f"{100 * TOLERANCE:.0f} % of its matching metric)"])


def _full_size(name: str) -> tuple[str, str]:
    from kernels.workloads import catalogue
    wl = catalogue.load(name)
    variant = "alloc" if "alloc" in wl.variants else wl.variants[0]
    return list(wl.cases)[-1], variant


def catalogue_rows(workdir: str | None = None, log: Callable[[str], None] = print,
                   names: Iterable[str] | None = None) -> list[dict[str, Any]]:
    """Every catalogue workload's full-size case (its last listed; the reference's alloc variant
    where there is one), except the calibration cases, predicted: effective and device with their
    bands, the bound, and how its kernels were priced."""
    from kernels.workloads import catalogue
    done = {(f.workload, f.case) for f in CALIBRATION}
    out = []
    with tempfile.TemporaryDirectory(prefix="ptoemu-catalogue-") as tmp:
        where = workdir or tmp
        os.makedirs(where, exist_ok=True)
        for name in names or catalogue.names():
            case, variant = _full_size(name)
            if (name, case) in done:
                continue
            path = os.path.join(where, f"{name}-{case}.graph.jsonl")
            try:
                if not os.path.exists(path) or workdir is None:
                    record(name, case, variant, path, log)
                pr = predict(path)
            except Exception as e:  # noqa: BLE001 - one workload's failure is a row, not the end
                out.append({"workload": name, "case": case, "variant": variant, "error": f"{type(e).__name__}: {e}"})
                log(f"  {name} {case}: {type(e).__name__}: {e}")
                continue
            priced = {k: [s for s, n in v.items() if n] for k, v in pr.kernel_costs.items()}
            out.append({"workload": name, "case": case, "variant": variant, "tasks": pr.counts["tasks"],
                        **pr.summary(), "kernels": priced, "headline": pr.headline()})
            log(f"  {name} {case}: {pr.line()}")
    return out


def format_catalogue(rows: list[dict[str, Any]]) -> str:
    """The other workloads' predictions as a table (kernel times: how their tasks were priced)."""
    head = ("workload", "case", "tasks", "effective_us [band]", "device_us [band]", "bound", "kernel times")
    out = [head]
    for r in rows:
        if "error" in r:
            out.append((r["workload"], r["case"], "-", "-", "-", "-", r["error"]))
            continue
        el, eh = r["predicted_effective_us_range"]
        dl, dh = r["predicted_device_us_range"]
        by: dict[str, list[str]] = {}
        for k, how_priced in r["kernels"].items():
            for src in how_priced:
                by.setdefault(src, []).append(k)
        how = ("no kernel runs (core-less tasks only)" if not by else "all counted" if list(by) == ["counted"]
               else "; ".join(f"{'ROOFLINE GUESS' if src == 'roofline' else src}: {', '.join(ks)}"
                              for src, ks in by.items()))
        out.append((r["workload"], r["case"], str(r["tasks"]),
                    f"{r['predicted_effective_us']:,.1f} [{el:,.1f}, {eh:,.1f}]",
                    f"{r['predicted_device_us']:,.1f} [{dl:,.1f}, {dh:,.1f}]", r["predicted_bound"], how))
    w = [max(len(str(x[i])) for x in out) for i in range(len(head))]
    return "\n".join("  ".join(f"{str(x[i]):<{w[i]}}" for i in range(len(head))).rstrip() for x in out)
