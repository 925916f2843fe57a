"""What a runnable workload is: one shape for every entry of the catalogue (kernels/workloads/catalogue.py).

    Workload(name, summary, features, cases, build, outputs, orchestrate, golden, tolerance, ...)

    build(params, seed, alloc)      every array the run uses -- inputs and outputs -- made with
                                    ``alloc(shape, dtype)`` (device memory, when the host runner
                                    passes ``dev.empty`` + ``host_view``) and filled; random
                                    values with ``fill.fill(array, dist, seed, name, alloc)``
                                    (kernels/workloads/fill.py): seeded per slice, so the same
                                    bits whoever fills them -- the device's cores when ``alloc``
                                    has a ``fill`` method (host/run.py build_on's), else this
                                    process
    orchestrate(rt, t, params, variant)
                                    submits the run's tasks; ``t`` maps the same names to device
                                    tensors; may return a dict of facts (groups, chunks, ...)
    golden(before, params, variant) the expected ``outputs``, computed independently (vectorised
                                    numpy, not the kernels replayed) from the arrays as they were
                                    before the run
    check(after, before, params)    optional: problems found beyond the values (placements, ...)

A case is a dict of parameters; ``cases`` is ordered smallest first, and names follow the
reference's (Case1, CaseSmall1, CaseVarSeq4, ...). ``hardware_only`` marks the cases the reference
runs only on a2a3 hardware (not in its simulator); ``big`` the ones too large for CI (their task
counts are checked by a command). ``platform(params)`` gives Platform fields a case needs (ring
sizes of the ringbuffer stress, say). ``min_blocks``: the fewest device blocks the orchestration
works with (a start-together launch of a fixed width, say); a narrower device is refused before
anything runs. ``plan_inputs``: the arrays the orchestration reads to decide what it submits
(block tables, context lengths: small); counting tasks (``ptoemu list``) builds only these for
real. None: unknown, every array is built. Nothing here imports the host: kernels stay the bottom
layer, and host/run.py is what runs a workload.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

# alloc(shape, dtype) -> array; a device's may also have fill(array, table, seed, stream) (fill.py)
Alloc = Callable[[tuple, Any], np.ndarray]


@dataclass(frozen=True)
class Workload:
    name: str
    summary: str
    features: tuple[str, ...]
    cases: Mapping[str, Mapping[str, Any]]
    build: Callable[[Mapping[str, Any], int, Alloc], dict[str, np.ndarray]]
    outputs: tuple[str, ...]
    orchestrate: Callable[..., Any]
    golden: Callable[[Mapping[str, np.ndarray], Mapping[str, Any], str], dict[str, np.ndarray]]
    tolerance: tuple[float, float] = (1e-3, 1e-3)          # (rtol, atol); (0, 0): bit for bit
    variants: tuple[str, ...] = ("default",)
    kernels: tuple[str, ...] = ()                          # modules to load on the device
    hardware_only: frozenset[str] = frozenset()
    big: frozenset[str] = frozenset()
    platform: Callable[[Mapping[str, Any]], dict] | None = None
    check: Callable[..., list[str]] | None = None
    reference: str = ""                                    # where it lives in the reference
    golden_per_variant: bool = False                       # the golden depends on the variant
    min_blocks: int = 1                                    # the narrowest device (blocks) it runs on
    plan_inputs: tuple[str, ...] | None = None             # arrays whose values decide its tasks
    notes: tuple[str, ...] = field(default_factory=tuple)

    @property
    def smallest(self) -> str:
        return next(iter(self.cases))

    def case(self, name: str) -> dict[str, Any]:
        if name not in self.cases:
            raise ValueError(f"workload {self.name}: unknown case {name!r}; cases: {', '.join(self.cases)}")
        return dict(self.cases[name])


def numpy_alloc(shape: tuple, dtype: Any) -> np.ndarray:
    """``alloc`` for building a workload's arrays in ordinary memory (goldens, tests)."""
    return np.empty(shape, dtype)

