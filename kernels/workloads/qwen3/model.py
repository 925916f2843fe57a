"""Qwen3-14B decode: the model's shapes, the cases, and how a case stores its stacked tensors.

    case parameters ──Shapes.of(params)──▶ every width, count and GM layout the kernels, the
                                           orchestration, the golden and the build agree on

Qwen3-14B (the reference's example, hw-native-sys/simpler
examples/a2a3/tensormap_and_ringbuffer/qwen3_14b_decode, fixture and golden in
simpler_setup/goldens/qwen3_14b_decode.py): 40 query heads and 8 KV heads of head_dim 128
(hidden 5120, KV width 1024, GQA group 5), intermediate 17408, RMSNorm eps 1e-6, RoPE theta 1e4
(half rotation), batch 16 decode lanes of one token each, paged KV of 128-token pages in the BSND
layout (row = (page * 128 + position) * kv_heads + kv_head, 128 values), 40 layers, hidden ->
hidden (no embedding, no LM head).

Every tile count of the reference's graph comes from ``unit`` = hidden / 5 (1024): 5 K blocks of
the hidden width, 17 N tiles of the intermediate (17 * unit), q/k/v projection blocks of unit / 2
columns in sub-tiles of unit / 4, out_proj tiles of unit / 2. The CI cases divide every width by
4 (head_dim 32, unit 256) and keep heads, batch, page size and every count, so the per-layer graph
is the same 277 submissions with the same dependencies.

Stacked tensors and what a case may share (the reference's fixture replicates layer 0's weights
and KV pools 40 times; 38 GiB at full size):

    weights (wq wk wv wo w_gate w_up w_down)  [weight_layers * rows, cols] bf16: a kernel takes the
                         reference's layer row offset (i * hidden, i * intermediate) modulo the
                         rows stored, so layer i uses stored layer i mod weight_layers, and one
                         stored layer (weight_layers = 1) serves every layer with the values the
                         replicated fixture would give it
    KV pools (k_cache v_cache)  [kv_layers * layer_rows + overlay, head_dim] bf16: region r <
                         kv_layers is layer r's pool, as in the reference; a layer i >= kv_layers
                         reads the tokens it does not write from region i mod kv_layers (in the
                         reference's fixture every pool starts as a copy of layer 0's), and the
                         rows it writes -- its new token's K/V, one per (lane, kv head) -- go to
                         the overlay: row kv_layers * layer_rows + ((i - kv_layers) * batch + b)
                         * kv_heads + h. So every layer's written rows are kept (and checked),
                         and the pool a layer attends over holds exactly what its own pool would.
    small per-layer tensors (norm weights)   [layers, width]: always one row per layer, distinct

The graph (tasks, dependencies, scalars: the layer row offsets i * hidden, i * intermediate and
the cache base i * layer_rows) is the reference's whatever is stored; only the stacked tensors'
row counts differ, and with them the bytes a recorded weight or pool argument spans.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["CASES", "Shapes", "HEADS", "KV_HEADS", "BATCH", "BLOCK", "K_SPLITS", "N_TILES"]

HEADS, KV_HEADS, BATCH, BLOCK = 40, 8, 16, 128
GROUP = HEADS // KV_HEADS               # query heads per KV head
K_SPLITS = 5                            # K blocks of the hidden width (hidden = 5 * unit)
N_TILES = 17                            # N tiles of the intermediate (intermediate = 17 * unit)
ATTN_CORES = 24                         # clusters of the attention task (start together)
ROPE_LANES = 32                         # AIV lanes of the attention's phase 0
EPS = 1e-6
THETA = 1e4
WORKSPACE_BYTES = 66_132_544            # the reference's pa_workspace (the CANN attention's scratch)
METADATA_BYTES = 27_840                 # ... and its tiling metadata

# Case parameters: head_dim (128 real, 32 scaled), layers, max_seq, seq_len (an int, or a list
# repeated over the 16 lanes), weight_layers / kv_layers stored (default: all layers).
CASES: dict[str, dict[str, Any]] = {
    # all widths / 4 (head_dim 32, hidden 1280, intermediate 4352), 5 pages per lane
    "Scaled2L": {"head_dim": 32, "layers": 2, "max_seq": 640, "seq_len": 300},
    # ... per-lane lengths: one token, a full page, a page and a token, ...
    "Scaled2LRagged": {"head_dim": 32, "layers": 2, "max_seq": 640,
                       "seq_len": [1, 128, 129, 300, 511, 640, 2, 255]},
    # 40 layers, one stored layer of weights and KV (the full case's storage)
    "Scaled40L": {"head_dim": 32, "layers": 40, "max_seq": 640, "seq_len": 300,
                  "weight_layers": 1, "kv_layers": 1},
    # the real widths and tiles, 2 layers: one stored layer of weights, both layers' pools
    "Full2L": {"head_dim": 128, "layers": 2, "max_seq": 5500, "seq_len": 3500, "weight_layers": 1},
    # the reference's case: 40 layers, batch 16, context 3500 of 5500; one stored layer
    "StressBatch16Seq3500": {"head_dim": 128, "layers": 40, "max_seq": 5500, "seq_len": 3500,
                             "weight_layers": 1, "kv_layers": 1},
}


@dataclass(frozen=True)
class Shapes:
    """Everything derived from a case."""

    head_dim: int
    layers: int
    max_seq: int
    seq_lens: tuple[int, ...]           # per lane, 1 .. max_seq
    weight_layers: int
    kv_layers: int

    @classmethod
    def of(cls, params: Mapping[str, Any]) -> Shapes:
        d, layers, max_seq = int(params["head_dim"]), int(params["layers"]), int(params["max_seq"])
        lens = np.resize(np.asarray(params["seq_len"], np.int64).reshape(-1), BATCH)
        wl, kl = int(params.get("weight_layers", layers)), int(params.get("kv_layers", layers))
        name = params.get("name", "case")
        if d < 16 or d % 16 or (HEADS * d) % (K_SPLITS * 64):
            raise ValueError(f"qwen3 case {name}: head_dim {d} must be a multiple of 16 with 40 * head_dim a "
                             "multiple of 320 (unit = hidden / 5 divisible by 64)")
        if layers < 1 or not 1 <= wl <= layers or not 1 <= kl <= layers:
            raise ValueError(f"qwen3 case {name}: layers {layers}, weight_layers {wl}, kv_layers {kl}: expected "
                             "layers >= 1 and 1 <= stored layers <= layers")
        if (lens < 1).any() or (lens > max_seq).any():
            raise ValueError(f"qwen3 case {name}: every seq_len must be in 1..max_seq={max_seq}, got {lens.tolist()}")
        return cls(d, layers, max_seq, tuple(int(x) for x in lens), wl, kl)

    # -- widths ------------------------------------------------------------------------------------
    @property
    def hidden(self) -> int:
        return HEADS * self.head_dim

    @property
    def kv_hidden(self) -> int:
        return KV_HEADS * self.head_dim

    @property
    def unit(self) -> int:
        """K block of the hidden width (1024 at full size); every tile width derives from it."""
        return self.hidden // K_SPLITS

    @property
    def inter(self) -> int:
        return N_TILES * self.unit

    # -- paging ------------------------------------------------------------------------------------
    @property
    def max_blocks(self) -> int:
        """Pages per lane (block-table columns)."""
        return -(-self.max_seq // BLOCK)

    @property
    def pages(self) -> int:
        """Pages of one layer's pool (block_table entries)."""
        return BATCH * self.max_blocks

    @property
    def layer_rows(self) -> int:
        """Rows of one layer's pool: (page * BLOCK + position) * KV_HEADS + kv_head."""
        return self.pages * BLOCK * KV_HEADS

    @property
    def written_rows(self) -> int:
        """Rows one layer writes into its pool: a new token per lane and KV head."""
        return BATCH * KV_HEADS

    @property
    def cache_rows(self) -> int:
        """Rows a pool tensor stores: kv_layers regions + the overlay of the other layers."""
        return self.kv_layers * self.layer_rows + (self.layers - self.kv_layers) * self.written_rows

    def slots(self) -> np.ndarray:
        """slot_mapping: the BSND token row (page * BLOCK + position) of each lane's new token."""
        p = np.asarray(self.seq_lens, np.int64) - 1
        return (np.arange(BATCH) * self.max_blocks + p // BLOCK) * BLOCK + p % BLOCK

    def new_rows(self, layer: int) -> np.ndarray:
        """Rows of a pool tensor where ``layer`` writes its new (lane, kv head) K/V, (BATCH, KV_HEADS)."""
        if layer < self.kv_layers:
            return layer * self.layer_rows + self.slots()[:, None] * KV_HEADS + np.arange(KV_HEADS)
        base = self.kv_layers * self.layer_rows + (layer - self.kv_layers) * self.written_rows
        return base + np.arange(self.written_rows).reshape(BATCH, KV_HEADS)

    def nbytes(self) -> int:
        """Bytes of every input the build makes (bf16 weights and pools, fp32 tables)."""
        h, kv, i, d, wl = self.hidden, self.kv_hidden, self.inter, self.head_dim, self.weight_layers
        weights = 2 * wl * h * (2 * h + 2 * kv + 2 * i) + 2 * wl * i * h
        pools = 2 * 2 * self.cache_rows * d
        small = 4 * self.layers * (2 * h + 2 * d) + 2 * 4 * self.max_seq * d + 2 * 2 * BATCH * h
        return weights + pools + small + 4 * (2 * BATCH + self.pages)

    @property
    def scale(self) -> float:
        return 1.0 / math.sqrt(self.head_dim)
