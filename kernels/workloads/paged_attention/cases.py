"""Paged-attention test cases and their inputs.

``CASES`` maps a name to the case parameters (the reference's names): batch, num_heads, kv_head_num
(always 1), head_dim, block_size, context_len (an int for every sequence, or a list — one value
per sequence, repeated cyclically to the batch as the reference does), max_model_len, dtype
("bfloat16"), and ``unroll``: the number of KV blocks per chunk (N_UNROLL) the case is meant to run
with. A case may also fix ``scale`` (default 1/sqrt(head_dim)).

``generate_inputs(case)`` builds the inputs the way the reference does: query U(-0.5, 0.5), keys
U(-0.5, 0.5), values U(-1, 1), in bf16; ``batch * ceil(max context / block_size)`` physical KV
blocks (Case1: 16384 blocks, 512 MiB each for K and V); a block table of ``max_model_len /
block_size`` columns whose used entries are a random permutation of the physical blocks (no two
sequences share a block) and whose unused entries are random valid block indices.

Every array comes from ``alloc(shape, dtype)`` (default ``np.empty``). The three bf16 arrays are
filled by kernels/workloads/fill.py, slice by slice from a seeded stream per slice: in place (Case1's
1 GiB cache is written once, no fp32 copy of it ever exists), on the device's cores when ``alloc``
is a device's (host/run.py build_on), and with the same bits whoever fills them. The block table
comes from ``np.random.default_rng(seed)`` (a permutation of 16384 blocks is quick).

Differences from the reference generator, on purpose: scale is 1/sqrt(head_dim) (the reference
passes 1.0; the ``ref_scale`` case keeps 1.0), the used block-table entries are a permutation (the
reference draws them with replacement, so sequences may share blocks), and the uniform values are fill.py's
(65,536 equally likely levels rounded toward zero to bf16, so never the upper bound) rather than
fp32 draws rounded to nearest.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import ml_dtypes
import numpy as np

from kernels.workloads.fill import fill, uniform

__all__ = ["CASES", "DEFAULTS", "case_params", "fill_inputs", "generate_inputs", "input_specs"]

DEFAULTS: dict[str, Any] = {"kv_head_num": 1, "max_model_len": 32768, "dtype": "bfloat16", "unroll": 64}

_PRODUCTION = {"kv_head_num": 1, "max_model_len": 32768, "dtype": "bfloat16", "unroll": 64}

CASES: dict[str, dict[str, Any]] = {
    # CI-sized: 4 sequences x 10 blocks (last one partial) in chunks of 4 -> 3 chunks per group.
    "small": {"batch": 4, "num_heads": 16, "head_dim": 64, "block_size": 32, "context_len": 300,
              "max_model_len": 1024, "unroll": 4},
    # Production cases (a2a3 test suite). Task counts with unroll 64: 1024 / 2048 / 512 (+ 256 /
    # 256 / 128 hub tasks).
    "Case1": {"batch": 256, "num_heads": 16, "head_dim": 128, "block_size": 128, "context_len": 8192,
              **_PRODUCTION},
    "Case2": {"batch": 64, "num_heads": 64, "head_dim": 128, "block_size": 64, "context_len": 8192,
              **_PRODUCTION},
    "Case3": {"batch": 64, "num_heads": 64, "head_dim": 256, "block_size": 64, "context_len": 8192,
              **_PRODUCTION},
    # Case1's kernel shapes (q_tile 16, block 128, 64-block chunk) on two sequences.
    "case1_b2": {"batch": 2, "num_heads": 16, "head_dim": 128, "block_size": 128, "context_len": 8192,
                 **_PRODUCTION},
    # ---- edge cases (small) ----
    # 100 tokens = 3 full blocks + 4 tokens: the last chunk's last block is partial.
    "ctx_not_multiple": {"batch": 2, "num_heads": 8, "head_dim": 32, "block_size": 32,
                         "context_len": 100, "max_model_len": 512, "unroll": 2},
    # Fewer tokens than one block: one chunk, one partial block.
    "ctx_lt_block": {"batch": 3, "num_heads": 8, "head_dim": 32, "block_size": 32, "context_len": 5,
                     "max_model_len": 256, "unroll": 4},
    # Exactly one full block.
    "ctx_one_block": {"batch": 2, "num_heads": 8, "head_dim": 32, "block_size": 32, "context_len": 32,
                      "max_model_len": 256, "unroll": 4},
    # A single token per sequence.
    "ctx_one_token": {"batch": 2, "num_heads": 4, "head_dim": 16, "block_size": 16, "context_len": 1,
                      "max_model_len": 64, "unroll": 4},
    # Different lengths across the batch: 1..13 blocks, partial and full last blocks, 1..4 chunks.
    "mixed_lens": {"batch": 7, "num_heads": 8, "head_dim": 32, "block_size": 16,
                   "context_len": [1, 15, 16, 17, 64, 200, 97], "max_model_len": 256, "unroll": 4},
    # More than 128 heads: two full head tiles of 128.
    "heads_256": {"batch": 2, "num_heads": 256, "head_dim": 16, "block_size": 16, "context_len": 40,
                  "max_model_len": 128, "unroll": 2},
    # 192 heads: a full tile of 128 and a short tile of 64.
    "heads_192": {"batch": 2, "num_heads": 192, "head_dim": 16, "block_size": 16, "context_len": 33,
                  "max_model_len": 128, "unroll": 2},
    # 7 blocks in chunks of 3: 3 + 3 + 1.
    "blocks_not_multiple_unroll": {"batch": 2, "num_heads": 8, "head_dim": 32, "block_size": 16,
                                   "context_len": 7 * 16, "max_model_len": 256, "unroll": 3},
    # One block per chunk (the non-unrolled pipeline; also the reference golden's chunking).
    "unroll_1": {"batch": 2, "num_heads": 8, "head_dim": 32, "block_size": 16, "context_len": 90,
                 "max_model_len": 256, "unroll": 1},
    # Unroll larger than the sequence: everything in one chunk.
    "unroll_ge_blocks": {"batch": 2, "num_heads": 8, "head_dim": 32, "block_size": 16,
                         "context_len": 150, "max_model_len": 512, "unroll": 64},
    # The reference's scale of 1.0: sharper softmax, p spans many binades.
    "ref_scale": {"batch": 2, "num_heads": 16, "head_dim": 128, "block_size": 32, "context_len": 250,
                  "max_model_len": 512, "unroll": 2, "scale": 1.0},
}

_REQUIRED = ("batch", "num_heads", "head_dim", "block_size", "context_len")
_VALUES = {"query": uniform(-0.5, 0.5), "key_cache": uniform(-0.5, 0.5), "value_cache": uniform(-1.0, 1.0)}

Alloc = Callable[[tuple[int, ...], np.dtype], np.ndarray]


def case_params(case: str | dict[str, Any]) -> dict[str, Any]:
    """The full parameter dict of a case (a name in ``CASES`` or a dict), defaults filled in."""
    if isinstance(case, str):
        if case not in CASES:
            raise KeyError(f"unknown paged-attention case {case!r}; known: {', '.join(CASES)}")
        params = {"name": case, **DEFAULTS, **CASES[case]}
    else:
        params = {"name": "custom", **DEFAULTS, **case}
    missing = [k for k in _REQUIRED if k not in params]
    if missing:
        raise KeyError(f"case {params['name']!r} lacks {', '.join(missing)}")
    if params["kv_head_num"] != 1:
        raise ValueError(f"case {params['name']!r}: only kv_head_num == 1 is supported")
    if params["dtype"] != "bfloat16":
        raise ValueError(f"case {params['name']!r}: only dtype 'bfloat16' is supported")
    return params


def _context_lens(params: dict[str, Any]) -> np.ndarray:
    batch, cl = params["batch"], params["context_len"]
    vals = np.resize(np.asarray(cl, np.int64).reshape(-1), batch)   # cyclic, as the reference
    if (vals < 1).any():
        raise ValueError(f"case {params['name']!r}: context lengths must be >= 1, got {cl!r}")
    if vals.max() > params["max_model_len"]:
        raise ValueError(f"case {params['name']!r}: context {vals.max()} exceeds max_model_len "
                         f"{params['max_model_len']}")
    return vals


def input_specs(case: str | dict[str, Any]) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
    """Shapes and dtypes of the arrays ``generate_inputs`` fills, without generating anything.

    Lets a caller size device memory up front (Case1: key_cache and value_cache are each
    (16384, 128, 1, 128) bf16 = 512 MiB).
    """
    params = case_params(case)
    batch, heads = params["batch"], params["num_heads"]
    head_dim, bs = params["head_dim"], params["block_size"]
    blocks_per_seq = -(-int(_context_lens(params).max()) // bs)
    table_cols = params["max_model_len"] // bs
    if table_cols < blocks_per_seq:
        raise ValueError(f"case {params['name']!r}: max_model_len {params['max_model_len']} gives "
                         f"{table_cols} block-table columns, a sequence needs {blocks_per_seq}")
    bf16 = np.dtype(ml_dtypes.bfloat16)
    cache = ((batch * blocks_per_seq, bs, 1, head_dim), bf16)
    return {"query": ((batch, heads, head_dim), bf16), "key_cache": cache, "value_cache": cache,
            "block_table": ((batch, table_cols), np.dtype(np.int32)),
            "context_lens": ((batch,), np.dtype(np.int32))}


def generate_inputs(case: str | dict[str, Any], seed: int = 0, *,
                    alloc: Alloc | None = None) -> dict[str, Any]:
    """Inputs of a case: query, key_cache, value_cache, block_table, context_lens, scale + the params.

    query (batch, num_heads, head_dim) bf16; key_cache, value_cache (total_blocks, block_size, 1,
    head_dim) bf16; block_table (batch, max_model_len // block_size) int32; context_lens (batch,)
    int32; scale a float. ``alloc(shape, dtype)`` supplies each array (default ``np.empty``); the
    shapes are those of ``input_specs(case)``.
    """
    params = case_params(case)
    alloc = alloc or (lambda shape, dtype: np.empty(shape, dtype))
    arrays: dict[str, np.ndarray] = {}
    for name, (shape, dtype) in input_specs(params).items():
        arr = arrays[name] = alloc(shape, dtype)
        if arr.shape != shape or arr.dtype != dtype:
            raise ValueError(f"generate_inputs: alloc{shape, dtype} for {name} returned "
                             f"{arr.shape} {arr.dtype}")
    fill_inputs(params, seed, arrays, alloc)
    scale = float(params.get("scale", 1.0 / math.sqrt(params["head_dim"])))
    return {**params, **arrays, "scale": scale}


def fill_inputs(case: str | dict[str, Any], seed: int, arrays: dict[str, np.ndarray],
                alloc: Alloc | None = None) -> None:
    """Fill the five arrays of ``input_specs(case)`` (same sizes and dtypes; a caller may hand
    reshaped views of its own arrays, as the 4-D workload does) as ``generate_inputs`` does;
    ``alloc`` is the one they came from (its ``fill``, if any, fills on a device's cores)."""
    params = case_params(case)
    specs = input_specs(params)
    for name, (shape, dtype) in specs.items():
        a = arrays[name]
        if a.size != math.prod(shape) or a.dtype != dtype or not a.flags.c_contiguous:
            raise ValueError(f"fill_inputs: {name} must be C-contiguous with {math.prod(shape)} {dtype} "
                             f"elements {shape}, got {a.shape} {a.dtype}")
    rng = np.random.default_rng(seed)
    total_blocks = specs["key_cache"][0][0]
    block_table = arrays["block_table"].reshape(specs["block_table"][0])
    batch, table_cols = block_table.shape
    used = total_blocks // batch                    # blocks per sequence: the longest one's count
    block_table[:, :used] = rng.permutation(total_blocks).reshape(batch, used)
    block_table[:, used:] = rng.integers(0, total_blocks, (batch, table_cols - used))
    arrays["context_lens"].reshape(-1)[:] = _context_lens(params)
    for name, dist in _VALUES.items():
        fill(arrays[name], dist, seed, name, alloc)
