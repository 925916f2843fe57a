"""Golden output of decode paged attention: a vectorised numpy model of the chunked pipeline.

It computes what the QK -> SF -> PV -> UP task graph computes, but is written independently of the
kernels (it does not call them and does not share their helpers): all sequences that have a chunk
``c`` and all their heads are processed together, per chunk index, in bounded slices of sequences.

For chunk ``c`` (blocks ``c*unroll .. c*unroll + unroll - 1`` of each sequence's block-table row;
a sequence takes part while it has tokens there), in fp32 on bf16 inputs::

    s   = (q · Kᵀ) * scale                     masked to -inf at token positions >= context_len
    m_c = rowmax(s);  p = bf16(exp(s - m_c));  l_c = rowsum(p);  o_c = p · V
    first chunk: (m, l, o) = (m_c, l_c, o_c)
    later:       m' = max(m, m_c);  a = exp(m - m');  b = exp(m_c - m')
                 l = a*l + b*l_c;   o = a*o + b*o_c;   m = m'
    out = o / l

Mathematically this is softmax(q·Kᵀ·scale)·V; numerically it depends on ``unroll`` only through the
bf16 rounding of p, which is relative to the *chunk* maximum (and through fp32 rounding order).
Head tiles of the kernels (128 heads per group) do not appear: the recurrence is per query row, so
tiling the rows cannot change the result. kv_heads must be 1.

Memory stays bounded on production sizes: each slice of sequences gathers at most
``max_slice_bytes`` worth of fp32 K/V (plus its bf16 gather and the scores), never the whole cache.
"""

from __future__ import annotations

import ml_dtypes
import numpy as np

__all__ = ["golden"]

_BF16 = np.dtype(ml_dtypes.bfloat16)


def golden(query: np.ndarray, key_cache: np.ndarray, value_cache: np.ndarray, block_table: np.ndarray,
           context_lens: np.ndarray, scale: float, unroll: int = 64, *,
           max_slice_bytes: int = 128 << 20) -> np.ndarray:
    """Attention output (batch * num_heads, head_dim) fp32 of the chunked online-softmax recurrence.

    query (batch, num_heads, head_dim); key_cache, value_cache (total_blocks, block_size, 1,
    head_dim); block_table (batch, max_blocks_per_seq) int; context_lens (batch,) int >= 1.
    Block-table entries past a sequence's last block are never used (they may hold anything).
    """
    batch, num_heads, head_dim = query.shape
    _, block_size, kv_heads, kdim = key_cache.shape
    if kv_heads != 1 or kdim != head_dim or value_cache.shape != key_cache.shape:
        raise ValueError(f"golden: need kv_heads == 1 and matching K/V caches, got query {query.shape}, "
                         f"key_cache {key_cache.shape}, value_cache {value_cache.shape}")
    if unroll < 1:
        raise ValueError(f"golden: unroll must be >= 1, got {unroll}")
    ctx = np.asarray(context_lens, dtype=np.int64).reshape(-1)
    if ctx.shape != (batch,) or (ctx < 1).any():
        raise ValueError(f"golden: context_lens must be {batch} values >= 1, got {context_lens!r}")
    seq_blocks = -(-ctx // block_size)
    if seq_blocks.max() > block_table.shape[1]:
        raise ValueError(f"golden: a context of {ctx.max()} tokens needs {seq_blocks.max()} blocks, "
                         f"the block table has {block_table.shape[1]} columns")

    scale32 = np.float32(scale)
    chunk_tokens = unroll * block_size
    n_chunks = -(-ctx // chunk_tokens)
    # Bytes per sequence of one chunk slice: bf16 gather + fp32 copy of K or V (one at a time) and
    # about three (num_heads, T) fp32 temporaries.
    tokens = min(unroll, int(seq_blocks.max())) * block_size
    per_seq = tokens * (head_dim * 6 + num_heads * 12)
    slice_len = max(1, max_slice_bytes // per_seq)

    m = np.empty((batch, num_heads), np.float32)
    l = np.empty((batch, num_heads), np.float32)
    o = np.empty((batch, num_heads, head_dim), np.float32)

    for c in range(int(n_chunks.max())):
        first = c * unroll
        active = np.flatnonzero(n_chunks > c)
        for lo in range(0, active.size, slice_len):
            idx = active[lo:lo + slice_len]
            nb = min(unroll, int(seq_blocks[idx].max()) - first)
            cols = first + np.arange(nb)
            # Columns past a sequence's own blocks are padding (masked below): read block 0 there,
            # so the table may hold anything in those positions.
            ids = np.where(cols[None, :] < seq_blocks[idx, None], block_table[idx][:, cols], 0)
            t = nb * block_size
            q = query[idx].astype(np.float32)                                   # (n, H, D)

            k = key_cache[ids, :, 0, :].astype(np.float32).reshape(idx.size, t, head_dim)
            s = np.matmul(q, k.transpose(0, 2, 1))                              # (n, H, T)
            del k
            s *= scale32
            pos = first * block_size + np.arange(t)
            invalid = pos[None, :] >= ctx[idx, None]                           # (n, T)
            if invalid.any():
                np.copyto(s, np.float32(-np.inf), where=invalid[:, None, :])
            mc = s.max(axis=2)                                                  # (n, H)
            s -= mc[:, :, None]
            np.exp(s, out=s)
            p = s.astype(_BF16).astype(np.float32)                              # bf16 rounding of p
            del s
            lc = p.sum(axis=2)

            v = value_cache[ids, :, 0, :].astype(np.float32).reshape(idx.size, t, head_dim)
            oc = np.matmul(p, v)                                                # (n, H, D)
            del p, v

            if c == 0:
                m[idx], l[idx], o[idx] = mc, lc, oc
            else:
                mn = np.maximum(m[idx], mc)
                a = np.exp(m[idx] - mn)
                b = np.exp(mc - mn)
                l[idx] = a * l[idx] + b * lc
                o[idx] = a[:, :, None] * o[idx] + b[:, :, None] * oc
                m[idx] = mn

    return (o / l[:, :, None]).reshape(batch * num_heads, head_dim)
