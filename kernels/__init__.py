"""The API kernels are written against: the registry (``kernel``, ``AIC``, ``AIV``, ``Mixed``,
``core_info``), the argument markers (``In``, ``Out``, ``InOut``, ``NoDep``), atomic adds into
device memory (``atomic_add``, kernels/atomic.py), the all-core barrier of a task (``sync_all``,
kernels/barrier.py), cost laws, and the
tile layer (``kernels.tile``: PTO-style instructions that compute with numpy and count what an
a2a3 core spends, priced by ``kernels.a2a3``), and the intra-cluster pipes (``TPipe`` with ``C2V``
/ ``V2C``: kernels/pipe.py, on the waits of kernels/waits.py) and the cross-core semaphores they
lower to (``set_cross_core``, ``wait_flag_dev``: kernels/ffts.py).

This package is the bottom layer: it imports neither ``host`` nor ``device``, and ``device`` stands
on it (the registry, the argument markers). The applications written on it -- the workload
catalogue, examples, paged attention, the reference's scenes -- live in ``kernels.workloads``,
which imports only this API.
"""

from typing import Any

from kernels.args import In, InOut, NoDep, Out
from kernels.atomic import add as atomic_add
from kernels.barrier import sync_all
from kernels.registry import AIC, AIV, CoreInfo, Kernel, Mixed, core_info, kernel, registered, resolve

__all__ = ["AIC", "AIV", "Mixed", "Kernel", "CoreInfo", "kernel", "core_info", "registered", "resolve",
           "In", "Out", "InOut", "NoDep", "TPipe", "C2V", "V2C", "atomic_add", "sync_all", "set_cross_core",
           "wait_flag_dev"]


def __getattr__(name: str) -> Any:
    # The pipes stand on the tile layer (ml_dtypes, and its warm-up at import): loaded when a
    # kernel module first asks for them, so that the registry and the markers alone stay light.
    if name in ("TPipe", "C2V", "V2C"):
        from kernels import pipe
        return getattr(pipe, name)
    if name in ("set_cross_core", "wait_flag_dev"):
        from kernels import ffts
        return getattr(ffts, name)
    raise AttributeError(f"module 'kernels' has no attribute {name!r}")
