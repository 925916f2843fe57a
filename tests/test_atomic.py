"""Atomic-add stores (issue 21): producers that add into one accumulator at the same time on
different cores -- blocks of one SPMD task, tasks a manual scope leaves unordered -- lose no update.

A plain ``dst += v`` from two processes at once can lose one of them; these kernels add many
times into the same bytes, so without the device's striped locks (device/atomics.py) the sums
come out short. Each test also checks that the adds really overlapped in time, so a pass is not
an artefact of the producers having run one after the other.
"""

from __future__ import annotations

import time

import numpy as np
import pytest

from device.atomics import STRIPE_BYTES, STRIPES, stripes_of
from host import Device, In, InOut, Out, Platform
from kernels import AIC, AIV, atomic_add, core_info, kernel, tile
from kernels.tile import F32, L0A, L0B, L0C, L1, UB

REPEATS = 4000
ADDS = 4000                      # tile-layer atomic stores per task (sums stay below 2**24: exact)


@kernel(AIV)
def add_many(acc, stamps, repeats):
    """Block b adds (b + 1) into every element of ``acc`` ``repeats`` times; its first and last
    add times go to stamps[b]."""
    b = core_info().block_idx if core_info() else 0
    one = np.full(acc.shape, b + 1, acc.dtype)
    stamps[b, 0] = time.monotonic_ns()
    for _ in range(int(repeats)):
        atomic_add(acc, one)
    stamps[b, 1] = time.monotonic_ns()


@kernel(AIV)
def add_tile(acc, part, stamps, task):
    """``acc`` += ``part`` through the tile layer's atomic store, 50 times (one task of many)."""
    c = tile.Core()
    t = c.tile(UB, part.shape, part.dtype)
    tile.load(t, part)
    stamps[task, 0] = time.monotonic_ns()
    for _ in range(ADDS):
        tile.store(acc, t, atomic="add")
    stamps[task, 1] = time.monotonic_ns()


@kernel(AIC)
def matmul_split_k(x, w, acc):
    """Split-K GEMM block: acc (16, N) += x[:, kb] @ w[kb, :] for this block's K slice, stored
    from L0C with an atomic add (the qwen3 projections' pattern)."""
    info = core_info()
    b, n = (info.block_idx, info.block_num) if info else (0, 1)
    k = x.shape[1] // n
    c = tile.Core()
    xl = c.tile(L1, (16, k), x.dtype)
    wl = c.tile(L1, (k, acc.shape[1]), w.dtype)
    a = c.tile(L0A, (16, k), x.dtype)
    bb = c.tile(L0B, (k, acc.shape[1]), w.dtype)
    o = c.tile(L0C, acc.shape, F32)
    tile.load(xl, x[:, b * k:(b + 1) * k])
    tile.load(wl, w[b * k:(b + 1) * k])
    tile.move(a, xl)
    tile.move(bb, wl)
    tile.matmul(o, a, bb)
    tile.store(acc, o, atomic="add")


def _overlapped(stamps: np.ndarray) -> bool:
    """Did any two producers' add windows overlap in time?"""
    iv = sorted((int(s), int(e)) for s, e in stamps if e)
    return any(iv[i + 1][0] < iv[i][1] for i in range(len(iv) - 1))


@pytest.mark.timeout(120)
@pytest.mark.parametrize("dtype", [np.int64, np.int32])
def test_concurrent_spmd_blocks_give_the_exact_integer_sum(dtype):
    blocks = 8
    with Device(Platform(blocks=4), kernels=[add_many]) as dev:
        acc = dev.zeros((16, 64), dtype)
        stamps = dev.zeros((blocks, 2), np.int64)
        for _ in range(3):                               # a busy machine may serialise one run
            dev.host_view(acc)[...] = 0
            dev.run(lambda rt: rt.submit(add_many, InOut(acc), InOut(stamps), REPEATS, blocks=blocks))
            got = dev.to_host(acc)
            assert (got == REPEATS * blocks * (blocks + 1) // 2).all(), np.unique(got)
            if _overlapped(dev.to_host(stamps)):
                break
        else:
            pytest.skip("the producers never ran at the same time on this machine")


@pytest.mark.timeout(120)
def test_unordered_tasks_of_a_manual_scope_add_through_the_tile_layer():
    # Reference semantics: tasks in a manual scope get only their explicit deps, so the 12
    # producers (all after the seed) run concurrently, each adding its part ADDS times.
    n = 12
    rng = np.random.default_rng(0)
    parts = [rng.integers(-10, 10, (16, 32)).astype(np.float32) for _ in range(n)]
    with Device(Platform(blocks=4), kernels=[add_tile], semantics="reference") as dev:
        acc = dev.zeros((16, 32), np.float32)
        stamps = dev.zeros((n, 2), np.int64)
        ps = [dev.to_device(p) for p in parts]

        def orch(rt):
            with rt.scope(manual=True):
                seed = rt.submit_dummy()
                for i in range(n):
                    rt.submit(add_tile, InOut(acc), In(ps[i]), InOut(stamps[i:i + 1]), 0, deps=[seed])

        for _ in range(3):
            dev.host_view(acc)[...] = 0
            dev.run(orch)
            # integer-valued floats below 2**24: every order of the adds gives the same sum exactly
            assert np.array_equal(dev.to_host(acc), ADDS * np.sum(parts, axis=0))
            if _overlapped(dev.to_host(stamps)):
                break
        else:
            pytest.skip("the producers never ran at the same time on this machine")


@pytest.mark.timeout(120)
@pytest.mark.parametrize("inline", [False, True], ids=["device", "inline"])
def test_split_k_gemm_blocks_add_into_one_accumulator(inline):
    rng = np.random.default_rng(1)
    import ml_dtypes
    bf16 = ml_dtypes.bfloat16
    x = rng.standard_normal((16, 512)).astype(bf16)
    w = rng.standard_normal((512, 256)).astype(bf16)
    with Device(Platform(blocks=4), kernels=[matmul_split_k], inline=inline) as dev:
        xd, wd = dev.to_device(x), dev.to_device(w)
        acc = dev.zeros((16, 256), np.float32)
        dev.run(lambda rt: rt.submit(matmul_split_k, In(xd), In(wd), InOut(acc), blocks=8))
        want = x.astype(np.float32) @ w.astype(np.float32)
        np.testing.assert_allclose(dev.to_host(acc), want, rtol=1e-4, atol=1e-3)


def test_atomic_add_refuses_a_read_only_destination():
    a = np.zeros(4, np.float32)
    a.setflags(write=False)
    with pytest.raises(TypeError, match="read-only"):
        atomic_add(a, 1.0)


def test_stripes_of_a_view():
    # a (16, 1024) fp32 column tile of a (16, 17408) matrix: 16 rows, one 4 KiB stripe each
    row = 17408 * 4
    ids = stripes_of(3 * 4096, (16, 1024), (row, 4), 4)
    assert len(ids) == 16 and list(ids) == sorted(ids)
    assert set(ids) == {(3 + r * row // STRIPE_BYTES) % STRIPES for r in range(16)}
    # a contiguous span as long as every stripe takes them all; a flipped view its whole span
    assert stripes_of(0, (STRIPES * STRIPE_BYTES // 4,), (4,), 4) == tuple(range(STRIPES))
    assert stripes_of(4096, (2,), (-4096, ), 4) == (0, 1)
    assert stripes_of(0, (0, 3), (12, 4), 4) == ()


@pytest.mark.timeout(60)
def test_out_and_atomic_in_one_task_is_still_a_plain_task():
    # An atomic add into an Out the same task wrote first is just a store; nothing else changes
    @kernel(AIV)
    def init_then_add(out):
        out[...] = 1
        atomic_add(out, np.int64(2))

    with Device(Platform(blocks=1), kernels=[init_then_add]) as dev:
        o = dev.empty((8,), np.int64)
        dev.run(lambda rt: rt.submit(init_then_add, Out(o)))
        assert (dev.to_host(o) == 3).all()
