"""Running catalogue workloads on a device and checking them: what ``ptoemu run`` does.

    run(name, case, variant, ...)
      for each case:  Device(platform the case needs) ─▶ build the arrays in device memory
                      (dev.empty + host_view: no host copy of a large input; big random fills as
                      one AIV task per slice on the device's cores, kernels/workloads/fill.py)
                      ─▶ snapshot the ones a run may change ─▶ golden from the snapshot (timed)
        for each variant, each round:
                      restore the snapshot ─▶ dev.run(orchestrate) (timed, progress bar)
                      ─▶ outputs against the golden (max abs / rel error, tolerance) + check()
      ──▶ one row per (case, variant): tasks by kernel, device time, golden time, PASS / FAIL

Arrays below SNAPSHOT_BYTES are snapshotted whatever the workload says (a kernel may update an
input in place); larger ones must be read-only unless they are listed as outputs.
"""

from __future__ import annotations

import gc
import threading
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from host.device import Device
from host.platform import Platform
from host.progress import progress
from host.tensor import Tensor
from kernels.workloads import catalogue, fill
from kernels.workloads.workload import Workload

SNAPSHOT_BYTES = 16 << 20
FILL_KERNELS = fill.__name__     # what a device needs to fill a workload's inputs on its cores
FILL_MIN_SLICES = 2              # smaller fills run in the host: a task costs about what a slice does
DISCARD_FROM = 1 << 20           # counting tasks: arrays this big are data the orchestration does not read


def _progress(dev: Device, label: str, stop: threading.Event) -> None:
    """Finished / submitted records of a device while a run is going, as a progress bar."""
    with progress(label, 0) as step:
        while not stop.wait(0.2):
            done, submitted = dev.progress()
            step(done=done, total=submitted)


class Discarding(np.ndarray):
    """A host view whose element assignments are dropped: counting tasks builds a case's large
    data arrays through it, so a gigabyte of KV cache is never written (reads give what device
    memory holds: zeros). Views of it discard too; writes that bypass ``[...] =`` (``out=``) land,
    so ``DeviceAlloc.fill`` skips such arrays itself."""

    def __setitem__(self, key: Any, value: Any) -> None:
        pass


class DeviceAlloc:
    """The ``alloc`` build_on hands a workload's build: ``dev.empty`` + a zero-copy view, so a large
    input is written once, in place. Its ``fill`` (kernels/workloads/fill.py calls it) fills an
    array of FILL_MIN_SLICES slices or more on the device's cores -- one AIV task per slice, in a
    run of its own -- when the device loaded the fill kernel (``run`` loads it unless the device
    traces or records: those are of the workload's runs); anything else is filled here. The
    bits are the same either way. With ``discard_from``, arrays of that many bytes or more are
    handed out as Discarding views and never filled (counting tasks)."""

    def __init__(self, dev: Device, discard_from: int | None = None) -> None:
        self.dev = dev
        self.discard_from = discard_from
        self.tensors: dict[int, Tensor] = {}                 # id of a view handed out -> its tensor
        self._at: dict[tuple[int, int], Tensor] = {}         # (address, bytes) -> tensor: finds a reshaped view's
        self._tables: dict[int, tuple[np.ndarray, Tensor]] = {}  # id of a fill table -> (it, its copy in GM)
        self.on_device = fill.fill_slice in dev.kernels

    def __call__(self, shape: tuple, dtype: Any) -> np.ndarray:
        t = self.dev.empty(shape, dtype)
        view = self.dev.host_view(t)
        if self.discard_from is not None and t.nbytes >= self.discard_from:
            view = view.view(Discarding)
        self.tensors[id(view)] = t
        self._at[(view.__array_interface__["data"][0], view.nbytes)] = t
        return view

    def fill(self, array: np.ndarray, table: np.ndarray, seed: int, stream: int) -> None:
        if isinstance(array, Discarding):
            return
        t = self._at.get((array.__array_interface__["data"][0], array.nbytes))
        if not self.on_device or t is None or array.size < FILL_MIN_SLICES * fill.SLICE:
            fill.fill_here(array, table, seed, stream)
            return
        if id(table) not in self._tables:                    # dist_table caches it: one copy per build
            self._tables[id(table)] = (table, self.dev.to_device(table))
        self.dev.run(fill.orchestrate, t, self._tables[id(table)][1], seed, stream)


def build_on(dev: Device, wl: Workload, params: dict[str, Any], seed: int,
             discard_from: int | None = None) -> tuple[dict, dict]:
    """A workload's arrays built in ``dev``'s memory (``DeviceAlloc``: written once, in place, big
    random fills on the device's cores if it loaded ``FILL_KERNELS``): (name -> numpy view, name ->
    device tensor). With ``discard_from``, arrays of that many bytes or more are handed to the
    builder as Discarding views (their device memory stays unwritten): for counting tasks, when
    only the workload's small ``plan_inputs`` matter."""
    alloc = DeviceAlloc(dev, discard_from)
    arrays = wl.build(params, seed, alloc)
    return arrays, {k: alloc.tensors[id(v)] for k, v in arrays.items()}


def run_with_progress(dev: Device, label: str, fn: Callable[[], Any], show: bool) -> tuple[Any, float]:
    """``fn()`` (a dev.run), with a progress bar if ``show``; returns its result and wall time."""
    stop = threading.Event()
    th = threading.Thread(target=_progress, args=(dev, label, stop), daemon=True) if show else None
    if th:
        th.start()
    t0 = time.perf_counter()
    try:
        result = fn()
    finally:
        stop.set()
        if th:
            th.join()
    return result, time.perf_counter() - t0


def compare(got: dict[str, np.ndarray], want: dict[str, np.ndarray], tol: tuple[float, float]) -> dict:
    """Max abs and rel error over every output, and whether all are within (rtol, atol)."""
    rtol, atol = tol
    max_abs = max_rel = 0.0
    ok = True
    for k, w in want.items():
        g = np.asarray(got[k], np.float64)
        w = np.asarray(w, np.float64)
        err = np.abs(g - w)
        if err.size:
            max_abs = max(max_abs, float(np.nanmax(err)) if not np.isnan(err).all() else float("nan"))
            max_rel = max(max_rel, float(np.nanmax(err / np.maximum(np.abs(w), 1e-12))))
        ok &= bool(np.allclose(g, w, rtol=rtol, atol=atol, equal_nan=False)) and g.shape == w.shape
    return {"max_abs": max_abs, "max_rel": max_rel, "pass": ok}


def run(name: str, case: str | None = None, variant: str | None = None, *, blocks: int = 24,
        rounds: int = 1, seed: int = 0, inline: bool = False, trace: str | None = None,
        record: str | None = None, predict: bool = False, check: bool = True, progress: bool = True,
        log: Callable[[str], None] = print, semantics: str = "sequential",
        overrides: dict[str, Any] | None = None) -> list[dict]:
    """Run a catalogue workload (``case`` "all" for every case, ``variant`` "all" for every
    variant); one result row per (case, variant). ``overrides`` replace case parameters (the
    paged-attention command's --batch, --unroll, ...)."""
    wl = catalogue.load(name)
    if blocks < wl.min_blocks:
        raise ValueError(f"workload {wl.name} needs a device of at least {wl.min_blocks} blocks (its orchestration "
                         f"launches {wl.min_blocks} blocks at once); got blocks={blocks}")
    cases = list(wl.cases) if case == "all" else [case or wl.smallest]
    for c in cases:
        wl.case(c)                                      # a clear error before anything starts
    variants = list(wl.variants) if variant == "all" else [variant or wl.variants[0]]
    for v in variants:
        if v not in wl.variants:
            raise ValueError(f"workload {wl.name}: unknown variant {v!r}; variants: {', '.join(wl.variants)}")
    rows = []
    for c in cases:
        rows += _run_case(wl, c, variants, blocks=blocks, rounds=rounds, seed=seed, inline=inline,
                          trace=trace, record=record, predict=predict, check=check, progress=progress, log=log,
                          semantics=semantics, overrides=overrides)
    return rows


def _run_case(wl: Workload, case: str, variants: list[str], *, blocks: int, rounds: int, seed: int,
              inline: bool, trace: str | None, record: str | None, predict: bool, check: bool, progress: bool,
              log: Callable[[str], None], semantics: str = "sequential",
              overrides: dict[str, Any] | None = None) -> list[dict]:
    params = {**wl.case(case), **(overrides or {})}
    platform = Platform(blocks=blocks, **(wl.platform(params) if wl.platform else {}))
    log(f"{wl.name} {case}: {', '.join(f'{k} {v}' for k, v in params.items() if k != 'name')}; device "
        f"{platform.blocks} blocks ({platform.cores} cores){' (sequential engine)' if inline else ''}")
    rows = []
    # the inputs are filled by device tasks unless the device keeps a trace or a graph: those
    # describe the workload's runs, not the input build
    fills = [] if trace or record or predict else [FILL_KERNELS]
    with Device(platform, kernels=[*wl.kernels, *fills], inline=inline, trace=trace or False,
                record=record or predict, semantics=semantics) as dev:
        log(f"  device started in {dev.start_seconds:.2f} s")
        t0 = time.perf_counter()
        arrays, tensors = build_on(dev, wl, params, seed)
        # The state every round starts from (and the golden's input): copies of what a run may
        # change -- not needed for a single unchecked run (a memory measurement, say).
        keep = check or rounds > 1
        before = {k: (v.copy() if keep and (k in wl.outputs or v.nbytes <= SNAPSHOT_BYTES) else v)
                  for k, v in arrays.items()}
        log(f"  inputs built in device memory in {time.perf_counter() - t0:.2f} s "
            f"({sum(v.nbytes for v in arrays.values()) / 2**20:.1f} MiB)")
        goldens: dict[str, tuple] = {}
        for variant in variants:
            want, golden_s = None, None
            if check and wl.outputs:
                key = variant if wl.golden_per_variant else ""
                if key not in goldens:            # most goldens do not depend on the variant
                    t1 = time.perf_counter()
                    goldens[key] = (wl.golden(before, params, variant), time.perf_counter() - t1)
                want, golden_s = goldens[key]
            for r in range(rounds):
                for k, v in before.items():             # every round starts from the same state
                    if v is not arrays[k]:
                        arrays[k][...] = v
                s0 = dev.stats()
                info, wall = run_with_progress(
                    dev, f"{variant}" + (f" round {r + 1}" if rounds > 1 else ""),
                    lambda v=variant: dev.run(wl.orchestrate, tensors, params, v), progress)
                s1 = dev.stats()
                row = _row(wl, case, variant, r, info, wall, s0, s1, golden_s)
                row["inputs_bytes"] = sum(v.nbytes for v in arrays.values())
                if want is not None:
                    got = {k: dev.to_host(tensors[k]) for k in want}
                    row.update(compare(got, want, wl.tolerance))
                if check and wl.check:
                    after = {k: dev.to_host(t) for k, t in tensors.items() if t.nbytes <= SNAPSHOT_BYTES}
                    problems = wl.check(after, before, params)
                    row["problems"] = problems
                    row["pass"] = row.get("pass", True) and not problems
                if predict:
                    from host.predict import predict as predict_graph
                    g = dev.graph()
                    pr = predict_graph(g, run=len(g.runs) - 1)
                    row.update(pr.summary())
                    row["predicted_line"] = pr.line()
                _say_row(row, log)
                rows.append(row)
    if trace:
        log(f"trace written to {trace} (open it in https://ui.perfetto.dev)")
    if record:
        log(f"task graph recorded to {record} (predict a2a3 time: ptoemu predict {record})")
    return rows


def _row(wl: Workload, case: str, variant: str, rnd: int, info: Any, wall: float, s0: dict, s1: dict,
         golden_s: float | None) -> dict:
    counts = {k.rsplit(".", 1)[-1]: v["tasks"] - s0["kernels"].get(k, {}).get("tasks", 0)
              for k, v in s1["kernels"].items()}
    counts = {k: n for k, n in counts.items() if n}
    worker = sum(counts.values())
    runtime = {k: v - s0["runtime_tasks"].get(k, 0) for k, v in s1["runtime_tasks"].items()}
    return {"workload": wl.name, "case": case, "variant": variant, "round": rnd, "tasks": worker,
            "tasks_by_kernel": counts, "runtime_tasks": runtime, "device_s": wall,
            "tasks_per_s": worker / wall if wall > 0 else 0.0, "golden_s": golden_s,
            "device_over_golden": wall / golden_s if golden_s else None,
            "info": info if isinstance(info, dict) else None}


def _say_row(row: dict, log: Callable[[str], None]) -> None:
    head = f"{row['variant']}" + (f" round {row['round'] + 1}" if row["round"] else "")
    log(f"{head}: {row['tasks']} worker tasks ("
        + ", ".join(f"{k} {n}" for k, n in sorted(row["tasks_by_kernel"].items()))
        + f"), runtime tasks {sum(row['runtime_tasks'].values()) - row['runtime_tasks'].get('scope_end', 0)}")
    line = f"  device run: {row['device_s']:.3f} s ({row['tasks_per_s']:,.0f} tasks/s)"
    if row["golden_s"]:
        line += f"; golden {row['golden_s']:.3f} s; device/golden time {row['device_over_golden']:.2f}x"
    log(line)
    if "predicted_a2a3_us" in row:
        log(f"  predicted on an a2a3 chip: {row['predicted_line']}")
    if "max_abs" in row:
        log(f"  max abs error {row['max_abs']:.3e}, max rel error {row['max_rel']:.3e}: "
            f"{'PASS' if row['pass'] else 'FAIL'}")
    elif "pass" in row:
        log(f"  checked: {'PASS' if row['pass'] else 'FAIL'}")
    for p in row.get("problems") or []:
        log(f"  problem: {p}")


def listing(counts: bool = False) -> str:
    """What ``ptoemu list`` prints: every workload with its cases, features and the tasks one run
    of each case submits -- counted by running its orchestration on a dry sequential engine (no
    kernels); the big cases only with ``counts`` (their inputs take a while to build)."""
    lines = []
    for name in catalogue.names():
        wl = catalogue.load(name)
        lines.append(f"{wl.name}: {wl.summary}")
        lines.append(f"  features: {', '.join(wl.features) or '-'}; variants: {', '.join(wl.variants)}")
        for c, params in wl.cases.items():
            marks = [m for m, s in (("hardware-only in the reference", wl.hardware_only), ("big", wl.big)) if c in s]
            desc = ", ".join(f"{k} {v}" for k, v in params.items() if k != "name")
            if c not in wl.big or counts:
                n = task_counts(wl, c)
                extra = ", ".join(f"{v:,} {k}" for k, v in n.items() if k != "tasks" and v)
                tail = f"  [{n['tasks']:,} tasks" + (f" + {extra}" if extra else "") + "]"
            else:
                tail = "  [tasks: ptoemu list --counts]"
            lines.append(f"  {c}: {desc or '-'}" + (f" ({'; '.join(marks)})" if marks else "") + tail)
    return "\n".join(lines)


def count_tasks(wl: Workload, case: str, variant: str | None = None) -> int:
    """Worker tasks one run of ``case`` submits (see ``task_counts``)."""
    return task_counts(wl, case, variant)["tasks"]


def task_counts(wl: Workload, case: str, variant: str | None = None,
                discard_from: int = DISCARD_FROM) -> dict[str, int]:
    """What one run of ``case`` submits -- {"tasks": worker tasks, "alloc", "dummy"} -- counted by
    running the orchestration on a dry sequential engine of 24 blocks (the a2a3's width, which SPMD
    scenes read): the records are packed and tracked, the kernels are not run. A workload that
    names the inputs its orchestration reads (``plan_inputs``, all smaller than ``discard_from``
    bytes) has only those built for real; its arrays of ``discard_from`` bytes or more are left
    unwritten (Discarding), so counting a case with a gigabyte of KV cache costs megabytes."""
    params = wl.case(case)
    platform = Platform(blocks=24, **(wl.platform(params) if wl.platform else {}))
    with Device(platform, kernels=list(wl.kernels), inline=True, dry_run=True) as dev:
        arrays, tensors = build_on(dev, wl, params, 0, discard_from if wl.plan_inputs is not None else None)
        big = [k for k in wl.plan_inputs or () if isinstance(arrays[k], Discarding)]
        if big:
            raise ValueError(f"workload {wl.name} case {case}: plan input(s) {', '.join(big)} hold {discard_from} "
                             "bytes or more; plan_inputs are the small arrays the orchestration reads")
        dev.run(wl.orchestrate, tensors, params, variant or wl.variants[0])
        st = dev.stats()
    del arrays, tensors
    # The dry device's memory goes back when the collector breaks the device's reference cycles:
    # now, not after the next few cases (which once added up to gigabytes for ptoemu list --counts).
    gc.collect()
    rt = st["runtime_tasks"]
    return {"tasks": sum(v["tasks"] + v["predicate_false"] for v in st["kernels"].values()),
            "alloc": rt["alloc"], "dummy": rt["dummy"]}
