"""Every parameter of the a2a3 model, in one table: default, unit, source and how far to trust it.

    PARAMS (this table) ──resolve(base, overrides)──▶ Params   (read-only, attribute access)
          ▲                      │ unknown name / bad value ──▶ ValueError naming it and the known keys
          │                      ▼
    parse_assignment("k=v")   model.py, laws.py, report.py read p.<name>

Sources are docs/a2a3.md (which cites the reference project's measurements, the CANN
platform config and public specs). "(inferred)" marks our derivation, not a published number.
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
    confidence: str            # high | medium | low (how far to trust the default)
    integer: bool = False
    lo: float = 0.0            # smallest allowed value
    hi: float = math.inf       # largest allowed value
    above: bool = False        # lo itself is not allowed (the model divides by this parameter)


MIB = 1 << 20

PARAMS: tuple[Param, ...] = (
    # -- the machine --
    Param("clusters", 24, "clusters", "a2a3: 24 clusters of 1 AIC + 2 AIV (reference platform max block_dim 24)",
          "high", integer=True, lo=1),
    Param("sched_threads", 3, "threads", "reference: 3 AICPU scheduler threads, cluster c owned by thread "
          "c mod 3", "high", integer=True, lo=1),
    # -- orchestrator (1 AICPU thread) --
    Param("orch_submit_us", 0.15, "us", "docs/a2a3.md: 0.56-0.87 us per submit incl. its tensor args, about half "
          "in tensor-map lookup; 0.15 + 0.10/arg + 0.10/scope end gives 730 us for paged attention Case1 "
          "(1280 tasks, 256 scopes), measured 721.6 us (hw-native-sys/simpler PR #694, Avg Orch)", "medium"),
    Param("orch_arg_us", 0.10, "us per tensor arg", "docs/a2a3.md: +0.1-0.2 us per tensor argument (inferred)",
          "low"),
    Param("orch_scope_end_us", 0.10, "us", "scope end: walk the scope's tasks, drop one reference each "
          "(inferred; no published number)", "low"),
    Param("task_window", 16384, "slots", "reference task ring: 16,384 slots per ring (one ring modelled)",
          "high", integer=True, lo=1),
    Param("heap_bytes", 256 * MIB, "bytes", "reference heap ring: 256 MiB per ring (one ring modelled)", "high",
          integer=True, lo=1),
    Param("run_overhead_us", 30.0, "us per run", "docs/a2a3.md: run start + finish 10-50 us (recent versions; "
          "older 85-280)", "medium"),
    # -- schedulers (3 AICPU threads) --
    Param("sched_poll_us", 0.10, "us per core read", "docs/a2a3.md: a completion-register read 95-105 ns, serial "
          "(sweep of 24 cores ~2.3 us)", "high"),
    Param("sched_task_us", 2.0, "us per task", "docs/a2a3.md: complete + dispatch 1-3 us per thread (inferred; "
          "the reference's 5-10 us includes idle polling)", "low"),
    Param("sched_complete_share", 0.5, "fraction", "share of sched_task_us spent handling a completion, the "
          "rest dispatching (inferred)", "low", hi=1.0),
    # -- cores --
    Param("dispatch_start_us", 0.30, "us", "docs/a2a3.md: dispatch -> kernel start 0.2-0.5 us (a core's first "
          "task +0.3-5.6 us, not modelled)", "medium"),
    Param("fin_visible_us", 0.60, "us", "docs/a2a3.md: kernel end -> scheduler sees it ~0.6 us average (0.18 "
          "minimum), plus the poll sweep (modelled separately)", "medium"),
    Param("law_scale", 1.0, "x", "multiplies every kernel time (for sweeps)", "-"),
    Param("kernel_floor_us", 5.0, "us", "docs/a2a3.md: roofline default for kernels without a law gets a fixed "
          "per-task floor of ~2-10 us", "low"),
    Param("core_gbps", 200.0, "GB/s", "one core's achievable load bandwidth for the roofline default: L2 "
          "~110 B/cycle/core x 1.85 GHz (docs/a2a3.md)", "medium", above=True),
    Param("aic_tflops", 15.2, "TFLOP/s", "cube peak per AIC, bf16: 8192 FLOP/cycle x 1.85 GHz "
          "(docs/a2a3.md, pto-isa cost model)", "high", above=True),
    # -- HBM --
    Param("hbm_gbps", 900.0, "GB/s", "docs/a2a3.md: scattered 32 KiB paged reads reach 0.8-1.0 TB/s aggregate; "
          "the shared cap", "medium", above=True),
    Param("hbm_peak_gbps", 1600.0, "GB/s", "docs/a2a3.md: 1.6 TB/s peak per die (other sources 1.5, 1.42); "
          "reported for reference, set hbm_gbps to model it", "medium", above=True),
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
    """Every parameter with its value, unit, confidence and source (``ptoemu predict --params``)."""
    rows = [("name", "value", "unit", "trust", "source")]
    for q in PARAMS:
        v = p[q.name]
        shown = f"{v:g}" if not q.integer or v < 1e6 else f"{v} ({v / MIB:g} MiB)"
        rows.append((q.name + (" *" if v != q.default else ""), shown, q.unit, q.confidence, q.source))
    w = [max(len(r[i]) for r in rows) for i in range(4)]
    out = [f"{r[0]:<{w[0]}}  {r[1]:>{w[1]}}  {r[2]:<{w[2]}}  {r[3]:<{w[3]}}  {r[4]}" for r in rows]
    return "\n".join(out + ["(* = changed from the default)"])
