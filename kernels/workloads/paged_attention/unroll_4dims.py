"""Paged attention, 64 KV blocks per task, with 4-D query and out (the reference's
``paged_attention_unroll_4dims``), as a catalogue workload.

    query [batch, 1, heads, D] bf16 ──reshape──▶ [batch, heads, D]   (same bytes: seq_len is 1)
    out   [batch, 1, heads, D] fp32 ──reshape──▶ [batch * heads, D]
    for each sequence b, head tile (h0, qt):                     scope (AUTO)
        oi (qt, D), li (qt,), mi (qt,) fp32 = rt.alloc_tensors(...)               1 runtime task
        out tile = manual_dep view of rows b*heads+h0 .. +qt  (the reference's out.view(..., true))
        for each chunk of up to 64 blocks (block ids as a scalar array):
            QK  In(q tile), In(key_cache)              -> Out(sij (qt, n*bs))
            SF  In(sij), [scale, valid_len_last, n]    -> Out(pij bf16), Out(m), Out(l)
            PV  In(pij), In(value_cache)               -> Out(o (qt, D))
            UP  In(m, l, o), InOut(mi, li, oi), InOut(out tile), [is_first, is_last]

        group (b, h0):  QK_0 -> SF_0 -> PV_0 -> UP_0 -> UP_1 -> ...    groups are independent
                        QK_1 -> SF_1 -> PV_1 ----^

Tasks: 4 per chunk + 1 alloc per group -- Case1 256 * (4 + 1) = 1,280 (1,024 worker tasks);
Case2 / Case3 64 * (2 * 4 + 1) = 576 (512 worker tasks).

The graph is paged_attention_unroll's (orchestration.orchestrate with variant="alloc",
out_manual_dep=True); only the two 4-D arrays are new, and they reach the orchestration through
``Tensor.reshape`` -- the reference's 4-D kernels do the same arithmetic on (1, 1, qt, D) tiles.
Its accumulators are 4-D / 3-D ((1, 1, qt, D), (1, 1, qt)); here they are (qt, D) / (qt,), which
no one outside the kernels sees. The kernels are kernels.py's, with the reference's 4-D QK and SF
(qk_4dims, sf_4dims: K and the pass-1 scores single-buffered, pass 1 scaling each block); its PV
and UP are the unrolled ones (the same instructions, pipe barriers placed differently).

Cases: the reference's Case1-3 (hardware-only there, too big for CI here) and three CI-sized
cases of ours (the reference has none): ``small`` (3 chunks of 4 blocks, the last block partial),
``mixed_lens`` (1..13 blocks across the batch) and ``heads_192`` (two head tiles, so the 4-D
views are offset along the head axis). Scale is 1.0, the reference's, in all of them.

Golden: golden.golden with the case's unroll (the chunked recurrence the tasks compute: p is
rounded to bf16 relative to the *chunk's* row max). The reference checks this graph against its
shared one-block-at-a-time golden, which differs from it by that rounding (up to 7e-4 on the
small cases, inside the 1e-3 tolerance).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from kernels.workloads.paged_attention.baseline import INPUTS, REF_SCALE, reference_case
from kernels.workloads.paged_attention.cases import CASES, case_params, fill_inputs, input_specs
from kernels.workloads.paged_attention.golden import golden
from kernels.workloads.paged_attention.kernels import qk_4dims, sf_4dims
from kernels.workloads.paged_attention.orchestration import orchestrate
from kernels.workloads.workload import Alloc, Workload

__all__ = ["PAGED_ATTENTION_UNROLL_4DIMS", "build"]

N_UNROLL = 64                   # the reference's KV blocks per task


def build(params: Mapping[str, Any], seed: int, alloc: Alloc) -> dict[str, np.ndarray]:
    """generate_inputs' arrays with query [batch, 1, heads, D] bf16, and a zeroed out [batch, 1, heads, D] fp32."""
    specs = input_specs(dict(params))
    (batch, heads, head_dim), bf16 = specs["query"]
    query = alloc((batch, 1, heads, head_dim), bf16)     # the device array has the reference's shape
    arrays = {n: alloc(*specs[n]) for n in INPUTS[1:]}
    # filled as generate_inputs fills its 3-D query: the same bytes, the same values
    fill_inputs(dict(params), seed, {"query": query.reshape(batch, heads, head_dim), **arrays}, alloc)
    out = alloc(query.shape, np.float32)
    out[...] = 0
    return {"query": query, **arrays, "out": out}


def _orchestrate(rt: Any, t: dict, params: Mapping[str, Any], variant: str) -> dict[str, int]:
    batch, seq, heads, head_dim = t["query"].shape
    if seq != 1:
        raise ValueError(f"paged_attention_unroll_4dims: decode only (seq_len 1), query has shape {t['query'].shape}")
    query = t["query"].reshape(batch, heads, head_dim)
    out = t["out"].reshape(batch * heads, head_dim)
    return orchestrate(rt, query, *(t[n] for n in INPUTS[1:]), out, scale=float(params["scale"]), variant="alloc",
                       unroll=int(params["unroll"]), out_manual_dep=True, kernels={"qk": qk_4dims, "sf": sf_4dims})


def _golden(before: Mapping[str, np.ndarray], params: Mapping[str, Any], variant: str) -> dict[str, np.ndarray]:
    batch, _, heads, head_dim = before["query"].shape
    o = golden(before["query"].reshape(batch, heads, head_dim), *(before[n] for n in INPUTS[1:]),
               float(params["scale"]), unroll=int(params["unroll"]))
    return {"out": o.reshape(before["out"].shape)}


def _ours(name: str) -> dict[str, Any]:
    return {**case_params({**CASES[name], "scale": REF_SCALE}), "name": name}


PAGED_ATTENTION_UNROLL_4DIMS = Workload(
    name="paged_attention_unroll_4dims",
    summary="paged_attention_unroll with 4-D query / out [batch, seq 1, heads, head_dim]",
    features=("4-D tensors reshaped for the kernels", "alloc_tensors", "manual_dep view (out tile)", "scopes",
              "runtime tensors", "scalar arrays"),
    cases={"small": _ours("small"), "mixed_lens": _ours("mixed_lens"), "heads_192": _ours("heads_192"),
           **{n: reference_case(n, unroll=N_UNROLL) for n in ("Case2", "Case3", "Case1")}},
    build=build, outputs=("out",), orchestrate=_orchestrate, golden=_golden,
    tolerance=(1e-3, 1e-3), variants=("alloc",), kernels=("kernels.workloads.paged_attention.kernels",),
    hardware_only=frozenset({"Case1", "Case2", "Case3"}),
    big=frozenset({"Case1", "Case2", "Case3"}),       # 256 MiB - 1 GiB of KV cache
    plan_inputs=("block_table", "context_lens"),
    reference="tests/st/a2a3/tensormap_and_ringbuffer/paged_attention_unroll_4dims")
