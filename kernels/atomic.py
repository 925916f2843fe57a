"""Atomic adds into device memory: the chip's atomic-add store mode (TSTORE with AtomicAdd).

    kernel part                                  whatever runs kernels installs the hook
    ───────────                                  ──────────────────────────────────────
    tile.store(dst, t, atomic="add")  ─┐         nothing (a plain call, the sequential engine:
    kernels.atomic_add(dst, value)    ─┴─▶ add()    one part at a time)  ─▶ dst += value
                                                 a device worker (device/atomics.py): lock the
                                                    stripes of GM that dst's bytes fall in,
                                                    in ascending order ─▶ dst += value ─▶ unlock

Split-K producers of one accumulator (the qwen3 decode's q/k/v, out, gate, up and down
projections) run at the same time on different cores -- several blocks of one SPMD task, or
tasks a manual scope leaves unordered -- and each adds its partial sums into the same GM region.
A plain ``dst += value`` is a load, an add and a store: two cores doing it at once lose one
update. Under the hook each add is one indivisible read-modify-write, so the sum is right
whatever the interleaving (its order, and so the last bits of a float sum, still vary with it,
as on the chip).

The hook is per process and installed before any kernel runs; this module never imports the
device (kernels are the bottom layer).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

__all__ = ["add", "set_hook"]

_hook: Callable[[np.ndarray, Any], None] | None = None


def set_hook(fn: Callable[[np.ndarray, Any], None] | None) -> None:
    """What ``add`` does from now on in this process (None: a plain in-place add)."""
    global _hook
    _hook = fn


def add(dst: np.ndarray, value: Any) -> None:
    """``dst += value`` in place, as one atomic update of ``dst``'s elements with respect to every
    other ``add`` on the same device (``value`` broadcasts to ``dst``; cast as numpy's
    ``casting="unsafe"``, so an fp32 partial can be added into a bf16 destination)."""
    if not isinstance(dst, np.ndarray) or not dst.flags.writeable:
        raise TypeError(f"atomic add: the destination must be a writable numpy view of device memory, got "
                        f"{type(dst).__name__}" + (" (read-only: an In argument?)" if isinstance(dst, np.ndarray)
                                                   else ""))
    h = _hook
    if h is None:
        np.add(dst, value, out=dst, casting="unsafe")
    else:
        h(dst, value)
