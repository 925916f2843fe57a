"""Paged-attention kernels for one KV block per task: QK, SF, PV of the reference's non-unrolled
``paged_attention`` (examples/a2a3/tensormap_and_ringbuffer/paged_attention/kernels in
hw-native-sys/simpler), written on the tile layer; UP is kernels.up (the reference's
non-unrolled aiv_online_update is the unrolled one with its pipe barriers placed differently,
which the tile layer's schedule infers from the data anyway).

    qi (q_tile, D) ──QK──▶ sij (q_tile, bs) ──SF──▶ pij (bf16), mi, li ──PV──▶ oi_new (q_tile, D)
       TLOAD q, Kᵀ -> L1      TLOAD sij, TFILLPAD (valid_len),     TLOAD p, V -> L1
       TMOV -> L0A, L0B       TMULS scale, TROWMAX, TROWEXPANDSUB,  TMOV -> L0A, L0B
       TMATMUL, TSTORE        TEXP, TCVT bf16, TCVT fp32, TROWSUM   TMATMUL, TSTORE
                              TSTORE pij, mi, li

qk_block, sf_block and pv_block have the unrolled kernels' signatures (kernels.py), so
orchestration.orchestrate runs either set: the whole cache and a one-element ``block_ids`` array
where the reference passes a one-block view, ``valid_len_last`` where it passes a (q_tile,
valid_len) view of sij, and ``n_blocks`` (always 1 here). Unlike the unrolled SF (two passes
over the chunk's blocks) this SF takes the row max of the scaled scores in one pass, as the
reference's does.

The steps are kernels/workloads/cube.py's ``cube_step`` (QK, PV) and kernels.py's ``sf_tiles`` /
``sf_step`` (SF), which batch.py's batched kernels run in a loop over sequences.

The arithmetic is the unrolled kernels' on one block (golden.golden(unroll=1)): p is rounded to
bf16 before its row sum, QK and PV accumulate in fp32.
"""

from __future__ import annotations

import numpy as np

from kernels import AIC, AIV, kernel, tile
from kernels.workloads.cube import cube_step
from kernels.workloads.paged_attention import laws
from kernels.workloads.paged_attention.kernels import CUBE_SCRATCH, kv_blocks, sf_step, sf_tiles

__all__ = ["pv_block", "qk_block", "sf_block"]


def _block(cache: np.ndarray, block_ids: np.ndarray, who: str) -> np.ndarray:
    """The (block_size, D) block ``block_ids[0]`` of a (blocks, block_size, 1, D) cache."""
    ids = np.asarray(block_ids).reshape(-1)
    if ids.size != 1:
        raise ValueError(f"{who}: one KV block per task, got {ids.size} block ids (the unrolled kernels "
                         f"in kernels.py take several)")
    return kv_blocks(cache)[int(ids[0])]


@kernel(AIC, cost=laws.qk_cost)
def qk_block(qi: np.ndarray, key_cache: np.ndarray, sij: np.ndarray, block_ids: np.ndarray) -> None:
    """sij (q_tile, block_size) fp32 = qi · Kᵀ of the block ``block_ids[0]`` (no scale)."""
    kj = _block(key_cache, block_ids, "qk_block")
    # Kᵀ: the DN layout of a row-major K block
    cube_step(tile.Core(scratch=CUBE_SCRATCH), qi, kj.T, sij, ("qi", "kj", "sij"))


@kernel(AIV, cost=laws.sf_cost)
def sf_block(sij: np.ndarray, pij: np.ndarray, mi: np.ndarray, li: np.ndarray, scale: float,
       valid_len_last: int, n_blocks: int) -> None:
    """pij = bf16(exp(s·scale − mi)) over the block's first ``valid_len_last`` tokens (the rest:
    p = 0), mi = row max of s·scale, li = row sum of the bf16-rounded p."""
    m, bs = sij.shape
    if int(n_blocks) != 1:
        raise ValueError(f"sf_block: one KV block per task, got n_blocks={n_blocks} (kernels.sf takes several)")
    valid = int(valid_len_last)
    if not 1 <= valid <= bs:
        raise ValueError(f"sf_block: valid_len_last must be in 1..{bs}, got {valid}")
    sf_step(sf_tiles(tile.Core(), m, bs, pij.dtype), sij, pij, mi, li, scale, valid)


@kernel(AIC, cost=laws.pv_cost)
def pv_block(pij: np.ndarray, value_cache: np.ndarray, oi_new: np.ndarray, block_ids: np.ndarray) -> None:
    """oi_new (q_tile, D) fp32 = p · V of the block ``block_ids[0]``."""
    vj = _block(value_cache, block_ids, "pv_block")
    cube_step(tile.Core(scratch=CUBE_SCRATCH), pij, vj, oi_new, ("pij", "vj", "oi"))
