"""Device tensors as the orchestration sees them, and the In / Out / InOut direction markers.

    Buffer  one allocation in GM: a host tensor (dev.empty / dev.to_device, lives until freed)
            or a runtime tensor (rt.make_tensor: no address until the first task that writes it
            is submitted, then a slice of the heap ring, reclaimed when that task retires)
    Tensor  a view of a buffer: a box in the buffer's coordinate system
              sys    (origin, shape, strides) -- the base layout, or the layout a reshape made
              box    start and extent per dimension of sys
              drop   dimensions indexed away by an integer (extent 1, not shown to the kernel)

Slicing (step 1) and ``view(shape, offsets)`` make sub-boxes; ``reshape`` of a contiguous view
starts a new coordinate system over the same bytes. A task record carries, per tensor argument,
the buffer id, the byte range [lo, hi), the box (for exact overlap of strided views) and the
kernel-visible layout; ``packed(dir)`` computes those 16 words once per view and direction.
"""

from __future__ import annotations

import functools
import itertools
import math
import struct
from typing import Any

import numpy as np

from device import codec as C
from kernels.args import Arg, In, InOut, NoDep, Out  # noqa: F401  (re-exported)

ARG_WORDS = struct.Struct(f"{C.ARG_WORDS}q")

_ids = itertools.count(1)


class Buffer:
    """One GM allocation. ``gm`` is its byte offset in GM, None until a runtime tensor is written."""

    __slots__ = ("id", "nbytes", "gm", "runtime", "owner", "scope", "alive", "device", "why_dead",
                 "init", "__weakref__")

    def __init__(self, device: Any, nbytes: int, gm: int | None, runtime: bool, scope: Any = None,
                 init: np.ndarray | None = None):
        self.id = next(_ids)
        self.nbytes = nbytes
        self.gm = gm
        self.runtime = runtime
        self.owner = -1            # runtime buffers: the task id that allocated it
        self.scope = scope
        self.alive = True
        self.device = device
        self.why_dead = ""
        self.init = init           # runtime buffers: a one-element array to fill them with when placed


@functools.lru_cache(maxsize=4096)
def c_strides(shape: tuple[int, ...], itemsize: int) -> tuple[int, ...]:
    out, acc = [], itemsize
    for n in reversed(shape):
        out.append(acc)
        acc *= max(n, 1)
    return tuple(reversed(out))


def check_dtype(dtype: Any, what: str) -> np.dtype:
    try:
        dt = np.dtype(dtype)
    except TypeError as e:
        raise TypeError(f"{what}: {dtype!r} is not a dtype ({e})") from None
    if dt not in C.DTYPE_CODE:
        names = ", ".join(str(d) for d in C.DTYPES)
        raise TypeError(f"{what}: dtype {dt} cannot live in device memory; expected one of {names}")
    return dt


def check_shape(shape: Any, what: str) -> tuple[int, ...]:
    given = shape
    if isinstance(shape, (int, np.integer)) and not isinstance(shape, bool):
        shape = (int(shape),)
    try:
        shape = tuple(int(n) if isinstance(n, (int, np.integer)) and not isinstance(n, bool) else None
                      for n in shape)
    except TypeError:
        raise TypeError(f"{what}: shape must be an int or a tuple of ints, got {given!r}") from None
    if None in shape:
        raise TypeError(f"{what}: shape must contain only ints, got {given!r}")
    if any(n < 0 for n in shape):
        raise ValueError(f"{what}: shape {shape} has a negative extent")
    if len(shape) > C.MAX_DIMS:
        raise ValueError(f"{what}: shape {shape} has {len(shape)} dimensions; at most {C.MAX_DIMS}")
    return shape


class Tensor:
    """A view of a device buffer. Make views with ``t[...]`` (integers and step-1 slices),
    ``t.view(shape, offsets)`` and ``t.reshape(shape)``."""

    __slots__ = ("buf", "dtype", "shape", "_sys", "_start", "_fshape", "_drop", "_packed", "_whole",
                 "manual_dep")
    is_device_tensor = True

    def __init__(self, buf: Buffer, dtype: np.dtype, sys: tuple, start: tuple, fshape: tuple,
                 drop: tuple, manual_dep: bool = False) -> None:
        self.buf = buf
        self.dtype = dtype
        self._sys = sys                 # (origin byte offset in the buffer, shape, strides)
        self._start = start
        self._fshape = fshape
        self._drop = drop
        self.shape = tuple(n for n, d in zip(fshape, drop) if not d)
        self._packed: list | None = None
        self._whole = False             # the whole buffer, C order: record words come directly
        # The reference's per-view "creator-only" tracking: every argument made of this view is
        # untracked (like NoDep) under reference semantics. Views made from it do not inherit it.
        self.manual_dep = manual_dep

    @classmethod
    def whole(cls, buf: Buffer, shape: tuple[int, ...], dtype: np.dtype) -> Tensor:
        nd = len(shape)
        t = cls.__new__(cls)            # (the common case: every runtime tensor starts here)
        t.buf, t.dtype, t.shape, t._fshape = buf, dtype, shape, shape
        t._sys = (0, shape, c_strides(shape, dtype.itemsize))
        t._start, t._drop = (0,) * nd, (False,) * nd
        t._packed = None
        t._whole = True
        t.manual_dep = False
        return t

    # -- numpy-like attributes -------------------------------------------------------------------
    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def size(self) -> int:
        return math.prod(self.shape)

    @property
    def nbytes(self) -> int:
        return self.size * self.dtype.itemsize

    @property
    def is_runtime(self) -> bool:
        return self.buf.runtime

    def __repr__(self) -> str:
        kind = "runtime" if self.buf.runtime else "host"
        where = "unallocated" if self.buf.gm is None else f"gm+{self.buf.gm + self.lo_rel():#x}"
        return f"Tensor({self.shape}, {self.dtype}, {kind} buffer {self.buf.id}, {where})"

    def __len__(self) -> int:
        if not self.shape:
            raise TypeError("len() of a 0-d tensor")
        return self.shape[0]

    # -- footprint ------------------------------------------------------------------------------
    def lo_rel(self) -> int:
        _, _, strides = self._sys
        return self._sys[0] + sum(s * st for s, st in zip(self._start, strides))

    def span_rel(self) -> tuple[int, int]:
        """[lo, hi) of the bytes this view covers, relative to the buffer start."""
        lo = self.lo_rel()
        if 0 in self._fshape:
            return lo, lo
        strides = self._sys[2]
        return lo, lo + sum((n - 1) * st for n, st in zip(self._fshape, strides)) + self.dtype.itemsize

    def byte_strides(self) -> tuple[int, ...]:
        """The byte stride of each dimension of ``shape`` (the element at index i starts at
        ``lo_rel() + sum(i_d * stride_d)``)."""
        return tuple(st for st, dropped in zip(self._sys[2], self._drop) if not dropped)

    def is_contiguous(self) -> bool:
        expect = self.dtype.itemsize
        for n, st in zip(reversed(self._fshape), reversed(self._sys[2])):
            if n == 1:
                continue
            if st != expect:
                return False
            expect = st * n
        return True

    # -- views ----------------------------------------------------------------------------------
    def _visible(self) -> list[int]:
        return [d for d, dropped in enumerate(self._drop) if not dropped]

    def __getitem__(self, key: Any) -> Tensor:
        if not isinstance(key, tuple):
            key = (key,)
        vis = self._visible()
        if sum(k is not Ellipsis for k in key) > len(vis):
            raise IndexError(f"too many indices for a tensor of shape {self.shape}: {key!r}")
        if Ellipsis in key:
            i = key.index(Ellipsis)
            key = key[:i] + (slice(None),) * (len(vis) - len(key) + 1) + key[i + 1:]
        start, fshape, drop = list(self._start), list(self._fshape), list(self._drop)
        for d, k in zip(vis, key):
            n = fshape[d]
            if isinstance(k, (int, np.integer)) and not isinstance(k, bool):
                k = int(k)
                if not -n <= k < n:
                    raise IndexError(f"index {k} is out of bounds for dimension of size {n} "
                                     f"(tensor shape {self.shape})")
                start[d] += k % n
                fshape[d] = 1
                drop[d] = True
            elif isinstance(k, slice):
                b, e, step = k.indices(n)
                if step != 1:
                    raise ValueError(f"tensor slicing supports step 1 only, got step {step} in {k!r}")
                start[d] += b
                fshape[d] = max(0, e - b)
            else:
                raise TypeError(f"tensor index must be an int, a slice or ..., got {type(k).__name__}")
        return Tensor(self.buf, self.dtype, self._sys, tuple(start), tuple(fshape), tuple(drop))

    def view(self, shape: Any, offsets: Any, manual_dep: bool = False) -> Tensor:
        """The sub-box of ``shape`` starting at ``offsets`` (both in this view's dimensions).
        ``manual_dep``: the view's accesses are tracked creator-only (the reference's
        ``view(..., manual_dep=true)``; it matters under Device(semantics="reference"))."""
        shape = check_shape(shape, "view(shape=...)")
        offsets = tuple(offsets) if not isinstance(offsets, (int, np.integer)) else (offsets,)
        if len(shape) != self.ndim or len(offsets) != self.ndim:
            raise ValueError(f"view(shape={shape}, offsets={offsets}): expected {self.ndim} entries "
                             f"each, one per dimension of this tensor of shape {self.shape}")
        key = []
        for i, (n, o, have) in enumerate(zip(shape, offsets, self.shape)):
            if not isinstance(o, (int, np.integer)) or o < 0:
                raise ValueError(f"view(offsets={offsets}): offset {o!r} of dimension {i} must be "
                                 "an int >= 0")
            if o + n > have:
                raise ValueError(f"view(shape={shape}, offsets={offsets}): dimension {i} covers "
                                 f"[{o}, {o + n}) but the tensor has {have}")
            key.append(slice(int(o), int(o) + n))
        t = self[tuple(key)]
        t.manual_dep = _flag(manual_dep, "view(manual_dep=...)")
        return t

    def reshape(self, *shape: Any, manual_dep: bool = False) -> Tensor:
        """Same bytes, new shape; the view must be contiguous. One extent may be -1.
        ``manual_dep`` as for ``view``."""
        if len(shape) == 1 and not isinstance(shape[0], (int, np.integer)):
            shape = tuple(shape[0])
        shape = tuple(int(n) for n in shape)
        if shape.count(-1) > 1:
            raise ValueError(f"reshape{shape}: at most one -1")
        if -1 in shape:
            rest = math.prod(n for n in shape if n != -1)
            if rest == 0 or self.size % rest:
                raise ValueError(f"reshape{shape}: cannot infer -1 for a tensor of size {self.size}")
            shape = tuple(self.size // rest if n == -1 else n for n in shape)
        shape = check_shape(shape, "reshape(shape)")
        if math.prod(shape) != self.size:
            raise ValueError(f"reshape: cannot reshape a tensor of shape {self.shape} "
                             f"(size {self.size}) into {shape}")
        if not self.is_contiguous():
            raise ValueError(f"reshape: the view of shape {self.shape} is not contiguous; "
                             "reshape the base tensor and slice that instead")
        nd = len(shape)
        sys = (self.lo_rel(), shape, c_strides(shape, self.dtype.itemsize))
        return Tensor(self.buf, self.dtype, sys, (0,) * nd, shape, (False,) * nd,
                      _flag(manual_dep, "reshape(manual_dep=...)"))

    # -- record words ---------------------------------------------------------------------------
    def packed(self, d: int, notrack: bool = False) -> tuple:
        """The 16 record words of this view as argument direction ``d`` (buffer must be placed);
        ``notrack``: a NoDep argument (a manual_dep view always is)."""
        buf = self.buf
        g = buf.gm
        nd = len(self._fshape)
        if self._whole:
            lo, hi, drop, contiguous = 0, buf.nbytes, 0, True
        else:
            lo, hi = self.span_rel()
            drop = sum(1 << i for i, dd in enumerate(self._drop) if dd)
            contiguous = self.is_contiguous()
        meta = C.pack_meta(d, contiguous, self.dtype, nd, drop, notrack or self.manual_dep)
        pad = (0,) * (C.MAX_DIMS - nd)
        return ((buf.id, meta, lo + g, hi + g, buf.owner, self._sys[0] + g)
                + self._fshape + pad + self._sys[2] + pad)

    def packed_bytes(self, d: int, notrack: bool = False) -> bytes:
        """``packed(d, notrack)`` as the bytes that go into a record, made once per view and
        direction (a view's words never change once its buffer is placed)."""
        p = self._packed
        if p is None:
            p = self._packed = [None] * 8
        i = d + 4 if notrack else d
        w = p[i]
        if w is None:
            w = p[i] = ARG_WORDS.pack(*self.packed(d, notrack))
        return w


def _flag(v: Any, what: str) -> bool:
    if not isinstance(v, (bool, np.bool_)):
        raise TypeError(f"{what}: expected True or False, got {type(v).__name__} {v!r}")
    return bool(v)
