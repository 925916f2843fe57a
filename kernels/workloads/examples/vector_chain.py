"""(a + b + 1) * (a + b + 2), element-wise, through runtime tensors (the reference's vector example).

    a, b ──add──▶ c ──add_scalar(+1)──▶ d ─┐
                  └──add_scalar(+2)──▶ e ─┴─mul──▶ out        c, d, e: runtime tensors (heap ring)

Tiled in ``tile`` elements so independent tiles run on different vector cores.

The kernels are the reference's (kernel_add.cpp, kernel_add_scalar.cpp, kernel_mul.cpp) on the
tile layer: TLOAD the operands to UB, TADD / TADDS / TMUL, TSTORE. The reference's tile is 128 x
128 fp32 (its three tiles fill UB's 192 KiB); here a task's vector is cut into rows of 128 and
up to 128 rows per tile, a loop over the tiles when there are several.
"""

from __future__ import annotations

import contextlib
import functools
from typing import Any

import numpy as np

from kernels import AIV, In, Out, kernel, tile
from kernels.tile import UB
from kernels.workloads.workload import Alloc, Workload

COLS = 128          # the reference's tile: 128 x 128 elements
MAX_ROWS = 128


@functools.lru_cache(maxsize=64)
def _tiles(n: int) -> tuple[int, int, int]:
    """(tiles, rows, cols) of a vector of n elements: rows of COLS (one row if n is not a multiple),
    as few tiles of up to MAX_ROWS rows as divide the rows evenly."""
    if n % COLS:
        return 1, 1, n
    rows = n // COLS
    per = next(r for r in range(min(rows, MAX_ROWS), 0, -1) if rows % r == 0)
    return rows // per, per, COLS


def _elementwise(name: str, n: int, dtype: np.dtype, names: tuple[str, ...]) -> tuple[list, tuple, Any]:
    """UB tiles (one per name) for an element-wise kernel over n elements, the shape giving a GM
    vector as its tile views, and the loop over the tiles (a no-op context for one tile)."""
    loop, rows, cols = _tiles(n)
    c = tile.Core(name)
    tiles = [c.tile(UB, (rows, cols), dtype, name=t) for t in names]
    if loop == 1:
        return tiles, (rows, cols), contextlib.nullcontext()
    return tiles, (loop, rows, cols), c.loop(loop)


def _binary(op: Any, a: np.ndarray, b: np.ndarray, out: np.ndarray) -> None:
    """out = a (op) b: TLOAD both, the op, TSTORE."""
    (ta, tb, to), shape, loop = _elementwise(op.__name__, a.size, a.dtype, ("src0", "src1", "dst"))
    with loop:
        tile.load(ta, a.reshape(shape))
        tile.load(tb, b.reshape(shape))
        op(to, ta, tb)
        tile.store(out.reshape(shape), to)


@kernel(AIV)
def add(a: np.ndarray, b: np.ndarray, out: np.ndarray) -> None:
    """out = a + b (TADD)."""
    _binary(tile.add, a, b, out)


@kernel(AIV)
def add_scalar(x: np.ndarray, out: np.ndarray, s: float) -> None:
    """out = x + s (TADDS)."""
    (tx, to), shape, loop = _elementwise("add_scalar", x.size, x.dtype, ("src", "dst"))
    with loop:
        tile.load(tx, x.reshape(shape))
        tile.adds(to, tx, s)
        tile.store(out.reshape(shape), to)


@kernel(AIV)
def mul(x: np.ndarray, y: np.ndarray, out: np.ndarray) -> None:
    """out = x * y (TMUL)."""
    _binary(tile.mul, x, y, out)


def orchestrate(rt, a, b, out, tile: int = 1024) -> None:
    n = a.shape[0]
    for i in range(0, n, tile):
        sl = slice(i, min(i + tile, n))
        with rt.scope():
            c = rt.make_tensor((sl.stop - sl.start,), a.dtype)
            d = rt.make_tensor(c.shape, a.dtype)
            e = rt.make_tensor(c.shape, a.dtype)
            rt.submit(add, In(a[sl]), In(b[sl]), Out(c))
            rt.submit(add_scalar, In(c), Out(d), 1.0)
            rt.submit(add_scalar, In(c), Out(e), 2.0)
            rt.submit(mul, In(d), In(e), Out(out[sl]))


def reference(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a + b + 1) * (a + b + 2)


def _build(params: dict, seed: int, alloc: Alloc) -> dict:
    rng = np.random.default_rng(seed)
    n = params["n"]
    arrays = {"a": alloc((n,), np.float32), "b": alloc((n,), np.float32), "out": alloc((n,), np.float32)}
    arrays["a"][...] = rng.standard_normal(n)
    arrays["b"][...] = rng.standard_normal(n)
    arrays["out"][...] = 0
    return arrays


WORKLOAD = Workload(
    name="vector_chain", summary="(a+b+1)*(a+b+2) element-wise through runtime tensors, tile by tile",
    features=("runtime tensors", "scopes", "views"),
    cases={"small": {"n": 4096, "tile": 1024}, "Default": {"n": 1 << 16, "tile": 1024}},
    build=_build, outputs=("out",),
    orchestrate=lambda rt, t, p, variant: orchestrate(rt, t["a"], t["b"], t["out"], tile=p["tile"]),
    golden=lambda before, p, variant: {"out": reference(before["a"], before["b"])},
    tolerance=(1e-5, 1e-6), kernels=(__name__,))
