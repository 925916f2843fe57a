"""(a + b + 1) * (a + b + 2), element-wise, through runtime tensors (the reference's vector example).

    a, b ──add──▶ c ──add_scalar(+1)──▶ d ─┐
                  └──add_scalar(+2)──▶ e ─┴─mul──▶ out        c, d, e: runtime tensors (heap ring)

Tiled in ``tile`` elements so independent tiles run on different vector cores.
"""

from __future__ import annotations

import numpy as np

from kernels import AIV, In, Out, kernel
from kernels.workloads.workload import Alloc, Workload


@kernel(AIV)
def add(a, b, out):
    np.add(a, b, out=out)


@kernel(AIV)
def add_scalar(x, out, s):
    np.add(x, s, out=out)


@kernel(AIV)
def mul(x, y, out):
    np.multiply(x, y, out=out)


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
