"""Decode paged-attention kernels: QK, SF, PV, UP (and HUB) as numpy functions.

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

Layout note: the reference stores sij/pij as n stacked (q_tile, block_size) tiles; here they are
the logical row-major (q_tile, n*block_size) matrices (column ``j*block_size + t`` = token t of
block j). Only these kernels read them, so the choice is internal.

Calling convention (registry): tensors first in submit order, then scalars; every output is written
in place into the array given (they are views into device memory), never rebound. Matmuls convert
bf16 to fp32 once per call and accumulate in fp32. Per-thread scratch buffers are reused across
calls (a fresh 4 MiB array per call costs ~10 % in page faults).

Timings (median µs per call, one BLAS thread, outputs preallocated, each call on a random group
of the case so K/V blocks come cold from the whole 1 GiB cache; ``OPENBLAS_NUM_THREADS=1 python -m
kernels.workloads.paged_attention.bench Case1``; 2-core x86 VM):

    case   q_tile x T x D      QK     SF     PV    UP first+last / accumulate   HUB
    Case1  16 x 8192 x 128    1200    310   1300          13 / 17               16
    Case2  64 x 4096 x 128    1240    680   1160          18 / 32               18
    Case3  64 x 4096 x 256    2170    700   2200          22 / 38               18

QK and PV are each about half gather+cast of the 2 MiB of bf16 K/V blocks and half matmul; SF is
mostly exp (~65) and the fp32->bf16 cast (~70). Case1 is one chunk per group: ~2.8 ms of CPU per
group, ~0.73 s for its 256 groups.
"""

from __future__ import annotations

import threading

import ml_dtypes
import numpy as np

from kernels import AIC, AIV, kernel
from kernels.workloads.paged_attention import laws

__all__ = ["BF16", "hub", "pv", "qk", "sf", "up"]

BF16 = np.dtype(ml_dtypes.bfloat16)

# QK computes (K @ qiᵀ)ᵀ instead of qi @ Kᵀ for short head tiles: OpenBLAS is ~1.6x faster on
# the tall-skinny product (measured: q_tile 16 -> 0.51 vs 0.81 ms) even with the transposing copy,
# which stops paying off at q_tile 64.
_QK_TRANSPOSED_MAX_ROWS = 32

_tls = threading.local()


def _scratch(tag: str, shape: tuple[int, ...], dtype: np.dtype | type) -> np.ndarray:
    """A reusable uninitialised array of ``shape``: one growing byte buffer per tag and thread."""
    dt = np.dtype(dtype)
    nbytes = dt.itemsize * int(np.prod(shape))
    bufs = getattr(_tls, "bufs", None)
    if bufs is None:
        bufs = _tls.bufs = {}
    buf = bufs.get(tag)
    if buf is None or buf.nbytes < nbytes:
        buf = bufs[tag] = np.empty(nbytes, np.uint8)
    return buf[:nbytes].view(dt).reshape(shape)


def _gather_blocks_f32(cache: np.ndarray, block_ids: np.ndarray) -> np.ndarray:
    """fp32 copy of the blocks ``block_ids`` of a (blocks, block_size, 1, D) cache, as (n*block_size, D).

    One fancy-index gather (bf16) and one cast into scratch; the result is only valid until the
    next call on this thread (QK and PV share it: they run on the same cube core, one at a time).
    """
    _, block_size, kv_heads, head_dim = cache.shape
    if kv_heads != 1:
        raise ValueError(f"paged attention kernels support kv_heads == 1, cache has shape {cache.shape}")
    ids = np.asarray(block_ids).reshape(-1)
    if ids.size == 1:                 # one block (unroll 1): a plain view, cast once, no gather copy
        out1 = _scratch("kv", (block_size, head_dim), np.float32)
        out1[...] = cache[int(ids[0]), :, 0, :]
        return out1
    out = _scratch("kv", (ids.size, block_size, head_dim), np.float32)
    out[...] = cache[ids, :, 0, :]
    return out.reshape(ids.size * block_size, head_dim)


@kernel(AIC, cost=laws.qk_cost)
def qk(qi: np.ndarray, key_cache: np.ndarray, sij: np.ndarray, block_ids: np.ndarray) -> None:
    """sij (q_tile, n*block_size) fp32 = qi · Kᵀ over the n blocks ``block_ids`` (no scale)."""
    k = _gather_blocks_f32(key_cache, block_ids)                  # (T, D)
    q = qi.astype(np.float32)                                     # (q_tile, D), small
    if q.shape[0] <= _QK_TRANSPOSED_MAX_ROWS:
        st = _scratch("st", (k.shape[0], q.shape[0]), np.float32)
        np.matmul(k, q.T, out=st)
        sij[...] = st.T
    else:
        np.matmul(q, k.T, out=sij)


@kernel(AIV, cost=laws.sf_cost)
def sf(sij: np.ndarray, pij: np.ndarray, mi: np.ndarray, li: np.ndarray, scale: float,
       valid_len_last: int, n_blocks: int) -> None:
    """Chunk softmax: pij = bf16(exp(sij·scale − mi)), mi = row max, li = row sum of the bf16 p.

    ``sij`` is (q_tile, n_blocks*block_size). Only the chunk's last block can be partial: its tokens
    from ``valid_len_last`` on are masked (their p is exactly 0, they do not count in mi).

    ``n_blocks`` is needed to locate the last block (the width alone does not give block_size);
    the reference SF takes it too (scalars: scale, n_blocks, valid_len_last).

    li convention (as the reference kernel: TCVT fp32->bf16->fp32 before the row-sum TADD): li sums
    the **bf16-rounded** p, so that PV (which multiplies the bf16 p) and li use the same weights.
    Rounding is round-to-nearest-even (ml_dtypes, as the reference golden's torch cast); the
    hardware's CAST_ROUND rounds ties away from zero — a 1-ulp difference on exact ties only.
    """
    q_tile, width = sij.shape
    n_blocks = int(n_blocks)
    if n_blocks < 1 or width % n_blocks:
        raise ValueError(f"sf: n_blocks={n_blocks} does not divide the sij width {width}")
    block_size = width // n_blocks
    valid_len_last = int(valid_len_last)
    if valid_len_last < 1:
        raise ValueError(f"sf: valid_len_last must be >= 1, got {valid_len_last}")
    s = _scratch("sf", (q_tile, width), np.float32)
    np.multiply(sij, np.float32(scale), out=s)
    cut = width - block_size + valid_len_last
    if cut < width:
        s[:, cut:] = -np.inf                      # masked: exp(-inf - mi) == 0 exactly
    np.max(s, axis=1, out=mi)
    np.subtract(s, mi[:, None], out=s)
    np.exp(s, out=s)
    pij[...] = s                                  # fp32 -> bf16, round to nearest even
    s[...] = pij                                  # back to fp32: the rounded p
    np.sum(s, axis=1, out=li)


@kernel(AIC, cost=laws.pv_cost)
def pv(pij: np.ndarray, value_cache: np.ndarray, oi_new: np.ndarray, block_ids: np.ndarray) -> None:
    """oi_new (q_tile, head_dim) fp32 = p · V over the n blocks ``block_ids`` (fp32 accumulation)."""
    v = _gather_blocks_f32(value_cache, block_ids)                # (T, D)
    p = _scratch("p", pij.shape, np.float32)
    p[...] = pij
    np.matmul(p, v, out=oi_new)


def online_update(mi: np.ndarray, li: np.ndarray, oi_new: np.ndarray, mi_acc: np.ndarray, li_acc: np.ndarray,
                  oi_acc: np.ndarray, is_first: int) -> None:
    """The accumulators (rows: query heads) take in one step's (mi, li, oi_new), in place; on the
    first step they are only written (see ``up``). Shared by the unrolled and the batched UP."""
    if is_first:
        mi_acc[...] = mi
        li_acc[...] = li
        oi_acc[...] = oi_new
    else:
        m = np.maximum(mi_acc, mi)
        alpha = np.exp(mi_acc - m)
        beta = np.exp(mi - m)
        li_acc *= alpha
        li_acc += beta * li
        oi_acc *= alpha[:, None]
        oi_acc += beta[:, None] * oi_new
        mi_acc[...] = m


@kernel(AIV, cost=laws.up_cost)
def up(mi: np.ndarray, li: np.ndarray, oi_new: np.ndarray, mi_acc: np.ndarray, li_acc: np.ndarray,
       oi_acc: np.ndarray, out: np.ndarray, is_first: int, is_last: int) -> None:
    """Online-softmax update of the accumulators with one chunk's (mi, li, oi_new).

    is_first: mi_acc, li_acc, oi_acc = mi, li, oi_new — the accumulators are NOT read (they may hold
    garbage or NaN). Otherwise, in fp32::

        m = max(mi_acc, mi);  a = exp(mi_acc - m);  b = exp(mi - m)
        li_acc = a*li_acc + b*li;  oi_acc = a*oi_acc + b*oi_new;  mi_acc = m

    is_last: out (q_tile, head_dim) = oi_acc / li_acc[:, None]; otherwise ``out`` is not touched.
    (The accumulators are updated on the last chunk too; the reference skips storing oi_acc there.)
    """
    online_update(mi, li, oi_new, mi_acc, li_acc, oi_acc, is_first)
    if is_last:
        np.divide(oi_acc, li_acc[:, None], out=out)


@kernel(AIV, cost=laws.hub_cost)
def hub(mi_acc: np.ndarray, li_acc: np.ndarray, oi_acc: np.ndarray) -> None:
    """Zero-fill the accumulators (the ``hub`` orchestration's extra task; UP with is_first ignores them)."""
    mi_acc[...] = 0.0
    li_acc[...] = 0.0
    oi_acc[...] = 0.0
