"""``qwen3_14b_decode``: the reference's Qwen3-14B 40-layer decode step as a catalogue workload.

    model.py          shapes, cases, how a case stores its stacked weights and KV pools
    kernels.py        the dense AIC / AIV kernels on the tile layer (split-K GEMMs with atomic adds)
    attention.py      the tiling task and the fused RoPE + paged attention task (MIX x24, start together)
    orchestration.py  decode_fwd_layers: 277 submissions per layer, manual scopes, explicit deps
    golden.py         the independent vectorised numpy model

    build      the inputs with the reference fixture's distributions and tables (values from
               kernels/workloads/fill.py's seeded streams, filled on the device's cores -- not
               torch's generator: the values differ from the reference's, the distributions do not)
    run        decode_fwd_layers on the device
    golden     out, and both pools with every layer's new K/V rows (rtol 5e-2, atol 1e-1: the
               reference's check)
"""

from __future__ import annotations

from typing import Any

import ml_dtypes
import numpy as np

from kernels.workloads.fill import fill, normal
from kernels.workloads.qwen3.golden import golden_of
from kernels.workloads.qwen3.model import BATCH, CASES, KV_HEADS, METADATA_BYTES, THETA, WORKSPACE_BYTES, Shapes
from kernels.workloads.qwen3.orchestration import decode_fwd_layers
from kernels.workloads.workload import Alloc, Workload

__all__ = ["WORKLOAD", "build", "workspace_bytes"]

BF16 = np.dtype(ml_dtypes.bfloat16)
F32 = np.dtype(np.float32)


def workspace_bytes(sh: Shapes) -> int:
    """pa_workspace: the reference's 66,132,544 bytes at head_dim 128, scaled with head_dim (the
    attention here keeps no scratch in it; it is allocated and passed as in the reference)."""
    return WORKSPACE_BYTES * sh.head_dim // 128


def build(params: dict[str, Any], seed: int, alloc: Alloc) -> dict[str, np.ndarray]:
    """Every array of the run (INPUTS and ``out``), filled as the reference's fixture is (its
    generate_inputs: same distributions and tables), stored as model.py describes."""
    sh = Shapes.of(params)
    L, H, KV, D, I, wl = sh.layers, sh.hidden, sh.kv_hidden, sh.head_dim, sh.inter, sh.weight_layers  # noqa: E741
    a: dict[str, np.ndarray] = {}

    def make(name: str, shape: tuple, dtype: np.dtype, mean: float | None = None, std: float = 1.0) -> np.ndarray:
        arr = a[name] = alloc(shape, dtype)
        if mean is not None:            # a seeded stream per slice: filled on the device's cores
            fill(arr, normal(mean, std), seed, name, alloc)
        return arr

    make("hidden_states", (BATCH, H), BF16, 0.0, 1.0)
    make("input_rms_weight", (L, H), F32, 1.0, 0.1)
    make("wq", (wl * H, H), BF16, 0.0, 0.02)
    make("wk", (wl * H, KV), BF16, 0.0, 0.02)
    make("wv", (wl * H, KV), BF16, 0.0, 0.02)
    make("q_norm_weight", (L, D), F32, 1.0, 0.1)
    make("k_norm_weight", (L, D), F32, 1.0, 0.1)
    make("seq_lens", (BATCH,), np.dtype(np.int32))[...] = sh.seq_lens
    make("block_table", (sh.pages,), np.dtype(np.int32))[...] = np.arange(sh.pages)
    make("slot_mapping", (BATCH,), np.dtype(np.int32))[...] = sh.slots()
    ang = np.arange(sh.max_seq, dtype=np.float32)[:, None] * (
        1.0 / THETA ** (np.arange(D // 2, dtype=np.float32) / np.float32(D // 2)))[None, :]
    make("rope_cos", (sh.max_seq, D), F32)[...] = np.concatenate([np.cos(ang), np.cos(ang)], axis=1)
    make("rope_sin", (sh.max_seq, D), F32)[...] = np.concatenate([np.sin(ang), np.sin(ang)], axis=1)
    for name, mean, std in (("k_cache", 0.0, 0.01), ("v_cache", 0.3, 0.02)):
        pool = make(name, (sh.cache_rows, D), BF16, mean, std)
        for i in range(sh.kv_layers, L):       # an overlay row starts as its layer's pool row would
            src = (i % sh.kv_layers) * sh.layer_rows + sh.slots()[:, None] * KV_HEADS + np.arange(KV_HEADS)
            pool[sh.new_rows(i)] = pool[src]
    make("wo", (wl * H, H), BF16, 0.0, 0.0006)
    make("w_gate", (wl * H, I), BF16, 0.0, 0.02)
    make("w_up", (wl * H, I), BF16, 0.0, 0.02)
    make("w_down", (wl * I, H), BF16, 0.0, 0.0004)
    make("post_rms_weight", (L, H), F32, 1.0, 0.1)
    make("out", (BATCH, H), BF16)[...] = 0
    return a


def _orchestrate(rt: Any, t: dict[str, Any], params: dict[str, Any], variant: str) -> dict:
    sh = Shapes.of(params)
    return decode_fwd_layers(rt, t, sh, workspace_bytes(sh))


def _platform(params: dict[str, Any]) -> dict[str, Any]:
    """The heap: room for every runtime tensor of the run at once (the outer scope's workspace and
    each layer's tensors), a power of two. ptoemu frees a layer's tensors as soon as its scope has
    ended and they are used up, but the reference's heap -- and ptoemu predict's model of it -- is
    a ring, freed in allocation order behind the outer scope's workspace (the reference has four
    rings of 256 MB, one per scope depth; ptoemu one heap)."""
    sh = Shapes.of(params)
    per_layer = BATCH * (16 * sh.hidden + 8 * sh.kv_hidden + 80 * sh.head_dim + 10 * sh.inter + 8)
    need = workspace_bytes(sh) + METADATA_BYTES + 6 * BATCH * sh.hidden * (2 + sh.layers) + sh.layers * per_layer
    heap = 64 << 20
    while heap < need * 5 // 4:
        heap *= 2
    return {"heap_bytes": heap}


WORKLOAD = Workload(
    name="qwen3_14b_decode",
    summary="Qwen3-14B decode, 40 layers x 277 submissions: split-K GEMMs with atomic adds, a 24-cluster "
            "start-together RoPE + paged attention task, manual scopes with explicit deps",
    features=("manual scopes + deps= (632 per layer)", "atomic-add split-K producers", "SPMD blocks=50/24/10/6/5",
              "mixed task, sync_start", "submit_dummy", "alloc_tensors", "runtime tensors across scopes",
              "stacked weights / KV pools (shared storage)"),
    cases=CASES,
    build=build, outputs=("out", "k_cache", "v_cache"), orchestrate=_orchestrate, golden=golden_of,
    tolerance=(5e-2, 1e-1),
    kernels=("kernels.workloads.qwen3",),
    hardware_only=frozenset({"StressBatch16Seq3500"}),
    big=frozenset({"StressBatch16Seq3500"}),
    platform=_platform,
    reference="examples/a2a3/tensormap_and_ringbuffer/qwen3_14b_decode",
    min_blocks=24,
    plan_inputs=(),
    # Its manual scopes leave the split-K producers of an accumulator unordered (they add into it
    # side by side, atomically): run under the reference's rules, so that a recorded graph -- and
    # a prediction from it -- is the chip's. Sequential semantics gives the same result, ordering
    # the producers one after another.
    semantics="reference",
)
