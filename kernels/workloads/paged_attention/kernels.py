"""Decode paged-attention kernels: QK, SF, PV, UP (and HUB), written on the tile layer.

One group is (sequence, head tile of ``q_tile`` query heads); it walks the sequence's KV blocks in
chunks of ``n`` blocks (see ``tiling.chunks``). ``T = n * block_size`` tokens per chunk. Per chunk:

    qi (q_tile, D) bf16 ──QK(AIC)──▶ sij (q_tile, T) fp32      raw scores qi·Kᵀ, K gathered by block_ids
    sij ──SF(AIV)──▶ pij (q_tile, T) bf16, mi, li (q_tile,) fp32
                          mi = rowmax(s·scale) over valid tokens, p = bf16(exp(s·scale − mi)),
                          li = rowsum of the *bf16-rounded* p
    pij ──PV(AIC)──▶ oi_new (q_tile, D) fp32                   p·V, V gathered by the same block_ids
    (mi, li, oi_new) ──UP(AIV)──▶ accumulators (mi_acc, li_acc, oi_acc) ──▶ out tile on the last chunk

Signatures (tensors, then scalars; the orchestration submits them in this order):

    qk(qi, key_cache, sij, block_ids)                              AIC   block_ids: int array (n,)
    sf(sij, pij, mi, li, scale, valid_len_last, n_blocks)          AIV
    pv(pij, value_cache, oi_new, block_ids)                        AIC
    up(mi, li, oi_new, mi_acc, li_acc, oi_acc, out, is_first, is_last)   AIV
    hub(mi_acc, li_acc, oi_acc)                                    AIV

UP runs the online-softmax (FlashAttention) recurrence in fp32. On the first chunk it *initialises*
the accumulators from (mi, li, oi_new) without reading them, so they may start as garbage — that is
what lets the ``first_output`` orchestration drop the HUB task. HUB (zero-fill) is kept for the
``hub`` orchestration; the results are the same either way.

Written on the tile layer (kernels/tile.py) as the reference's paged_attention_unroll kernels
are written (tests/st/a2a3/tensormap_and_ringbuffer/paged_attention_unroll/kernels in
hw-native-sys/simpler): QK and PV walk the blocks TLOAD -> TMOV -> TMATMUL (double-buffered, QK
storing each block's scores, PV accumulating in L0C), SF makes two passes (row max, then p and its
bf16 row sum), UP is the online update on (1, q_tile) rows and (q_tile, D) tiles. Each loop over
the n blocks runs as one batched op per instruction; ``tile.count(qk, ...)`` gives a call's cycles
per pipe, bytes and modelled a2a3 time (Case1 shapes, 64 blocks: QK 58.3, SF 57.5, PV 54.8, UP
4.0 us against the published 55 / 61 / 58 / ~4; see kernels/a2a3.py for what was fitted).

Layout note: the reference stores sij/pij as n stacked (q_tile, block_size) tiles; here they are
the logical row-major (q_tile, n*block_size) matrices (column ``j*block_size + t`` = token t of
block j; ``tile.col_blocks`` gives block j's tile). Only these kernels read them, so the choice is
internal.

Calling convention (registry): tensors first in submit order, then scalars; every output is written
in place into the array given (they are views into device memory), never rebound. Matmuls convert
bf16 to fp32 once (the cube's tiles hold fp32) and accumulate in fp32.

Timings on the emulator (median µs per call, one BLAS thread, each call on a random group of the
case so K/V blocks come cold from the whole cache; ``OPENBLAS_NUM_THREADS=1 python -m
kernels.workloads.paged_attention.bench Case1``; 2-core x86 VM shared with other jobs, so +-10 %):
before (the plain numpy kernels of ab37d1c) -> on the tile layer

    case   q_tile x T x D      QK           SF          PV           UP first+last / accumulate   HUB
    Case1  16 x 8192 x 128     878 -> 805   238 -> 270  823 -> 823   5 -> 16 / 9 -> 47           3 -> 13
    Case2  64 x 4096 x 128     832 -> 863   495 -> 575  920 -> 914   8 -> 21 / 13 -> 54          5 -> 15
    Case3  64 x 4096 x 256    1571 -> 1676  492 -> 591 1638 -> 1698 10 -> 26 / 15 -> 64          6 -> 18

QK and PV are each about half gather+cast of the K/V blocks and half matmul, as before. SF reads
sij twice (the reference's two passes) and rounds p with an integer-op cast (bit-identical to
ml_dtypes, ~2x faster). The small kernels pay the layer's Python cost per instruction (~0.5 us):
UP, HUB and one-block tasks (unroll 1) are several times slower than the fused numpy they replace,
which the unrolled workloads do not notice (one UP per 64 blocks) and the one-block-per-task
paged_attention workload does.
"""

from __future__ import annotations

import contextlib

import ml_dtypes
import numpy as np

from kernels import AIC, AIV, kernel, tile
from kernels.tile import F32, L0A, L0B, L0C, L1, MTE2, MTE3, UB, VECTOR
from kernels.workloads.paged_attention import laws

__all__ = ["BF16", "CUBE_SCRATCH", "hub", "kv_blocks", "pv", "qk", "qk_4dims", "sf", "sf_4dims",
           "sf_step", "sf_tiles", "up"]

BF16 = np.dtype(ml_dtypes.bfloat16)

# QK and PV run one at a time on a cube core: their tiles' values share one scratch memory (the
# K and V blocks widened to fp32 are 4 MiB each at Case1)
CUBE_SCRATCH = "paged_attention.aic"


def _block_ids(block_ids: np.ndarray) -> np.ndarray:
    return np.asarray(block_ids).reshape(-1)


def kv_blocks(cache: np.ndarray) -> np.ndarray:
    """The (blocks, block_size, D) view of a (blocks, block_size, 1, D) K or V cache."""
    if cache.shape[2] != 1:
        raise ValueError(f"paged attention kernels support kv_heads == 1, cache has shape {cache.shape}")
    return cache[:, :, 0, :]


def sf_tiles(c: tile.Core, rows: int, cols: int, p_dtype: np.dtype) -> tuple[tile.Tile, ...]:
    """The one-block softmax's UB tiles: s and p (fp32), the row reductions' scratch (held, as on
    the chip), the row max and sum columns, p in ``p_dtype`` -- returned as (s, p, max, sum, p16)."""
    s = c.tile(UB, (rows, cols), F32, name="sij")
    p = c.tile(UB, (rows, cols), F32, name="pij")
    c.tile(UB, (rows, cols), F32, name="tmp")
    row_max = c.tile(UB, (rows, 1), F32, name="max")
    row_sum = c.tile(UB, (rows, 1), F32, name="sum")
    return s, p, row_max, row_sum, c.tile(UB, (rows, cols), p_dtype, name="pij_bf16")


def sf_step(tiles: tuple[tile.Tile, ...], sij: np.ndarray, pij: np.ndarray, mi: np.ndarray, li: np.ndarray,
            scale: float, valid: int | np.ndarray, loop: int = 0, index: np.ndarray | None = None) -> None:
    """The softmax of one block of scores as the reference's one-block SF kernels compute it: TLOAD
    s, TFILLPAD past the ``valid`` tokens (-inf: exp gives 0), TMULS scale, TROWMAX, TROWEXPANDSUB,
    TEXP, TCVT to p's dtype and back, TROWSUM of the rounded p, TSTORE p, max, sum. ``loop`` > 0:
    that many blocks in one ``c.loop`` (``valid`` one length each, ``index`` picking the rows of
    every argument), each closed by a pipe_barrier(PIPE_ALL)."""
    s, p, row_max, row_sum, p16 = tiles
    with s.core.loop(loop) if loop else contextlib.nullcontext():
        tile.load(s, sij, index=index)
        if loop or valid < s.shape[1]:
            tile.fill_pad(s, valid, -np.inf)
        tile.muls(s, s, scale)
        tile.row_max(row_max, s)
        tile.row_expand_sub(p, s, row_max)
        tile.exp(p, p)
        tile.cast(p16, p)
        tile.cast(p, p16)
        tile.row_sum(row_sum, p)
        tile.store(pij, p16, index=index)
        tile.store(mi, row_max, index=index)
        tile.store(li, row_sum, index=index)
        if loop:
            tile.barrier()


@kernel(AIC, cost=laws.qk_cost)
def qk(qi: np.ndarray, key_cache: np.ndarray, sij: np.ndarray, block_ids: np.ndarray) -> None:
    """sij (q_tile, n*block_size) fp32 = qi · Kᵀ over the n blocks ``block_ids`` (no scale).

    The reference's aic_qk_matmul: qi loaded to L1 once; per block, Kᵀ to L1 (double-buffered,
    the next block prefetched), both moved to L0A/L0B, one matmul into L0C, stored; a
    pipe_barrier(PIPE_ALL) closes each block step."""
    _qk("qk", qi, key_cache, sij, block_ids, prefetch=True)


@kernel(AIC, cost=laws.qk_cost)
def qk_4dims(qi: np.ndarray, key_cache: np.ndarray, sij: np.ndarray, block_ids: np.ndarray) -> None:
    """``qk`` as the reference's paged_attention_unroll_4dims writes it: one L1 buffer for K, each
    block loaded after the previous block's barrier (no prefetch)."""
    _qk("qk_4dims", qi, key_cache, sij, block_ids, prefetch=False)


def _qk(name: str, qi: np.ndarray, key_cache: np.ndarray, sij: np.ndarray, block_ids: np.ndarray,
        prefetch: bool) -> None:
    m, d = qi.shape
    keys = kv_blocks(key_cache)
    bs = keys.shape[1]
    ids = _block_ids(block_ids)
    n = ids.size
    c = tile.Core(name, scratch=CUBE_SCRATCH)
    q_l1 = c.tile(L1, (m, d), qi.dtype, name="qi")
    k_l1 = c.tile(L1, (d, bs), key_cache.dtype, bufs=2 if prefetch else 1, name="kj")
    a = c.tile(L0A, (m, d), qi.dtype, name="left")
    b = c.tile(L0B, (d, bs), key_cache.dtype, name="right")
    s = c.tile(L0C, (m, bs), F32, name="sij")
    tile.load(q_l1, qi)
    out = tile.col_blocks(sij, n)                              # block j's (m, bs) slice of sij
    with c.loop(n):
        tile.load(k_l1, keys.transpose(0, 2, 1), index=ids, prefetch=prefetch)    # Kᵀ: DN layout
        tile.move(a, q_l1)
        tile.move(b, k_l1)
        tile.matmul(s, a, b)
        tile.store(out, s)
        tile.barrier()


@kernel(AIV, cost=laws.sf_cost)
def sf(sij: np.ndarray, pij: np.ndarray, mi: np.ndarray, li: np.ndarray, scale: float,
       valid_len_last: int, n_blocks: int) -> None:
    """Chunk softmax: pij = bf16(exp(sij·scale − mi)), mi = row max, li = row sum of the bf16 p.

    ``sij`` is (q_tile, n_blocks*block_size). Only the chunk's last block can be partial: its tokens
    from ``valid_len_last`` on are masked (their p is exactly 0, they do not count in mi).

    ``n_blocks`` is needed to locate the last block (the width alone does not give block_size);
    the reference SF takes it too (scalars: scale, n_blocks, valid_len_last).

    The reference's aiv_softmax_prepare, two passes over the blocks (sij double-buffered in UB):
    pass 1 takes the row max of the raw scores block by block (mi = scale · max, exact: rounding is
    monotonic), pass 2 computes p = exp(s·scale − mi) per block, rounds it to bf16, stores it and
    adds the rounded p into a running (q_tile, block_size) sum whose row sums are li.

    li convention (as the reference kernel: TCVT fp32->bf16->fp32 before the row-sum TADD): li sums
    the **bf16-rounded** p, so that PV (which multiplies the bf16 p) and li use the same weights.
    Rounding is round-to-nearest-even (ml_dtypes, as the reference golden's torch cast); the
    hardware's CAST_ROUND rounds ties away from zero — a 1-ulp difference on exact ties only.
    """
    _sf("sf", sij, pij, mi, li, scale, valid_len_last, n_blocks, four_dims=False)


@kernel(AIV, cost=laws.sf_cost)
def sf_4dims(sij: np.ndarray, pij: np.ndarray, mi: np.ndarray, li: np.ndarray, scale: float,
             valid_len_last: int, n_blocks: int) -> None:
    """``sf`` as the reference's paged_attention_unroll_4dims writes it: pass 1 loads every block
    into one buffer (no prefetch) and scales each block before its row max (the same mi:
    rounding is monotonic); pass 2 is sf's."""
    _sf("sf_4dims", sij, pij, mi, li, scale, valid_len_last, n_blocks, four_dims=True)


def _sf(name: str, sij: np.ndarray, pij: np.ndarray, mi: np.ndarray, li: np.ndarray, scale: float,
        valid_len_last: int, n_blocks: int, four_dims: bool) -> None:
    m, width = sij.shape
    n = int(n_blocks)
    if n < 1 or width % n:
        raise ValueError(f"sf: n_blocks={n} does not divide the sij width {width}")
    bs = width // n
    valid = int(valid_len_last)
    if valid < 1:
        raise ValueError(f"sf: valid_len_last must be >= 1, got {valid}")
    c = tile.Core(name)
    s = c.tile(UB, (m, bs), F32, bufs=2, name="sij")
    p = c.tile(UB, (m, bs), F32, name="pij")
    c.tile(UB, (m, bs), F32, name="tmp")                  # the row reductions' scratch on the chip
    acc = c.tile(UB, (m, bs), F32, name="sum")
    local_max = c.tile(UB, (m, 1), F32, name="local_max")
    global_max = c.tile(UB, (1, m), F32, name="global_max")
    row_sum = c.tile(UB, (m, 1), F32, name="row_sum")
    p16 = c.tile(UB, (m, bs), pij.dtype, name="pij_bf16")
    blocks, p_blocks = tile.col_blocks(sij, n), tile.col_blocks(pij, n)
    partial = valid < bs
    with c.loop(n):                                        # pass 1: global row max
        tile.load(s, blocks)
        if partial:
            tile.fill_pad(s, valid, -np.inf, iteration=-1)
        if four_dims:
            tile.muls(s, s, scale)
        tile.row_max(local_max, s)
        tile.max(global_max, global_max, tile.reshape(local_max, (1, m)))
        if four_dims:                                      # one buffer: the next load waits for these
            tile.sync(VECTOR, MTE2)
    if not four_dims:
        tile.muls(global_max, global_max, scale)
    tile.store(mi, global_max)
    column = tile.reshape(global_max, (m, 1))
    tile.sync(MTE3, MTE2)
    with c.loop(n):                                        # pass 2: p, its bf16 rounding, the sum
        tile.load(s, blocks)
        if partial:
            tile.fill_pad(s, valid, -np.inf, iteration=-1)
        tile.muls(s, s, scale)
        tile.row_expand_sub(p, s, column)
        tile.exp(p, p)
        tile.cast(p16, p)
        tile.cast(p, p16)
        tile.add(acc, acc, p)
        tile.store(p_blocks, p16)
        tile.sync(MTE3, MTE2)                              # the next block's load waits for this store
    tile.row_sum(row_sum, acc)
    tile.store(li, row_sum)


@kernel(AIC, cost=laws.pv_cost)
def pv(pij: np.ndarray, value_cache: np.ndarray, oi_new: np.ndarray, block_ids: np.ndarray) -> None:
    """oi_new (q_tile, head_dim) fp32 = p · V over the n blocks ``block_ids`` (fp32 accumulation).

    The reference's aic_pv_matmul: per block, p's slice and the V block to L1, on to L0A/L0B
    (both levels double-buffered), matmul-accumulate into one L0C tile; stored once at the end."""
    m, width = pij.shape
    values = kv_blocks(value_cache)
    bs, d = values.shape[1:]
    ids = _block_ids(block_ids)
    n = ids.size
    c = tile.Core(scratch=CUBE_SCRATCH)
    p_l1 = c.tile(L1, (m, bs), pij.dtype, bufs=2, name="pij")
    v_l1 = c.tile(L1, (bs, d), value_cache.dtype, bufs=2, name="vj")
    a = c.tile(L0A, (m, bs), pij.dtype, bufs=2, name="left")
    b = c.tile(L0B, (bs, d), value_cache.dtype, bufs=2, name="right")
    o = c.tile(L0C, (m, d), F32, name="oi")
    p_blocks = tile.col_blocks(pij, n)
    with c.loop(n):
        tile.load(p_l1, p_blocks)
        tile.load(v_l1, values, index=ids)
        tile.move(a, p_l1)
        tile.move(b, v_l1)
        tile.matmul(o, a, b, acc=True)                     # the first block initialises
    tile.store(oi_new, o)


@kernel(AIV, cost=laws.up_cost)
def up(mi: np.ndarray, li: np.ndarray, oi_new: np.ndarray, mi_acc: np.ndarray, li_acc: np.ndarray,
       oi_acc: np.ndarray, out: np.ndarray, is_first: int, is_last: int) -> None:
    """Online-softmax update of the accumulators with one chunk's (mi, li, oi_new).

    is_first: mi_acc, li_acc, oi_acc = mi, li, oi_new — the accumulators are NOT read (they may hold
    garbage or NaN). Otherwise, in fp32::

        m = max(mi_acc, mi);  a = exp(mi_acc - m);  b = exp(mi - m)
        li_acc = a*li_acc + b*li;  oi_acc = a*oi_acc + b*oi_new;  mi_acc = m

    is_last: out (q_tile, head_dim) = oi_acc / li_acc[:, None]; otherwise ``out`` is not touched.
    On the last chunk mi_acc and li_acc are updated but oi_acc is not (the reference's
    aiv_online_update stores out instead), except on a first-and-last chunk, which stores both.
    """
    m, d = oi_new.shape
    c = tile.Core()
    o_new = c.tile(UB, (m, d), F32, name="oi_new")
    o = c.tile(UB, (m, d), F32, name="oi")
    mij = c.tile(UB, (m, 1), F32, name="mij")
    lij = c.tile(UB, (m, 1), F32, name="lij")
    tile.load(o_new, oi_new)
    tile.load(mij, mi)
    tile.load(lij, li)
    if is_first:
        tile.store(mi_acc, mij)
        tile.store(li_acc, lij)
        tile.store(oi_acc, o_new)
        if is_last:
            tile.sync(MTE3, VECTOR)
            tile.row_expand_div(o_new, o_new, lij)
            tile.store(out, o_new)
        return
    mi_old = c.tile(UB, (m, 1), F32, name="mi")
    li_old = c.tile(UB, (m, 1), F32, name="li")
    m_new = c.tile(UB, (1, m), F32, name="mi_new")
    alpha = c.tile(UB, (1, m), F32, name="alpha")
    beta = c.tile(UB, (1, m), F32, name="beta")
    l_new = c.tile(UB, (1, m), F32, name="li_new")
    tmp = c.tile(UB, (1, m), F32, name="tmp")
    tile.load(o, oi_acc)
    tile.load(mi_old, mi_acc)
    tile.load(li_old, li_acc)
    mi_row, mij_row = tile.reshape(mi_old, (1, m)), tile.reshape(mij, (1, m))
    li_row, lij_row = tile.reshape(li_old, (1, m)), tile.reshape(lij, (1, m))
    tile.max(m_new, mi_row, mij_row)
    tile.sub(alpha, mi_row, m_new)
    tile.sub(beta, mij_row, m_new)
    tile.exp(alpha, alpha)
    tile.exp(beta, beta)
    tile.mul(tmp, alpha, li_row)
    tile.mul(l_new, beta, lij_row)
    tile.add(l_new, tmp, l_new)
    tile.row_expand_mul(o, o, tile.reshape(alpha, (m, 1)))
    tile.row_expand_mul(o_new, o_new, tile.reshape(beta, (m, 1)))
    tile.add(o, o, o_new)
    if is_last:
        tile.row_expand_div(o, o, tile.reshape(l_new, (m, 1)))
    tile.store(mi_acc, m_new)
    tile.store(li_acc, l_new)
    tile.store(out if is_last else oi_acc, o)


@kernel(AIV, cost=laws.hub_cost)
def hub(mi_acc: np.ndarray, li_acc: np.ndarray, oi_acc: np.ndarray) -> None:
    """Zero-fill the accumulators (the ``hub`` orchestration's extra task; UP with is_first ignores them)."""
    m, d = oi_acc.shape
    c = tile.Core()
    for acc, shape in ((mi_acc, (1, m)), (li_acc, (1, m)), (oi_acc, (m, d))):
        t = c.tile(UB, shape, acc.dtype)
        tile.fill(t, 0.0)
        tile.store(acc, t)
