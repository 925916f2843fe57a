"""Alternating matmul + add: independent AIC and AIV tasks interleaved in submission order.

    A, B, C: batch*M tiles of 128x128 f32        X, Y, Z: batch*N tiles of 128x128 f32
    (all flat 1-D, tile after tile)

    group g = 0, 1, ...  (while either kind has groups left)
      matmul  In A[g], In B[g], Out C[g]     AIC   g: matmul_batch tiles, C[t] = A[t] @ B[t]
      add     In X[g], In Y[g], Out Z[g]     AIV   g: add_batch tiles,    Z[t] = X[t] + Y[t]

No two tasks touch the same bytes, so there are no edges at all: the run measures how fast
cube and vector work of one stream is dispatched side by side. Each task gets a 1-D view of
whole tiles and loops over them, as the reference's kernels do (the tile count is the view's
length over 128*128).

The kernels are written on the tile layer (kernels/tile.py), step for step as the reference's
(tests/st/a2a3/tensormap_and_ringbuffer/alternating_matmul_add/kernels in hw-native-sys/simpler):
per tile, matmul loads A and B to L1 (one buffer each), moves them to L0A / L0B, runs one fp32
TMATMUL into L0C and stores it; add loads X and Y to UB, adds, stores; each tile step ends in a
pipe_sync (``barrier``), so nothing overlaps between tiles. Counted at Case1 (4 tiles a task):
matmul ~25.5 us, add ~12.1 us on one core (``tile.count``).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from kernels import AIC, AIV, In, Out, kernel, tile
from kernels.tile import F32, UB
from kernels.workloads.cube import cube_step
from kernels.workloads.fill import fill, normal
from kernels.workloads.workload import Alloc, Workload

TILE = 128
TILE_ELEMS = TILE * TILE


def _tiles(x: np.ndarray) -> np.ndarray:
    # copy=False: a silent copy would make ``out=`` write into a temporary
    return np.reshape(x, (-1, TILE, TILE), copy=False)


@kernel(AIC)
def matmul(a, b, c):
    """c[t] = a[t] @ b[t] for every 128x128 fp32 tile t of the 1-D views (the reference's
    kernel_matmul: TLOAD A, B -> L1; TMOV -> L0A, L0B; TMATMUL -> L0C; TSTORE; pipe_sync)."""
    ta = _tiles(a)
    cube_step(tile.Core(), ta, _tiles(b), _tiles(c), ("a_mat", "b_mat", "acc"), loop=ta.shape[0])


@kernel(AIV)
def add(x, y, z):
    """z = x + y, one 128x128 fp32 tile at a time (the reference's kernel_add: TLOAD src0, src1 ->
    UB; TADD; TSTORE; pipe_sync)."""
    tx, ty, tz = _tiles(x), _tiles(y), _tiles(z)
    co = tile.Core()
    src0 = co.tile(UB, (TILE, TILE), F32, name="src0")
    src1 = co.tile(UB, (TILE, TILE), F32, name="src1")
    dst = co.tile(UB, (TILE, TILE), F32, name="dst")
    with co.loop(tx.shape[0]):
        tile.load(src0, tx)
        tile.load(src1, ty)
        tile.add(dst, src0, src1)
        tile.store(tz, dst)
        tile.barrier()


def orchestrate(rt: Any, t: dict, params: dict[str, Any], variant: str = "default") -> dict:
    batch, m, n = params["batch"], params["M"], params["N"]
    mm_batch, add_batch = params["matmul_batch"], params["add_batch"]
    # a remainder that does not fill a group is not submitted (integer division, as the reference)
    mm_groups = batch * m // mm_batch
    add_groups = batch * n // add_batch
    mm_len, add_len = mm_batch * TILE_ELEMS, add_batch * TILE_ELEMS
    for g in range(max(mm_groups, add_groups)):
        if g < mm_groups:
            shape, off = (mm_len,), (g * mm_len,)
            rt.submit(matmul, In(t["A"].view(shape, off)), In(t["B"].view(shape, off)), Out(t["C"].view(shape, off)))
        if g < add_groups:
            shape, off = (add_len,), (g * add_len,)
            rt.submit(add, In(t["X"].view(shape, off)), In(t["Y"].view(shape, off)), Out(t["Z"].view(shape, off)))
    return {"matmul_groups": mm_groups, "add_groups": add_groups}


def _build(params: dict[str, Any], seed: int, alloc: Alloc) -> dict[str, np.ndarray]:
    mm = params["batch"] * params["M"] * TILE_ELEMS
    ad = params["batch"] * params["N"] * TILE_ELEMS
    arrays = {k: alloc((mm,), np.float32) for k in "ABC"} | {k: alloc((ad,), np.float32) for k in "XYZ"}
    for k in "ABXY":
        # the reference's randn * 0.01, in place, on the device's cores (Case1: 4 x 125 MiB)
        fill(arrays[k], normal(0.0, 0.01), seed, k, alloc)
    arrays["C"][...] = 0
    arrays["Z"][...] = 0
    return arrays


def golden(before: dict[str, np.ndarray], params: dict[str, Any], variant: str = "default") -> dict[str, np.ndarray]:
    c = np.matmul(_tiles(before["A"]), _tiles(before["B"]))
    return {"C": c.reshape(-1), "Z": before["X"] + before["Y"]}


WORKLOAD = Workload(
    name="alternating_matmul_add",
    summary="independent AIC matmul groups and AIV add groups, interleaved, on 1-D views of 128x128 tiles",
    features=("AIC", "AIV", "views", "independent tasks"),
    # smallest first; Case2 (768 tasks) is smaller than Case1 (1,000)
    cases={"default": {"batch": 1, "M": 1, "N": 1, "matmul_batch": 1, "add_batch": 1},
           "Case2": {"batch": 512, "M": 2, "N": 5, "matmul_batch": 4, "add_batch": 5},
           "Case1": {"batch": 500, "M": 4, "N": 4, "matmul_batch": 4, "add_batch": 4}},
    build=_build, outputs=("C", "Z"), orchestrate=orchestrate, golden=golden,
    tolerance=(1e-3, 1e-3), kernels=(__name__,),
    # the reference lists only the a2a3 platform for all three (Case1/Case2 also manual there)
    hardware_only=frozenset({"default", "Case1", "Case2"}),
    # Case1: 6 x 125 MiB of tensors, Case2: 3 x 64 + 3 x 160 MiB
    big=frozenset({"Case1", "Case2"}), plan_inputs=(),          # the orchestration reads no array
    reference="tests/st/a2a3/tensormap_and_ringbuffer/alternating_matmul_add")
