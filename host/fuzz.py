"""Schedule fuzzing: run one orchestration under many random schedules and compare the results.

    reference = the inline engine (every task at submit, in submission order)
    for seed in seeds:
        Device(schedule="random", seed=seed, jitter_us=...)   ready tasks and free cores taken in
                                                              a random order, random delays
        results must equal the reference, bit for bit

A correctly declared graph gives identical results for every seed. A wrong direction (an ``In``
that the kernel writes, an ``InOut`` declared ``In``, a missing argument) leaves two tasks
unordered; some schedules then run them the other way round and the results differ -- which is
what the report shows, with the seed that reproduces it.

    report = fuzz(orchestrate, setup, kernels=[...], seeds=range(8))
    assert report.ok, report

``setup(dev)`` puts the inputs on a device and returns ``(args, kwargs, outputs)``: what to pass to
the orchestration and the tensors to compare afterwards.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
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


def _results(dev: Device, orchestration: Callable, setup: Setup) -> list[np.ndarray]:
    args, kwargs, outputs = setup(dev)
    dev.run(orchestration, *args, **kwargs)
    return [dev.to_host(t) for t in outputs]


def fuzz(orchestration: Callable[..., Any], setup: Setup, *, kernels: Iterable,
         seeds: Iterable[int] = range(8), platform: Platform | None = None,
         jitter_us: float = 50.0) -> FuzzReport:
    """Compare the orchestration's outputs under random schedules with submission order."""
    platform = platform or Platform(blocks=2)
    kernels = list(kernels)
    with Device(platform, kernels=kernels, inline=True) as ref:
        want = _results(ref, orchestration, setup)
    report = FuzzReport(seeds=list(seeds))
    for seed in report.seeds:
        with Device(platform, kernels=kernels, schedule="random", seed=seed, jitter_us=jitter_us) as dev:
            got = _results(dev, orchestration, setup)
        diffs = []
        for i, (w, g) in enumerate(zip(want, got)):
            same = np.array_equal(w, g, equal_nan=w.dtype.kind in "fc")
            if not same:
                n = int(np.sum(w != g))
                diffs.append(f"output {i} {w.shape} {w.dtype}: {n} element(s) differ")
        if diffs:
            report.mismatches[seed] = diffs
    return report
