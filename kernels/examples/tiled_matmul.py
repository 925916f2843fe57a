"""C = A @ B in tiles: AIC matmuls produce partial products, AIV adds accumulate them.

    for each output tile (i, j):
        for k:  P = matmul(A[i, k], B[k, j])   AIC, P a runtime tensor
                C[i, j] (= or +=) P            AIV: copy on the first k (Out), add after (InOut)

The adds of one tile form a chain through C[i, j] (write after write); tiles are independent, so
they spread over the cores. Disjoint tiles of C are views of one host tensor: dependencies follow
the bytes each view covers, so they do not serialize.
"""

from __future__ import annotations

import numpy as np

from kernels import AIC, AIV, In, InOut, Out, kernel


@kernel(AIC)
def matmul(a, b, out):
    np.matmul(a, b, out=out)


@kernel(AIV)
def copy(x, out):
    np.copyto(out, x)


@kernel(AIV)
def accumulate(x, acc):
    np.add(acc, x, out=acc)


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


def main() -> None:
    from host import Device, Platform
    rng = np.random.default_rng(0)
    a = rng.standard_normal((256, 384)).astype(np.float32)
    b = rng.standard_normal((384, 192)).astype(np.float32)
    with Device(Platform(blocks=4), kernels=[__name__]) as dev:
        c = dev.empty((256, 192), np.float32)
        dev.run(orchestrate, dev.to_device(a), dev.to_device(b), c)
        ok = np.allclose(dev.to_host(c), a @ b, rtol=1e-4, atol=1e-4)
        print(dev.stats())
    print("tiled_matmul:", "PASS" if ok else "FAIL")


if __name__ == "__main__":
    main()
