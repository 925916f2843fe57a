"""C = A @ B in tiles: AIC matmuls produce partial products, AIV adds accumulate them.

    for each output tile (i, j):
        for k:  P = matmul(A[i, k], B[k, j])   AIC, P a runtime tensor
                C[i, j] (= or +=) P            AIV: copy on the first k (Out), add after (InOut)

The adds of one tile form a chain through C[i, j] (write after write); tiles are independent, so
they spread over the cores. Disjoint tiles of C are views of one host tensor: dependencies follow
the bytes each view covers, so they do not serialize.

The kernels are on the tile layer, written as the reference's single-tile kernels are (its
mixed_example / benchmark_bgemm matmul, its vector_example add): matmul TLOADs A and B to L1,
TMOVs them to L0A/L0B, TMATMULs and TSTOREs; copy is a TLOAD and a TSTORE; accumulate TLOADs
both tiles, TADDs, TSTOREs.
"""

from __future__ import annotations

import numpy as np

from kernels import AIC, AIV, In, InOut, Out, kernel, tile
from kernels.tile import UB
from kernels.workloads.cube import cube_step
from kernels.workloads.workload import Alloc, Workload


@kernel(AIC)
def matmul(a: np.ndarray, b: np.ndarray, out: np.ndarray) -> None:
    """out (fp32) = a @ b."""
    cube_step(tile.Core(), a, b, out, ("a", "b", "out"))


@kernel(AIV)
def copy(x: np.ndarray, out: np.ndarray) -> None:
    """out = x, through UB."""
    c = tile.Core()
    t = c.tile(UB, x.shape, x.dtype, name="x")
    tile.load(t, x)
    tile.store(out, t)


@kernel(AIV)
def accumulate(x: np.ndarray, acc: np.ndarray) -> None:
    """acc += x."""
    c = tile.Core()
    tx, ta, to = (c.tile(UB, x.shape, x.dtype, name=n) for n in ("x", "acc", "sum"))
    tile.load(tx, x)
    tile.load(ta, acc)
    tile.add(to, ta, tx)
    tile.store(acc, to)


def orchestrate(rt, a, b, c, tile: int = 64) -> None:
    m, kdim = a.shape
    n = b.shape[1]
    for i in range(0, m, tile):
        for j in range(0, n, tile):
            ti, tj = min(tile, m - i), min(tile, n - j)
            ct = c.view((ti, tj), (i, j))
            for k in range(0, kdim, tile):
                tk = min(tile, kdim - k)
                with rt.scope():
                    p = rt.make_tensor((ti, tj), c.dtype)
                    rt.submit(matmul, In(a.view((ti, tk), (i, k))), In(b.view((tk, tj), (k, j))), Out(p))
                    if k == 0:
                        rt.submit(copy, In(p), Out(ct))
                    else:
                        rt.submit(accumulate, In(p), InOut(ct))


def reference(a: np.ndarray, b: np.ndarray, tile: int = 64) -> np.ndarray:
    """The same sum in the same order (float addition is not associative)."""
    c = np.zeros((a.shape[0], b.shape[1]), np.result_type(a, b))
    for k in range(0, a.shape[1], tile):
        c += a[:, k:k + tile] @ b[k:k + tile, :]
    return c


def _build(params: dict, seed: int, alloc: Alloc) -> dict:
    rng = np.random.default_rng(seed)
    m, k, n = params["m"], params["k"], params["n"]
    arrays = {"a": alloc((m, k), np.float32), "b": alloc((k, n), np.float32), "c": alloc((m, n), np.float32)}
    arrays["a"][...] = rng.standard_normal((m, k))
    arrays["b"][...] = rng.standard_normal((k, n))
    arrays["c"][...] = 0
    return arrays


WORKLOAD = Workload(
    name="tiled_matmul", summary="C = A @ B: AIC tile matmuls, AIV adds accumulating each output tile",
    features=("views", "runtime tensors", "scopes", "Out then InOut chains"),
    cases={"small": {"m": 128, "k": 192, "n": 128, "tile": 64}, "Default": {"m": 512, "k": 512, "n": 512, "tile": 64}},
    build=_build, outputs=("c",),
    orchestrate=lambda rt, t, p, variant: orchestrate(rt, t["a"], t["b"], t["c"], tile=p["tile"]),
    golden=lambda before, p, variant: {"c": before["a"] @ before["b"]},
    tolerance=(1e-4, 1e-4), kernels=(__name__,))
