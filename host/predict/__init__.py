"""``ptoemu predict``: a2a3 hardware time of a recorded task graph, from a discrete-event model of the chip.

ptoemu runs an orchestration exactly, but on a couple of CPUs, so its wall time says nothing about
the chip. This package replays a recording (host/graph.py) on a model of the chip instead:

    run.graph.jsonl ──Graph.load──▶ header (kernels, runs) + records in submission order
        │
        │  laws.py      each task's kernel time (and band) and HBM bytes: its counted costs (graph v2:
        │               what the tile layer counted while recording, through kernels/a2a3.task_time),
        │               else the kernel's cost law (kernel(..., cost=law)), else the roofline default
        │  params.py    every number of the model: default, stated range, unit, source (docs/a2a3.md);
        │               overrides
        ▼
    model.py  per run, from an empty device: orchestrator ─▶ task/heap rings ─▶ ready queues ─▶
              3 scheduler threads (poll sweeps, complete, dispatch) ─▶ 24 × (AIC, AIV, AIV) cores
              ─▶ shared HBM cap; one event heap, deterministic
        │
        ▼
    with_band: the same run at the fast and at the slow end of every range (two more simulations)
        ▼
    report.py Prediction: effective_us, device_us (each with a [low, high] range), orchestration_us,
              critical_path_us, bound, utilisation, counts, per run and in total; how each kernel
              was priced (a roofline guess named in the first line); to_json(), write_trace()
              (chrome.py), compare(a, b)
        │
    cli.py    ptoemu predict FILE [FILE2] [--set k=v] [--sweep k=v1,v2] [--run N] [--json] [--trace]
    validate.py  ptoemu predict --validate [--catalogue]: the calibration set against the
              published figures; every other catalogue workload

Definitions (per run; totals add the runs, which run one after the other, each from an empty device):

- ``effective_us``: from the run's first submit (time 0) to the later of its last completion noticed
  by a scheduler and the orchestrator's last submit: the reference's "Effective" (its orchestrator
  and scheduler windows merged, docs/dfx/l2-timing.md in hw-native-sys/simpler).
- ``device_us``: ``effective_us`` plus ``run_overhead_us``: the reference's device wall, which adds
  the AICPU preamble, the graph-build prep before the windows open, and the teardown after.
- ``effective_us_range``, ``device_us_range``: [low, high], the model at the fast and at the slow
  end of every parameter's stated range and every kernel time's band (``with_band``).
- ``orchestration_us``: when the orchestrator finished submitting the run's last record (including
  time blocked on a full ring); ``orchestration_busy_us`` is the time it spent submitting.
- ``critical_path_us``: ``run_overhead_us`` + the longest path through the graph, where a record
  starts at the later of the end of its own submit on an orchestrator that never blocks and its
  predecessors' ends, and a task on a core costs sched_dispatch_us + dispatch_start_us + kernel
  time (uncontended, one block) + fin_visible_us + sched_complete_us (dummy and skipped tasks:
  sched_complete_us; alloc and scope ends: 0). No poll phase, no queueing, no HBM sharing: a floor.
- ``utilisation``: busy time over the effective window (``effective_us``), per resource:
  "orchestrator"; "sched0".."sched2" (completion handling + dispatch; the polling sweeps are not
  counted); "AIC" and "AIV" (core busy time over all cores of that kind, HBM slowdown included);
  "HBM" (bytes moved over cap × time).
- ``bound``: one sentence naming the resource with the largest share of the effective window, and the
  runner-up. Shares are the utilisations above, plus "critical path": the longest chain of
  dependencies alone (``dependency_path_us``, the critical path without submit times, so that an
  orchestrator-bound run is not called dependency-bound). ``bound_resource`` is its key
  ("orchestrator", "sched<i>", "AIC", "AIV", "HBM", "critical path"), or "latency" when no share
  reaches 50 %: then the run is too small or too serial to load anything, and its time is the
  control path's latencies along the chains plus the run overhead.
"""

from __future__ import annotations

import gc
import os
import threading
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from host.graph import Graph, Recording
from host.predict import stream
from host.predict.laws import ROOFLINE, SOURCES, LawTable, TaskCosts, find_laws, roofline
from host.predict.model import Flattener, ModelDeadlock, RunInput, critical_path, simulate
from host.predict.params import PARAMS, Params, resolve
from host.predict.report import Comparison, Prediction, RunResult, combine, compare, result
from kernels.cost import Cost, TaskInfo

__all__ = ["PARAMS", "Comparison", "Cost", "ModelDeadlock", "Params", "Prediction", "RunResult", "TaskInfo",
           "compare", "critical_path", "predict", "resolve", "roofline"]


def predict(graph_or_path: Graph | str, params: Params | Mapping[str, Any] | None = None, *,
            run: int | None = None, laws: Mapping[str, Callable[[TaskInfo], Cost]] | None = None,
            band: bool = True, **overrides: Any) -> Prediction:
    """Predict the a2a3 time of a recorded graph (a Graph or the path of a ``.graph.jsonl[.gz]``).

    ``params`` and ``overrides`` change model parameters (``predict(g, sched_task_us=2.5)``; names and
    defaults: ``ptoemu predict --params``). ``run`` predicts one run of a multi-run recording;
    ``laws`` maps kernel names (full or short) to cost laws that replace the registered ones (and
    the counted costs of those kernels: a what-if). ``band``: also simulate the fast and slow ends
    of every parameter's range for effective_us_range / device_us_range (three simulations per
    run; without it the ranges are the point).

    A file is streamed: each record is read, costed and flattened into its run's columns
    (model.prepare) and then dropped, so memory follows the run's record count, not the file's
    JSON. A recording that is not one (bad header, malformed record, an edge to a later record: a
    cycle) is a ValueError naming the record.
    """
    p = resolve(params, overrides)
    if isinstance(graph_or_path, Graph):
        g, source = graph_or_path, "graph"
        rec = None
        kernels, n_records = g.kernels, len(g.records)
        spans: list[tuple[int, int | None]] = list(g.runs) or [(0, n_records)]
    elif isinstance(graph_or_path, str) or hasattr(graph_or_path, "__fspath__"):
        source = str(graph_or_path)
        rec = Recording(source)
        kernels, n_records = rec.kernels, rec.n_records
        spans = list(rec.runs) or [(0, n_records)]
    else:
        raise TypeError(f"predict(graph_or_path): expected a host.graph.Graph or a file path, got "
                        f"{type(graph_or_path).__name__}")
    try:
        if run is not None:
            if not isinstance(run, int) or not -len(spans) <= run < len(spans):
                raise ValueError(f"predict(run={run!r}): {source} holds {len(spans)} run(s); expected 0.."
                                 f"{len(spans) - 1}")
            picked = [(run % len(spans), spans[run])]
        else:
            picked = list(enumerate(spans))
        table = find_laws(kernels, laws, used=set())
        costs = TaskCosts(kernels, table, p)
        runs: list[RunResult] = []
        inputs = []
        reader = None
        if rec is not None and os.path.getsize(source) >= stream.READER_MIN_BYTES and (os.cpu_count() or 1) > 1:
            reader = stream.Reader(source, picked, kernels, table, p)     # parsing beside the model
        enabled = gc.isenabled()
        gc.disable()        # a million small objects, no cycles: collecting would be pure cost
        try:
            for n, (first, end) in picked:
                if reader is not None:
                    ri, feed = reader.run(n, first), reader.more
                else:
                    records: Iterable[dict] = (rec.take(first, end) if rec is not None else
                                               (r.to_json() for r in g.records[first:end]))
                    f = Flattener(n, first, end, records, kernels, costs, p)
                    ri, feed = f.ri, f.more
                st = simulate(ri, p, feed=feed)          # records flattened as the orchestrator reaches them
                rr = result(ri, st, p, len(ri.preds.idx))
                if band:
                    with_band(rr, ri, p)
                runs.append(rr)
                inputs.append(ri)
            if reader is not None:
                costs.used, costs.sources = reader.finish()
            elif rec is not None:
                rec.finish()
        finally:
            if reader is not None:
                reader.close()
            if enabled:
                gc.enable()
    finally:
        if rec is not None:
            rec.close()
    if run is not None and len(spans) > 1:
        source = f"{source} run {picked[0][0]}"
    return Prediction(source, p, runs, combine(runs, p), priced(table, costs, kernels),
                      table.notes_for({k for k, v in costs.sources.items() if v[ROOFLINE]}),
                      inputs, [k["name"].rsplit(".", 1)[-1] for k in kernels],
                      {kernels[k]["name"].rsplit(".", 1)[-1]: dict(zip(SOURCES, v))
                       for k, v in sorted(costs.sources.items())})


BAND_FORK_MIN = 20_000     # records: a run this big simulates its band's two ends in two processes


def _corner(ri: RunInput, p: Params, corner: str) -> tuple[float, float]:
    """(effective_us, device_us) of the run at one end of every range."""
    pc = p.corner(corner)
    st = simulate(ri.at(corner, pc), pc, crit=False)
    return st.effective_us, st.device_us


def with_band(rr: RunResult, ri: RunInput, p: Params) -> None:
    """Set rr's effective_us_range and device_us_range: the run simulated again with every parameter
    at the fast end of its stated range and every kernel time at the fast end of its band, and
    again at the slow ends (params.Params.corner, model.RunInput.at). A band always holds its point:
    the discrete-event model is not monotone in every parameter (a faster kernel can change the
    order of dispatch), so each end is also taken past the point if a corner landed inside it."""
    # (forked only from a single-threaded process: a fork copies no other thread, nor the locks it holds)
    if len(ri.kind) >= BAND_FORK_MIN and (os.cpu_count() or 1) > 1 and threading.active_count() == 1:
        ends = stream.in_children(_corner, [(ri, p, "fast"), (ri, p, "slow")])    # side by side
    else:
        ends = [_corner(ri, p, c) for c in ("fast", "slow")]
    (ef, df), (es, ds) = ends
    rr.effective_us_range = (min(ef, es, rr.effective_us), max(ef, es, rr.effective_us))
    rr.device_us_range = (min(df, ds, rr.device_us), max(df, ds, rr.device_us))


def priced(table: LawTable, costs: TaskCosts, kernels: list[dict]) -> dict[str, str]:
    """Kernel name -> how its tasks were priced: "counted (tile layer)", "law <fn>", "roofline
    default", or the counts of each when they differ between tasks."""
    out = dict(table.used)
    for k, (c, law, roof) in costs.sources.items():
        name = kernels[k]["name"]
        if c and not law and not roof:
            out[name] = "counted (tile layer)"
        elif c:
            out[name] = f"counted (tile layer) {c} tasks, " + (f"{table.used[name]} {law} tasks" if law else
                                                               f"roofline default {roof} tasks")
    return out
