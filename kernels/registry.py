"""Kernel registry: what a kernel is, which cores it runs on, and how it is found by name.

    @kernel(AIV)                 -> Kernel(name="mymod.add", shape=AIV, parts=(None, add, None))
    def add(a, b, out): ...

    kernel(Mixed(aic=qk, aiv0=sf), name="qk_sf")
                                 -> Kernel(shape=AIC_AIV, parts=(qk, sf, None))

A kernel is a plain Python function that receives numpy views into device memory (the tensor
arguments, in submit order) followed by the scalars. Its *core shape* says which cores of a block
it occupies, mirroring the five resource shapes of the a2a3 runtime:

    shape        cores of one block           parts that run
    AIC          the cube core                aic
    AIV          one vector core (either)     aiv
    AIV_X2       both vector cores            aiv0, aiv1
    AIC_AIV      cube + one vector core       aic, aiv
    AIC_AIV_X2   the whole block              aic, aiv0, aiv1

Every part of a mixed task receives the same arguments and the parts start together. A part that
needs to know where it runs calls ``core_info()``.

The registry is a plain dict filled at import time. Devices fork their workers after the kernel
modules are imported, so workers see exactly the functions the host registered: nothing about a
kernel is ever pickled.
"""

from __future__ import annotations

import importlib
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

__all__ = [
    "AIC", "AIV", "Mixed", "Kernel", "CoreInfo", "kernel", "core_info", "registered", "resolve",
    "SHAPE_NAMES", "SHAPE_AIC", "SHAPE_AIV", "SHAPE_AIV_X2", "SHAPE_AIC_AIV", "SHAPE_AIC_AIV_X2",
]

# Core shape codes; the task record carries the code, the scheduler keeps one ready queue each.
SHAPE_AIC, SHAPE_AIV, SHAPE_AIV_X2, SHAPE_AIC_AIV, SHAPE_AIC_AIV_X2 = range(5)
SHAPE_NAMES = ("AIC", "AIV", "AIV_X2", "AIC_AIV", "AIC_AIV_X2")


class CoreType:
    """A single-core kernel type: ``AIC`` (cube) or ``AIV`` (vector)."""

    def __init__(self, name: str, shape: int) -> None:
        self.name, self.shape = name, shape

    def __repr__(self) -> str:
        return self.name


AIC = CoreType("AIC", SHAPE_AIC)
AIV = CoreType("AIV", SHAPE_AIV)


class Mixed:
    """A mixed kernel: parts on the cube core and on one or both vector cores of one block.

    Each part is a callable, or ``True`` to mean "the decorated function". ``aiv`` names a vector
    part that may run on either vector core; ``aiv0``/``aiv1`` name the two vector cores.
    """

    def __init__(self, aic: Any = None, aiv0: Any = None, aiv1: Any = None, *, aiv: Any = None) -> None:
        given = {k: v for k, v in (("aic", aic), ("aiv0", aiv0), ("aiv1", aiv1), ("aiv", aiv))
                 if v is not None and v is not False}
        if not given:
            raise ValueError("Mixed() needs at least one part: pass aic=, aiv0=, aiv1= (or aiv=) "
                             "as a function or True")
        if "aiv" in given and ("aiv0" in given or "aiv1" in given):
            raise ValueError("Mixed(): give either aiv= (one vector core, any) or aiv0=/aiv1=, not both")
        for k, v in given.items():
            if v is not True and not callable(v):
                raise TypeError(f"Mixed({k}=...) expects a function or True, got {type(v).__name__}")
            if isinstance(v, Kernel):          # an already registered kernel: use its function
                if sum(p is not None for p in v.parts) != 1:
                    raise TypeError(f"Mixed({k}={v.name}): a mixed kernel cannot be a part of another one")
                given[k] = v.fn
        self.aic = given.get("aic")
        nvec = ("aiv0" in given) + ("aiv1" in given)
        # One vector part, however named, runs on whichever vector core is free.
        vec = [given[k] for k in ("aiv", "aiv0", "aiv1") if k in given]
        if self.aic is not None:
            self.shape = SHAPE_AIC_AIV_X2 if nvec == 2 else SHAPE_AIC_AIV if vec else SHAPE_AIC
        else:
            self.shape = SHAPE_AIV_X2 if nvec == 2 else SHAPE_AIV
        self.vec = tuple(vec)

    @property
    def name(self) -> str:
        return SHAPE_NAMES[self.shape]

    def __repr__(self) -> str:
        return f"Mixed({self.name})"

    def parts(self, fn: Callable | None) -> tuple:
        """(aic, vec0, vec1) callables, with ``True`` replaced by ``fn``."""
        def pick(p: Any) -> Callable | None:
            if p is True:
                if fn is None:
                    raise TypeError("Mixed part given as True needs a decorated function: "
                                    "use @kernel(Mixed(...)) on a def")
                return fn
            return p
        vec = [pick(p) for p in self.vec] + [None, None]
        return (pick(self.aic), vec[0], vec[1])

    def complete(self) -> bool:
        return all(p is not True for p in (self.aic, *self.vec))


@dataclass(frozen=True, eq=False)
class Kernel:
    """A registered kernel. Calling it runs the function in the calling process (handy in tests)."""

    name: str
    shape: int
    parts: tuple          # (aic, vec0, vec1): callables or None, per core of the block
    module: str
    cost: Callable | None = None   # cost law for ``ptoemu predict`` (host/predict): task -> Cost

    @property
    def shape_name(self) -> str:
        return SHAPE_NAMES[self.shape]

    @property
    def fn(self) -> Callable:
        return next(p for p in self.parts if p is not None)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.fn(*args, **kwargs)

    def __repr__(self) -> str:
        return f"<kernel {self.name} {self.shape_name}>"


_REGISTRY: dict[str, Kernel] = {}


def _register(k: Kernel) -> Kernel:
    old = _REGISTRY.get(k.name)
    if old is not None and old.module != k.module:
        raise ValueError(f"kernel name {k.name!r} is taken by a kernel of module {old.module}; "
                         f"give the one in {k.module} another name (kernel(..., name=...))")
    _REGISTRY[k.name] = k       # re-registering a name from the same module (a reload) replaces it
    return k


def kernel(core: CoreType | Mixed, *, name: str | None = None, cost: Callable | None = None) -> Any:
    """Register a kernel for a core type.

    ``@kernel(AIC)``, ``@kernel(AIV)`` and ``@kernel(Mixed(aic=True, aiv0=True))`` decorate a
    function. ``kernel(Mixed(aic=f, aiv0=g), name="fg")``, where every part is a function, returns
    the registered kernel directly.

    ``cost`` is the kernel's cost law for ``ptoemu predict``: a function of one recorded task
    (its argument shapes, dtypes, bytes and scalars) returning the time it would take on an a2a3
    core and the HBM bytes it moves (see host/predict). Kernels without one get a roofline default.
    """
    if cost is not None and not callable(cost):
        raise TypeError(f"kernel(cost=...) expects a function (a cost law), got {type(cost).__name__}")
    if isinstance(core, Mixed):
        if core.complete():
            parts = core.parts(None)
            first = next(p for p in parts if p is not None)
            # Attributed to the parts' module, so Device(kernels=["thatmodule"]) loads it.
            mod = getattr(first, "__module__", None) or "__main__"
            nm = name or f"{mod}.mixed_" + "_".join(getattr(p, "__name__", "part") for p in parts if p)
            return _register(Kernel(nm, core.shape, parts, mod, cost))
    elif not isinstance(core, CoreType):
        raise TypeError(f"kernel(core) expects AIC, AIV or Mixed(...), got {core!r}")

    def decorate(fn: Callable) -> Kernel:
        if not callable(fn):
            raise TypeError(f"@kernel expects a function, got {type(fn).__name__}")
        mod = getattr(fn, "__module__", "__main__")
        nm = name or f"{mod}.{fn.__qualname__}"
        if isinstance(core, Mixed):
            return _register(Kernel(nm, core.shape, core.parts(fn), mod, cost))
        parts = (fn, None, None) if core is AIC else (None, fn, None)
        return _register(Kernel(nm, core.shape, parts, mod, cost))

    return decorate


def registered() -> dict[str, Kernel]:
    """A copy of the registry: kernel name -> Kernel."""
    return dict(_REGISTRY)


def resolve(kernels: Iterable[Kernel | str]) -> list[Kernel]:
    """Turn ``Device(kernels=...)`` into a list of kernels: Kernel objects stay, a string names a
    module whose kernels are all loaded (it is imported here, before the workers fork)."""
    if isinstance(kernels, (str, Kernel)):
        kernels = [kernels]
    out: list[Kernel] = []
    for k in kernels:
        if isinstance(k, Kernel):
            out.append(k)
        elif isinstance(k, str):
            try:
                importlib.import_module(k)
            except ImportError as e:
                raise ValueError(f"kernels: cannot import kernel module {k!r}: {e}") from e
            found = [v for v in _REGISTRY.values() if v.module == k or v.module.startswith(k + ".")]
            if not found:
                raise ValueError(f"kernels: module {k!r} registers no kernels (decorate functions "
                                 "with @kernel(AIC) / @kernel(AIV))")
            out.extend(found)
        else:
            raise TypeError(f"kernels: expected Kernel objects (from @kernel) or module names, "
                            f"got {type(k).__name__} {k!r}")
    seen: dict[str, Kernel] = {}
    for k in out:
        other = seen.setdefault(k.name, k)
        if other is not k and (other.parts != k.parts or other.shape != k.shape):
            raise ValueError(f"kernels: two different kernels are both named {k.name!r} (from modules "
                             f"{other.module} and {k.module}); give one of them another name "
                             "(@kernel(..., name=...))")
    return list(seen.values())


@dataclass(frozen=True)
class CoreInfo:
    """Where the calling kernel part runs: the physical block (cluster), core kind and global
    core index; and, for the task being run, its SPMD block index and block count (the
    reference's get_block_idx / get_block_num; 0 and 1 for a plain task)."""

    block: int
    kind: str       # "AIC" or "AIV"
    lane: int       # 0 for AIC; 0 or 1 for the two AIVs of a block
    core: int       # global core index, 0 .. 3*blocks-1
    block_idx: int = 0      # this part's logical block of an SPMD task, 0 .. block_num-1
    block_num: int = 1      # the task's logical blocks (rt.submit(..., blocks=n))

    @property
    def sub_block_id(self) -> int:
        """The vector lane in its cluster (0 = AIV0, 1 = AIV1; 0 on the AIC), as the
        reference's get_sub_block_id."""
        return self.lane


class _Where(threading.local):
    """Where the kernel parts of this thread run: a worker process's one thread, or one of the
    sequential engine's part threads (each its own)."""

    core: CoreInfo | None = None
    block_idx = 0                   # the task being run (set per task by the worker)
    block_num = 1


_where = _Where()


def core_info() -> CoreInfo | None:
    """The core the current kernel part runs on and its SPMD block, or None outside a device
    worker (and outside the sequential engine's kernels)."""
    w = _where
    c = w.core
    if c is None or (w.block_idx == 0 and w.block_num == 1):
        return c
    return CoreInfo(c.block, c.kind, c.lane, c.core, w.block_idx, w.block_num)


def set_core(info: CoreInfo | None) -> None:
    """What ``core_info()`` answers from now on in this thread (set by whatever runs kernels:
    a device worker, the sequential engine)."""
    _where.core = info


def set_block(idx: int, num: int) -> None:
    """The SPMD block of the task part about to run (``core_info().block_idx`` / ``block_num``)."""
    w = _where
    w.block_idx, w.block_num = idx, num
