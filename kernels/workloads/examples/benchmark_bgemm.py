"""Batched tiled GEMM, C = sum over k of A[k] @ B[k] (the reference's benchmark_bgemm shape sweep).

    A, B    [groups, grid_k, loop, tile, tile] f32, flat     groups = matmul_add_task_num // grid_k
    C       [groups * loop, tile, tile] f32, flat, zeros (an accumulator: InOut)
    config  [tile, grid_k, groups, loop] int64, read by the orchestration and by every kernel

    for each group g, in its own scope:            C[g]: the group's loop tiles of C
      for k in 0..grid_k-1:
        P = gemm(A[g, k], B[g, k])      AIC, P a runtime tensor of loop tiles
        add(InOut C[g], In P)           AIV, C[g] += P tile by tile

       A[g,0] B[g,0]      A[g,1] B[g,1]
          └─gemm─▶ P0        └─gemm─▶ P1
                   └──add──▶ C[g] ──add──▶ C[g]     (the adds of a group chain through C[g])

Groups touch disjoint bytes and run side by side; the gemms of a group are independent, its adds
form a grid_k-long chain. The axes the cases move: task count (matmul_add_task_num), tile edge
(incore_data_size), tiles per task (incore_loop), chain depth (grid_k).

The kernels are the reference's (kernels/aic/kernel_gemm_tile.cpp, kernels/aiv/kernel_tile_add.cpp)
on the tile layer: per tile, gemm TLOADs A and B to L1, TMOVs them to L0A/L0B, TMATMULs (fp32)
and TSTOREs P; tile_add TLOADs C and P to UB, TADDs, TSTOREs C; a pipe_sync closes every tile.
A task's ``loop`` tiles are one batched loop (kernels/tile.py).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from kernels import AIC, AIV, In, InOut, Out, kernel, tile
from kernels.tile import F32, UB
from kernels.workloads.cube import cube_step
from kernels.workloads.fill import fill, normal
from kernels.workloads.workload import Alloc, Workload


def _tiles(x: np.ndarray, config: np.ndarray) -> np.ndarray:
    tile, loop = int(config[0]), int(config[3])
    # copy=False: a silent copy would make ``out=`` write into a temporary
    return np.reshape(x, (loop, tile, tile), copy=False)


@kernel(AIC)
def gemm(a: np.ndarray, b: np.ndarray, p: np.ndarray, config: np.ndarray) -> None:
    """P[i] = A[i] @ B[i] for each of the task's ``loop`` tiles (fp32)."""
    cube_step(tile.Core(), _tiles(a, config), _tiles(b, config), _tiles(p, config), ("a", "b", "p"),
              loop=int(config[3]))


@kernel(AIV)
def tile_add(c: np.ndarray, p: np.ndarray, config: np.ndarray) -> None:
    """C[i] += P[i] for each of the task's ``loop`` tiles."""
    t, loop = int(config[0]), int(config[3])
    core = tile.Core()
    ct, pt, out = (core.tile(UB, (t, t), F32, name=n) for n in ("c", "p", "out"))
    with core.loop(loop):
        tile.load(ct, _tiles(c, config))
        tile.load(pt, _tiles(p, config))
        tile.add(out, ct, pt)
        tile.store(_tiles(c, config), out)
        tile.barrier()


def orchestrate(rt: Any, t: dict, params: dict[str, Any], variant: str = "default") -> dict:
    # the shape of the graph comes from the config tensor in GM, as the reference's orchestrator reads it
    tile, grid_k, groups, loop = (int(v) for v in rt.read(t["config"]))
    span = loop * tile * tile                      # elements of one group's (or one k's) tiles
    a, b, c, cfg = t["A"], t["B"], t["C"], In(t["config"])
    for g in range(groups):
        with rt.scope():
            acc = InOut(c.view((span,), (g * span,)))
            for k in range(grid_k):
                off = ((g * grid_k + k) * span,)
                p = rt.make_tensor((span,), np.float32)
                rt.submit(gemm, In(a.view((span,), off)), In(b.view((span,), off)), Out(p), cfg)
                rt.submit(tile_add, acc, In(p), cfg)
    return {"groups": groups}


def _dims(params: dict[str, Any]) -> tuple[int, int, int, int]:
    grid_k = params["grid_k"]
    return params["incore_data_size"], grid_k, params["matmul_add_task_num"] // grid_k, params["incore_loop"]


def _build(params: dict[str, Any], seed: int, alloc: Alloc) -> dict[str, np.ndarray]:
    tile, grid_k, groups, loop = _dims(params)
    n_ab = groups * grid_k * loop * tile * tile
    arrays = {"A": alloc((n_ab,), np.float32), "B": alloc((n_ab,), np.float32),
              "C": alloc((groups * loop * tile * tile,), np.float32), "config": alloc((4,), np.int64)}
    for k in "AB":
        # the reference's randn * 0.01, in place, on the device's cores (Case0: 2 x 156 MiB)
        fill(arrays[k], normal(0.0, 0.01), seed, k, alloc)
    arrays["C"][...] = 0
    arrays["config"][...] = (tile, grid_k, groups, loop)
    return arrays


def golden(before: dict[str, np.ndarray], params: dict[str, Any], variant: str = "default") -> dict[str, np.ndarray]:
    tile, grid_k, groups, loop = _dims(params)
    shape = (groups, grid_k, loop, tile, tile)
    prod = np.matmul(before["A"].reshape(shape), before["B"].reshape(shape))
    return {"C": before["C"] + prod.sum(axis=1).reshape(-1)}


def _case(tasks: int, tile: int, loop: int, grid_k: int) -> dict[str, int]:
    return {"matmul_add_task_num": tasks, "incore_data_size": tile, "incore_loop": loop, "grid_k": grid_k}


WORKLOAD = Workload(
    name="benchmark_bgemm",
    summary="C = sum_k A[k] @ B[k] by groups: AIC gemm into a runtime tile run, AIV add into C (InOut chain)",
    features=("runtime tensors", "scopes", "views", "InOut accumulation chains", "config read by the orchestration"),
    # smallest first (the reference lists Case0 first: its default run)
    cases={"Bgemm64": _case(32, 64, 1, 4), "Case1": _case(64, 128, 4, 2), "Case4": _case(64, 128, 4, 4),
           "Case3": _case(64, 128, 16, 2), "Case2": _case(256, 128, 4, 2), "Case0": _case(500, 128, 4, 2)},
    build=_build, outputs=("C",), orchestrate=orchestrate, golden=golden,
    tolerance=(1e-3, 1e-3), kernels=(__name__,),
    # Bgemm64 is manual on a2a3sim only: run by default on hardware, not in the simulator
    hardware_only=frozenset({"Bgemm64"}),
    # tensors: Case0 312 MiB, Case2 and Case3 160 MiB each
    big=frozenset({"Case0", "Case2", "Case3"}), plan_inputs=("config",),
    reference="examples/a2a3/tensormap_and_ringbuffer/benchmark_bgemm")
