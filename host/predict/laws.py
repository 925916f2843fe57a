"""Kernel time and HBM traffic of every recorded task: counted costs first, the kernel's cost law
second, the roofline default last.

    graph header kernels [{name, shape, module}]
        │  import each module (kernels.registry.resolve), take Kernel.cost
        ▼
    LawTable: one law (or None = roofline) per kernel, and notes saying which fell back and why
        │  per task record:
        │    "c" (counted while recording, graph v2) ──kernels.a2a3.task_time(parts' Counts)──▶ us, band
        │        (unless its parts exchanged tiles through pipes and the kernel has a law: the law
        │        replays them coupled, a summary cannot)
        │    else TaskInfo(kernel, shape, args, scalars, blocks) ──law──▶ Cost   (band +-law_band)
        │    else the roofline default                                          (band [1/2, roofline_band] x)
        ▼
    (us, us_low, us_high, hbm_bytes) per record, one SPMD block each; 0 for records without a core

A ``laws=`` mapping given to ``predict`` (a what-if) replaces the counted costs of its kernels too.

HBM traffic of a counted task: the GM bytes it moved, less what the L2 serves. A runtime (heap)
tensor is written by one task and read by the next moments later: its traffic is taken as served
by the 192 MiB L2 (share ``l2_hit``); host tensors (KV caches, weights, inputs, outputs) go to
HBM. The counted bytes are split between the two in proportion to the bytes of the task's
arguments of each kind (reads over In/InOut arguments, writes over Out/InOut ones).

Roofline default (kernels without a law): ``us = max(kernel_floor_us, bytes / core_gbps, flops /
aic_tflops)`` with bytes = what the tensor arguments move (In read, Out written, InOut both) and
hbm_bytes = the same bytes. A recording carries no operation semantics, so the default has no FLOP
count (flops = 0); a law that knows its FLOPs can call ``roofline(info, params, flops=...)`` from
host code, or compute the same max itself.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from device.codec import counts_from_row
from host.graph import DIR_NAMES, Record, check_counted, counted_gm
from host.predict.params import Params
from kernels.a2a3 import coupled, task_time
from kernels.cost import ArgInfo, Cost, TaskInfo

__all__ = ["COUNTED", "LAW", "ROOFLINE", "SOURCES", "LawTable", "RecordedArg", "TaskCosts", "find_laws", "roofline",
           "task_costs"]

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
    override: set[int] = field(default_factory=set)         # kernel indices whose law predict(laws=) gave

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
        given = extra.get(name) or extra.get(_short(name))
        if given is not None:
            table.override.add(i)
        law = given or registered.get(name)
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


COUNTED, LAW, ROOFLINE = range(3)
SOURCES = ("counted", "law", "roofline")


class TaskCosts:
    """(us, us_low, us_high) x law_scale and hbm_bytes of one block of a task: counted, its
    kernel's law, or the roofline default; ``sources[kernel]`` counts the tasks priced each way."""

    def __init__(self, kernels: Sequence[dict], table: LawTable, p: Params) -> None:
        self.kernels, self.laws, self.p, self.scale = kernels, table.laws, p, p.law_scale
        self.override = table.override
        self.used: set[int] = set()            # kernel indices some task ran with
        self.sources: dict[int, list[int]] = {}     # kernel index -> tasks priced [counted, law, roofline]

    def __call__(self, tid: int, kernel: int, args: Sequence[ArgInfo], scalars: Sequence, blocks: int,
                 counted: list | None = None, cg: list | None = None) -> tuple[float, float, float, float, float]:
        """(us, us_low, us_high, HBM bytes of host tensors, GM bytes of runtime tensors) of one block:
        the runtime tensors' bytes reach HBM at the L2's miss rate, (1 - l2_hit)."""
        kernels = self.kernels
        if type(kernel) is not int or not 0 <= kernel < len(kernels):
            raise ValueError(f"record of task {tid}: kernel index {kernel!r} is not in the header's "
                             f"{len(kernels)} kernels")
        self.used.add(kernel)
        src = self.sources.get(kernel)
        if src is None:
            src = self.sources[kernel] = [0, 0, 0]
        p, sc = self.p, self.scale
        if counted is not None and kernel not in self.override:
            try:
                check_counted(counted)
                parts = [None if c is None else counts_from_row(c) for c in counted]
                # Parts that exchanged tiles through pipes cannot be timed from their summaries
                # (kernels/a2a3.py task_time): a law that replays them coupled knows better.
                if not (coupled(parts) and self.laws[kernel] is not None):
                    us, lo, hi = task_time(parts)
                    rd, wr = cg if cg is not None else counted_gm(counted)
                    src[COUNTED] += 1
                    host, rt = _split(args, float(rd), float(wr))
                    b = max(blocks, 1)
                    return us * sc, lo * sc, hi * sc, host / b, rt / b
            except (ValueError, TypeError, IndexError) as e:
                raise ValueError(f"record of task {tid}: {e}") from None
        k = kernels[kernel]
        info = TaskInfo(k["name"], k.get("shape", ""), args, scalars, blocks)
        law = self.laws[kernel]
        if law is None:
            c = roofline(info, p)
            src[ROOFLINE] += 1
            rd = sum(a.nbytes for a in args if a.dir != "Out")
            wr = sum(a.nbytes for a in args if a.dir != "In")
            host, rt = _split(args, rd, wr)
            b = max(blocks, 1)
            return c.us * sc, 0.5 * c.us * sc, p.roofline_band * c.us * sc, host / b, rt / b
        try:
            c = law(info)
        except Exception as e:  # noqa: BLE001 - a user law's bug, reported with the task it hit
            raise ValueError(f"cost law of kernel {_short(k['name'])} failed on task {tid}: "
                             f"{type(e).__name__}: {e}") from e
        if not isinstance(c, Cost):
            raise ValueError(f"cost law of kernel {_short(k['name'])} returned {type(c).__name__} for task "
                             f"{tid}; expected kernels.cost.Cost(us, hbm_bytes)")
        src[LAW] += 1
        b = p.law_band
        return c.us * sc, (1 - b) * c.us * sc, (1 + b) * c.us * sc, float(c.hbm_bytes), 0.0


def _split(args: Sequence[ArgInfo], read: float, written: float) -> tuple[float, float]:
    """``read`` / ``written`` GM bytes split into (host tensors', runtime tensors') bytes, in
    proportion to the bytes of the host and the runtime tensor arguments in each direction (module
    docstring)."""
    host_r = rt_r = host_w = rt_w = 0
    for a in args:
        n, d, rt = a.nbytes, a.dir, a.owner >= 0
        if d != "Out":
            if rt:
                rt_r += n
            else:
                host_r += n
        if d != "In":
            if rt:
                rt_w += n
            else:
                host_w += n
    h = r = 0.0
    for nbytes, host, rt in ((read, host_r, rt_r), (written, host_w, rt_w)):
        if host + rt == 0:
            h += nbytes
        else:
            h += nbytes * host / (host + rt)
            r += nbytes * rt / (host + rt)
    return h, r


def task_costs(kernels: Sequence[dict], records: Sequence[Record], table: LawTable,
               p: Params) -> tuple[list[float], list[float]]:
    """(us × law_scale, hbm_bytes) per record, for one SPMD block; zeros for records without a core."""
    us = [0.0] * len(records)
    hbm = [0.0] * len(records)
    cost = TaskCosts(kernels, table, p)
    for i, r in enumerate(records):
        if r.kind == "task" and not r.skipped:
            us[i], _, _, host, rt = cost(r.tid, r.kernel, r.args, r.scalars, r.blocks, r.counts,
                                         list(r.gm) if r.gm else None)
            hbm[i] = host + (1.0 - p.l2_hit) * rt
    return us, hbm
