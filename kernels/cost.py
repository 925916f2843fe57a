"""Cost laws: what ``ptoemu predict`` asks a kernel about one task, and what the kernel answers.

    recorded task (host/graph.py Record)
        │  host/predict builds a TaskInfo: kernel name, core shape, tensor args (dir, dtype, shape,
        │  nbytes), scalars, SPMD blocks
        ▼
    law = Kernel.cost          registered with @kernel(..., cost=law)
        │
        ▼
    Cost(us, hbm_bytes)        ONE block of the task, alone on its core(s), at full speed:
                               us = kernel time, hbm_bytes = bytes it moves to/from HBM
        │
        ▼  host/predict: us × law_scale is the block's nominal time; while the memory-using kernels
           running at the same moment ask for more than the HBM bandwidth cap, each progresses at
           cap / demand (so a law states the uncontended time and the traffic, never the sharing)

These types live in ``kernels`` and not in ``host/predict`` because kernel packages define laws and
must not import ``host``.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

__all__ = ["ArgInfo", "Cost", "TaskInfo"]


class ArgInfo(Protocol):
    """One tensor argument as a law sees it (host/graph.py ``Arg`` satisfies this)."""

    dir: str                   # "In" | "Out" | "InOut"
    dtype: str                 # numpy's name: "float32", "bfloat16", ...
    shape: tuple[int, ...]
    nbytes: int                # bytes the view covers


@dataclass(frozen=True, slots=True)
class Cost:
    """What one block of a task costs on an uncontended a2a3 core: microseconds and HBM bytes."""

    us: float
    hbm_bytes: int = 0

    def __post_init__(self) -> None:
        us, b = self.us, self.hbm_bytes         # the common case first: a law called a million times
        if type(us) is float and type(b) is int and 0.0 <= us < math.inf and b >= 0:
            return
        for name, what in (("us", "a finite number of microseconds >= 0"), ("hbm_bytes", "a byte count >= 0")):
            x = getattr(self, name)
            if isinstance(x, bool) or not isinstance(x, numbers.Real) or not math.isfinite(x) or x < 0:
                raise ValueError(f"Cost({name}={x!r}): expected {what}")


@dataclass(frozen=True, slots=True)
class TaskInfo:
    """One recorded task, as its kernel's cost law receives it."""

    kernel: str                    # registered name, e.g. "kernels.workloads.paged_attention.kernels.qk"
    shape: str                     # "AIC", "AIV", "AIV_X2", "AIC_AIV", "AIC_AIV_X2"
    args: Sequence[ArgInfo]        # tensor arguments in submit order
    scalars: Sequence[Any]         # ints, floats, bools; scalar arrays as lists
    blocks: int = 1                # SPMD blocks; the Cost is per block

    def bytes_moved(self) -> int:
        """Bytes every tensor argument moves if touched once: In read, Out written, InOut both."""
        return sum(a.nbytes * (2 if a.dir == "InOut" else 1) for a in self.args)
