"""The tile layer: kernels written in the reference's PTO instructions, run with numpy, counted as
the a2a3 core would spend them.

    kernel function (numpy views of its GM arguments)
      c = tile.Core()                     one kernel invocation's on-chip buffers: AIV -> UB,
      q = c.tile(L1, (16, 128), BF16)     AIC -> L1, L0A, L0B, L0C; capacities checked here
      tile.load(q, qi)                    TLOAD   GM view -> tile           (MTE2)
      tile.move(a, q)                     TMOV    L1 -> L0A / L0B           (MTE1)
      tile.matmul(acc, a, b)              TMATMUL L0A x L0B -> L0C          (CUBE)
      tile.muls(s, s, scale) ...          vector instructions on UB tiles   (VECTOR)
      tile.store(sij, acc)                TSTORE  tile -> GM view           (MTE3)
         │ numpy computes every value exactly as written (no fusion, no reordering across ops)
         ▼ and, while a collector is active, every instruction is recorded:
    tile.begin() ... tile.end() -> Counts   cycles per pipe, GM bytes, and the kernel's modelled
                                            time: kernels/a2a3.py schedules the recorded program
                                            over the core's pipes (what overlaps, what waits)

Writing a kernel (the catalogue's are in kernels/workloads: paged_attention/kernels.py, per_block.py,
batch.py, examples/*):

    @kernel(AIV)
    def scale_rows(x, out, factor):                  # x, out: (n*16, 128) fp32 GM views
        c = tile.Core()                              # named after the function, for errors
        t = c.tile(UB, (16, 128), F32, bufs=2)       # double-buffered: load i+1 overlaps compute i
        n = x.shape[0] // 16
        with c.loop(n):                              # n iterations, each op ONE numpy call for all
            tile.load(t, tile.row_blocks(x, n))      # per-iteration GM tiles: a leading axis of n
            tile.muls(t, t, factor)
            tile.store(tile.row_blocks(out, n), t)

Tiles. A tile is a 2-D (rows, cols) region of one on-chip buffer with a dtype; ``bufs=k`` reserves
k slots (ping-pong buffers). The tiles of a Core must fit their buffers (UB 192 KiB; L1 512 KiB;
L0A, L0B 64 KiB; L0C 128 KiB; whole 32-byte blocks): one that does not raises ``TileError`` naming
the kernel, the buffer and what already holds it. A Core is one core's part of a kernel: UB tiles
and cube tiles (L1/L0*) do not mix. A UB tile holds values of its dtype; 16-bit float tiles in the
cube's buffers hold theirs widened to fp32 (exact, and what the cube computes in). Reading a tile
nothing wrote is an error. ``reshape`` (TRESHAPE) gives a read-only view of a tile's current values
in another shape, e.g. a (16, 1) column as a (1, 16) row: reshape after writing, not before.

Loops are the chip's repeat counts. ``with c.loop(n):`` runs its body once, every op covering all n
iterations: a tile written inside holds n values (a leading axis), GM views given to ``load`` /
``store`` inside carry that axis (``row_blocks``, ``col_blocks``), or ``load(..., index=ids)``
gathers one block per iteration (``store(..., index=ids)`` sends each iteration's tile to its
block); a tile written before the loop is the same in every iteration,
and after the loop a tile holds its last iteration's values. An op whose destination was written
before the loop (or never) and is one of its own sources -- ``add(s, s, p)``, ``max(m, m, x)``,
``matmul(c, a, b, acc=True)`` -- accumulates over the iterations in order, the first iteration
initialising a destination nothing wrote (the reference's ``if (i == 0) TMATMUL else TMATMUL_ACC``).
Counting charges every op once per iteration; the schedule replays the body per iteration, on slot
``i % bufs`` of each tile. ``for i in c.range(n):`` is the same loop run one pass per iteration
(slower; for bodies that cannot be batched).

Dependencies are inferred from the tiles each op reads and writes, as if every set_flag/wait_flag
pair sat exactly where the data needs one. Orderings the data does not imply are explicit:
``sync(src_pipe, dst_pipe)`` (a set_flag/wait_flag pair), ``barrier()`` (pipe_barrier(PIPE_ALL)),
and ``load(..., prefetch=True)`` (the next iteration's load issued during this one, as a kernel that
prefetches by hand ahead of a barrier does).

Ops (each one's cost formula in kernels/a2a3.py):

    load(dst, src, index=None, prefetch=False)   TLOAD GM -> UB / L1; index: src[id] per iteration
    store(dst, src, atomic=None, index=None)    TSTORE UB / L0C / L1 -> GM; atomic="add": dst += src,
                                            one indivisible update even while other cores add
                                            into the same bytes (kernels/atomic.py), costing a
                                            store; index: iteration i to dst[index[i]]
    move(dst, src)                          TMOV L1 -> L0A / L0B, L0C -> L1, UB -> UB
    extract(dst, src, row, col)             TEXTRACT L1 -> L0A / L0B: a sub-tile (EACH: per iteration)
    matmul(c, a, b, acc=False)              TMATMUL / TMATMUL_ACC: c (+)= a @ b, fp32 accumulate
    add sub mul div max min (dst, a, b)     TADD TSUB TMUL TDIV TMAX TMIN
    adds subs muls divs maxs mins (dst, a, s)   with a Python scalar s
    exp sqrt neg recip (dst, a)             TEXP TSQRT TNEG TRECIP
    row_max row_sum (dst, a)                TROWMAX TROWSUM: dst is a (rows, 1) column
    row_expand(dst, col)                    TROWEXPAND: a (rows, 1) column across every column
    row_expand_add/sub/mul/div(dst, a, col) TROWEXPANDADD ...: a (op) the column, row by row
    col_expand_mul(dst, a, row)             TCOLEXPANDMUL: a * a (1, cols) row, down every row
    cast(dst, a)                            TCVT: round to nearest, ties to even
    fill(dst, value)                        TEXPANDS
    fill_pad(dst, valid_cols, value, iteration=None)   TFILLPAD_INPLACE: columns >= valid_cols (in a
                                            loop: one count, or a sequence of one per iteration)
    reshape(src, shape) -> Tile             TRESHAPE (free)
    sync(src_pipe, dst_pipe), barrier()     pipes: MTE2 MTE1 MTE3 CUBE VECTOR
    row_blocks(a, n), col_blocks(a, n)      (n, h, w) per-iteration views of a GM matrix
    handshake(op, key, side, count, peers, pipe)   a pipe's cross-core flag (kernels/pipe.py:
                                            TPUSH / TPOP are a store / load plus these)

Counting. ``begin()`` starts this thread's collector, ``end()`` stops it and returns the ``Counts``
of what ran in between (None if no tile instruction ran); ``count(fn, *args)`` wraps one call;
``program()`` is the instructions the last ``end()`` collected, for ``a2a3.couple`` (the parts
of a mixed task scheduled together, their pipe handshakes coupling them). A
kernel's program is scheduled once per distinct shape, so collecting costs little after the first
call; with no collector anywhere an op only computes (one global read decides: ``_ON``).

Speed. The emulator runs every op's numpy call; the rest of an op is Python, kept short: each
elementwise op first tries a fast path (not in a loop, its destination writable in place, its
operands of the destination's shape: see ``Tile.w``) that does nothing but the numpy call, and
takes the full path (validation, copy-on-write, loops) otherwise. A loop's op is one numpy call for
all its iterations, so batch with ``c.loop`` where the reference repeats an instruction. At import
the module runs its ops once on small tiles (``_warm``): device workers, forked after the kernel
modules are imported, then start with its code specialised by the interpreter.

Memory. Tile values live in per-thread scratch arrays reused call after call (keyed by the Core's
``scratch`` name, by default its name, and the tile's index), and a Core reuses the tile objects
of the previous Core of its name while the requests repeat: so at most one Core per name (and
per scratch name) may be alive per thread -- a kernel does not call itself.

Adding an op: validate, compute with numpy into ``_out(dst, shape, like)`` (never write a tile's
array in place unless ``_out`` returned it), and when ``_ON and _tl.rec`` is set (``_tl.rec`` alone
works too, a little slower), ``_count`` it on its pipe with its cycles from kernels/a2a3.py (a new
instruction: add its formula there, with its source). An op that lets another tile (or anything
else) show a tile's array, as ``move`` and ``reshape`` do, calls ``_lend(src, dst, array)``: that
marks the owner ``lent`` (its ``w`` None) so that its next write goes to another generation of its
scratch -- one no tile shows any more if there is one (``_generation``), else a new one; a kernel
that moves a double-buffered L1 tile to L0 every step thus cycles two arrays, not one per step.
A fast path is optional: the factories below (``_binary_op`` ...) show one. A transfer between
cores (a pipe push/pop) is a ``_count`` on an MTE pipe with a path's cycles; an atomic store is
``store(..., atomic="add")``.
"""

from __future__ import annotations

import builtins
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from itertools import count as _counter
from typing import Any

import ml_dtypes
import numpy as np

from kernels import a2a3
from kernels import atomic as _atomic
from kernels.a2a3 import CUBE, L0A, L0B, L0C, L1, MTE1, MTE2, MTE3, UB, VECTOR

__all__ = [
    "BF16", "F16", "F32", "I32", "L0A", "L0B", "L0C", "L1", "UB", "CUBE", "MTE1", "MTE2", "MTE3", "VECTOR",
    "Core", "Counts", "EACH", "Tile", "TileError",
    "add", "adds", "barrier", "begin", "cast", "col_blocks", "col_expand_mul", "collecting", "count", "div", "divs",
    "end", "exp", "extract", "fill", "fill_pad", "handshake", "load", "matmul", "max", "maxs", "min", "mins", "move",
    "mul", "muls", "neg", "program", "recip", "reshape", "row_blocks",
    "row_expand", "row_expand_add", "row_expand_div", "row_expand_mul", "row_expand_sub", "row_max", "row_sum",
    "sqrt", "store", "sub", "subs", "sync",
]

F32 = np.dtype(np.float32)
F16 = np.dtype(np.float16)
BF16 = np.dtype(ml_dtypes.bfloat16)
I32 = np.dtype(np.int32)

_HALF = frozenset([F16, BF16])             # 16-bit floats (bfloat16's numpy kind is "V", not "f")
_U16, _U32 = np.dtype(np.uint16), np.dtype(np.uint32)
_FLOATS = frozenset([F32, F16, BF16, np.dtype(np.float64)])


class TileError(ValueError):
    """A tile that does not fit its buffer, or an op the core cannot run as written."""


# ── counting ────────────────────────────────────────────────────────────────────────────────────


@dataclass(frozen=True, slots=True)
class Counts:
    """What one task part spent on its core: busy cycles per pipe, GM bytes, instructions, and the
    modelled time (µs) with its band from the parameter ranges (kernels/a2a3.py)."""

    mte2: float
    mte1: float
    mte3: float
    cube: float
    vector: float
    scalar: float
    gm_read: int              # bytes loaded from GM (MTE2)
    gm_write: int             # bytes stored to GM (MTE3)
    instructions: int
    us: float
    us_low: float
    us_high: float
    handshakes: int = 0       # pipe flags the part set or waited on (kernels/pipe.py): its time
                              # alone is not the task's -- the parts must be coupled (a2a3.couple)

    def as_dict(self) -> dict[str, float]:
        return {k: getattr(self, k) for k in self.__slots__}


class _Recorder:
    """One collector: the program (for the schedule) and the running totals."""

    __slots__ = ("program", "stack", "cycles", "gm_read", "gm_write", "instructions", "handshakes")

    def __init__(self) -> None:
        self.program: list = []
        self.stack: list[list] = [self.program]
        self.cycles = [0.0] * len(a2a3.PIPES)
        self.gm_read = self.gm_write = self.instructions = self.handshakes = 0

    def counts(self) -> Counts:
        cyc = self.cycles
        cyc[a2a3.SCALAR] += a2a3.PARAMS["task_overhead_cycles"].value
        # A kernel called again on the same shapes records the same program: schedule it once.
        sig = _signature(self.program, {})
        params = tuple(a2a3.PARAMS.values())
        hit = _SCHEDULED.get(sig)
        if hit is not None and hit[0] == params:
            times = hit[1]
        else:
            times = tuple(a2a3.us(a2a3.schedule(self.program, c), c) for c in ("value", "fast", "slow"))
            if len(_SCHEDULED) > 4096:
                _SCHEDULED.clear()
            _SCHEDULED[sig] = (params, times)
        return Counts(*cyc, self.gm_read, self.gm_write, self.instructions, *times, self.handshakes)


_SCHEDULED: dict = {}       # program signature -> (parameters, (us, us_low, us_high))


def _signature(items: list, ids: dict) -> tuple:
    """The program with tile keys renumbered by first use: equal signatures schedule alike."""
    out = []
    for it in items:
        kind = it[0]
        if kind == a2a3.OP:
            out.append(it[:4] + (tuple((ids.setdefault(k, len(ids)), b) for k, b in it[4]),
                                 tuple((ids.setdefault(k, len(ids)), b) for k, b in it[5])) + it[6:])
        elif kind == a2a3.LOOP:
            out.append((kind, it[1], _signature(it[2], ids)))
        elif kind == a2a3.FLAG:
            out.append((kind, it[1], it[3], it[6]))          # alone, a part's flags cost nothing
        else:
            out.append(it)
    return tuple(out)


class _Local(threading.local):
    rec: _Recorder | None = None
    last: list | None = None          # the program the last end() collected
    pool: dict | None = None          # scratch memory (see _scratch)
    cores: dict | None = None         # Core name -> its tiles, reused by the next Core of that name


_tl = _Local()


# How many threads are collecting: while none is, an op skips even the thread-local look-up
# (``if _ON and _tl.rec is not None``), which is most of what counting costs when it is off.
_ON = 0
_ON_LOCK = threading.Lock()


def begin() -> None:
    """Start collecting this thread's tile instructions (a task part is about to run)."""
    global _ON
    if _tl.rec is None:
        with _ON_LOCK:
            _ON += 1
    _tl.rec = _Recorder()


def end() -> Counts | None:
    """Stop collecting; the Counts of what ran since ``begin()``, None if no tile instruction ran."""
    global _ON
    rec, _tl.rec = _tl.rec, None
    if rec is not None:
        with _ON_LOCK:
            _ON -= 1
    _tl.last = rec.program if rec is not None else None
    if rec is None or not rec.instructions:
        return None
    return rec.counts()


def collecting() -> bool:
    """Is a collector active on this thread (``begin()`` ... ``end()``)?"""
    return _tl.rec is not None


def program() -> list | None:
    """The instructions (and pipe handshakes) the last ``end()`` on this thread collected, in
    kernels/a2a3.py's program form: the input of ``a2a3.couple``."""
    return _tl.last


def count(fn: Callable, *args: Any, **kwargs: Any) -> Counts | None:
    """Run ``fn(*args, **kwargs)`` under a collector and return its Counts."""
    begin()
    try:
        fn(*args, **kwargs)
    finally:
        counts = end()
    return counts


def _count(core: Core, pipe: int, cls: int, cycles: float, reads: tuple, writes: tuple,
           only: int | None = None, ahead: int = 0) -> None:
    """Record one instruction (per iteration, inside a loop) on ``pipe``: ``cycles`` at the
    parameters' defaults before its class scale; ``only``: on that iteration alone; ``ahead``:
    issued that many iterations early (prefetch)."""
    rec = _tl.rec
    times = 1 if (core.n == 0 or only is not None) else core.n
    rec.cycles[pipe] += cycles * times * a2a3.corner_value(_SCALE_NAMES[cls], "value")
    rec.instructions += times
    rec.stack[-1].append((a2a3.OP, pipe, cls, cycles, tuple((t.key, t.bufs) for t in reads),
                          tuple((t.key, t.bufs) for t in writes), None if core.n else core.it, only, ahead))


_SCALE_NAMES = ("gm_scale", "local_scale", "vector_scale", "cube_scale")

# ── scratch memory ──────────────────────────────────────────────────────────────────────────────


def _scratch(tag: tuple, shape: tuple[int, ...], dtype: np.dtype, order: tuple[int, ...] | None = None) -> np.ndarray:
    """A reusable uninitialised array: one growing byte buffer per tag and thread (fresh large
    arrays per call would pay page faults), and the views made of it kept for the next call with
    the same request. ``order``: lay the axes out in this order in memory (the array is still
    indexed as ``shape``)."""
    pool = _tl.pool
    if pool is None:
        pool = _tl.pool = {}
    entry = pool.get(tag)
    key = (shape, dtype, order)
    if entry is not None:
        v = entry[1].get(key)
        if v is not None:
            return v
    nbytes = dtype.itemsize
    for d in shape:
        nbytes *= d
    if entry is None or entry[0].nbytes < nbytes:
        entry = pool[tag] = (np.empty(nbytes if nbytes > 64 else 64, np.uint8), {})
    mem = entry[0][:nbytes].view(dtype)
    if order is None:
        v = mem.reshape(shape)
    else:
        v = mem.reshape([shape[a] for a in order]).transpose(_inverse(order))
    entry[1][key] = v
    return v


_ORDERS: dict = {}
_INVERSE: dict = {}


def _inverse(order: tuple[int, ...]) -> tuple[int, ...]:
    inv = _INVERSE.get(order)
    if inv is None:
        inv = _INVERSE[order] = tuple(int(i) for i in np.argsort(order))
    return inv


def _memory_order(a: np.ndarray) -> tuple[int, ...] | None:
    """Axis order of ``a`` by decreasing stride, or None if that is already 0, 1, 2, ..."""
    st = a.strides
    try:
        return _ORDERS[st]
    except KeyError:
        pass
    if all(st[i] >= st[i + 1] for i in range(len(st) - 1)):
        o = None
    else:
        o = tuple(sorted(range(a.ndim), key=lambda i: -st[i]))
    if len(_ORDERS) < 4096:
        _ORDERS[st] = o
    return o


def _as_shape(a: np.ndarray, shape: tuple[int, ...], what: str, t: Tile | None = None) -> np.ndarray:
    """A view of ``a`` in ``shape`` (never a copy: a store through a copy would be lost)."""
    if a.shape == shape:
        return a
    if a.ndim == 1 and len(shape) == 2 and a.shape[0] == shape[0] * shape[1]:
        return a.reshape(shape)                   # a vector is always a (rows, cols) view, never a copy
    v = a.view()
    try:
        v.shape = shape
    except (AttributeError, ValueError):
        who = f"{t.core.name}: {what} {t!r}" if t is not None else what
        raise TileError(f"{who}: a GM view of shape {a.shape} cannot be seen as {shape} without a copy "
                        f"(give a view with the tile's shape{', per iteration' if len(shape) == 3 else ''})") from None
    return v


def col_blocks(a: np.ndarray, n: int) -> np.ndarray:
    """The n column blocks of a (rows, n*w) GM view, as an (n, rows, w) view (for per-iteration
    loads and stores of a matrix kept as blocks side by side)."""
    rows, width = a.shape
    if n < 1 or width % n:
        raise TileError(f"col_blocks: {n} blocks do not divide the {width} columns of a {a.shape} view")
    return _as_shape(a, (rows, n, width // n), "col_blocks").transpose(1, 0, 2)


def row_blocks(a: np.ndarray, n: int) -> np.ndarray:
    """The n row blocks of an (n*h, cols) GM view, as an (n, h, cols) view (never a copy)."""
    height, cols = a.shape
    if n < 1 or height % n:
        raise TileError(f"row_blocks: {n} blocks do not divide the {height} rows of a {a.shape} view")
    return _as_shape(a, (n, height // n, cols), "row_blocks")


# ── tiles and cores ─────────────────────────────────────────────────────────────────────────────

_keys = _counter(1)
_DTYPES: dict = {}


class Tile:
    """A (rows, cols) region of one on-chip buffer; ``data`` holds its current values (or None).

    Its state, as the ops keep it (the full path of an op reads and updates all of it; the fast
    path -- not in a loop, operands of dst's shape -- only writes into ``w`` and makes it ``data``):

        field        meaning
        data         current values (with a leading axis of n inside c.loop(n)), None: unwritten
        own          ``data`` (or the ``w`` the next write makes it) is this tile's scratch memory
        lent         a move or a reshape shows ``data`` too: the next write goes to new memory
        alias        a reshape view (read-only); vsrc, vdata: its source array and view, reused
                     while the source array is the same
        tag, gen     scratch key (Core scratch name, tile index, generation); lent -> a generation
                     no tile shows any more (``_generation``)
        lends        generation -> [(tile, array)]: the tiles given a view of that generation's
                     array (by a move, extract or reshape), and the view; while a tile's ``data``
                     is still that view, the generation is taken
        lender       (owner tile, generation) whose array this tile's ``data`` views, or None
        mem, memo    the scratch array of the last write (of generation ``gen``) and its memory
                     order: the next write reuses it if nothing shows it (this call's or, for a
                     reused tile, the last call's: its values are dead)
        w            the array an op may write in place and then make ``data`` (own, not lent, not
                     in a loop); None: the op takes its full path
        sig, views   the request that made the tile (reused while requests repeat), its reshapes
        key, nbytes  unique id (the schedule's), bytes it takes in its buffer (all slots)
    """

    # (the fields every op reads first, so that they share the object's first cache line)
    __slots__ = ("w", "data", "buf", "shape", "own", "core", "lent", "alias", "dtype", "vdtype", "bufs", "key",
                 "name", "tag", "gen", "nbytes", "sig", "views", "mem", "memo", "vsrc", "vdata", "lends", "lender")

    def __repr__(self) -> str:
        return (f"Tile({self.name!r}, {a2a3.BUFFERS[self.buf]}, {self.shape[0]}x{self.shape[1]} "
                f"{self.dtype.name}{f' x{self.bufs}' if self.bufs > 1 else ''})")


class Core:
    """One kernel invocation's on-chip buffers (one core: AIV's UB, or AIC's L1/L0A/L0B/L0C) and
    its loop state. ``name`` (default: the calling function's name) labels errors. ``scratch``
    (default: the name) names the memory its tiles' values live in: kernels that never run inside
    one another -- e.g. the parts a core runs one after the other -- may share it."""

    __slots__ = ("n", "borrowed", "tiles", "last", "it", "name", "scratch", "kind", "used")

    def __init__(self, name: str | None = None, scratch: str | None = None) -> None:
        self.name = name if name is not None else sys._getframe(1).f_code.co_name
        self.scratch = scratch or self.name
        self.kind = ""                          # "AIV" or "AIC", from the first tile
        self.used = [0] * len(a2a3.BUFFERS)     # bytes allocated per buffer
        self.tiles: list[Tile] = []
        self.n = 0                              # iterations of the batched loop running, 0 outside
        self.it = 0                             # iteration of a c.range() loop
        self.borrowed: dict[int, Tile] = {}     # key -> tile whose data may be a view of GM (see store)
        # The tiles of the previous Core of this name on this thread: a kernel allocates the same
        # tiles call after call, so they are reused as long as the requests repeat.
        cache = _tl.cores
        if cache is None:
            cache = _tl.cores = {}
        self.last = cache.get(self.name)
        cache[self.name] = self.tiles

    def __repr__(self) -> str:
        return f"Core({self.name!r})"

    def tile(self, buf: int, shape: tuple[int, int], dtype: Any, bufs: int = 1, name: str | None = None) -> Tile:
        """Allocate a (rows, cols) tile of ``dtype`` in ``buf`` (UB, L1, L0A, L0B, L0C), ``bufs``
        slots deep."""
        tiles = self.tiles
        idx = len(tiles)
        last = self.last
        if last is not None:
            if idx < len(last):
                t = last[idx]
                if t.sig == (buf, shape, dtype, bufs, name):
                    # the same request as last call: the same tile (its key stays unique), no values
                    # yet; it fits, as the same sequence of requests fitted before
                    t.core, t.data, t.lent, t.lender = self, None, False, None
                    if t.lends:
                        t.lends = {}
                    if t.gen:                     # (Tile.mem is of the current generation)
                        t.gen, t.tag, t.mem = 0, t.tag[:2] + (0,), None
                    m = t.mem                     # the first write may go to last call's array
                    if m is not None and t.memo is None and m.ndim == 2:
                        t.own, t.w = True, m
                    else:
                        t.own, t.w = False, None
                    tiles.append(t)
                    return t
            # the requests changed: account for the tiles reused so far, then allocate (and check) anew
            self.last = None
            for t in tiles:
                self.used[t.buf] += t.nbytes
                self.kind = "AIV" if t.buf == UB else "AIC"
        cap = a2a3.CAPACITY.get(buf)
        try:
            rows, cols = shape
            rows, cols, bufs = int(rows), int(cols), int(bufs)
        except (TypeError, ValueError):
            rows = cols = 0
        if cap is None or rows < 1 or cols < 1 or bufs < 1:
            raise TileError(f"{self.name}: tile(buf={buf!r}, shape={shape!r}, bufs={bufs!r}): expected buf one of "
                            f"UB, L1, L0A, L0B, L0C, shape (rows, cols) of positive ints, bufs an int >= 1")
        kind = "AIV" if buf == UB else "AIC"
        if kind != self.kind:
            if self.kind:
                raise TileError(f"{self.name}: a {a2a3.BUFFERS[buf]} tile on a core that already holds "
                                f"{'UB' if self.kind == 'AIV' else 'L1/L0'} tiles: a kernel part runs on one "
                                f"core, AIC (L1, L0A, L0B, L0C) or AIV (UB)")
            self.kind = kind
        dt = _DTYPES.get(dtype)
        if dt is None:
            dt = _DTYPES[dtype] = np.dtype(dtype)
        nbytes = -(-rows * cols * dt.itemsize // a2a3.ALIGN) * a2a3.ALIGN * bufs
        t = Tile()
        t.core, t.buf, t.shape, t.dtype, t.bufs, t.nbytes = self, buf, (rows, cols), dt, bufs, nbytes
        t.name = name or f"{a2a3.BUFFERS[buf]}#{len(self.tiles)}"
        used = self.used[buf] + nbytes
        if used > cap:
            held = ", ".join(f"{x.name} {_kib(x.nbytes)}" for x in self.tiles if x.buf == buf) or "nothing"
            raise TileError(
                f"{self.name}: {a2a3.BUFFERS[buf]} overflow: tile {t.name!r} ({rows}x{cols} {dt.name}"
                f"{f' x{bufs} buffers' if bufs > 1 else ''}) needs {_kib(nbytes)}, but {a2a3.BUFFERS[buf]} holds "
                f"{_kib(cap)} and {_kib(self.used[buf])} are taken ({held}): use smaller tiles, "
                f"fewer buffers, or loop over parts")
        self.used[buf] = used
        t.vdtype = F32 if (buf != UB and dt in _HALF) else dt
        t.key = next(_keys)
        t.data, t.own, t.lent, t.alias, t.gen, t.mem, t.memo, t.w = None, False, False, False, 0, None, None, None
        t.lends, t.lender = {}, None
        t.tag = (self.scratch, idx, 0)
        t.sig, t.views = (buf, shape, dtype, bufs, name), {}
        tiles.append(t)
        return t

    def loop(self, n: int) -> _Loop:
        """``with c.loop(n):`` -- a loop of n iterations whose body runs once, every op covering all
        n (see the module docstring)."""
        if self.n:
            raise TileError(f"{self.name}: loop inside loop: batch one level (make the outer loop a c.range())")
        if not isinstance(n, (int, np.integer)) or n < 1:
            raise TileError(f"{self.name}: loop count must be an int >= 1, got {n!r}")
        return _Loop(self, int(n))

    def range(self, n: int) -> Iterator[int]:
        """``for i in c.range(n):`` -- a loop run one iteration at a time (iteration i uses slot
        i % bufs of each tile in the schedule)."""
        if self.n:
            raise TileError(f"{self.name}: c.range() inside c.loop(): batch the inner loop, not the outer")
        for i in range(n):
            self.it = i
            yield i
        self.it = 0


class _Loop:
    """The context of ``Core.loop``: sets the core's loop count, collects the body's instructions."""

    __slots__ = ("core", "n", "body", "rec")

    def __init__(self, core: Core, n: int) -> None:
        self.core, self.n = core, n

    def __enter__(self) -> None:
        rec = self.rec = _tl.rec
        if rec is not None:
            self.body = []
            rec.stack.append(self.body)
        core = self.core
        core.n = self.n
        for t in core.tiles:                      # inside the loop every write takes the full path
            t.w = None

    def __exit__(self, *exc: object) -> None:
        core = self.core
        core.n = 0
        for t in core.tiles:                      # after the loop a tile holds its last iteration's values
            d = t.data
            if d is not None and d.ndim == 3:
                t.data = d[-1]
        rec = self.rec
        if rec is not None:
            rec.stack.pop()
            rec.stack[-1].append((a2a3.LOOP, self.n, self.body))


def _kib(b: int) -> str:
    return f"{b / 1024:g} KiB"


def _data(t: Tile, op: str) -> np.ndarray:
    d = t.data
    if d is None:
        raise TileError(f"{t.core.name}: {op} reads tile {t.name!r}, which nothing has written")
    return d


def _fresh(dst: Tile, shape: tuple[int, ...], order: tuple[int, ...] | None = None) -> np.ndarray:
    """A new array for ``dst``'s values (its own scratch; a new one if another tile shows the old)."""
    if dst.alias:
        raise TileError(f"{dst.core.name}: tile {dst.name!r} is a reshape view (read-only): write the tile "
                        f"it views, then reshape")
    if dst.lent:
        _unlend(dst)
    a = _scratch(dst.tag, shape, dst.vdtype, order)
    dst.data, dst.own, dst.mem, dst.memo = a, True, a, order
    dst.w = None if dst.core.n else a
    return a


def scratch_bytes() -> int:
    """Bytes of scratch memory this thread's tiles hold (what a core process keeps between
    kernels): bounded by the tiles a kernel allocates and the views of them it keeps at once, not
    by how many steps it runs."""
    pool = _tl.pool
    return sum(entry[0].nbytes for entry in pool.values()) if pool else 0


def _unlend(t: Tile) -> None:
    """``t`` is about to be written while lent: over its array if no tile shows it any more, else
    into another generation's."""
    g = _generation(t)
    t.lent = False
    if g != t.gen:
        t.gen, t.tag = g, t.tag[:2] + (g,)
        t.own, t.mem = False, None        # its arrays are the other tiles' now


def _generation(t: Tile) -> int:
    """The scratch generation ``t``'s next write goes to, ``t`` being lent: one whose array no
    tile shows any more (``lends``; its values are dead), else a new one."""
    lends = t.lends
    for g, held in lends.items():
        for b, a in held.values():
            if b.data is a:
                break
        else:
            del lends[g]
            return g
    return 1 + builtins.max((t.gen, *lends))


def _lend(src: Tile, dst: Tile, a: np.ndarray) -> None:
    """``dst`` now shows ``a``, a view of ``src``'s values: if those are scratch memory (``src``'s
    own, or what ``src`` itself was lent), its owner's generation stays taken while ``dst`` shows
    ``a`` (a tile shows one array at a time: its last lend counts), and the owner's next write
    goes elsewhere."""
    if src.own:
        src.lent, src.w = True, None
        owner, g = src, src.gen
    elif src.lender is not None:
        owner, g = src.lender
    else:
        dst.lender = None
        return
    held = owner.lends.get(g)
    if held is None:
        held = owner.lends[g] = {}
    held[id(dst)] = (dst, a)
    dst.lender = (owner, g)


def _out(dst: Tile, shape: tuple[int, ...], like: np.ndarray | None = None) -> np.ndarray:
    """The array an op writes ``dst``'s new values into (``shape``: with a leading loop axis or
    not): its current one if it owns it, else its scratch array of the last write (``mem``: of
    this call or of the previous Core of its name, whose values are dead) if nothing shows that
    one, else a fresh one laid out in memory as ``like`` (an input: elementwise numpy is fastest
    when both sides walk memory in one order). Fetch the sources' data before calling: this may
    rebind ``dst.data``. (Writing over a source is safe: numpy ufuncs and assignments resolve
    overlap.)"""
    if dst.lent:
        _unlend(dst)
    d = dst.data
    if dst.own and d is not None and d.shape == shape:
        if not dst.core.n:
            dst.w = d
        return d
    order = _memory_order(like) if like is not None and like.shape == shape and len(shape) > 1 else None
    m = dst.mem
    if m is not None and m.shape == shape and dst.memo == order:
        dst.data, dst.own = m, True
        dst.w = None if dst.core.n else m
        return m
    return _fresh(dst, shape, order)


# ── transfers ───────────────────────────────────────────────────────────────────────────────────


def load(dst: Tile, src: np.ndarray, index: Any = None, prefetch: bool = False) -> None:
    """TLOAD: GM view ``src`` -> ``dst`` (UB or L1). In a loop, ``src`` has a leading axis of the
    loop count, or ``index`` (one id per iteration) picks ``src[id]`` per iteration.

    ``prefetch=True`` (in a loop; ``dst`` double-buffered): the schedule issues iteration i+1's
    load during iteration i, and iteration 0's before the loop -- the reference's hand-pipelined
    "TLOAD(next)" ahead of a pipe_barrier(PIPE_ALL) that would otherwise stop the overlap."""
    core = dst.core
    n = core.n
    b = dst.buf
    if b != UB and b != L1:
        raise TileError(f"{core.name}: load into {a2a3.BUFFERS[dst.buf]}: TLOAD fills UB or L1 "
                        f"(move L1 tiles on to L0A/L0B)")
    sd = src.dtype
    if sd is not dst.dtype and sd != dst.dtype:
        raise TileError(f"{core.name}: load of a {src.dtype} GM view into {dst!r}: TLOAD does not convert "
                        f"(load into a {src.dtype} tile, then cast)")
    shape = dst.shape
    if index is not None:
        ids = np.asarray(index).reshape(-1)
        if ids.size != (n or 1):
            raise TileError(f"{core.name}: load into {dst!r}: index has {ids.size} ids for {n or 1} iteration(s)")
        src = _as_shape(src, (src.shape[0],) + shape, "load into", dst)
        if n:
            _gather(dst, src, ids)
            view = None
        else:
            view = src[int(ids[0])]
    else:
        if n:
            shape = (n,) + shape
        view = src
        if src.shape != shape:
            view = src.reshape(shape) if (src.ndim == 1 and not n and src.shape[0] == shape[0] * shape[1]) \
                else _as_shape(src, shape, "load into", dst)
    if view is not None:
        if dst.alias:
            raise TileError(f"{core.name}: tile {dst.name!r} is a reshape view (read-only): write the tile "
                            f"it views, then reshape")
        if dst.vdtype is sd:
            if not view.flags.writeable:          # zero copy: the tile shows the GM values
                dst.data, dst.own, dst.w = view, False, None
            elif view.nbytes > _SMALL_COPY:       # ... which a store may overwrite (see store)
                dst.data, dst.own, dst.w = view, False, None
                core.borrowed[dst.key] = dst
            else:                                 # a small writable view: copying is cheaper
                _out(dst, view.shape, view)[...] = view
        else:                                     # 16-bit floats for the cube: widen once
            _widen(_out(dst, view.shape, view), view)
    if _ON and _tl.rec is not None:
        rows, cols = dst.shape
        nb = rows * cols * dst.dtype.itemsize
        _count(core, MTE2, a2a3.C_GM, a2a3.transfer_cycles((a2a3.GM, dst.buf), nb), (), (dst,),
               ahead=1 if prefetch and n else 0)
        _tl.rec.gm_read += nb * (n or 1)


_FAST_WIDEN = 4096        # elements: below this numpy's own bf16 -> fp32 conversion is as fast
_SMALL_COPY = 4096        # bytes: a writable GM view this small is copied at load, not borrowed


def _widen(out: np.ndarray, x: np.ndarray) -> None:
    """out = x converted (same shape; any dtypes). bf16 -> fp32 is exact and bf16 the top half of
    an fp32: for large arrays an integer shift is ~2x faster than ml_dtypes' conversion."""
    if x.dtype is BF16 and out.dtype is F32 and x.size >= _FAST_WIDEN:
        v = out.view(_U32)
        np.copyto(v, x.view(_U16), casting="unsafe")
        v <<= 16
    else:
        out[...] = x


def _gather(dst: Tile, src: np.ndarray, ids: np.ndarray) -> None:
    """dst's values = src[ids] (one copy, in dst's value dtype, keeping src's memory order)."""
    order = _memory_order(src)
    if order is not None and order[0] != 0:
        order = None                              # the gathered axis is not outermost: plain gather
    mo = src if order is None else src.transpose(order)
    shape = (ids.size,) + mo.shape[1:]
    m = dst.mem                                   # as _out, in the memory order of the source
    out = m if (m is not None and not dst.lent and m.shape == shape and dst.memo == (order, "gather")) \
        else _fresh(dst, shape)
    dst.memo = (order, "gather")
    x = mo[int(ids[0])] if ids.size == 1 else mo[ids]        # one block: no fancy-index temporary
    _widen(out[0] if ids.size == 1 else out, x)
    dst.data, dst.own, dst.w = (out if order is None else out.transpose(_inverse(order))), True, None


def store(dst: np.ndarray, src: Tile, atomic: str | None = None, index: Any = None) -> None:
    """TSTORE: ``src`` (UB, L0C or L1) -> GM view ``dst``; ``atomic="add"`` adds into it. In a
    loop, ``dst`` has a leading axis of the loop count, or ``index`` (one id per iteration) sends
    iteration i to ``dst[index[i]]`` (outside a loop: one id, ``dst[id]``), as load's."""
    core = src.core
    n = core.n
    a = src.data
    if a is None:
        _data(src, "store")
    dd = dst.dtype
    if src.buf == L0C:
        if dd not in _FLOATS:
            raise TileError(f"{core.name}: store of {src!r} into a {dst.dtype} GM view: L0C stores floats")
    elif dd is not src.dtype and dd != src.dtype:
        raise TileError(f"{core.name}: store of {src!r} into a {dst.dtype} GM view: TSTORE does not convert "
                        f"(cast into a {dst.dtype} tile first)")
    if atomic is not None and atomic != "add":
        raise TileError(f"{core.name}: store atomic={atomic!r}: expected None or 'add'")
    if index is not None:
        _store_at(dst, src, a, atomic, index)
        return
    shape = (n,) + src.shape if n else src.shape
    view = dst
    if dst.shape != shape:
        # a vector is always a (rows, cols) view (a.reshape never copies it, and a store through a
        # copy would be lost); anything else has to be one (_as_shape)
        view = dst.reshape(shape) if (dst.ndim == 1 and not n and dst.size == a.size) else \
            _as_shape(dst, shape, "store of", src)
    # A tile still showing GM bytes this store overwrites keeps its values (tiles loaded from
    # read-only views -- In arguments -- are not checked: a task's writable views do not alias them)
    if core.borrowed:
        _keep_borrowed(core, view)
    if atomic is None:
        view[...] = a
    else:
        _atomic.add(view, a)                      # one indivisible update across cores (kernels/atomic.py)
    if _ON and _tl.rec is not None:
        _count_store(dst, src)


def _keep_borrowed(core: Core, view: np.ndarray) -> None:
    """A tile still showing GM bytes a store overwrites keeps its values (tiles loaded from
    read-only views -- In arguments -- are not checked: a task's writable views do not alias them)."""
    for t in core.borrowed.values():
        d = t.data
        if d is not None and not t.own and _may_share(d, view):
            _out(t, d.shape, d)[...] = d          # into its own scratch (a fresh copy would page-fault)
            t.w = None


def _count_store(dst: np.ndarray, src: Tile) -> None:
    nb = src.shape[0] * src.shape[1] * (dst.dtype.itemsize if src.buf == L0C else src.dtype.itemsize)
    _count(src.core, MTE3, a2a3.C_GM, a2a3.transfer_cycles((src.buf, a2a3.GM), nb), (src,), ())
    _tl.rec.gm_write += nb * (src.core.n or 1)


def _store_at(dst: np.ndarray, src: Tile, a: np.ndarray, atomic: str | None, index: Any) -> None:
    """store(..., index=ids): iteration i's tile to dst[ids[i]] (in iteration order: a repeated
    id keeps the last iteration's tile, or, atomic, the sum of all)."""
    core = src.core
    n = core.n
    ids = np.asarray(index).reshape(-1)
    if ids.size != (n or 1):
        raise TileError(f"{core.name}: store of {src!r}: index has {ids.size} ids for {n or 1} iteration(s)")
    view = _as_shape(dst, (dst.shape[0],) + src.shape, "store of", src)
    if core.borrowed:
        _keep_borrowed(core, view)
    tiles = a if (n and a.ndim == 3) else None            # (a tile written before the loop: the same each time)
    if atomic is None and (ids.size == 1 or np.unique(ids).size == ids.size):
        view[ids] = a
    else:
        for i, j in enumerate(ids.tolist()):
            x = a if tiles is None else tiles[i]
            if atomic is None:
                view[j] = x
            else:
                _atomic.add(view[j], x)
    if _ON and _tl.rec is not None:
        _count_store(dst, src)


# np.may_share_memory without its __array_function__ dispatch (half its cost on small arrays)
_may_share = getattr(np.may_share_memory, "_implementation", np.may_share_memory)


def move(dst: Tile, src: Tile) -> None:
    """TMOV between on-chip buffers: L1 -> L0A / L0B (MTE1), L0C -> L1, UB -> UB."""
    core = dst.core
    path = (src.buf, dst.buf)
    if path not in a2a3.PATHS or a2a3.GM in path:
        raise TileError(f"{core.name}: move {a2a3.BUFFERS[src.buf]} -> {a2a3.BUFFERS[dst.buf]}: TMOV moves "
                        f"L1 -> L0A, L1 -> L0B, L0C -> L1 or UB -> UB")
    if src.shape != dst.shape or src.dtype != dst.dtype:
        raise TileError(f"{core.name}: move {src!r} -> {dst!r}: shapes and dtypes must match")
    d = _data(src, "move")
    if dst.alias:
        raise TileError(f"{core.name}: tile {dst.name!r} is a reshape view (read-only)")
    dst.data, dst.own, dst.w = d, False, None     # the values are the same: share them
    _lend(src, dst, d)                            # (src's next write goes elsewhere)
    if not src.own and src.key in core.borrowed:
        core.borrowed[dst.key] = dst
    if _ON and _tl.rec is not None:
        nb = src.shape[0] * src.shape[1] * src.dtype.itemsize
        pipe, cls, _ = a2a3.PATHS[path]
        _count(core, pipe, cls, a2a3.transfer_cycles(path, nb), (src,), (dst,))


class _Each:
    """``tile.EACH``: in ``extract`` inside ``c.loop(n)``, iteration i takes the i-th sub-tile."""

    def __repr__(self) -> str:
        return "tile.EACH"


EACH = _Each()


def extract(dst: Tile, src: Tile, row: int | _Each = 0, col: int | _Each = 0) -> None:
    """TEXTRACT: the ``dst``-shaped sub-tile of ``src`` at (row, col) -- L1 -> L0A / L0B (MTE1).
    In ``c.loop(n)`` one of ``row``, ``col`` may be ``tile.EACH``: iteration i takes the i-th
    sub-tile down the rows (``row=EACH``) or across the columns (``col=EACH``) of a ``src``
    written before the loop (the reference's TEXTRACT(a, l1, 0, k) in a loop over k)."""
    core = dst.core
    path = (src.buf, dst.buf)
    if path not in ((L1, L0A), (L1, L0B)):
        raise TileError(f"{core.name}: extract {a2a3.BUFFERS[src.buf]} -> {a2a3.BUFFERS[dst.buf]}: TEXTRACT "
                        f"takes L1 -> L0A or L1 -> L0B")
    if src.dtype != dst.dtype:
        raise TileError(f"{core.name}: extract {src!r} -> {dst!r}: dtypes must match")
    d = _data(src, "extract")
    (h, w), (dh, dw) = src.shape, dst.shape
    each_r, each_c = row is EACH, col is EACH
    n = core.n
    if each_r or each_c:
        if not n or (each_r and each_c) or d.ndim != 2:
            raise TileError(f"{core.name}: extract(..., EACH): one of row/col, inside c.loop(), from a tile written "
                            f"before the loop")
        if (each_r and (dw != w or dh * n != h)) or (each_c and (dh != h or dw * n != w)):
            raise TileError(f"{core.name}: extract {dst!r} from {src!r} in c.loop({n}): the {n} sub-tiles must tile "
                            f"{'the rows' if each_r else 'the columns'} exactly")
        view = d.reshape(n, dh, w) if each_r else d.reshape(h, n, dw).transpose(1, 0, 2)
    else:
        r0, c0 = int(row), int(col)
        if not (0 <= r0 and r0 + dh <= h and 0 <= c0 and c0 + dw <= w):
            raise TileError(f"{core.name}: extract {dst!r} at ({r0}, {c0}) runs outside {src!r}")
        view = d[..., r0:r0 + dh, c0:c0 + dw]
    if dst.alias:
        raise TileError(f"{core.name}: tile {dst.name!r} is a reshape view (read-only)")
    dst.data, dst.own, dst.w = view, False, None  # the same values: share them
    _lend(src, dst, view)                         # (src's next write goes elsewhere)
    if not src.own and src.key in core.borrowed:
        core.borrowed[dst.key] = dst
    if _ON and _tl.rec is not None:
        nb = dh * dw * dst.dtype.itemsize
        pipe, cls, _ = a2a3.PATHS[path]
        _count(core, pipe, cls, a2a3.transfer_cycles(path, nb), (src,), (dst,))


# ── cube ────────────────────────────────────────────────────────────────────────────────────────


def matmul(c: Tile, a: Tile, b: Tile, acc: bool = False) -> None:
    """TMATMUL: c (L0C, fp32) = a (L0A) @ b (L0B); acc=True: TMATMUL_ACC, c += a @ b (in a loop
    with c written before it, or never: accumulates over the iterations)."""
    core = c.core
    n = core.n
    if a.buf != L0A or b.buf != L0B or c.buf != L0C:
        raise TileError(f"{core.name}: matmul takes L0A x L0B -> L0C tiles, got {a!r}, {b!r} -> {c!r}")
    (m, k), (k2, nn) = a.shape, b.shape
    if k != k2 or c.shape != (m, nn) or a.dtype != b.dtype or c.dtype != F32:
        raise TileError(f"{core.name}: matmul {a!r} @ {b!r} -> {c!r}: needs (m,k) @ (k,n) -> (m,n) fp32, "
                        f"a and b of one dtype")
    if a.dtype not in (F32, F16, BF16):
        raise TileError(f"{core.name}: matmul of {a.dtype}: the cube takes bf16, fp16 or fp32 here")
    x, y = _data(a, "matmul"), _data(b, "matmul")
    xb, yb = x.ndim == 3, y.ndim == 3
    old = c.data
    if n and acc and (old is None or old.ndim == 2) and (xb or yb):
        # one accumulator over the loop: sum_i a_i @ b_i as one contraction over (i, k)
        xs = x.transpose(1, 0, 2).reshape(m, -1) if xb else np.tile(x, (1, n))
        ys = y.reshape(-1, nn) if yb else np.tile(y, (n, 1))
        if old is None:
            np.matmul(xs, ys, out=_out(c, (m, nn)))
        else:
            r = np.matmul(xs, ys)
            np.add(old, r, out=_out(c, (m, nn)))
    elif acc:
        if n and (old is None or old.ndim == 2):
            raise TileError(f"{core.name}: matmul(acc=True) into {c!r} in c.loop() with operands that are the "
                            f"same in every iteration: the batched loop cannot repeat it; use c.range()")
        old = _data(c, "matmul(acc=True)")
        r = np.matmul(x, y)
        np.add(old, r, out=_out(c, np.broadcast_shapes(old.shape, r.shape)))
    elif yb and not xb:
        # the same left tile against n right tiles: one GEMM, columns of all n side by side
        yt = y.transpose(0, 2, 1).reshape(-1, k)              # (n*N, K): the n right tiles, transposed
        if m <= 32:   # tall-skinny: OpenBLAS is ~1.6x faster on (Bᵀ Aᵀ)ᵀ for short a tiles
            r = _fresh(c, (n, nn, m))
            np.matmul(yt, x.T, out=r.reshape(n * nn, m))
            c.data, c.w = r.transpose(0, 2, 1), None
        else:
            r = _fresh(c, (m, n, nn))
            np.matmul(x, yt.T, out=r.reshape(m, n * nn))
            c.data, c.w = r.transpose(1, 0, 2), None
    elif x.ndim == 2 and y.ndim == 2:                 # one product, the usual case outside a loop
        np.matmul(x, y, out=_out(c, (m, nn)))
    else:
        np.matmul(x, y, out=_out(c, np.broadcast_shapes(x.shape[:-2], y.shape[:-2]) + (m, nn)))
    if _ON and _tl.rec is not None:
        _count(core, CUBE, a2a3.C_CUBE, a2a3.cube_cycles(a.dtype.itemsize, m, k, nn),
               (a, b, c) if acc else (a, b), (c,))


# ── vector ──────────────────────────────────────────────────────────────────────────────────────


def _vec_check(dst: Tile, a: Tile | None = None, b: Tile | None = None) -> None:
    if dst.buf != UB or (a is not None and a.buf != UB) or (b is not None and b.buf != UB):
        raise TileError(f"{dst.core.name}: vector ops work on UB tiles, got "
                        f"{', '.join(repr(t) for t in (dst, a, b) if t is not None)}")


def _vcount(op: str, dst: Tile, shape_of: Tile, reads: tuple, only: int | None = None, itemsize2: int = 0) -> None:
    rows, cols = shape_of.shape
    dt = shape_of.dtype
    _count(dst.core, VECTOR, a2a3.C_VEC, a2a3.vector_cycles(op, dt.itemsize, rows, cols, itemsize2),
           reads, (dst,), only)


_REDUCE = {np.add, np.maximum, np.minimum, np.multiply}


# The elementwise ops are made by the factories below: each op is one function whose first lines
# are the fast path (see Tile.w: not in a loop, dst writable in place, operands of its shape),
# the rest of the work in the shared full path (_binary, _scalar, _unary, _row_expand_op).


def _binary_op(op: str, uf: np.ufunc, doc: str) -> Callable[[Tile, Tile, Tile], None]:
    def fn(dst: Tile, a: Tile, b: Tile) -> None:
        w, x, y = dst.w, a.data, b.data
        if w is not None and x is not None and y is not None and a.buf == UB and b.buf == UB \
                and x.shape == w.shape == y.shape:
            uf(x, y, out=w)                       # (np.maximum and np.minimum take out= only)
            dst.data = w
            if _ON and _tl.rec is not None:
                _vcount(op, dst, dst, (a, b))
        else:
            _binary(op, uf, dst, a, b)
    fn.__name__ = fn.__qualname__ = op
    fn.__doc__ = doc
    return fn


def _binary(op: str, uf: np.ufunc, dst: Tile, a: Tile, b: Tile) -> None:
    if dst.buf != UB or a.buf != UB or b.buf != UB:
        _vec_check(dst, a, b)
    x, y = a.data, b.data
    if dst.core.n and (dst is a or dst is b) and (dst.data is None or dst.data.ndim == 2):
        _carried(op, uf, dst, a, b)
        return
    if x is None or y is None:
        _data(a if x is None else b, op)
    if x.shape == y.shape or x.ndim > y.ndim:
        shape, like = x.shape, x
    elif y.ndim > x.ndim:
        shape, like = y.shape, y
    else:
        shape, like = np.broadcast_shapes(x.shape, y.shape), None
    d = dst.data
    uf(x, y, out=d if (dst.own and not dst.lent and d is not None and d.shape == shape) else _out(dst, shape, like))
    if _ON and _tl.rec is not None:
        _vcount(op, dst, dst, (a, b))


def _carried(op: str, uf: np.ufunc, dst: Tile, a: Tile, b: Tile) -> None:
    """dst = dst (op) x_i for every iteration i of the loop, in order (dst written before the
    loop, or never: then the first iteration initialises it)."""
    other = _data(b if dst is a else a, op)
    if other.ndim != 3:
        raise TileError(f"{dst.core.name}: {op} accumulates into {dst!r} in c.loop() with an operand that is "
                        f"the same in every iteration: the batched loop cannot repeat it; use c.range()")
    if uf not in _REDUCE:
        raise TileError(f"{dst.core.name}: {op} cannot accumulate over a loop (add, mul, max, min can)")
    r = uf.reduce(other, axis=0)
    if dst.data is not None:
        r = uf(dst.data, r)
    _out(dst, r.shape)[...] = r
    if _ON and _tl.rec is not None:
        _vcount(op, dst, dst, (a, b))


add = _binary_op("add", np.add, "TADD: dst = a + b.")


sub = _binary_op("sub", np.subtract, "TSUB: dst = a - b.")


mul = _binary_op("mul", np.multiply, "TMUL: dst = a * b.")


div = _binary_op("div", np.divide, "TDIV: dst = a / b.")


max = _binary_op("max", np.maximum, "TMAX: dst = max(a, b) elementwise.")  # noqa: A001 - the PTO instruction's name


min = _binary_op("min", np.minimum, "TMIN: dst = min(a, b) elementwise.")  # noqa: A001 - the PTO instruction's name


def _scalar_op(op: str, uf: np.ufunc, doc: str) -> Callable[[Tile, Tile, float], None]:
    def fn(dst: Tile, a: Tile, s: float) -> None:
        w, x = dst.w, a.data
        if w is not None and x is not None and a.buf == UB and x.shape == w.shape:
            # a Python float meets an fp32 tile as an fp32 (NEP 50): converting it first is the same
            uf(x, s if (type(s) is float and dst.vdtype is F32) else dst.vdtype.type(s), out=w)
            dst.data = w
            if _ON and _tl.rec is not None:
                _vcount(op, dst, dst, (a,))
        else:
            _unary(op, uf, dst, a, dst.vdtype.type(s))
    fn.__name__ = fn.__qualname__ = op
    fn.__doc__ = doc
    return fn


adds = _scalar_op("adds", np.add, "TADDS: dst = a + s.")


subs = _scalar_op("subs", np.subtract, "TSUBS: dst = a - s.")


muls = _scalar_op("muls", np.multiply, "TMULS: dst = a * s.")


divs = _scalar_op("divs", np.divide, "TDIVS: dst = a / s.")


maxs = _scalar_op("maxs", np.maximum, "TMAXS: dst = max(a, s).")


mins = _scalar_op("mins", np.minimum, "TMINS: dst = min(a, s).")


def _unary_op(op: str, uf: np.ufunc, doc: str) -> Callable[[Tile, Tile], None]:
    def fn(dst: Tile, a: Tile) -> None:
        w, x = dst.w, a.data
        if w is not None and x is not None and a.buf == UB and x.shape == w.shape:
            uf(x, w)
            dst.data = w
            if _ON and _tl.rec is not None:
                _vcount(op, dst, dst, (a,))
        else:
            _unary(op, uf, dst, a)
    fn.__name__ = fn.__qualname__ = op
    fn.__doc__ = doc
    return fn


def _unary(op: str, uf: np.ufunc, dst: Tile, a: Tile, *scalar: Any) -> None:
    """The full path of a unary op, or (``scalar``: the op's scalar in dst's dtype) a scalar op."""
    x = a.data
    if dst.buf != UB or a.buf != UB:
        _vec_check(dst, a)
    if x is None:
        _data(a, op)
    d = dst.data
    uf(x, *scalar, out=d if (dst.own and not dst.lent and d is not None and d.shape == x.shape)
       else _out(dst, x.shape, x))
    if _ON and _tl.rec is not None:
        _vcount(op, dst, dst, (a,))


exp = _unary_op("exp", np.exp, "TEXP: dst = exp(a).")


sqrt = _unary_op("sqrt", np.sqrt, "TSQRT: dst = sqrt(a).")


neg = _unary_op("neg", np.negative, "TNEG: dst = -a.")


recip = _unary_op("recip", np.reciprocal, "TRECIP: dst = 1 / a.")


def _row_reduce(op: str, uf: np.ufunc, dst: Tile, a: Tile) -> None:
    w, x = dst.w, a.data
    if w is not None and x is not None and a.buf == UB and x.ndim == 2 and w.shape == (x.shape[0], 1):
        uf.reduce(x, axis=-1, keepdims=True, out=w)             # fast path (Tile.w)
        dst.data = w
        if _ON and _tl.rec is not None:
            _vcount(op, dst, a, (a,))
        return
    _vec_check(dst, a)
    if dst.shape != (a.shape[0], 1):
        raise TileError(f"{dst.core.name}: {op} of {a!r} into {dst!r}: the result is a ({a.shape[0]}, 1) column")
    x = _data(a, op)
    out = _out(dst, x.shape[:-1] + (1,))
    if x.ndim == 3 and x.shape[0] * x.shape[1] >= 256:
        # many tiles: numpy reduces many short rows slowly, so reduce the rows where they lie in
        # memory as segments of one flat array (reduceat)
        order = _memory_order(x) or (0, 1, 2)
        y = x.transpose(order)
        if order[-1] == 2 and y.flags.c_contiguous:
            k = y.shape[-1]
            flat = y.reshape(-1)
            offsets = _OFFSETS.get((flat.size, k))
            if offsets is None:
                offsets = _OFFSETS[flat.size, k] = np.arange(0, flat.size, k)
            r = uf.reduceat(flat, offsets).reshape(y.shape[:-1])
            out[..., 0] = r.transpose(_inverse(order[:-1]))
        else:
            uf.reduce(x, axis=-1, keepdims=True, out=out)
    else:
        uf.reduce(x, axis=-1, keepdims=True, out=out)
    if _ON and _tl.rec is not None:
        _vcount(op, dst, a, (a,))


_OFFSETS: dict = {}


def row_max(dst: Tile, a: Tile) -> None:
    """TROWMAX: dst (rows, 1) = max of each row of a."""
    _row_reduce("row_max", np.maximum, dst, a)


def row_sum(dst: Tile, a: Tile) -> None:
    """TROWSUM: dst (rows, 1) = sum of each row of a."""
    _row_reduce("row_sum", np.add, dst, a)


def _col(col: Tile, rows: int, op: str) -> np.ndarray:
    if col.shape != (rows, 1):
        raise TileError(f"{col.core.name}: {op} needs a ({rows}, 1) column, got {col!r} (reshape a row first)")
    return _data(col, op)


def row_expand(dst: Tile, col: Tile) -> None:
    """TROWEXPAND: every column of dst = col (rows, 1)."""
    _vec_check(dst, col)
    c = _col(col, dst.shape[0], "row_expand")
    out = _out(dst, c.shape[:-1] + (dst.shape[1],))
    out[...] = c
    if _ON and _tl.rec is not None:
        _vcount("row_expand", dst, dst, (col,))


def _row_expand_op(op: str, uf: np.ufunc, base: str, doc: str) -> Callable[[Tile, Tile, Tile], None]:
    def fn(dst: Tile, a: Tile, col: Tile) -> None:
        w, x, c = dst.w, a.data, col.data
        if (w is not None and x is not None and c is not None and a.buf == UB and col.buf == UB
                and x.shape == w.shape and c.shape == (x.shape[0], 1)):
            uf(x, c, w)
            dst.data = w
        else:
            _row_expand(op, uf, dst, a, col)
        if _ON and _tl.rec is not None:
            _row_expand_count(base, dst, a, col)
    fn.__name__ = fn.__qualname__ = op
    fn.__doc__ = doc
    return fn


def _row_expand(op: str, uf: np.ufunc, dst: Tile, a: Tile, col: Tile) -> None:
    x, c = a.data, col.data
    if dst.buf != UB or a.buf != UB or col.buf != UB:
        _vec_check(dst, a, col)
    if x is None or c is None or col.shape != (a.shape[0], 1):
        _col(col, a.shape[0], op)
        _data(a, op)
    shape, like = (x.shape, x) if x.ndim >= c.ndim else (c.shape[:1] + x.shape, None)
    d = dst.data
    uf(x, c, out=d if (dst.own and not dst.lent and d is not None and d.shape == shape) else _out(dst, shape, like))


def _row_expand_count(base: str, dst: Tile, a: Tile, col: Tile) -> None:
    # the reference's TROWEXPAND<op>: one vbrcb of the column, then the binary op on the tile
    rows, cols = dst.shape
    dt = dst.dtype
    cyc = (a2a3.vector_cycles(base, dt.itemsize, rows, cols)
           + a2a3.vector_cycles("brcb", 4, rows, 1))
    _count(dst.core, VECTOR, a2a3.C_VEC, cyc, (a, col), (dst,))


row_expand_add = _row_expand_op("row_expand_add", np.add, "add",
                                 "TROWEXPANDADD: dst = a + col, col (rows, 1) broadcast along each row.")


row_expand_sub = _row_expand_op("row_expand_sub", np.subtract, "sub",
                                 "TROWEXPANDSUB: dst = a - col.")


row_expand_mul = _row_expand_op("row_expand_mul", np.multiply, "mul",
                                 "TROWEXPANDMUL: dst = a * col.")


row_expand_div = _row_expand_op("row_expand_div", np.divide, "div",
                                 "TROWEXPANDDIV: dst = a / col.")


def col_expand_mul(dst: Tile, a: Tile, row: Tile) -> None:
    """TCOLEXPANDMUL: dst = a * row, a (1, cols) row broadcast down every row of a."""
    if dst.buf != UB or a.buf != UB or row.buf != UB:
        _vec_check(dst, a, row)
    if row.shape != (1, a.shape[1]):
        raise TileError(f"{dst.core.name}: col_expand_mul needs a (1, {a.shape[1]}) row, got {row!r}")
    x, r = _data(a, "col_expand_mul"), _data(row, "col_expand_mul")
    shape = x.shape if x.ndim >= r.ndim else r.shape[:1] + x.shape
    d = dst.data
    np.multiply(x, r, out=d if (dst.own and not dst.lent and d is not None and d.shape == shape)
                else _out(dst, shape, x if x.shape == shape else None))
    if _ON and _tl.rec is not None:
        _vcount("col_expand_mul", dst, dst, (a, row))


def cast(dst: Tile, a: Tile) -> None:
    """TCVT: dst = a converted to dst's dtype (floats: round to nearest, ties to even)."""
    w, x = dst.w, a.data
    if w is not None and x is not None and a.buf == UB and x.shape == w.shape:
        out = dst.data = w                                    # fast path (Tile.w)
    else:
        _vec_check(dst, a)
        if dst.shape != a.shape:
            raise TileError(f"{dst.core.name}: cast {a!r} -> {dst!r}: shapes must match")
        x = _data(a, "cast")
        out = _out(dst, x.shape, x)
    if x.dtype is F32 and out.dtype is BF16 and x.size >= _FAST_CAST:
        _f32_to_bf16(out, x, _scratch(dst.tag[:2] + (-1,), x.shape, _U32, _memory_order(x) if x.ndim == 3 else None))
    else:
        _widen(out, x)                                        # (any other pair: numpy's conversion)
    if _ON and _tl.rec is not None:
        rows, cols = a.shape
        _count(dst.core, VECTOR, a2a3.C_VEC,
               a2a3.vector_cycles("cast", a.dtype.itemsize, rows, cols, dst.dtype.itemsize),
               (a,), (dst,))


_FAST_CAST = 8192          # elements: below this the integer route's extra numpy calls cost more than they save


def _f32_to_bf16(out: np.ndarray, x: np.ndarray, tmp: np.ndarray) -> None:
    """out (bf16) = x (fp32) rounded to nearest even, bit for bit as ml_dtypes' cast (checked over all
    2^32 inputs; NaN -> the quiet NaN 0x7fc0 with x's sign), in integer ops: ~2x faster."""
    b = x.view(_U32)
    np.right_shift(b, 16, out=tmp)
    np.bitwise_and(tmp, 1, out=tmp)                 # the lowest kept bit: ties go to even
    tmp += 0x7FFF
    tmp += b
    tmp >>= 16
    o16 = out.view(_U16)
    np.copyto(o16, tmp, casting="unsafe")
    nan = np.isnan(x)
    if nan.any():
        o16[nan] = (((b[nan] >> 16) & 0x8000) | 0x7FC0).astype(_U16)


def fill(dst: Tile, value: float) -> None:
    """TEXPANDS: every element of dst = value."""
    w = dst.w
    if w is None or w.shape != dst.shape:
        _vec_check(dst)
        w = _out(dst, dst.shape)                  # the same in every iteration: one tile of values
    w[...] = value
    dst.data = w
    if _ON and _tl.rec is not None:
        _vcount("fill", dst, dst, ())


def fill_pad(dst: Tile, valid_cols: int | Sequence[int], value: float, iteration: int | None = None) -> None:
    """TFILLPAD_INPLACE: columns valid_cols.. of dst = value (in a loop: of every iteration's tile,
    or of iteration ``iteration`` only, e.g. -1 for the last; or ``valid_cols`` a sequence of one
    count per iteration, as a loop whose every iteration pads its own tile to its own length)."""
    _vec_check(dst)
    core = dst.core
    rows, cols = dst.shape
    per_iteration = not isinstance(valid_cols, (int, np.integer))
    if per_iteration:
        valid = np.asarray(valid_cols).reshape(-1)
        if not core.n or valid.size != core.n or iteration is not None:
            raise TileError(f"{core.name}: fill_pad with {valid.size} valid_cols: one count per iteration of "
                            f"a c.loop() (here {core.n or 'not in a loop'}), without iteration=")
        short = valid < cols
    else:
        valid = int(valid_cols)
        short = valid < cols
    if np.any(valid < 0) or np.any(valid > cols):
        raise TileError(f"{core.name}: fill_pad valid_cols={valid_cols} outside 0..{cols}")
    d = _data(dst, "fill_pad")
    if iteration is not None and not core.n:
        raise TileError(f"{core.name}: fill_pad(iteration=...) is for a tile inside c.loop()")
    if np.any(short):
        if not dst.own or dst.lent:               # copy on write: whatever else shows these values keeps them
            if dst.alias:
                raise TileError(f"{core.name}: tile {dst.name!r} is a reshape view (read-only)")
            old = d
            d = _out(dst, old.shape, old)
            d[...] = old
        if per_iteration:
            np.copyto(d, value, where=(_arange(cols) >= valid[:, None])[:, None, :])
        elif iteration is None:
            d[..., valid:] = value
        else:
            d[iteration, :, valid:] = value
    if _ON and _tl.rec is not None:
        if per_iteration:                         # each short iteration its own instruction
            for i in np.flatnonzero(short):
                _count(core, VECTOR, a2a3.C_VEC, a2a3.vector_cycles("fill", dst.dtype.itemsize, rows,
                                                                    cols - int(valid[i])), (dst,), (dst,), int(i))
        elif short:
            _count(core, VECTOR, a2a3.C_VEC, a2a3.vector_cycles("fill", dst.dtype.itemsize, rows, cols - valid),
                   (dst,), (dst,), None if iteration is None else int(iteration))


def _arange(n: int) -> np.ndarray:
    """np.arange(n), made once per n."""
    a = _ARANGES.get(n)
    if a is None:
        a = _ARANGES[n] = np.arange(n)
    return a


_ARANGES: dict = {}


_COPY_VIEW = 256          # elements: a reshape of a tile this small copies its values


def reshape(src: Tile, shape: tuple[int, int]) -> Tile:
    """TRESHAPE: a read-only view of src's current values as a (rows, cols) tile of the same size."""
    d = src.data
    if d is None:
        _data(src, "reshape")
    views = src.views
    t = views.get(shape) if views is not None else None
    if t is None:
        rows, cols = shape
        if rows * cols != src.shape[0] * src.shape[1]:
            raise TileError(f"{src.core.name}: reshape {src!r} to {shape}: sizes differ")
        t = Tile()
        t.name, t.buf, t.dtype, t.vdtype, t.bufs = f"{src.name}[{rows}x{cols}]", src.buf, src.dtype, src.vdtype, \
            src.bufs
        t.shape, t.alias, t.own, t.lent, t.gen, t.nbytes = (rows, cols), True, False, False, 0, 0
        t.sig = t.views = t.mem = t.memo = t.vsrc = t.vdata = t.w = t.lender = None
        t.lends = {}
        if views is not None:
            views[shape] = t
    t.core, t.key, t.tag = src.core, src.key, src.tag
    if src.own and d.ndim == 2 and d.size <= _COPY_VIEW:
        # a few values (a row of maxima, a column of sums): a copy is cheaper than lending src's
        # array and moving src's next write elsewhere, and shows the same values
        t.data, t.vsrc, t.lender = d.reshape(shape).copy(), None, None
        return t
    if t.vsrc is d:                               # the same values as last time (e.g. last call's scratch)
        t.data = t.vdata
    else:
        t.data = t.vdata = d.reshape(shape if d.ndim == 2 else d.shape[:1] + t.shape)
        t.vsrc = d
    _lend(src, t, t.data)                         # the view keeps these values; src's next write goes elsewhere
    return t


# ── explicit orderings ──────────────────────────────────────────────────────────────────────────


def sync(src_pipe: int, dst_pipe: int) -> None:
    """set_flag(src) / wait_flag(dst): later ``dst_pipe`` instructions wait for every ``src_pipe``
    instruction issued so far."""
    if _ON:
        rec = _tl.rec
        if rec is not None:
            rec.stack[-1].append((a2a3.SYNC, src_pipe, dst_pipe))


def barrier() -> None:
    """pipe_barrier(PIPE_ALL): every later instruction waits for every earlier one."""
    if _ON:
        rec = _tl.rec
        if rec is not None:
            rec.stack[-1].append((a2a3.BARRIER,))


def handshake(op: int, key: int, side: int, count: int, peers: tuple[int, ...], pipe: int) -> None:
    """A cross-core flag of a pipe (kernels/pipe.py), for the coupled schedule of a mixed task's
    parts (a2a3.couple): ``op`` a2a3.SET -- this part's count on ``side`` (a2a3.DATA: tiles
    pushed, a2a3.FREE: tiles popped) of channel ``key`` reached ``count`` once its last ``pipe``
    instruction ends -- or a2a3.WAIT: later instructions wait until every part slot in
    ``peers`` has SET ``count`` there (the scalar unit blocks in wait_flag_dev). Not inside
    ``c.loop()`` (a handshake cannot be batched)."""
    rec = _tl.rec if _ON else None
    if rec is not None:
        rec.stack[-1].append((a2a3.FLAG, op, key, side, count, peers, pipe))
        rec.handshakes += 1


# ── warm-up ─────────────────────────────────────────────────────────────────────────────────────


def _warm() -> None:
    """Run the ops once on small tiles, at import. Device workers are forked after the kernel
    modules are imported: each then starts with this module's code already specialised by the
    interpreter and its caches made, instead of paying for both -- and the copy-on-write page
    faults they cause -- in its first kernel calls (about a third of a first call's cost)."""
    x, ones = np.ones((2, 4, 32), F32), np.ones((2, 4), F32)
    out, h_out = np.empty((2, 4, 32), F32), np.empty((2, 4, 32), BF16)
    for _ in range(2):
        v = Core("_warm_aiv")
        a, b, col, row = v.tile(UB, (4, 32), F32), v.tile(UB, (4, 32), F32), v.tile(UB, (4, 1), F32), \
            v.tile(UB, (1, 4), F32)
        h = v.tile(UB, (4, 32), BF16)
        load(a, x[0])
        load(col, ones[0])
        add(b, a, a)
        muls(b, b, 0.5)
        exp(b, b)
        row_max(col, b)
        row_expand_sub(b, b, col)
        fill(row, 0.0)
        max(row, row, reshape(col, (1, 4)))
        cast(h, b)
        cast(b, h)
        fill_pad(b, 30, 0.0)
        store(out[0], b)
        store(ones[0], col)
        with v.loop(2):
            load(a, x)
            fill_pad(a, [32, 30], 0.0)
            add(b, b, a)
            row_sum(col, a)
            cast(h, a)
            store(h_out, h, index=[1, 0])
        c = Core("_warm_aic")
        q, k = c.tile(L1, (4, 32), BF16), c.tile(L1, (32, 4), BF16)
        left, right, acc = c.tile(L0A, (4, 32), BF16), c.tile(L0B, (32, 4), BF16), c.tile(L0C, (4, 4), F32)
        load(q, h_out[0])
        load(k, h_out[0].T)
        move(left, q)
        move(right, k)
        matmul(acc, left, right)
        store(out[0, :, :4], acc)


_warm()
