"""Sharding paged attention across devices: split the batch, give each shard only its KV blocks.

    inputs (batch B, one KV cache) ──shard(n)──▶ n shards: sequences [b0, b1), the cache blocks
                                                those sequences use (compacted, block table
                                                renumbered), out rows [b0*H, b1*H)
    n outputs ──gather──▶ out (B*H, D)

Sequences are independent in decode attention, so sharding the batch is exact: every shard's
result equals the same rows of the unsharded run, bit for bit. Each shard is a plain dict
``{"args": [...numpy...], "outputs": [(shape, dtype)], "kwargs": {...}, "rows": (r0, r1)}`` that
``host.cluster.DeviceGroup.run_sharded`` turns into device tensors.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from kernels.workloads.paged_attention.tiling import num_blocks


def shard(inp: dict[str, Any], n: int, *, variant: str = "first_output", unroll: int = 64) -> list[dict]:
    """Split the inputs of ``generate_inputs`` into ``n`` shards of consecutive sequences."""
    q, kc, vc = inp["query"], inp["key_cache"], inp["value_cache"]
    bt, ctx = inp["block_table"], inp["context_lens"]
    batch, heads, head_dim = q.shape
    if not 1 <= n <= batch:
        raise ValueError(f"shard(n={n}): expected 1 <= n <= batch ({batch})")
    bs = kc.shape[1]
    bounds = np.linspace(0, batch, n + 1).round().astype(int)
    out = []
    for b0, b1 in zip(bounds[:-1], bounds[1:]):
        used_cols = [num_blocks(int(c), bs) for c in ctx[b0:b1]]
        used = np.unique(np.concatenate([bt[b0 + i, :u] for i, u in enumerate(used_cols)]))
        remap = np.zeros(kc.shape[0], np.int32)
        remap[used] = np.arange(len(used), dtype=np.int32)
        sbt = np.zeros((b1 - b0, bt.shape[1]), np.int32)       # unused columns point at block 0
        for i, u in enumerate(used_cols):
            sbt[i, :u] = remap[bt[b0 + i, :u]]
        out.append({"args": [np.ascontiguousarray(q[b0:b1]), kc[used], vc[used], sbt,
                             np.ascontiguousarray(ctx[b0:b1])],
                    "outputs": [((int(b1 - b0) * heads, head_dim), np.float32)],
                    "kwargs": {"scale": float(inp["scale"]), "variant": variant, "unroll": unroll},
                    "rows": (int(b0) * heads, int(b1) * heads)})
    return out


def gather(shards: list[dict], results: list[list[np.ndarray]]) -> np.ndarray:
    """Stitch the shards' outputs back into one (batch*heads, head_dim) array."""
    total = shards[-1]["rows"][1]
    out = np.empty((total, results[0][0].shape[1]), np.float32)
    for s, r in zip(shards, results):
        out[s["rows"][0]:s["rows"][1]] = r[0]
    return out
