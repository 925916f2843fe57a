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

``skew="aiv1"`` (or "aic", "aiv0", "random") adds lane skew: that part of every mixed task is
delayed at its pipe pushes and pops, so the interleavings a slow lane causes on a chip are run on
purpose (Device(skew=...), device/waits.py).

``setup(dev)`` puts the inputs on a device and returns ``(args, kwargs, outputs)``: what to pass to
the orchestration and the tensors to compare afterwards.

Reference semantics: ``compare_semantics`` runs the same orchestration under the reference
runtime's weaker dependency rules (Device(semantics="reference"), host/orchestration.py) with
random schedules, against submission order. A difference is a race the chip could show although
ptoemu's default run is correct; the report names the outputs, elements and bytes that differ
and the tasks that write those bytes (from a recording of the reference run's graph):

    report = compare_semantics(orchestrate, setup, kernels=[...], seeds=range(8))
    print(report)     # "result differs between sequential and reference semantics: ..."

A schedule shows a race only if it happens to run it; the recorded graph shows every one: the
report also lists the conflicting accesses (tensor arguments and predicate operands whose bytes
meet, one a write) that the graph's edges leave unordered, found exactly at any size
(host/conflicts.py). ``report.ok`` needs both clean.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from host.conflicts import Analysis, Conflict, analyse, unordered_conflicts  # noqa: F401  (re-exported)
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
         jitter_us: float = 50.0, skew: str | None = None, skew_us: float = 100.0) -> FuzzReport:
    """Compare the orchestration's outputs under random schedules with submission order.
    ``skew`` ("aic", "aiv0", "aiv1" or "random"): also delay that part of every mixed task at its
    pipe operations, up to ``skew_us`` (lane skew, Device(skew=...)), the delays drawn from each seed."""
    report = FuzzReport(seeds=list(seeds))
    for seed, _, differ in _against_inline(orchestration, setup, kernels, report.seeds, platform, jitter_us,
                                           skew=skew, skew_us=skew_us):
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
class SemanticsReport:
    seeds: list[int]
    races: dict[int, list[Race]] = field(default_factory=dict)     # seed -> what differed
    conflicts: list[Conflict] = field(default_factory=list)         # unordered under the reference's rules
    analysis: Analysis | None = None                                # what the graph check looked at

    @property
    def ok(self) -> bool:
        """No schedule differed and the graph leaves no conflicting accesses unordered."""
        return not self.races and not self.conflicts

    def _conflict_lines(self, indent: str) -> list[str]:
        a = self.analysis
        n = a.unordered if a is not None else len(self.conflicts)
        more = f" (the first {len(self.conflicts[:10])} shown)" if n > 10 else ""
        return ([f"{indent}{n} conflicting access pair(s) are unordered in the graph under the reference's "
                 f"rules{more}:"] + [f"{indent}  {c}" for c in self.conflicts[:10]])

    def __str__(self) -> str:
        where = f" ({self.analysis})" if self.analysis is not None else ""
        if not self.races:
            head = (f"reference semantics: {len(self.seeds)} random schedules under the reference's dependency "
                    "rules, all results identical to submission order")
            if not self.conflicts:
                return head + f"; no unordered conflicting accesses in the graph{where}"
            return "\n".join([head + f"; but races the chip could show{where}:"] + self._conflict_lines("  "))
        lines = [f"result differs between sequential and reference semantics in {len(self.races)} of "
                 f"{len(self.seeds)} random schedules: the reference's rules (no write-after-read ordering, "
                 "Out on an existing buffer does not wait, NoDep / manual_dep / manual scopes untracked) leave "
                 "these writes unordered on a chip"]
        for seed, races in self.races.items():
            lines.append(f"  seed {seed}:")
            lines.extend(f"    {r}" for r in races)
        if self.conflicts:
            lines += self._conflict_lines("  ")
        return "\n".join(lines)


def compare_semantics(orchestration: Callable[..., Any], setup: Setup, *, kernels: Iterable,
                      seeds: Iterable[int] = range(8), platform: Platform | None = None,
                      jitter_us: float = 50.0) -> SemanticsReport:
    """Run under the reference's dependency rules with random schedules and compare every output
    with submission order (the sequential engine); also check the recorded graph of the first
    schedule for every conflicting pair of accesses its edges leave unordered (host/conflicts.py:
    exact, any size). ``ok`` only when neither finds anything; see the module docstring."""
    report = SemanticsReport(seeds=list(seeds))
    for seed, dev, differ in _against_inline(orchestration, setup, kernels, report.seeds, platform, jitter_us,
                                             semantics="reference", record=True):
        if seed == report.seeds[0]:
            report.analysis = analyse(dev.graph())
            report.conflicts = report.analysis.conflicts
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
