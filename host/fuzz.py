"""Schedule fuzzing: run one orchestration under many random schedules and compare the results.

    want = the sequential engine (inline=True: every task at submit, in submission order)
    for seed in seeds:
        Device(schedule="random", seed=seed, jitter_us=...)   ready tasks and free cores taken in
                                                              a random order, random delays
        results must equal want, bit for bit

A correctly declared graph gives identical results for every seed. A wrong direction (an ``In``
that the kernel writes, an ``InOut`` declared ``In``, a missing argument) leaves two tasks
unordered; some schedules then run them the other way round and the results differ -- which is
what the report shows, with the seed that reproduces it.

    report = fuzz(orchestrate, setup, kernels=[...], seeds=range(8))
    assert report.ok, report

``setup(dev)`` puts the inputs on a device and returns ``(args, kwargs, outputs)``: what to pass to
the orchestration and the tensors to compare afterwards.

Reference semantics: ``compare_semantics`` runs the same orchestration under the reference
runtime's weaker dependency rules (Device(semantics="reference"), host/orchestration.py) with
random schedules, against submission order. A difference is a race the chip could show although
ptoemu's default run is correct; the report names the outputs, elements and bytes that differ
and the tasks that write those bytes (from a recording of the reference run's graph):

    report = compare_semantics(orchestrate, setup, kernels=[...], seeds=range(8))
    print(report)     # "result differs between sequential and reference semantics: ..."
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from host.device import Device
from host.platform import Platform

Setup = Callable[[Device], tuple[tuple, dict, list]]


@dataclass
class FuzzReport:
    seeds: list[int]
    mismatches: dict[int, list[str]] = field(default_factory=dict)   # seed -> differing outputs

    @property
    def ok(self) -> bool:
        return not self.mismatches

    def __str__(self) -> str:
        if self.ok:
            return f"schedule fuzzing: {len(self.seeds)} random schedules, all results identical"
        lines = [f"schedule fuzzing: {len(self.mismatches)} of {len(self.seeds)} random schedules "
                 "differ from running the tasks in submission order -- a direction is probably wrong"]
        for seed, diffs in self.mismatches.items():
            lines.append(f"  seed {seed}: " + "; ".join(diffs))
        return "\n".join(lines)


def _results(dev: Device, orchestration: Callable, setup: Setup, keep: list | None = None) -> list[np.ndarray]:
    args, kwargs, outputs = setup(dev)
    dev.run(orchestration, *args, **kwargs)
    if keep is not None:
        keep.extend(outputs)
    return [dev.to_host(t) for t in outputs]


def _against_inline(orchestration: Callable, setup: Setup, kernels: Iterable, seeds: list[int],
                    platform: Platform | None, jitter_us: float, **device: Any) -> Iterator[tuple]:
    """Run once on the sequential engine, then once per seed on a randomly scheduled device (made
    with ``device`` options); yields (seed, the device, still open, and [(output index, want,
    got, tensor)] of the outputs that differ)."""
    platform = platform or Platform(blocks=2)
    kernels = list(kernels)
    with Device(platform, kernels=kernels, inline=True) as ref:
        want = _results(ref, orchestration, setup)
    for seed in seeds:
        with Device(platform, kernels=kernels, schedule="random", seed=seed, jitter_us=jitter_us, **device) as dev:
            outs: list = []
            got = _results(dev, orchestration, setup, outs)
            yield seed, dev, [(i, w, g, t) for i, (w, g, t) in enumerate(zip(want, got, outs))
                              if not np.array_equal(w, g, equal_nan=w.dtype.kind in "fc")]


def fuzz(orchestration: Callable[..., Any], setup: Setup, *, kernels: Iterable,
         seeds: Iterable[int] = range(8), platform: Platform | None = None,
         jitter_us: float = 50.0) -> FuzzReport:
    """Compare the orchestration's outputs under random schedules with submission order."""
    report = FuzzReport(seeds=list(seeds))
    for seed, _, differ in _against_inline(orchestration, setup, kernels, report.seeds, platform, jitter_us):
        if differ:
            report.mismatches[seed] = [f"output {i} {w.shape} {w.dtype}: {int(np.sum(w != g))} element(s) differ"
                                       for i, w, g, _ in differ]
    return report


@dataclass
class Race:
    """Elements of one output that differ, and the tasks that write their bytes."""

    output: int
    elements: int                          # how many differ
    first: list[tuple[int, ...]]           # up to 4 of their indices
    byte_range: tuple[int, int]            # [lo, hi) of the differing bytes within the buffer
    writers: list[tuple[int, str, str]]    # (task id, kernel, direction) of tasks writing them

    def __str__(self) -> str:
        who = ", ".join(f"task {t} ({k}, {d})" for t, k, d in self.writers[:8]) or "no recorded task"
        more = f" and {len(self.writers) - 8} more" if len(self.writers) > 8 else ""
        return (f"output {self.output}: {self.elements} element(s) differ (first at {self.first}), bytes "
                f"[{self.byte_range[0]}, {self.byte_range[1]}) of its buffer, written by {who}{more}")


@dataclass
class Conflict:
    """Two tasks whose accesses to one buffer meet, at least one a write, that the reference's
    rules leave unordered (no path of edges between them in the recorded graph)."""

    first: tuple[int, str, str]            # (task id, kernel, direction), the earlier submitted
    second: tuple[int, str, str]
    kind: str                              # "write after read", "read after write", "write after write"
    buffer: int
    bytes: tuple[int, int]                 # where the two spans meet

    def __str__(self) -> str:
        (a, ka, da), (b, kb, db) = self.first, self.second
        return (f"{self.kind} not ordered: task {a} ({ka}, {da}) and task {b} ({kb}, {db}) on bytes "
                f"[{self.bytes[0]}, {self.bytes[1]}) of buffer {self.buffer}")


def unordered_conflicts(g: Any, limit: int = 50, max_tasks: int = 20000) -> list[Conflict]:
    """Pairs of tasks of a recorded graph whose byte spans on one buffer meet (at least one of
    them writing) with no path of dependency edges between them -- the races the graph allows.
    Byte spans are compared (a strided view counts as its whole span: conservative)."""
    tasks = [r for r in g.records if r.kind in ("task", "dummy")]
    if len(tasks) > max_tasks:
        return []
    idx = {r.tid: i for i, r in enumerate(tasks)}
    anc = [0] * len(tasks)                 # bitset of each task's ancestors (indices into tasks)
    for i, r in enumerate(tasks):
        a = 0
        for p in r.preds:
            j = idx.get(p)
            if j is not None:
                a |= anc[j] | (1 << j)
        anc[i] = a
    names = [k["name"].rsplit(".", 1)[-1] for k in g.kernels]

    def who(i: int, d: str, untracked: bool) -> tuple[int, str, str]:
        r = tasks[i]
        return (r.tid, names[r.kernel] if r.kind == "task" else "dummy", d + (" untracked" if untracked else ""))

    by_buf: dict[int, list] = {}
    for i, r in enumerate(tasks):
        for a in r.args:
            if a.span[1] > a.span[0]:
                by_buf.setdefault(a.buffer, []).append((i, a.span, a.dir, a.untracked))
    out: list[Conflict] = []
    for buf, acc in by_buf.items():
        writes = [x for x in acc if x[2] != "In"]
        for w in writes:
            for x in acc:
                i, j = w[0], x[0]
                if i == j or (x[2] != "In" and j < i):      # each pair of writers once
                    continue
                lo, hi = max(w[1][0], x[1][0]), min(w[1][1], x[1][1])
                if lo >= hi:
                    continue
                e, l_ = (w, x) if i < j else (x, w)
                if anc[l_[0]] >> e[0] & 1:
                    continue                                   # ordered by some path
                kind = ("write after write" if e[2] != "In" and l_[2] != "In" else
                        "write after read" if e[2] == "In" else "read after write")
                out.append(Conflict(who(e[0], e[2], e[3]), who(l_[0], l_[2], l_[3]), kind, buf, (lo, hi)))
                if len(out) >= limit:
                    return out
    return out


@dataclass
class SemanticsReport:
    seeds: list[int]
    races: dict[int, list[Race]] = field(default_factory=dict)     # seed -> what differed
    conflicts: list[Conflict] = field(default_factory=list)         # unordered under the reference's rules

    @property
    def ok(self) -> bool:
        return not self.races

    def __str__(self) -> str:
        if self.ok:
            head = (f"reference semantics: {len(self.seeds)} random schedules under the reference's dependency "
                    "rules, all results identical to submission order")
            if not self.conflicts:
                return head + "; no unordered conflicting accesses in the graph"
            return "\n".join([head + f"; but {len(self.conflicts)} conflicting access pair(s) are unordered:"]
                             + [f"  {c}" for c in self.conflicts[:10]])
        lines = [f"result differs between sequential and reference semantics in {len(self.races)} of "
                 f"{len(self.seeds)} random schedules: the reference's rules (no write-after-read ordering, "
                 "Out on an existing buffer does not wait, NoDep / manual_dep / manual scopes untracked) leave "
                 "these writes unordered on a chip"]
        for seed, races in self.races.items():
            lines.append(f"  seed {seed}:")
            lines.extend(f"    {r}" for r in races)
        if self.conflicts:
            lines.append("  unordered conflicting accesses in the graph under the reference's rules:")
            lines.extend(f"    {c}" for c in self.conflicts[:10])
        return "\n".join(lines)


def compare_semantics(orchestration: Callable[..., Any], setup: Setup, *, kernels: Iterable,
                      seeds: Iterable[int] = range(8), platform: Platform | None = None,
                      jitter_us: float = 50.0) -> SemanticsReport:
    """Run under the reference's dependency rules with random schedules and compare every output
    with submission order (the sequential engine); see the module docstring."""
    report = SemanticsReport(seeds=list(seeds))
    for seed, dev, differ in _against_inline(orchestration, setup, kernels, report.seeds, platform, jitter_us,
                                             semantics="reference", record=True):
        if seed == report.seeds[0]:
            report.conflicts = unordered_conflicts(dev.graph())
        if differ:
            report.races[seed] = [_race(i, w, g, t, dev) for i, w, g, t in differ]
    return report


def _race(i: int, want: np.ndarray, got: np.ndarray, t: Any, dev: Device) -> Race:
    """Which bytes of output i differ, and which recorded tasks write them."""
    from device import codec as C
    diff = np.argwhere(want != got) if want.ndim else np.zeros((1, 0), int)
    w = t.packed(C.DIR_IN)
    base = w[C.A_LO] - t.buf.gm                        # the view's first byte within its buffer
    strides = [w[C.A_STRIDES + d] for d in range(len(t._fshape)) if not t._drop[d]]
    offs = [base + sum(int(x) * s for x, s in zip(ix, strides)) for ix in diff]
    lo, hi = min(offs), max(offs) + t.dtype.itemsize
    g = dev.graph()
    bid = dev._recorder.buf_ids.get(t.buf.id) if dev._recorder else None
    names = [k["name"].rsplit(".", 1)[-1] for k in g.kernels]
    writers = []
    for r in g.records:
        if r.kind != "task":
            continue
        for a in r.args:
            if a.buffer == bid and a.dir != "In" and a.span[0] < hi and lo < a.span[1] and any(
                    a.span[0] <= o < a.span[1] for o in offs):
                writers.append((r.tid, names[r.kernel], a.dir + (" untracked" if a.untracked else "")))
                break
    return Race(i, len(diff), [tuple(int(x) for x in ix) for ix in diff[:4]], (lo, hi), writers)
