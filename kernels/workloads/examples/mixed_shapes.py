"""One task of each of the five core shapes, each recording where its parts ran.

    shape        parts                 what the parts do
    AIC          aic                   row 0 of its tile
    AIV          aiv                   row 0
    AIV_X2       aiv0, aiv1            rows 1 and 2 (each vector core writes its own row)
    AIC_AIV      aic, aiv              AIC row 0, AIV row 1
    AIC_AIV_X2   aic, aiv0, aiv1       AIC row 0, AIVs rows 1 and 2

Every part receives the same arguments (a (3, 4) int64 tile of ``out`` and a tag); it writes
[tag, block, kind (0 AIC / 1 AIV), pid] into its row. Parts of one mixed task must report the
same block, and they start together.
"""

from __future__ import annotations

import os

import numpy as np

from kernels import AIC, AIV, Mixed, Out, core_info, kernel
from kernels.workloads.workload import Alloc, Workload


def _record(out, tag: int, row: int) -> None:
    info = core_info()
    block = info.block if info else -1
    kind = 0 if info is None or info.kind == "AIC" else 1
    out[row] = (tag, block, kind, os.getpid() if info is not None and info.core >= 0 else -1)   # -1: sequential engine


def cube_part(out, tag):
    _record(out, tag, 0)


def vector_part(out, tag):
    info = core_info()
    _record(out, tag, 1 + (info.lane if info else 0))


@kernel(AIC)
def aic_only(out, tag):
    cube_part(out, tag)


@kernel(AIV)
def aiv_only(out, tag):
    _record(out, tag, 0)


aiv_x2 = kernel(Mixed(aiv0=vector_part, aiv1=vector_part), name=f"{__name__}.aiv_x2")
aic_aiv = kernel(Mixed(aic=cube_part, aiv=lambda out, tag: _record(out, tag, 1)), name=f"{__name__}.aic_aiv")
aic_aiv_x2 = kernel(Mixed(aic=cube_part, aiv0=vector_part, aiv1=vector_part), name=f"{__name__}.aic_aiv_x2")

SHAPES = (aic_only, aiv_only, aiv_x2, aic_aiv, aic_aiv_x2)
ROWS = {aic_only: [0], aiv_only: [0], aiv_x2: [1, 2], aic_aiv: [0, 1], aic_aiv_x2: [0, 1, 2]}  # rows written


def orchestrate(rt, out, rounds: int = 1) -> None:
    """``out`` is (rounds * 5, 3, 4) int64: one (3, 4) tile per task."""
    for r in range(rounds):
        for i, k in enumerate(SHAPES):
            t = r * len(SHAPES) + i
            rt.submit(k, Out(out[t]), t)


def check(result: np.ndarray) -> list[str]:
    """Problems found in the recorded placements (empty when every task ran as its shape says)."""
    bad = []
    for t, tile in enumerate(result):
        k = SHAPES[t % len(SHAPES)]
        rows = tile[ROWS[k]]
        if (rows[:, 0] != t).any():
            bad.append(f"task {t} ({k.name}): a part did not run")
        elif len(set(rows[:, 1])) != 1:
            bad.append(f"task {t} ({k.name}): parts ran on different blocks {rows[:, 1]}")
        elif (rows[:, 3] >= 0).all() and len(set(rows[:, 3])) != len(rows):
            bad.append(f"task {t} ({k.name}): two parts ran in one process")
    return bad


def _build(params: dict, seed: int, alloc: Alloc) -> dict:
    out = alloc((params["rounds"] * len(SHAPES), 3, 4), np.int64)
    out[...] = 0
    return {"out": out}


WORKLOAD = Workload(
    name="mixed_shapes", summary="one task of each of the five core shapes, recording where each part ran",
    features=("AIC", "AIV", "AIV_X2", "AIC_AIV", "AIC_AIV_X2", "core_info"),
    cases={"small": {"rounds": 2}, "Default": {"rounds": 10}},
    build=_build, outputs=(),
    orchestrate=lambda rt, t, p, variant: orchestrate(rt, t["out"], p["rounds"]),
    golden=lambda before, p, variant: {},
    check=lambda after, before, p: check(after["out"]), kernels=(__name__,))
