"""(a + b + 1) * (a + b + 2), element-wise, through runtime tensors (the reference's vector example).

    a, b ──add──▶ c ──add_scalar(+1)──▶ d ─┐
                  └──add_scalar(+2)──▶ e ─┴─mul──▶ out        c, d, e: runtime tensors (heap ring)

Tiled in ``tile`` elements so independent tiles run on different vector cores.
"""

from __future__ import annotations

import numpy as np

from kernels import AIV, In, Out, kernel


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


def main() -> None:
    from host import Device, Platform
    rng = np.random.default_rng(0)
    a = rng.standard_normal(1 << 16).astype(np.float32)
    b = rng.standard_normal(1 << 16).astype(np.float32)
    with Device(Platform(blocks=4), kernels=[__name__]) as dev:
        out = dev.empty(a.shape, np.float32)
        dev.run(orchestrate, dev.to_device(a), dev.to_device(b), out)
        ok = np.allclose(dev.to_host(out), reference(a, b), rtol=1e-5)
        print(dev.stats())
    print("vector_chain:", "PASS" if ok else "FAIL")

if __name__ == "__main__":
    main()
