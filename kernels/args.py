"""Direction markers for task arguments: ``In``, ``Out``, ``InOut``.

They live beside the kernel registry so that orchestration code in kernel packages can say how a
kernel uses each tensor without importing the host runtime. ``host`` re-exports them.

    In     read only
    Out    write only: the old contents are undefined to the kernel
    InOut  read, then write
    NoDep  the kernel may read and write it, and the argument takes part in no dependency
           tracking beyond its creator (the reference's NO_DEP / add_no_dep) -- under
           Device(semantics="reference"); the default sequential semantics still orders it as
           an InOut (see host/orchestration.py, "Semantics")
"""

from __future__ import annotations

DIR_IN, DIR_OUT, DIR_INOUT = 1, 2, 3
DIR_NAMES = {DIR_IN: "In", DIR_OUT: "Out", DIR_INOUT: "InOut"}


class Arg:
    """A device tensor argument together with its direction."""

    __slots__ = ("tensor",)
    dir = 0
    notrack = False

    def __init__(self, tensor: object) -> None:
        if not getattr(tensor, "is_device_tensor", False):
            what = type(tensor).__name__
            hint = (" (copy a numpy array to the device with dev.to_device first)"
                    if what == "ndarray" else "")
            raise TypeError(f"{type(self).__name__}() expects a device Tensor, got {what}{hint}")
        self.tensor = tensor

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.tensor!r})"


class In(Arg):
    """Read only."""
    dir = DIR_IN


class Out(Arg):
    """Write only: the old contents are undefined to the kernel."""
    dir = DIR_OUT


class InOut(Arg):
    """Read, then write."""
    dir = DIR_INOUT


class NoDep(Arg):
    """Read and write, untracked: no tensor-map lookup or insert (creator edge only)."""
    dir = DIR_INOUT
    notrack = True
