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

from host.graph import DIR_NAMES, Record
from host.predict.params import Params
from kernels.cost import ArgInfo, Cost, TaskInfo

__all__ = ["LawTable", "RecordedArg", "TaskCosts", "find_laws", "roofline", "task_costs"]

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
    fallback: dict[int, str] = field(default_factory=dict)  # kernel index -> note, for kernels on the roofline

    def notes_for(self, used: set[int]) -> list[str]:
        """The notes of the kernels some task ran with (a kernel loaded but never run does not matter)."""
        return [n for i, n in self.fallback.items() if i in used]


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
        mod = k.get("module", "")
        why = (f"its module {mod!r} cannot be imported ({failed[mod]})" if mod in failed
               else "it has no cost law (kernel(..., cost=law))" if name in registered
               else f"module {mod!r} does not register it")
        table.fallback[i] = f"kernel {_short(name)}: roofline default (floor + bytes / core_gbps) because {why}"
    table.notes = list(table.fallback.values()) if used is None else table.notes_for(used)
    unused = [k for k in extra if k not in table.used and not any(_short(n) == k for n in table.used)]
    if unused:
        raise ValueError(f"laws: no recorded kernel is named {', '.join(map(repr, unused))}; recorded: "
                         f"{', '.join(_short(k['name']) for k in kernels)}")
    return table


class RecordedArg:
    """A tensor argument of a recording as a law sees it (kernels.cost.ArgInfo), read straight from
    the record's JSON list [dir, dtype, shape, nbytes, buffer, owner, [lo, hi], untracked, ...]
    (host/graph.py) without building an Arg: a million-task recording is streamed through the
    laws, and most of it is never looked at."""

    __slots__ = ("_a",)

    def __init__(self, a: list) -> None:
        if type(a) is not list or len(a) < 6 or a[0] not in DIR_NAMES or type(a[3]) is not int or a[3] < 0:
            raise ValueError(f"tensor argument {a!r}: expected [dir, dtype, shape, nbytes, buffer, owner, ...] "
                             f"with dir one of {', '.join(DIR_NAMES)} and nbytes a count")
        self._a = a

    dir = property(lambda self: self._a[0])
    dtype = property(lambda self: self._a[1])
    shape = property(lambda self: tuple(self._a[2]))
    nbytes = property(lambda self: self._a[3])
    buffer = property(lambda self: self._a[4])
    owner = property(lambda self: self._a[5])
    span = property(lambda self: tuple(self._a[6]) if len(self._a) > 6 else (0, 0))
    untracked = property(lambda self: bool(self._a[7]) if len(self._a) > 7 else False)
    strides = property(lambda self: tuple(self._a[8]) if len(self._a) > 8 and self._a[8] is not None else None)

    def __repr__(self) -> str:
        return f"RecordedArg({self._a!r})"


class TaskCosts:
    """(us × law_scale, hbm_bytes) of one block of a task: its kernel's law, or the roofline default."""

    def __init__(self, kernels: Sequence[dict], table: LawTable, p: Params) -> None:
        self.kernels, self.laws, self.p, self.scale = kernels, table.laws, p, p.law_scale
        self.used: set[int] = set()            # kernel indices some task ran with

    def __call__(self, tid: int, kernel: int, args: Sequence[ArgInfo], scalars: Sequence, blocks: int
                 ) -> tuple[float, float]:
        kernels = self.kernels
        if type(kernel) is not int or not 0 <= kernel < len(kernels):
            raise ValueError(f"record of task {tid}: kernel index {kernel!r} is not in the header's "
                             f"{len(kernels)} kernels")
        self.used.add(kernel)
        k = kernels[kernel]
        info = TaskInfo(k["name"], k.get("shape", ""), args, scalars, blocks)
        law = self.laws[kernel]
        if law is None:
            c = roofline(info, self.p)
        else:
            try:
                c = law(info)
            except Exception as e:  # noqa: BLE001 - a user law's bug, reported with the task it hit
                raise ValueError(f"cost law of kernel {_short(k['name'])} failed on task {tid}: "
                                 f"{type(e).__name__}: {e}") from e
            if not isinstance(c, Cost):
                raise ValueError(f"cost law of kernel {_short(k['name'])} returned {type(c).__name__} for task "
                                 f"{tid}; expected kernels.cost.Cost(us, hbm_bytes)")
        return c.us * self.scale, float(c.hbm_bytes)


def task_costs(kernels: Sequence[dict], records: Sequence[Record], table: LawTable,
               p: Params) -> tuple[list[float], list[float]]:
    """(us × law_scale, hbm_bytes) per record, for one SPMD block; zeros for records without a core."""
    us = [0.0] * len(records)
    hbm = [0.0] * len(records)
    cost = TaskCosts(kernels, table, p)
    for i, r in enumerate(records):
        if r.kind == "task" and not r.skipped:
            us[i], hbm[i] = cost(r.tid, r.kernel, r.args, r.scalars, r.blocks)
    return us, hbm
