"""Every parameter of the a2a3 model, in one table: default, unit, source and how far to trust it.

    PARAMS (this table) ──resolve(base, overrides)──▶ Params   (read-only, attribute access)
          ▲                      │ unknown name / bad value ──▶ ValueError naming it and the known keys
          │                      ▼
    parse_assignment("k=v")   model.py, laws.py, report.py read p.<name>

Sources are docs/a2a3.md (the chip and control-path facts, citing the reference project's
measurements, the CANN platform config and public specs) and the reference runtime's code
(hw-native-sys/simpler, src/a2a3/runtime/tensormap_and_ringbuffer). "(inferred)" marks our
derivation, not a published number; "fitted" names the calibration point a value was fitted to.

Every parameter has a stated range (``low``..``high``) beside its default: where the chip's value
may plausibly be. The band of a prediction is the model run with every parameter at the fast end
of its range and again at the slow end (``Params.corner``), each kernel's time at the fast / slow
end of its own band (counted: kernels/a2a3.py ranges; law: +-law_band; roofline: [1/2,
roofline_band] x).
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

__all__ = ["PARAMS", "Param", "Params", "format_table", "parse_assignment", "parse_value", "resolve"]


@dataclass(frozen=True)
class Param:
    name: str
    default: float
    unit: str
    source: str
    confidence: str           # high | medium | low | fitted (how far to trust the default)
    integer: bool = False
    lo: float = 0.0            # smallest allowed value
    hi: float = math.inf       # largest allowed value
    above: bool = False        # lo itself is not allowed (the model divides by this parameter)
    low: float | None = None   # the stated range: how far the chip's value may plausibly be from
    high: float | None = None  # the default (None: the default itself; the band uses both ends)
    faster: str = "low"        # which end of the range makes the chip faster: "low" or "high"

    def corner(self, which: str) -> float:
        """The value at ``which``: "value" (default), "fast" or "slow" end of the stated range."""
        if which == "value":
            return self.default
        lo = self.default if self.low is None else self.low
        hi = self.default if self.high is None else self.high
        return lo if (which == "fast") == (self.faster == "low") else hi


MIB = 1 << 20

# What each fitted constant was fitted to (the calibration set: README "Validation", fit only to it):
#   PA_UNROLL_C1   paged_attention_unroll Case1 (alloc variant, as the reference's orchestration):
#                  Effective 1098.7 us (hw-native-sys/simpler PR #1575, comment 2026-08-17, 100
#                  rounds) and device wall 1386 us (PR #1784, 2026-08-11)
#   ALT_C1         alternating_matmul_add Case1: Effective 772.0 us (PR #1575, comment 2026-08-17)
#   PA_FINE_C1     paged_attention (one KV block per task, 65,536 tasks) Case1: 25.4-30.6 ms (host-built
#                  graph runtime 25.4-29.5 ms, PR #1544; device-orchestrated scheduler 27.5-30.6 ms, PR #1107)
_FIT = "fitted"

PARAMS: tuple[Param, ...] = (
    # -- the machine --
    Param("clusters", 24, "clusters", "a2a3: 24 clusters of 1 AIC + 2 AIV (reference platform max block_dim 24)",
          "high", integer=True, lo=1),
    Param("sched_threads", 3, "threads", "reference: 3 AICPU scheduler threads, cluster c owned by thread "
          "c mod 3", "high", integer=True, lo=1),
    # -- orchestrator (1 AICPU thread): per submit, what PTO2OrchestratorState::submit_task does --
    Param("orch_submit_us", 0.17, "us", "per record submitted: sync_tensormap, task-slot alloc, descriptor init, "
          "ready-queue push (simpler runtime/pto_orchestrator.cpp submit_task steps 0-2, 6). The split "
          "base 0.30 : per tensor arg 0.06 : per producer 0.08 : scope end 0.15 : per scope task 0.03 us is "
          "docs/a2a3.md's measured 0.56-0.87 us per submit, about half in tensor-map lookup and dependency "
          "building; the overall level (x0.57: the Aug 2026 runtime submits faster than those older "
          "measurements) is fitted to PA_FINE_C1 (27.6 ms predicted against 25.4-30.6)", _FIT,
          low=0.12, high=0.26),
    Param("orch_arg_us", 0.034, "us per tensor arg", "per tensor argument: copy into the payload, tensor-map "
          "lookup (In/InOut) and insert (Out/InOut) (submit_task steps 2-4); a predicate operand counts; "
          "split as orch_submit_us, level fitted to PA_FINE_C1", _FIT, low=0.024, high=0.05),
    Param("orch_edge_us", 0.046, "us per producer", "per producer a record waits for: fanin record, the "
          "producer's fanout_lock, fanout-list prepend -- the fan-in wiring the orchestrator does in its "
          "submit path since simpler PR #1263 (submit_task steps 5-6); split as orch_submit_us, level fitted "
          "to PA_FINE_C1", _FIT, low=0.03, high=0.07),
    Param("orch_scope_end_us", 0.085, "us", "scope end: pop the scope (scope_end), fixed part; split as "
          "orch_submit_us, level fitted to PA_FINE_C1", _FIT, low=0.06, high=0.13),
    Param("orch_scope_task_us", 0.017, "us per task", "scope end: release the scope's reference on each task "
          "it submitted (fanout_refcount, maybe CONSUMED); split as orch_submit_us, level fitted to "
          "PA_FINE_C1", _FIT, low=0.012, high=0.026),
    Param("task_window", 16384, "slots", "reference task ring: 16,384 slots per ring (a ring per scope depth up to 3)",
          "high", integer=True, lo=1),
    Param("heap_bytes", 256 * MIB, "bytes", "reference heap ring: 256 MiB per ring (a ring per scope depth up to 3)",
          "high", integer=True, lo=1),
    Param("run_overhead_us", 287.0, "us per run", "device wall minus Effective: AICPU preamble, graph-build "
          "prep (config_validate, arena_wire, sm_reset) and post-orch teardown (simpler docs/dfx/"
          "device-phases.md); fitted to PA_UNROLL_C1 (1386 - 1098.7 us; the two figures are from two "
          "days of August 2026, so the range is wide). docs/a2a3.md's 10-50 us is the run start + finish "
          "alone", _FIT, low=200.0, high=350.0),
    # -- schedulers (3 AICPU threads) --
    Param("sched_poll_us", 0.10, "us per core read", "docs/a2a3.md: a completion-register read 95-105 ns, serial "
          "(sweep of 24 cores ~2.3 us)", "high", low=0.095, high=0.105),
    Param("sched_task_us", 1.0, "us per task", "complete + dispatch of one task by one thread, without the "
          "polling: on_task_complete (mark COMPLETED, release producers, advance last_task_alive) and the "
          "dispatch (pop a shape queue, build the payload, write DATA_MAIN_BASE). docs/a2a3.md's 1-3 us "
          "(inferred) predates PR #1263, which moved fan-in wiring to the orchestrator; fitted to PA_FINE_C1: "
          "with it the schedulers alone (no orchestrator, as in the host-built-graph runtime of PR #1544) "
          "take 25.6 ms there, inside that runtime's 25.4-29.5 ms", _FIT, low=0.75, high=1.4),
    Param("sched_complete_share", 0.5, "fraction", "share of sched_task_us spent handling a completion, the "
          "rest dispatching (inferred)", "low", hi=1.0, low=0.4, high=0.6),
    Param("sched_edge_us", 0.08, "us per consumer", "completion: per consumer on the fanout list, "
          "fanin_refcount increment and, when it becomes ready, a ready-queue push (scheduler_completion.cpp; "
          "inferred: a few cache-line round trips)", "low", low=0.04, high=0.15),
    # -- cores --
    Param("dispatch_start_us", 0.30, "us", "docs/a2a3.md: dispatch -> kernel start 0.2-0.5 us (a core's first "
          "task +0.3-5.6 us, not modelled)", "medium", low=0.2, high=0.5),
    Param("fin_visible_us", 0.60, "us", "docs/a2a3.md: kernel end -> scheduler sees it ~0.6 us average (0.18 "
          "minimum), plus the poll sweep (modelled separately)", "medium", low=0.18, high=0.8),
    Param("core_slots", 2, "tasks", "tasks a core holds: the running one and, while it runs, a second one "
          "the scheduler dispatched into its pending slot, which the core starts by itself when the first "
          "ends (simpler scheduler_dispatch.cpp: idle > pending; set 1 to model dispatch to idle cores only)",
          "high", integer=True, lo=1, hi=2),
    Param("core_switch_us", 0.8, "us", "a core's pickup of the task in its pending slot after the running one "
          "ends (simpler docs/dfx/sched-overhead-model.md: aicore switch ~0.8 us each)", "medium", low=0.5,
          high=1.2),
    Param("law_scale", 1.0, "x", "multiplies every kernel time (for sweeps)", "-"),
    Param("kernel_floor_us", 5.0, "us", "docs/a2a3.md: roofline default for kernels without a law gets a fixed "
          "per-task floor of ~2-10 us (the roofline's band, roofline_band, covers this range)", "low", low=2.0,
          high=10.0),
    Param("core_gbps", 200.0, "GB/s", "one core's achievable load bandwidth for the roofline default: L2 "
          "~110 B/cycle/core x 1.85 GHz (docs/a2a3.md; roofline_band covers the range)", "medium", above=True,
          low=150.0, high=250.0,
          faster="high"),
    Param("aic_tflops", 15.2, "TFLOP/s", "cube peak per AIC, bf16: 8192 FLOP/cycle x 1.85 GHz "
          "(docs/a2a3.md, pto-isa cost model)", "high", above=True),
    # -- kernel-time bands (how far to trust a kernel time that was not counted) --
    Param("law_band", 0.25, "fraction", "a kernel priced by its declared cost law: its time is taken as "
          "within +-law_band (laws are fitted to a few points, e.g. the Case1 medians)", "-", hi=0.95),
    Param("roofline_band", 4.0, "x", "a kernel priced by the roofline default (a guess): its time is taken "
          "as within [1/2, roofline_band] x (docs/a2a3.md: a per-task roofline underestimated paged "
          "attention's kernels ~28x before its floor)", "-", lo=1.0),
    # -- HBM and L2 --
    Param("hbm_gbps", 1320.0, "GB/s", "the shared HBM cap memory-bound kernels divide (each progresses at "
          "cap / demand while their demand exceeds it): fitted to ALT_C1 (786 MB of 64 KiB tile loads and "
          "stores over the run), 82 % of the 1.6 TB/s peak; docs/a2a3.md: scattered 32 KiB reads reach "
          "0.8-1.0 TB/s", _FIT, above=True, low=1100.0, high=1550.0, faster="high"),
    Param("hbm_peak_gbps", 1600.0, "GB/s", "docs/a2a3.md: 1.6 TB/s peak per die (other sources 1.5, 1.42); "
          "reported for reference, set hbm_gbps to model it", "medium", above=True),
    Param("l2_hit", 1.0, "fraction", "share of a runtime (heap) tensor's GM traffic served by the 192 MiB L2: "
          "a producer's output read back by its consumer moments later (inferred: the catalogue's live "
          "runtime tensors are a few MiB); host tensors (caches, weights, inputs) always go to HBM",
          "medium", hi=1.0, low=0.7, high=1.0, faster="high"),
)

_BY_NAME = {p.name: p for p in PARAMS}
_SUFFIX = {"k": 1e3, "m": 1e6, "g": 1e9, "kib": 1 << 10, "mib": 1 << 20, "gib": 1 << 30}


def _known() -> str:
    return ", ".join(_BY_NAME)


class Params(Mapping[str, float]):
    """Resolved parameter values: ``p.sched_task_us`` or ``p["sched_task_us"]``; read-only."""

    __slots__ = ("_v",)

    def __init__(self, values: Mapping[str, float]) -> None:
        object.__setattr__(self, "_v", dict(values))

    def __getattr__(self, name: str) -> float:
        if name.startswith("_"):             # copy/pickle probe before _v exists: no recursion
            raise AttributeError(name)
        try:
            return self._v[name]
        except KeyError:
            raise AttributeError(f"no model parameter {name!r}; known: {_known()}") from None

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError("Params are read-only: use resolve(params, name=value)")

    def __reduce__(self) -> tuple:
        return Params, (self._v,)

    def __getitem__(self, name: str) -> float:
        return self._v[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._v)

    def __len__(self) -> int:
        return len(self._v)

    def __repr__(self) -> str:
        return "Params(" + ", ".join(f"{k}={v!r}" for k, v in self._v.items()) + ")"

    # The scheduler cost per task is one knob (what users sweep); these are its two halves.
    @property
    def sched_complete_us(self) -> float:
        return self._v["sched_task_us"] * self._v["sched_complete_share"]

    @property
    def sched_dispatch_us(self) -> float:
        return self._v["sched_task_us"] * (1.0 - self._v["sched_complete_share"])

    def corner(self, which: str) -> Params:
        """These values with every parameter left at its default moved to the ``which`` ("fast" or
        "slow") end of its stated range; a value changed from the default stays as it is."""
        v = dict(self._v)
        for q in PARAMS:
            if v[q.name] == q.default:
                v[q.name] = q.corner(which)
        return Params(v)

    def changed(self) -> dict[str, float]:
        """The values that differ from the defaults."""
        return {k: v for k, v in self._v.items() if v != _BY_NAME[k].default}


def parse_value(name: str, value: Any) -> float:
    """Check one value for parameter ``name`` (a number or a string like "2.5", "32768", "512MiB")."""
    if name not in _BY_NAME:
        raise ValueError(f"unknown model parameter {name!r}; known: {_known()}")
    p = _BY_NAME[name]
    x: Any = value
    if isinstance(value, str):
        m = re.fullmatch(r"\s*([-+0-9.eE]+)\s*([A-Za-z]*)\s*", value)
        try:
            if not m or (m.group(2) and m.group(2).lower() not in _SUFFIX):
                raise ValueError
            x = float(m.group(1)) * (_SUFFIX[m.group(2).lower()] if m.group(2) else 1)
        except ValueError:
            raise ValueError(f"parameter {name}={value!r}: expected a number ({p.unit})") from None
    if isinstance(x, bool) or not isinstance(x, (int, float)) or not math.isfinite(x):
        raise ValueError(f"parameter {name}={value!r}: expected a finite number ({p.unit})")
    if p.integer:
        if x != int(x):
            raise ValueError(f"parameter {name}={value!r}: expected a whole number ({p.unit})")
        x = int(x)
    else:
        x = float(x)
    if not p.lo <= x <= p.hi or (p.above and x == p.lo):
        rng = (f"{'>' if p.above else '>='} {p.lo:g}" if p.hi == math.inf else
               f"in {'(' if p.above else '['}{p.lo:g}, {p.hi:g}]")
        raise ValueError(f"parameter {name}={value!r}: expected a value {rng} ({p.unit})")
    return x


def resolve(base: Params | Mapping[str, Any] | None = None, overrides: Mapping[str, Any] | None = None) -> Params:
    """Defaults, then ``base`` (a Params or a dict of overrides), then ``overrides``; all checked."""
    values: dict[str, float] = {p.name: p.default for p in PARAMS}
    for src in (base or {}), (overrides or {}):
        unknown = [k for k in src if k not in _BY_NAME]
        if unknown:
            raise ValueError(f"unknown model parameter{'s' if len(unknown) > 1 else ''} "
                             f"{', '.join(map(repr, unknown))}; known: {_known()}")
        for k, v in src.items():
            values[k] = parse_value(k, v)
    return Params(values)


def parse_assignment(text: str) -> tuple[str, str]:
    """``"name=value"`` -> (name, value text); the value is checked by ``resolve``/``parse_value``."""
    name, sep, value = text.partition("=")
    name = name.strip()
    if not sep or not name or not value.strip():
        raise ValueError(f"expected NAME=VALUE, got {text!r}; known names: {_known()}")
    if name not in _BY_NAME:
        raise ValueError(f"unknown model parameter {name!r}; known: {_known()}")
    return name, value.strip()


def format_table(p: Params) -> str:
    """Every parameter with its value, range, unit, confidence and source (``ptoemu predict --params``)."""
    rows = [("name", "value", "range", "unit", "trust", "source")]
    for q in PARAMS:
        v = p[q.name]
        shown = f"{v:g}" if not q.integer or v < 1e6 else f"{v} ({v / MIB:g} MiB)"
        rng = "-" if q.low is None and q.high is None else \
            f"{q.default if q.low is None else q.low:g}..{q.default if q.high is None else q.high:g}"
        rows.append((q.name + (" *" if v != q.default else ""), shown, rng, q.unit, q.confidence, q.source))
    w = [max(len(r[i]) for r in rows) for i in range(5)]
    out = [f"{r[0]:<{w[0]}}  {r[1]:>{w[1]}}  {r[2]:<{w[2]}}  {r[3]:<{w[3]}}  {r[4]:<{w[4]}}  {r[5]}" for r in rows]
    return "\n".join(out + ["(* = changed from the default)"])
