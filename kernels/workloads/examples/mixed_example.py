"""All five core shapes every iteration, on 128x128 f32 tiles (the reference's mixed_example).

    inputs  A, B (the matmul operands), D, E (add), G, H (mul): one tile each, read by every task
    outputs C, F, I, J, K, L, M, N, O: num_iters tiles each; iteration i writes tile i

    per iteration, in one scope:
      1 AIC_AIV_X2  aic: C = A @ B      aiv0: F = D + E     aiv1: I = G * H
      2 AIC         J = A @ B
      3 AIV         K = D + E
      4 AIV_X2      aiv0: L = D + E     aiv1: M = G * H
      5 AIC_AIV     aic: N = A @ B      aiv: O = D + E

Every part of a mixed task receives the task's whole argument list and picks its own slice, as
the reference's kernels index one shared args[]: the matmul reads args 0..2, the mixed add 3..5,
the mixed mul 6..8; the AIV add reads 0..2 and the AIV_X2 mul 3..5. The tasks share only inputs,
so nothing orders them.

The parts are the reference's kernels on the tile layer: the matmul TLOADs A and B (128 x 128
fp32) to L1, TMOVs them to L0A/L0B, TMATMULs and TSTOREs; the add and the mul TLOAD their two
tiles to UB, TADD / TMUL and TSTORE (three 64 KiB tiles: all of UB).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from kernels import AIC, AIV, In, Mixed, Out, kernel, tile
from kernels.tile import F32, UB
from kernels.workloads.cube import cube_step
from kernels.workloads.workload import Alloc, Workload

TILE = 128
TILE_ELEMS = TILE * TILE
INPUTS = ("A", "B", "D", "E", "G", "H")
OUTPUTS = ("C", "F", "I", "J", "K", "L", "M", "N", "O")


def _tile(x: np.ndarray) -> np.ndarray:
    # copy=False: a silent copy would make a store write into a temporary
    return np.reshape(x, (TILE, TILE), copy=False)


def _matmul(a: np.ndarray, b: np.ndarray, c: np.ndarray) -> None:
    """c = a @ b on one 128 x 128 fp32 tile (the reference's kernel_matmul)."""
    cube_step(tile.Core("matmul"), _tile(a), _tile(b), _tile(c), ("a", "b", "c"))


def _elementwise(op: Any, a: np.ndarray, b: np.ndarray, out: np.ndarray) -> None:
    """out = a (op) b on one 128 x 128 fp32 tile (the reference's kernel_add / kernel_mul)."""
    core = tile.Core(op.__name__)
    ta, tb, to = (core.tile(UB, (TILE, TILE), F32, name=n) for n in ("src0", "src1", "dst"))
    tile.load(ta, _tile(a))
    tile.load(tb, _tile(b))
    op(to, ta, tb)
    tile.store(_tile(out), to)


@kernel(AIC)
def matmul(*args):
    _matmul(*args[0:3])


@kernel(AIV)
def add_standalone(*args):
    _elementwise(tile.add, *args[0:3])


def add_second(*args):
    """The add as the vector part of a matmul task: its operands follow the matmul's."""
    _elementwise(tile.add, *args[3:6])


def mul_third(*args):
    _elementwise(tile.mul, *args[6:9])


def mul_second(*args):
    """The mul beside the standalone add in an AIV_X2 task."""
    _elementwise(tile.mul, *args[3:6])


matmul_add_mul = kernel(Mixed(aic=matmul, aiv0=add_second, aiv1=mul_third), name=f"{__name__}.matmul_add_mul")
add_mul = kernel(Mixed(aiv0=add_standalone, aiv1=mul_second), name=f"{__name__}.add_mul")
matmul_add = kernel(Mixed(aic=matmul, aiv0=add_second), name=f"{__name__}.matmul_add")


def orchestrate(rt: Any, t: dict, params: dict[str, Any], variant: str = "default") -> dict:
    # the iteration count follows from the outputs' length, as in the reference
    iters = t["C"].shape[0] // TILE_ELEMS
    a, b, d, e, g, h = (In(t[k]) for k in INPUTS)
    for i in range(iters):
        with rt.scope():
            o = {k: Out(t[k].view((TILE_ELEMS,), (i * TILE_ELEMS,))) for k in OUTPUTS}
            rt.submit(matmul_add_mul, a, b, o["C"], d, e, o["F"], g, h, o["I"])
            rt.submit(matmul, a, b, o["J"])
            rt.submit(add_standalone, d, e, o["K"])
            rt.submit(add_mul, d, e, o["L"], g, h, o["M"])
            rt.submit(matmul_add, a, b, o["N"], d, e, o["O"])
    return {"iterations": iters}


def _build(params: dict[str, Any], seed: int, alloc: Alloc) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    arrays = {}
    for k in INPUTS:
        arrays[k] = alloc((TILE_ELEMS,), np.float32)
        arrays[k][...] = rng.standard_normal(TILE_ELEMS, dtype=np.float32) * 0.01
    for k in OUTPUTS:
        arrays[k] = alloc((params["num_iters"] * TILE_ELEMS,), np.float32)
        arrays[k][...] = 0
    return arrays


def golden(before: dict[str, np.ndarray], params: dict[str, Any], variant: str = "default") -> dict[str, np.ndarray]:
    n = params["num_iters"]
    prod = (before["A"].reshape(TILE, TILE) @ before["B"].reshape(TILE, TILE)).reshape(-1)
    total = before["D"] + before["E"]
    scaled = before["G"] * before["H"]
    want = {k: np.tile(prod, n) for k in "CJN"}
    want |= {k: np.tile(total, n) for k in "FKLO"}
    want |= {k: np.tile(scaled, n) for k in "IM"}
    return want


WORKLOAD = Workload(
    name="mixed_example",
    summary="per iteration 5 tasks, one of each core shape: matmul/add/mul parts on shared arguments",
    features=("AIC", "AIV", "AIV_X2", "AIC_AIV", "AIC_AIV_X2", "shared args of mixed parts", "scopes", "views"),
    # smallest first; case2 is manual in the reference (on both platforms), case1 its default
    cases={"case2": {"num_iters": 1}, "case1": {"num_iters": 4}},
    build=_build, outputs=OUTPUTS, orchestrate=orchestrate, golden=golden,
    tolerance=(1e-3, 1e-3), kernels=(__name__,),
    reference="tests/st/a2a3/tensormap_and_ringbuffer/mixed_example")
