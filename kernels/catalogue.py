"""The workload catalogue: every runnable workload, by the name the reference gives it.

    ptoemu list                 what is here: workloads, cases, task counts, features
    ptoemu run NAME [--case C]  one workload on an emulated device, checked against its golden

Each entry is a module with a ``WORKLOAD`` (kernels/workload.py); it is imported only when asked
for, so listing names costs nothing.
"""

from __future__ import annotations

import importlib

from kernels.workload import Workload

MODULES: dict[str, str] = {
    "vector_chain": "kernels.examples.vector_chain",
    "tiled_matmul": "kernels.examples.tiled_matmul",
    "mixed_shapes": "kernels.examples.mixed_shapes",
    "paged_attention_unroll": "kernels.paged_attention.workload",
}


def names() -> list[str]:
    return list(MODULES)


def load(name: str) -> Workload:
    """The workload called ``name`` (ValueError naming the known ones otherwise)."""
    if name not in MODULES:
        raise ValueError(f"unknown workload {name!r}; known: {', '.join(MODULES)}")
    return importlib.import_module(MODULES[name]).WORKLOAD
