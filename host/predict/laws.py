"""Kernel time and HBM traffic of every recorded task: the kernel's cost law, or the roofline default.

    graph header kernels [{name, shape, module}]
        │  import each module (kernels.registry.resolve), take Kernel.cost
        ▼
    LawTable: one law (or None = roofline) per kernel, and notes saying which fell back and why
        │  per task record: TaskInfo(kernel, shape, args, scalars, blocks) ──law──▶ Cost
        ▼
    (us, hbm_bytes) per record, one SPMD block each; 0 for records that do not run on a core

Roofline default (kernels without a law): ``us = max(kernel_floor_us, bytes / core_gbps, flops /
aic_tflops)`` with bytes = what the tensor arguments move (In read, Out written, InOut both) and
hbm_bytes = the same bytes. A recording carries no operation semantics, so the default has no FLOP
count (flops = 0); a law that knows its FLOPs can call ``roofline(info, params, flops=...)`` from
host code, or compute the same max itself.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from host.graph import Record
from host.predict.params import Params
from kernels.cost import Cost, TaskInfo

__all__ = ["LawTable", "find_laws", "roofline", "task_costs"]

Law = Callable[[TaskInfo], Cost]


def roofline(info: TaskInfo, p: Params, flops: float = 0.0) -> Cost:
    """The default law: a fixed per-task floor, or the time to move the bytes / do the FLOPs on one core."""
    nbytes = info.bytes_moved() / max(info.blocks, 1)
    us = max(p.kernel_floor_us, nbytes / (p.core_gbps * 1e3), flops / (p.aic_tflops * 1e6))
    return Cost(us, int(nbytes))


@dataclass
class LawTable:
    """The law of each kernel of a recording (index = the record's kernel index)."""

    laws: list[Law | None]
    used: dict[str, str] = field(default_factory=dict)      # kernel name -> "law <fn>" | "roofline default"
    notes: list[str] = field(default_factory=list)


def _short(name: str) -> str:
    return name.rsplit(".", 1)[-1]


def find_laws(kernels: Sequence[dict], extra: Mapping[str, Law] | None = None,
              used: set[int] | None = None) -> LawTable:
    """Look up each recorded kernel's cost law by importing its module.

    ``extra`` maps a kernel name (full or short) to a law that replaces the registered one (what-if
    experiments, synthetic graphs). ``used``: the kernel indices some task runs; a kernel that was
    loaded but never ran gets no note (its law would not matter)."""
    from kernels.registry import resolve

    extra = dict(extra or {})
    for k, law in extra.items():
        if not callable(law):
            raise ValueError(f"laws[{k!r}]: expected a function TaskInfo -> Cost, got {type(law).__name__}")
    registered: dict[str, Callable | None] = {}
    failed: dict[str, str] = {}
    for mod in dict.fromkeys(k.get("module", "") for k in kernels):
        try:
            for kern in resolve([mod]):
                registered[kern.name] = kern.cost
        except (ValueError, TypeError, ImportError) as e:
            failed[mod] = str(e)
    table = LawTable([])
    for i, k in enumerate(kernels):
        name = k["name"]
        law = extra.get(name) or extra.get(_short(name)) or registered.get(name)
        table.laws.append(law)
        if law is not None:
            table.used[name] = f"law {getattr(law, '__module__', '?')}.{getattr(law, '__qualname__', law)}"
            continue
        table.used[name] = "roofline default"
        if used is not None and i not in used:
            continue
        mod = k.get("module", "")
        why = (f"its module {mod!r} cannot be imported ({failed[mod]})" if mod in failed
               else "it has no cost law (kernel(..., cost=law))" if name in registered
               else f"module {mod!r} does not register it")
        table.notes.append(f"kernel {_short(name)}: roofline default (floor + bytes / core_gbps) because {why}")
    unused = [k for k in extra if k not in table.used and not any(_short(n) == k for n in table.used)]
    if unused:
        raise ValueError(f"laws: no recorded kernel is named {', '.join(map(repr, unused))}; recorded: "
                         f"{', '.join(_short(k['name']) for k in kernels)}")
    return table


def task_costs(kernels: Sequence[dict], records: Sequence[Record], table: LawTable,
               p: Params) -> tuple[list[float], list[float]]:
    """(us × law_scale, hbm_bytes) per record, for one SPMD block; zeros for records without a core."""
    us = [0.0] * len(records)
    hbm = [0.0] * len(records)
    scale = p.law_scale
    laws = table.laws
    for i, r in enumerate(records):
        if r.kind != "task" or r.skipped:
            continue
        if not 0 <= r.kernel < len(kernels):
            raise ValueError(f"record of task {r.tid}: kernel index {r.kernel} is not in the header's "
                             f"{len(kernels)} kernels")
        k = kernels[r.kernel]
        info = TaskInfo(k["name"], k["shape"], r.args, r.scalars, r.blocks)
        law = laws[r.kernel]
        if law is None:
            c = roofline(info, p)
        else:
            try:
                c = law(info)
            except Exception as e:  # noqa: BLE001 - a user law's bug, reported with the task it hit
                raise ValueError(f"cost law of kernel {_short(k['name'])} failed on task {r.tid}: "
                                 f"{type(e).__name__}: {e}") from e
            if not isinstance(c, Cost):
                raise ValueError(f"cost law of kernel {_short(k['name'])} returned {type(c).__name__} for task "
                                 f"{r.tid}; expected kernels.cost.Cost(us, hbm_bytes)")
        us[i] = c.us * scale
        hbm[i] = float(c.hbm_bytes)
    return us, hbm
