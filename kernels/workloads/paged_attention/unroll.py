"""Paged attention (the reference's ``paged_attention_unroll``) as a catalogue workload.

    build      generate_inputs(case) in the runner's memory + ``out`` (batch*heads, head_dim) fp32
    run        orchestrate(..., variant=hub | first_output | alloc | manual, unroll=the case's)
    golden     the vectorised chunked online-softmax model (golden.py)
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np

from kernels.workloads.paged_attention.cases import CASES, case_params, generate_inputs
from kernels.workloads.paged_attention.golden import golden
from kernels.workloads.paged_attention.orchestration import INPUTS, orchestrate, scale_of
from kernels.workloads.workload import Alloc, Workload


def build_case(params: dict[str, Any], seed: int, alloc: Alloc) -> dict[str, np.ndarray]:
    """A case's inputs (generate_inputs) and a zeroed ``out`` (batch * heads, head_dim) fp32."""
    inp = generate_inputs(params, seed, alloc=alloc)
    batch, heads, head_dim = inp["query"].shape
    out = alloc((batch * heads, head_dim), np.float32)
    out[...] = 0
    return {**{n: inp[n] for n in INPUTS}, "out": out}


def _orchestrate(rt: Any, t: dict, params: dict[str, Any], variant: str) -> dict:
    return orchestrate(rt, *(t[n] for n in INPUTS), t["out"], scale=scale_of(params), variant=variant,
                       unroll=params.get("unroll", 64))


def _golden(before: dict[str, np.ndarray], params: dict[str, Any], variant: str) -> dict[str, np.ndarray]:
    return {"out": golden(*(before[n] for n in INPUTS), scale_of(params), unroll=params.get("unroll", 64))}


_ORDER = ("small", "ctx_not_multiple", "ctx_lt_block", "ctx_one_block", "ctx_one_token", "mixed_lens",
          "heads_256", "heads_192", "blocks_not_multiple_unroll", "unroll_1", "unroll_ge_blocks", "ref_scale",
          "case1_b2", "Case3", "Case1", "Case2")

WORKLOAD = Workload(
    name="paged_attention_unroll",
    summary="decode attention over a paged KV cache, N_UNROLL blocks per task: QK -> SF -> PV -> UP",
    features=("runtime tensors", "scopes", "views", "scalar arrays", "alloc_tensors (alloc, manual)",
              "manual scope + deps= + manual_dep view (manual)"),
    cases={n: case_params(n) for n in _ORDER if n in CASES},
    build=build_case, outputs=("out",), orchestrate=_orchestrate, golden=_golden,
    tolerance=(1e-3, 1e-3), variants=("first_output", "hub", "alloc", "manual"),
    kernels=("kernels.workloads.paged_attention",),
    big=frozenset({"Case1", "Case2", "Case3"}), reference="examples/.../paged_attention_unroll",
    plan_inputs=("block_table", "context_lens"))

# The reference's paged_attention_unroll_manual_scope: the same pipeline, every edge explicit.
MANUAL_SCOPE = replace(
    WORKLOAD, name="paged_attention_unroll_manual_scope",
    summary="paged_attention_unroll in a manual scope per group: every edge an explicit dep",
    features=("manual scope", "deps=", "alloc_tensors task id as a dep", "manual_dep view (out tile)"),
    variants=("manual",), reference="examples/a2a3/tensormap_and_ringbuffer/paged_attention_unroll_manual_scope")
