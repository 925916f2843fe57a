"""The decode layer's attention: the tiling task and the fused RoPE + paged attention task.

Reference: hw-native-sys/simpler examples/a2a3/tensormap_and_ringbuffer/qwen3_14b_decode/kernels/
vendor/paged_attention_cce (tiling/entry.cpp, attention_rope/entry.cpp, kernel/fai_body.hpp,
kernel/rope_qkv_generated.hpp): CANN's FusedInferAttentionScore with PyPTO's RoPE folded in as a
phase 0, launched as ONE mixed task of 24 clusters that must start together.

    paged_attention_tiling_cce   AIV x1: seq_lens -> pa_metadata (header, cumulative query
                                 lengths, KV lengths; the format is ours, the reference's is the
                                 FAInferTilingData blob of the CANN tiler)
    paged_attention_rope_cce     MIX (AIC + 2 AIV) x 24, sync_start; scalar layer_cache_base
      phase 0 (AIV)   work item (lane b, kv head g), for the 16 x 8 = 128 items:
                      s = inv_rms[b]; p = seq_len[b] - 1
                      k = rmsnorm(k_acc[b, g] * s) * k_norm_w; RoPE at p; bf16 -> k_cache new row
                      v = bf16(v_acc[b, g] * s)                             -> v_cache new row
                      the 5 query heads of the group: rmsnorm(q * s) * q_norm_w; RoPE; bf16 -> q_tnd
      sync_all()      every part of every block (AscendC::SyncAll<false>, the all-core barrier)
      phase 1         FlashAttention decode, no split-KV: task t -> (lane t // 8, kv head t % 8),
                      cluster k runs t = k, k + 24, ...; 5 query heads x 1 token against the lane's
                      seq_len keys through block_table, in stacks of 512 tokens: S = q.K^T / sqrt(d)
                      (fp32), running max, P = bf16(exp(S - m)), O += P.V (fp32), rescaled;
                      attn_out[b, heads] = bf16(O / l)

Phase 0 runs as in the reference: lane = 2 * block_idx + sub_block_id, lanes 0..31 take work
items lane + 32 j, item w -> (lane w % batch, kv head w // batch); then every part of every block
calls ``sync_all`` (kernels/barrier.py, the chip's SyncAll<false>) before any core reads what
phase 0 wrote -- the reason the task is launched with sync_start: all 24 clusters must be running.

Where phase 1 runs, here: the vector parts (each sub-block takes every other task of its
cluster). The reference runs QK and PV on the cube and the softmax on the vectors, handing tiles
over through cross-core flags inside the task; ptoemu has no such in-task pipe yet, so the whole
flash-attention step runs on the vector parts and the cube part only takes part in the launch.
Both phases are plain vectorised numpy (the vendor kernel is not written in the PTO instructions
the tile layer has): the task's a2a3 time comes from a cost law (``attention_cost``).

Pools: the attention reads and writes the pools through the layout model.py describes (regions
of stored layers + an overlay of the other layers' written rows); the region count comes from
the pool tensor's rows and the per-layer rows from the metadata's page count.
"""

from __future__ import annotations

import ml_dtypes
import numpy as np

from kernels import AIV, Mixed, a2a3, core_info, kernel, sync_all
from kernels.cost import Cost, TaskInfo
from kernels.workloads.qwen3.model import ATTN_CORES, BLOCK, EPS, GROUP, KV_HEADS, ROPE_LANES

__all__ = ["paged_attention_tiling_cce", "paged_attention_rope_cce", "attention_cost", "META_WORDS",
           "pool_rows", "STACK"]

BF16 = np.dtype(ml_dtypes.bfloat16)
STACK = 512                    # tokens per flash-attention step (4 pages)
META_WORDS = 8                 # int64 header words of pa_metadata, then 2 x batch int64
_MAGIC = 0x5157454E33          # "QWEN3": the metadata was written by the tiling task


@kernel(AIV)
def paged_attention_tiling_cce(seq_lens: np.ndarray, metadata: np.ndarray, max_blocks: int, num_pages: int) -> None:
    """pa_metadata (u8) = header [magic, batch, max_blocks, num_pages, tasks, 0, 0, 0], then the
    cumulative query lengths (b + 1: one decode token per lane) and the KV lengths (seq_lens),
    as int64."""
    b = seq_lens.shape[0]
    metadata[...] = 0                       # an Out: every byte is written (the rest is reserved)
    words = metadata[:(META_WORDS + 2 * b) * 8].view(np.int64)
    words[:META_WORDS] = (_MAGIC, b, int(max_blocks), int(num_pages), KV_HEADS * b, 0, 0, 0)
    words[META_WORDS:META_WORDS + b] = np.arange(1, b + 1)
    words[META_WORDS + b:] = seq_lens


def _meta(metadata: np.ndarray) -> tuple[int, int, int, np.ndarray]:
    """(batch, max_blocks, num_pages, kv lengths) from pa_metadata."""
    head = metadata[:META_WORDS * 8].view(np.int64)
    if head[0] != _MAGIC:
        raise ValueError("paged_attention_rope_cce: pa_metadata was not written by paged_attention_tiling_cce")
    b = int(head[1])
    lens = metadata[(META_WORDS + b) * 8:(META_WORDS + 2 * b) * 8].view(np.int64)
    return b, int(head[2]), int(head[3]), lens


def pool_rows(layer_rows: int, batch: int, cache_rows: int, layer: int) -> tuple[int, int | None]:
    """Where ``layer`` finds its pool in a pool tensor of ``cache_rows`` rows: (region base row of
    the tokens it reads, overlay base row of the rows it writes, or None if it writes its region)."""
    stored = cache_rows // layer_rows
    if layer < stored:
        return layer * layer_rows, None
    extra = (cache_rows - stored * layer_rows) // (batch * KV_HEADS)
    if layer - stored >= extra:
        raise ValueError(f"paged_attention_rope_cce: layer {layer} has no pool: the cache stores {stored} layer "
                         f"region(s) of {layer_rows} rows and {extra} layers' written rows")
    return (layer % stored) * layer_rows, stored * layer_rows + (layer - stored) * batch * KV_HEADS


def _layer_pool(metadata: np.ndarray, k_cache: np.ndarray, layer_base: int) -> tuple:
    """(batch, max_blocks, KV lengths, region base row, overlay base row or None) of the layer
    whose cache base is ``layer_base``."""
    batch, max_blocks, num_pages, lens = _meta(metadata)
    layer_rows = num_pages * BLOCK * KV_HEADS
    region, overlay = pool_rows(layer_rows, batch, k_cache.shape[0], int(layer_base) // layer_rows)
    return batch, max_blocks, lens, region, overlay


def _new_rows(items_b: np.ndarray, items_g: np.ndarray, region: int, overlay: int | None,
              slots: np.ndarray, batch: int) -> np.ndarray:
    if overlay is None:
        return region + slots[items_b] * KV_HEADS + items_g
    return overlay + items_b * KV_HEADS + items_g


def _rms_rope(x: np.ndarray, s: np.ndarray, w: np.ndarray, cos: np.ndarray, sin: np.ndarray) -> np.ndarray:
    """bf16(RoPE(rmsnorm(x * s) * w)): x (n, heads, d) fp32, s (n, 1, 1), cos/sin (n, 1, d)."""
    x = x * s
    x = x * (1.0 / np.sqrt(np.mean(x * x, axis=-1, keepdims=True, dtype=np.float32) + np.float32(EPS))) * w
    h = x.shape[-1] // 2
    lo, hi = x[..., :h], x[..., h:]
    out = np.concatenate([lo * cos[..., :h] - hi * sin[..., :h], hi * cos[..., h:] + lo * sin[..., h:]], axis=-1)
    return out.astype(BF16)


def _phase0(items: np.ndarray, args: tuple, layer_base: int) -> None:
    """QK-norm + RoPE of the work items (item w: lane w % batch, kv head w // batch)."""
    (_, q_tnd, k_cache, v_cache, _, _, metadata, q_acc, k_acc, v_acc, q_norm_w, k_norm_w, rope_cos, rope_sin,
     inv_rms, slot_mapping, seq_lens) = args
    if items.size == 0:
        return
    batch, _, _, region, overlay = _layer_pool(metadata, k_cache, layer_base)
    d = k_cache.shape[1]
    b, g = items % batch, items // batch
    p = seq_lens[b].astype(np.int64) - 1
    s = inv_rms[b, 0].astype(np.float32)[:, None, None]
    cos, sin = rope_cos[p][:, None, :], rope_sin[p][:, None, :]
    k = k_acc.reshape(batch, KV_HEADS, d)[b, g][:, None, :]
    v = v_acc.reshape(batch, KV_HEADS, d)[b, g]
    rows = _new_rows(b, g, region, overlay, slot_mapping.astype(np.int64), batch)
    k_cache[rows] = _rms_rope(k, s, k_norm_w.reshape(1, 1, d), cos, sin)[:, 0]
    v_cache[rows] = (v * s[:, 0]).astype(BF16)
    heads = g[:, None] * GROUP + np.arange(GROUP)                         # (n, 5)
    q = q_acc.reshape(batch, -1, d)[b[:, None], heads]                    # (n, 5, d)
    q_tnd[b[:, None], heads] = _rms_rope(q, s, q_norm_w.reshape(1, 1, d), cos, sin)


def _widen(a: np.ndarray) -> np.ndarray:
    """bf16 -> fp32 exactly: bf16 is the top half of an fp32 (~3x faster than a dtype cast)."""
    out = np.empty(a.shape, np.float32)
    w = out.view(np.uint32)
    np.copyto(w, a.view(np.uint16), casting="unsafe")
    w <<= 16
    return out


def _phase1(tasks: np.ndarray, args: tuple, layer_base: int, scale: float) -> None:
    """Flash-attention decode of tasks t -> (lane t // 8, kv head t % 8)."""
    (attn_out, q_tnd, k_cache, v_cache, block_table, _, metadata, *_rest) = args
    slot_mapping = args[15]
    if tasks.size == 0:
        return
    batch, max_blocks, lens, region, overlay = _layer_pool(metadata, k_cache, layer_base)
    d = k_cache.shape[1]
    for t in tasks.tolist():
        b, g = divmod(t, KV_HEADS)
        n = int(lens[b])
        npg = -(-n // BLOCK)
        pages = block_table[b * max_blocks:b * max_blocks + npg].astype(np.int64)
        rows = (region + (pages[:, None] * BLOCK + np.arange(BLOCK)) * KV_HEADS + g).reshape(-1)[:n]
        rows[n - 1] = _new_rows(np.array([b]), np.array([g]), region, overlay,
                                slot_mapping.astype(np.int64), batch)[0]
        k, v = _widen(k_cache[rows]), _widen(v_cache[rows])              # (n, d) fp32
        q = q_tnd[b, g * GROUP:(g + 1) * GROUP].astype(np.float32)       # (5, d)
        s = (q @ k.T) * np.float32(scale)                                 # (5, n)
        o = np.zeros((GROUP, d), np.float32)
        m = np.full((GROUP, 1), -np.inf, np.float32)
        l_sum = np.zeros((GROUP, 1), np.float32)
        for j in range(0, n, STACK):                                     # the online softmax, stack by stack
            sj = s[:, j:j + STACK]
            m_new = np.maximum(m, sj.max(axis=1, keepdims=True))
            alpha = np.exp(m - m_new)
            p = np.exp(sj - m_new)
            pb = p.astype(BF16).astype(np.float32)
            l_sum = l_sum * alpha + p.sum(axis=1, keepdims=True)
            o = o * alpha + pb @ v[j:j + STACK]
            m = m_new
        attn_out[b, g * GROUP:(g + 1) * GROUP] = (o / l_sum).astype(BF16)


def _part(*args: object) -> None:
    """A vector part: phase 0 on the reference's RoPE lanes, the all-core barrier, phase 1 on the
    tasks of its cluster (every other one: the two vector parts share them)."""
    *tensors, layer_base = args
    info = core_info()
    k, sub, nblk = (info.block_idx, info.sub_block_id, info.block_num) if info else (0, 0, 1)
    batch = tensors[16].shape[0]
    lane = 2 * k + sub
    items = np.arange(lane, KV_HEADS * batch, ROPE_LANES) if lane < ROPE_LANES else np.arange(0)
    _phase0(items, tuple(tensors), int(layer_base))
    sync_all()                                                           # SyncAll<false>: every core
    mine = np.arange(k, KV_HEADS * batch, nblk)[sub::2]                  # tasks t = k, k + 24, ...
    _phase1(mine, tuple(tensors), int(layer_base), 1.0 / np.sqrt(tensors[2].shape[1]))


def _cube(*args: object) -> None:
    """The cube part: meets the vector parts at the barrier; in the reference it then runs QK and
    PV of phase 1 (module docstring)."""
    sync_all()


def attention_cost(task: TaskInfo) -> Cost:
    """a2a3 time of one cluster of the attention task and the HBM bytes it reads (inferred from the
    kernel's structure, not measured: the reference publishes no per-kernel time of this task).

    Phase 1 streams K and V: the cube loads them from GM into L1 in 128-token pages (QK, then PV),
    the vector parts' softmax overlapping, so a cluster's time is its pages' GM -> L1 transfers on
    one MTE2 queue, priced as the tile layer prices a TLOAD (kernels/a2a3.py: pto-isa's GM -> L1
    curve, scaled by the fitted gm_scale), plus a fixed part for the RoPE phase, the barrier and the
    launch. A cluster runs 128 / 24 of the (lane, kv head) tasks. The KV lengths are data (seq_lens),
    not in the recorded task, so every lane is charged the block table's capacity -- max_blocks
    pages, an upper bound (3,500 of 5,504 tokens in the reference's case: 1.57x the real traffic)."""
    k_cache, block_table, seq_lens = task.args[2], task.args[4], task.args[16]
    batch = seq_lens.shape[0]
    d = k_cache.shape[1]
    pages = block_table.shape[0] // batch
    page_bytes = BLOCK * d * 2
    tasks = KV_HEADS * batch / ATTN_CORES
    loads = 2 * pages * tasks                                           # K and V pages
    cycles = loads * a2a3.transfer_cycles((a2a3.GM, a2a3.L1), page_bytes) * a2a3.corner_value("gm_scale", "value")
    return Cost(FIXED_US + a2a3.us(cycles), int(loads * page_bytes))


FIXED_US = 5.0                 # inferred: RoPE phase, barrier, launch


paged_attention_rope_cce = kernel(Mixed(aic=_cube, aiv0=_part, aiv1=_part),
                                  name=f"{__name__}.paged_attention_rope_cce", cost=attention_cost)
