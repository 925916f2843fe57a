"""The counted a2a3 time of every catalogue kernel written on the tile layer, at the shapes its
workloads' full-size cases give it: ``python -m kernels.workloads.kernel_times`` (a markdown table).

    for each workload, case, kernel: one call on random data of the case's shapes under
    tile.count ──▶ modelled µs [band], busy kcycles per pipe, GM bytes read / written

The shapes are a task's, not the case's whole inputs (a cache of a few dozen blocks stands for the
case's; a kernel reads only the blocks it is given). Kernels that stay plain numpy (the scene
tests', mixed_shapes') have no counts: the predictor prices them by their law or the roofline.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import ml_dtypes
import numpy as np

from kernels import tile
from kernels.workloads.examples import benchmark_bgemm, mixed_example, tiled_matmul, vector_chain
from kernels.workloads.paged_attention import batch, per_block
from kernels.workloads.paged_attention import kernels as pa

__all__ = ["rows", "table"]

BF16 = np.dtype(ml_dtypes.bfloat16)
F32 = np.dtype(np.float32)
# paged-attention cases: (q_tile, head_dim, block_size); every case's context is 64 blocks or more
PA_CASES = {"Case1": (16, 128, 128), "Case2": (64, 128, 64), "Case3": (64, 256, 64)}
UNROLL = 64                     # KV blocks per task of paged_attention_unroll(_4dims)
IN_CORE_BATCH = batch.IN_CORE_BATCH

Row = tuple[str, str, str, str, Callable, tuple]


def _paged_attention(rng: np.random.Generator) -> Iterator[Row]:
    def r(*shape: int, dt: Any = F32) -> np.ndarray:
        return rng.uniform(-0.5, 0.5, shape).astype(dt)

    for case, (qt, d, bs) in PA_CASES.items():
        blocks = UNROLL + 16
        kc, vc, q = r(blocks, bs, 1, d, dt=BF16), r(blocks, bs, 1, d, dt=BF16), r(qt, d, dt=BF16)
        mi, li, oi = np.zeros(qt, F32), np.ones(qt, F32), np.zeros((qt, d), F32)
        acc = (np.zeros(qt, F32), np.ones(qt, F32), np.zeros((qt, d), F32))
        out = np.zeros((qt, d), F32)
        one = f"q_tile {qt}, D {d}, block {bs}; 1 block"
        sij1, pij1 = np.zeros((qt, bs), F32), np.zeros((qt, bs), BF16)
        yield "paged_attention", case, "qk_block", one, per_block.qk_block, (q, kc, sij1, np.array([3]))
        yield "paged_attention", case, "sf_block", one, per_block.sf_block, (r(qt, bs), pij1, mi, li, 1.0, bs, 1)
        yield "paged_attention", case, "pv_block", one, per_block.pv_block, (pij1, vc, oi, np.array([3]))
        yield "paged_attention", case, "up (accumulate)", one, pa.up, (mi, li, oi, *acc, out, 0, 0)
        ids = rng.permutation(blocks)[:UNROLL]
        sij, pij = np.zeros((qt, UNROLL * bs), F32), np.zeros((qt, UNROLL * bs), BF16)
        many = f"q_tile {qt}, D {d}, block {bs}; {UNROLL} blocks"
        s = r(qt, UNROLL * bs)
        yield "paged_attention_unroll", case, "qk", many, pa.qk, (q, kc, sij, ids)
        yield "paged_attention_unroll", case, "sf", many, pa.sf, (s, pij, mi, li, 1.0, bs, UNROLL)
        yield "paged_attention_unroll", case, "pv", many, pa.pv, (pij, vc, oi, ids)
        yield "paged_attention_unroll", case, "up (first and last)", many, pa.up, (mi, li, oi, *acc, out, 1, 1)
        yield "paged_attention_unroll", case, "up (accumulate)", many, pa.up, (mi, li, oi, *acc, out, 0, 0)
        yield "paged_attention_unroll", case, "hub", many, pa.hub, acc
        yield "paged_attention_unroll_4dims", case, "qk_4dims", many, pa.qk_4dims, (q, kc, sij, ids)
        yield "paged_attention_unroll_4dims", case, "sf_4dims", many, pa.sf_4dims, (s, pij, mi, li, 1.0, bs, UNROLL)
        bc = IN_CORE_BATCH
        rows = bc * qt
        query = r(bc, qt, d, dt=BF16)
        table = rng.integers(0, blocks, (bc, 4)).astype(np.int32)
        ctx = np.full(bc, 4 * bs, np.int32)
        sb, pb = np.zeros((rows, bs), F32), np.zeros((rows, bs), BF16)
        m, lsum, o = np.zeros(rows, F32), np.ones(rows, F32), np.zeros((rows, d), F32)
        accs = (np.zeros(rows, F32), np.ones(rows, F32), np.zeros((rows, d), F32))
        box = np.zeros((bc, qt, d), F32)
        per = f"{bc} sequences x (q_tile {qt}, D {d}, block {bs})"
        yield "batch_paged_attention", case, "qk_batch", per, batch.qk_batch, (query, kc, table, sb, bc, 1, 0, 0)
        yield "batch_paged_attention", case, "sf_batch", per, batch.sf_batch, (r(rows, bs), ctx, pb, m, lsum, 1.0,
                                                                               bc, 1, 0)
        yield "batch_paged_attention", case, "pv_batch", per, batch.pv_batch, (pb, vc, table, o, bc, 1, 0)
        yield "batch_paged_attention", case, "up_batch (accumulate)", per, batch.up_batch, (m, lsum, o, *accs, box,
                                                                                            0, 0)


def _examples(rng: np.random.Generator) -> Iterator[Row]:
    def r(*shape: int) -> np.ndarray:
        return rng.standard_normal(shape).astype(F32) * 0.01

    cases = benchmark_bgemm.WORKLOAD.cases
    for case in ("Case0", "Case3"):
        p = cases[case]
        t, loop = p["incore_data_size"], p["incore_loop"]
        cfg = np.array([t, p["grid_k"], p["matmul_add_task_num"] // p["grid_k"], loop])
        a, b, out = r(loop * t * t), r(loop * t * t), np.zeros(loop * t * t, F32)
        shapes = f"{loop} tiles {t}x{t} fp32"
        yield "benchmark_bgemm", case, "gemm", shapes, benchmark_bgemm.gemm, (a, b, out, cfg)
        yield "benchmark_bgemm", case, "tile_add", shapes, benchmark_bgemm.tile_add, (out.copy(), a, cfg)
    n = vector_chain.WORKLOAD.cases["Default"]["tile"]
    x, y = r(n), np.zeros(n, F32)
    for name, fn, args in (("add", vector_chain.add, (x, x, y)), ("add_scalar", vector_chain.add_scalar, (x, y, 1.0)),
                           ("mul", vector_chain.mul, (x, x, y))):
        yield "vector_chain", "Default", name, f"{n} fp32", fn, args
    t = tiled_matmul.WORKLOAD.cases["Default"]["tile"]
    a, c = r(t, t), np.zeros((t, t), F32)
    yield "tiled_matmul", "Default", "matmul", f"{t}x{t}x{t} fp32", tiled_matmul.matmul, (a, a, c)
    yield "tiled_matmul", "Default", "copy", f"{t}x{t} fp32", tiled_matmul.copy, (a, c)
    yield "tiled_matmul", "Default", "accumulate", f"{t}x{t} fp32", tiled_matmul.accumulate, (a, c.copy())
    tt, o = r(mixed_example.TILE_ELEMS), np.zeros(mixed_example.TILE_ELEMS, F32)
    edge = mixed_example.TILE
    yield "mixed_example", "case1", "matmul", f"{edge}x{edge}x{edge} fp32", mixed_example.matmul, (tt, tt, o)
    yield "mixed_example", "case1", "add", f"{edge}x{edge} fp32", mixed_example.add_standalone, (tt, tt, o)
    yield "mixed_example", "case1", "mul", f"{edge}x{edge} fp32", mixed_example.mul_second, (None,) * 3 + (tt, tt, o)


def rows(seed: int = 0) -> list[tuple[str, str, str, str, tile.Counts]]:
    """(workload, case, kernel, shapes, Counts) of every catalogue kernel on the tile layer."""
    rng = np.random.default_rng(seed)
    out = []
    for wl, case, name, shapes, fn, args in (*_paged_attention(rng), *_examples(rng)):
        counts = tile.count(fn, *args)
        assert counts is not None, name
        out.append((wl, case, name, shapes, counts))
    return out


def table(seed: int = 0) -> str:
    """``rows`` as a markdown table."""
    lines = ["| workload | case | kernel | a task's shapes | counted µs [band] | MTE2 / MTE3 / CUBE / VECTOR "
             "kcycles | GM read / written KiB |", "|---|---|---|---|---|---|---|"]
    for wl, case, name, shapes, c in rows(seed):
        lines.append(f"| {wl} | {case} | {name} | {shapes} | {c.us:.1f} [{c.us_low:.1f}, {c.us_high:.1f}] | "
                     f"{c.mte2 / 1e3:.1f} / {c.mte3 / 1e3:.1f} / {c.cube / 1e3:.1f} / {c.vector / 1e3:.1f} | "
                     f"{c.gm_read / 1024:.0f} / {c.gm_write / 1024:.0f} |")
    return "\n".join(lines)


if __name__ == "__main__":
    print(table())
