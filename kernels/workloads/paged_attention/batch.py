"""Batched paged attention: each task processes one KV block of 16 sequences at once (the
reference's ``batch_paged_attention``), and the same graph on tiny rings (``paged_attention_ringbuffer``).

    max_bn = max over b of ceil(context_lens[b] / block_size)      rt.get_tensor_data, per sequence
    for each head tile (h0, qt), each batch chunk of bc <= 16 sequences from s0:     scope (AUTO)
        oi (bc*qt, D), li (bc*qt,), mi (bc*qt,) fp32 = rt.alloc_tensors(...)       1 runtime task
        out box = out[s0:s0+bc, h0:h0+qt, :]  as a manual_dep view
        for bn in 0 .. max_bn-1:                         nested scope (AUTO): its scratch dies here
            QK  In(query), In(key_cache), In(block_table)       -> Out(sij (bc*qt, bs) fp32)
            SF  In(sij), In(context_lens)                       -> Out(pij bf16), Out(m (bc*qt,)), Out(l)
            PV  In(pij), In(value_cache), In(block_table)       -> Out(o (bc*qt, D) fp32)
            UP  In(m, l, o), InOut(mi, li, oi), InOut(out box)   is_first = bn == 0, is_last = bn == max_bn-1
            (scalars: QK bc, bn, h0, s0; SF scale, bc, bn, s0; PV bc, bn, s0; UP is_first, is_last)

        chunk 0:  QK_0 -> SF_0 -> PV_0 -> UP_0 -> UP_1 -> ... -> UP_{max_bn-1}   (writes its out box)
                  QK_1 -> SF_1 -> PV_1 ---^
        chunk 1:  the same, independent of chunk 0

Rows ``b*qt .. b*qt+qt`` of every per-chunk tensor belong to sequence ``s0 + b``. The kernels read
the block table themselves (``block_table[s0 + b, bn]``) and every chunk walks ``max_bn`` blocks
-- the longest sequence's count, whatever its own length: a block past a sequence's end gets
``m = -1e30, l = 0, p = 0`` from SF (the -1e30 rather than -inf keeps UP's exp(m_old - m_new)
finite), which makes that UP step an exact identity (alpha = 1, beta = 0). The table entry read
there is a valid block id (the generator fills unused columns with them), so QK/PV stay in range.

Task counts: per chunk 1 alloc + 4 * max_bn. Case1 (256 sequences, 64 blocks) 16 * 257 = 4,112
(4,096 worker tasks); Case2 / Case3 4 * (1 + 4 * 128) = 2,052; ringbuffer_stress 2 * (1 + 4 * 32) = 258.

Arithmetic (what the reference's kernels compute, vectorised over the chunk): QK and PV convert
the bf16 operands to fp32 and accumulate in fp32; SF scales, masks the tokens at or past the
sequence's length, takes the row max, p = exp(s - m) rounded to bf16 (round to nearest even;
the hardware's CAST_ROUND rounds ties away from zero) and l = row sum of the *rounded* p; UP is
the fp32 online-softmax update, out = oi / li on the last block.

Differences from the reference, on purpose:
- UP writes an ``out`` box (bc, qt, D) view instead of the whole ``out`` with row offsets: the
  reference's whole-tensor INOUT is harmless there (``out`` is manual_dep: creator-only tracking,
  and an external tensor has no creator, so no edges), but ptoemu's default sequential semantics
  orders every overlap, which would chain the UPs of all chunks. The box keeps the reference's
  edges under both semantics; it is still taken ``manual_dep``.
- QK/PV/UP do not take block_num / num_heads scalars: the numpy views carry those shapes.
- paged_attention_ringbuffer: the reference sizes four rings per scope depth (ring_task_window
  64, ring_heap 4 MiB per ring, ring_dep_pool 256); ptoemu has one task window and one heap, set
  to 64 tasks and 4 MiB, and no dependency pool to shrink.

Golden: golden.golden(unroll=1), the one-block-at-a-time recurrence of the reference's shared golden.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from kernels import AIC, AIV, kernel, tile
from kernels.args import In, InOut, Out
from kernels.tile import F32, UB
from kernels.workloads.cube import cube_step
from kernels.workloads.paged_attention.baseline import INPUTS, build, golden_per_block, reference_case
from kernels.workloads.paged_attention.kernels import CUBE_SCRATCH, kv_blocks, sf_step, sf_tiles
from kernels.workloads.paged_attention.tiling import head_tiles
from kernels.workloads.workload import Workload

__all__ = ["BATCH_PAGED_ATTENTION", "IN_CORE_BATCH", "PAGED_ATTENTION_RINGBUFFER", "orchestrate_batch",
           "pv_batch", "qk_batch", "sf_batch", "up_batch"]

IN_CORE_BATCH = 16              # sequences per task (the reference's IN_CORE_BATCH)
NEG_LARGE = -1e30               # SF's row max for a block wholly past the sequence's end


def _scalar_tile(qt: int) -> tuple[int, int]:
    """The reference's ND tile of q_tile per-row scalars: rows of 8 fp32 (one 32-byte block)."""
    return (qt // 8, 8) if qt % 8 == 0 else (1, qt)


@kernel(AIC)
def qk_batch(query: np.ndarray, key_cache: np.ndarray, block_table: np.ndarray, sij: np.ndarray,
             batch_count: int, bn: int, q_offset: int, batch_start: int) -> None:
    """sij rows of sequence s0+b = q tile of s0+b · (its bn-th K block)ᵀ, fp32, unscaled.

    The reference's batched aic_qk_matmul: per sequence b, TLOAD its q tile and (by the block
    table) its K block to L1, TMOV to L0A/L0B, TMATMUL, TSTORE, pipe_barrier(PIPE_ALL)."""
    bc, s0, h0 = int(batch_count), int(batch_start), int(q_offset)
    qt = sij.shape[0] // bc
    ids = block_table[s0:s0 + bc, int(bn)]
    cube_step(tile.Core(scratch=CUBE_SCRATCH), query[s0:s0 + bc, h0:h0 + qt],
              kv_blocks(key_cache).transpose(0, 2, 1), tile.row_blocks(sij, bc), ("qi", "kj", "sij"),
              loop=bc, index=ids)                    # Kᵀ: DN layout


@kernel(AIV)
def sf_batch(sij: np.ndarray, context_lens: np.ndarray, pij: np.ndarray, mij: np.ndarray, lij: np.ndarray,
             scale: float, batch_count: int, bn: int, batch_start: int) -> None:
    """Softmax of one block per sequence: tokens at or past the sequence's length are masked;
    a block wholly past it gives m = -1e30, l = 0, p = 0. l sums the bf16-rounded p.

    The reference's batched aiv_softmax_prepare: per sequence, TLOAD its sij tile, TFILLPAD past
    its valid length, TMULS, TROWMAX, TROWEXPANDSUB, TEXP, TCVT to bf16 and back, TROWSUM, three
    TSTOREs; a sequence whose block is wholly past its end gets the constants instead (the
    reference writes them with scalar SetValue loops, here TEXPANDS fills: the tile layer has no
    scalar stores). The sequences with data run as one loop, those without as another."""
    bc, s0 = int(batch_count), int(batch_start)
    rows, bs = sij.shape
    qt = rows // bc
    valid = np.clip(context_lens[s0:s0 + bc].astype(np.int64) - int(bn) * bs, 0, bs)
    live = np.flatnonzero(valid)
    dead = np.flatnonzero(valid == 0)
    c = tile.Core()
    tiles = sf_tiles(c, qt, bs, pij.dtype)
    _, _, mx, sm, p16 = tiles
    s3, p3 = sij.reshape(bc, qt, bs), pij.reshape(bc, qt, bs)
    m3, l3 = mij.reshape(bc, qt, 1), lij.reshape(bc, qt, 1)
    if live.size:
        at = None if live.size == bc else live           # the sequences with data, in order
        sf_step(tiles, s3, p3, m3, l3, scale, valid[live], loop=live.size, index=at)
    if dead.size:
        with c.loop(dead.size):
            tile.fill(mx, NEG_LARGE)                     # -1e30, not -inf: UP's exp(m_old - m_new) stays finite
            tile.fill(sm, 0.0)
            tile.fill(p16, 0.0)
            tile.store(m3, mx, index=dead)
            tile.store(l3, sm, index=dead)
            tile.store(p3, p16, index=dead)
            tile.barrier()


@kernel(AIC)
def pv_batch(pij: np.ndarray, value_cache: np.ndarray, block_table: np.ndarray, oi_new: np.ndarray,
             batch_count: int, bn: int, batch_start: int) -> None:
    """oi_new rows of sequence s0+b = its bf16 p · its bn-th V block, fp32 accumulation.

    The reference's batched aic_pv_matmul: per sequence, TLOAD its p tile and V block to L1,
    TMOV to L0A/L0B, TMATMUL, TSTORE, pipe_barrier(PIPE_ALL)."""
    bc, s0 = int(batch_count), int(batch_start)
    rows, bs = pij.shape
    qt = rows // bc
    ids = block_table[s0:s0 + bc, int(bn)]
    cube_step(tile.Core(scratch=CUBE_SCRATCH), pij.reshape(bc, qt, bs), kv_blocks(value_cache),
              tile.row_blocks(oi_new, bc), ("pij", "vj", "oi"), loop=bc, index=ids)


@kernel(AIV)
def up_batch(mij: np.ndarray, lij: np.ndarray, oi_new: np.ndarray, mi: np.ndarray, li: np.ndarray,
             oi: np.ndarray, out: np.ndarray, is_first: int, is_last: int) -> None:
    """Online-softmax update of the chunk's accumulators; on the last block out = oi / li.

    ``out`` is the chunk's (bc, qt, D) box of the output; rows of the accumulators are
    (sequence, head) in the same order. On the first block the accumulators are only written.

    The reference's batched aiv_online_update, per sequence: the per-row scalars m, l in ND
    (rows of 8) tiles, alpha and beta reshaped to (q_tile, 1) columns for the TROWEXPANDMULs; on
    the last block out is stored instead of oi (first and last: both)."""
    bc, qt, d = out.shape
    sc = _scalar_tile(qt)
    c = tile.Core()
    o_new = c.tile(UB, (qt, d), F32, name="oi_new")
    o = c.tile(UB, (qt, d), F32, name="oi")
    m_j, l_j = c.tile(UB, sc, F32, name="mij"), c.tile(UB, sc, F32, name="lij")
    m_i, l_i = c.tile(UB, sc, F32, name="mi"), c.tile(UB, sc, F32, name="li")
    m_new, alpha = c.tile(UB, sc, F32, name="mi_new"), c.tile(UB, sc, F32, name="alpha")
    beta, tmp = c.tile(UB, sc, F32, name="beta"), c.tile(UB, sc, F32, name="tmp")
    scalars = (bc,) + sc
    mij3, lij3, mi3, li3 = (x.reshape(scalars) for x in (mij, lij, mi, li))
    oi_new3, oi3 = oi_new.reshape(bc, qt, d), oi.reshape(bc, qt, d)
    column = (qt, 1)
    with c.loop(bc):
        tile.load(o_new, oi_new3)
        tile.load(m_j, mij3)
        tile.load(l_j, lij3)
        if is_first:
            tile.store(mi3, m_j)
            tile.store(li3, l_j)
            tile.store(oi3, o_new)
            if is_last:
                tile.row_expand_div(o_new, o_new, tile.reshape(l_j, column))
                tile.store(out, o_new)
        else:
            tile.load(o, oi3)
            tile.load(m_i, mi3)
            tile.load(l_i, li3)
            tile.max(m_new, m_i, m_j)
            tile.sub(alpha, m_i, m_new)
            tile.exp(alpha, alpha)
            tile.sub(beta, m_j, m_new)
            tile.exp(beta, beta)
            tile.mul(l_i, alpha, l_i)
            tile.mul(tmp, beta, l_j)
            tile.add(l_i, l_i, tmp)
            tile.store(mi3, m_new)
            tile.store(li3, l_i)
            tile.row_expand_mul(o, o, tile.reshape(alpha, column))
            tile.row_expand_mul(o_new, o_new, tile.reshape(beta, column))
            tile.add(o, o, o_new)
            if is_last:
                tile.row_expand_div(o, o, tile.reshape(l_i, column))
                tile.store(out, o)
            else:
                tile.store(oi3, o)
        tile.barrier()


def orchestrate_batch(rt: Any, query: Any, key_cache: Any, value_cache: Any, block_table: Any,
                      context_lens: Any, out: Any, *, scale: float,
                      in_core_batch: int = IN_CORE_BATCH) -> dict[str, int]:
    """Submit the batched pipeline (module docstring). ``out`` is (batch, heads, D) fp32.
    Returns the number of batch chunks (per head tile) and the blocks every chunk walks."""
    batch, heads, head_dim = query.shape
    block_size = key_cache.shape[1]
    if out.shape != (batch, heads, head_dim):
        raise ValueError(f"orchestrate_batch: out has shape {out.shape}, expected {(batch, heads, head_dim)}")
    max_bn = 0
    for b in range(batch):
        max_bn = max(max_bn, -(-int(rt.get_tensor_data(context_lens, b)) // block_size))
    pdt = query.dtype
    scale = float(scale)
    n_chunks = 0
    for h0, qt in head_tiles(heads):
        for s0 in range(0, batch, in_core_batch):
            bc = min(in_core_batch, batch - s0)
            rows = bc * qt
            n_chunks += 1
            with rt.scope():
                oi, li, mi = rt.alloc_tensors(((rows, head_dim), F32), ((rows,), F32), ((rows,), F32))
                out_box = out.view((bc, qt, head_dim), (s0, h0, 0), manual_dep=True)
                for bn in range(max_bn):
                    with rt.scope():
                        sij = rt.make_tensor((rows, block_size), F32)
                        rt.submit(qk_batch, In(query), In(key_cache), In(block_table), Out(sij), bc, bn, h0, s0)
                        pij = rt.make_tensor((rows, block_size), pdt)
                        mij = rt.make_tensor((rows,), F32)
                        lij = rt.make_tensor((rows,), F32)
                        rt.submit(sf_batch, In(sij), In(context_lens), Out(pij), Out(mij), Out(lij),
                                  scale, bc, bn, s0)
                        oi_new = rt.make_tensor((rows, head_dim), F32)
                        rt.submit(pv_batch, In(pij), In(value_cache), In(block_table), Out(oi_new), bc, bn, s0)
                        rt.submit(up_batch, In(mij), In(lij), In(oi_new), InOut(mi), InOut(li), InOut(oi),
                                  InOut(out_box), bn == 0, bn == max_bn - 1)
    return {"chunks": n_chunks, "max_bn": max_bn}


def _orchestrate(rt: Any, t: dict, params: Mapping[str, Any], variant: str) -> dict[str, int]:
    return orchestrate_batch(rt, *(t[n] for n in INPUTS), t["out"], scale=float(params["scale"]))


_ORDER = ("CaseSmall2", "CaseSmall1", "CaseVarSeq2", "CaseSmall3", "CaseVarSeq4", "Case2", "Case3", "Case1")
# unroll 1: each task covers one KV block (of 16 sequences); only the parameter listing reads it.
_CASES = {
    **{n: reference_case(n, unroll=1) for n in ("CaseSmall1", "CaseVarSeq2", "CaseVarSeq4", "Case1", "Case2", "Case3")},
    "CaseSmall2": reference_case("CaseSmall2", "CaseSmall1", context_len=31, unroll=1),   # 1 full + 1 partial block
    "CaseSmall3": reference_case("CaseSmall3", "CaseSmall2", unroll=1),                   # context 128: 8 full blocks
}

BATCH_PAGED_ATTENTION = Workload(
    name="batch_paged_attention",
    summary="paged attention with 16 sequences per task: one scope per batch chunk, QK -> SF -> PV -> UP per KV block",
    features=("alloc_tensors", "get_tensor_data (context_lens)", "nested scopes", "manual_dep view (out)",
              "kernels reading a block table tensor"),
    cases={n: _CASES[n] for n in _ORDER},
    build=build, outputs=("out",), orchestrate=_orchestrate, golden=golden_per_block,
    tolerance=(1e-3, 1e-3), variants=("default",), kernels=("kernels.workloads.paged_attention.batch",),
    hardware_only=frozenset({"Case1", "Case2", "Case3"}),
    big=frozenset({"Case1", "Case2", "Case3"}),       # 2,052 - 4,112 tasks, 256 MiB - 1 GiB of KV cache
    plan_inputs=("context_lens",),                    # read with rt.get_tensor_data
    reference="tests/st/a2a3/tensormap_and_ringbuffer/batch_paged_attention")


def _ring_platform(params: Mapping[str, Any]) -> dict[str, Any]:
    # One window and one heap stand for the reference's per-depth rings (module docstring).
    return {"task_window": params["task_window"], "heap_bytes": params["heap_bytes"]}


PAGED_ATTENTION_RINGBUFFER = Workload(
    name="paged_attention_ringbuffer",
    summary="batch_paged_attention on a 64-task window and a 4 MiB heap: ring rotation and reclamation under load",
    features=("tiny task window and heap (per-case platform)", "alloc_tensors", "get_tensor_data",
              "nested scopes", "manual_dep view (out)"),
    cases={"ringbuffer_stress": reference_case("ringbuffer_stress", "Case1", batch=32, context_len=4096, unroll=1,
                                               task_window=64, heap_bytes=4 << 20)},
    build=build, outputs=("out",), orchestrate=_orchestrate, golden=golden_per_block,
    tolerance=(1e-3, 1e-3), variants=("default",), kernels=("kernels.workloads.paged_attention.batch",),
    hardware_only=frozenset({"ringbuffer_stress"}), platform=_ring_platform, plan_inputs=("context_lens",),
    reference="examples/a2a3/tensormap_and_ringbuffer/paged_attention_ringbuffer")
