"""Cost laws of the paged-attention kernels on an a2a3 core, for ``ptoemu predict``.

    TaskInfo (shapes, block_ids / n_blocks scalars)
        │   time  = fixed part + n_blocks × per-block time × (bytes one block step loads ÷ Case1's)
        │   bytes = the K/V blocks actually read + the tensors that live across tasks
        ▼
    Cost(us, hbm_bytes)

These laws are the fallback of ``ptoemu predict`` for a recorded task without counted costs. The
kernels themselves run on the tile layer, whose counts give each call's time from its instructions
(``tile.count(qk, ...)``; kernels/a2a3.py): at Case1 both agree with the medians below, at other
shapes the counted time is the better estimate (e.g. Case2 SF: 82 µs counted, 121 µs here).

Where the numbers come from: medians of a published
hardware swimlane of the reference's ``paged_attention_unroll`` at Case1 shapes (q_tile 16,
head_dim 128, block_size 128, 64 KV blocks per task): QK 55 µs, SF 61 µs, PV 58 µs, UP ~4 µs.

Inferred here, not measured:
- a fixed per-task part of ``FIXED_US`` (kernel prologue, first load); the per-block slopes are
  (median − FIXED_US) / 64, so a 64-block task still takes the measured median and a 1-block task
  (unroll 1) is not free.
- other shapes: every block step waits for its own load (the kernels are latency-bound, ~28× over
  their roofline), so the per-block time scales with the bytes that step loads relative to Case1:
  one K/V block for QK and PV (Case1: 128 tokens × 128 × bf16 = 32 KiB), one block's slice of the
  score matrix sij for SF (Case1: 16 rows × 128 tokens × fp32 = 8 KiB). Case2 (q_tile 64,
  block_size 64, head_dim 128): QK/PV blocks ×0.5, SF ×2; Case3 (head_dim 256): QK/PV ×1, SF ×2.
- UP: half of its ~4 µs fixed (vector instruction overheads dominate small tiles), half scaling
  with the elements of its (q_tile, head_dim) tile relative to Case1's 16 × 128.
- HUB: a zero fill of the accumulators, one fixed part.
- HBM bytes: K/V blocks (n_blocks × one block, NOT the whole cache argument: QK/PV receive the whole
  cache but read only the blocks named by the block_ids scalar), the q tile, the accumulators and
  the out tile. The per-chunk intermediates sij, pij, mi, li, oi_new are written and read back
  within microseconds and fit in the 192 MiB L2 many times over, so they are not charged to HBM;
  charging them would put Case1's HBM floor at ~1.7 ms at 0.9 TB/s, above the measured 1.1–1.4 ms
  end to end. SF only touches intermediates, so it is compute-only (not slowed by HBM sharing).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from kernels.cost import ArgInfo, Cost, TaskInfo

__all__ = ["hub_cost", "pv_cost", "qk_cost", "sf_cost", "up_cost"]

FIXED_US = 1.0                                 # inferred per-task part of QK, SF, PV, HUB
CASE1_BLOCKS = 64
QK_PER_BLOCK_US = (55.0 - FIXED_US) / CASE1_BLOCKS
SF_PER_BLOCK_US = (61.0 - FIXED_US) / CASE1_BLOCKS
PV_PER_BLOCK_US = (58.0 - FIXED_US) / CASE1_BLOCKS
CASE1_KV_BLOCK_BYTES = 128 * 128 * 2           # one K or V block: 128 tokens × head_dim 128 × bf16
CASE1_SIJ_BLOCK_BYTES = 16 * 128 * 4           # one block's slice of sij: q_tile 16 × 128 tokens × fp32
UP_FIXED_US, UP_TILE_US = 2.0, 2.0             # UP ≈ 4 µs at Case1's tile, half of it fixed (inferred)
CASE1_UP_TILE_ELEMS = 16 * 128


def _n_ids(block_ids: Any) -> int:
    return len(block_ids) if isinstance(block_ids, (list, tuple)) else 1


def _elems(a: ArgInfo) -> int:
    n = 1
    for d in a.shape:
        n *= d
    return n


def _kv_cost(t: TaskInfo, per_block_us: float, tile_bytes: int) -> Cost:
    """QK and PV: args (tile, cache, output), scalars (block_ids,); one block = cache bytes / blocks."""
    cache = t.args[1]
    n = _n_ids(t.scalars[0])
    block = cache.nbytes // max(cache.shape[0], 1)
    return Cost(FIXED_US + n * per_block_us * block / CASE1_KV_BLOCK_BYTES, n * block + tile_bytes)


def qk_cost(t: TaskInfo) -> Cost:
    """qk(qi, key_cache, sij, block_ids): reads the q tile and n K blocks."""
    return _kv_cost(t, QK_PER_BLOCK_US, t.args[0].nbytes)


def pv_cost(t: TaskInfo) -> Cost:
    """pv(pij, value_cache, oi_new, block_ids): reads n V blocks (pij is an L2-resident intermediate)."""
    return _kv_cost(t, PV_PER_BLOCK_US, 0)


def sf_cost(t: TaskInfo) -> Cost:
    """sf(sij, pij, mi, li, scale, valid_len_last, n_blocks): only intermediates, no HBM traffic."""
    n = max(int(t.scalars[2]), 1)
    return Cost(FIXED_US + n * SF_PER_BLOCK_US * (t.args[0].nbytes / n) / CASE1_SIJ_BLOCK_BYTES, 0)


def _acc_bytes(args: Sequence[ArgInfo]) -> int:
    return sum(a.nbytes * (2 if a.dir == "InOut" else 1) for a in args)


def up_cost(t: TaskInfo) -> Cost:
    """up(mi, li, oi_new, mi_acc, li_acc, oi_acc, out, is_first, is_last): accumulators read (unless
    first) and written, the out tile written on the last chunk."""
    is_last = bool(t.scalars[1])
    us = UP_FIXED_US + UP_TILE_US * _elems(t.args[2]) / CASE1_UP_TILE_ELEMS
    return Cost(us, _acc_bytes(t.args[3:6]) + (t.args[6].nbytes if is_last else 0))


def hub_cost(t: TaskInfo) -> Cost:
    """hub(mi_acc, li_acc, oi_acc): zero-fills the accumulators."""
    return Cost(FIXED_US, sum(a.nbytes for a in t.args))
