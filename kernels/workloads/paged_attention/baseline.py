"""Paged attention one KV block per task (the reference's baseline ``paged_attention``), its
manual-scope twin and the multi-round test, as catalogue workloads.

    paged_attention                (examples/a2a3/tensormap_and_ringbuffer/paged_attention)
    for each sequence b, head tile (h0, qt):             scope (AUTO)
        oi (qt, D), li (qt,), mi (qt,) fp32 = rt.alloc_tensors(...)        1 runtime task
        for each KV block j of b:                        nested scope (AUTO): its scratch dies here
            QK  In(q tile), In(key_cache), [block_table[b, j]]   -> Out(sij (qt, bs))
            SF  In(sij), [scale, valid_len, 1]          -> Out(pij bf16), Out(m_j), Out(l_j)
            PV  In(pij), In(value_cache), [block id]    -> Out(o_j (qt, D))
            UP  In(m_j, l_j, o_j), InOut(mi, li, oi), InOut(out tile), [is_first, is_last]

        QK_0 -> SF_0 -> PV_0 -> UP_0 ─┐      groups (b, h0) are independent; inside a group only
        QK_1 -> SF_1 -> PV_1 -> UP_1 <┘─┐    the UP chain is serial (through the accumulators),
        ...                             ...  every block's QK/SF/PV may run ahead of it

    paged_attention_manual_scope   (examples/.../paged_attention_manual_scope)
        the same tasks, but each group is one ``rt.scope(manual=True)`` with no per-block scope
        (an AUTO scope inside a MANUAL one is illegal) and every edge explicit: SF deps=[QK],
        PV deps=[SF], UP deps=[PV, previous UP, and on the last block the alloc] -- the alloc
        edge only keeps the accumulators alive until their last reader (docs/reference.md §7)

    multi_round_paged_attention    (tests/st/.../multi_round_paged_attention)
        the baseline graph, run ``rounds`` times from the same inputs: ``ptoemu run
        multi_round_paged_attention --rounds N`` (host/run.py ``run(..., rounds=N)``); its own
        cases and a looser tolerance (1e-2), as the reference

Task counts (worker tasks + 1 alloc per group, the reference's "tasks"): Case1 65,536 + 256 =
65,792; Case2 / Case3 32,768 + 64 = 32,832; CaseSmall1 12 + 1; CaseSmall2 32 + 1; CaseVarSeq2
20 + 2; CaseVarSeq4 64 + 4.

The task graph is ``orchestration.orchestrate(unroll=1, variant="alloc", chunk_scope=True)`` (and
``variant="manual"`` without chunk scopes) with the reference's one-block kernels (per_block.py:
QK, SF, PV on the tile layer; UP is kernels.up). What differs from the reference, none of it
visible in the results or the graph shape:
- QK/PV take the whole cache plus the block id as a one-element scalar array, where the
  reference hands them a one-block view ``key_cache.view(block)``; only reads, so no edges change.
- SF takes ``valid_len`` as a scalar where the reference passes the view ``sij.view(qt, valid_len)``.
- block_table / context_lens are read with ``rt.read`` (one read each), not element by element
  with ``get_tensor_data``; nothing writes them, so the values are the same.
- manual_scope: the out tile is a ``manual_dep`` view (the reference's is plain); in a manual
  scope nothing is tracked anyway.

Inputs: ``cases.generate_inputs`` (its two documented differences from the reference generator
are kept: block-table rows are a permutation, sequences do not share blocks); scale = 1.0 as the
reference passes; ``out`` is [batch, heads, head_dim] fp32 as the reference's, zeroed.

Golden: golden.golden(unroll=1) -- the recurrence one block at a time, which is what the
reference's shared golden (simpler_setup/goldens/paged_attention.py) computes: per block
``m_j = rowmax(s)``, ``p = bf16(exp(s - m_j))``, ``l_j = rowsum(p)``, the online-softmax update,
``out = oi / li``. (The reference golden runs past a short sequence's end with m_j = -1e30, p = 0;
that update is exactly the identity, so stopping at the sequence's last block is the same.)
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from kernels.workloads.paged_attention import per_block
from kernels.workloads.paged_attention.cases import case_params, generate_inputs
from kernels.workloads.paged_attention.golden import golden
from kernels.workloads.paged_attention.orchestration import INPUTS, orchestrate
from kernels.workloads.workload import Alloc, Workload

__all__ = ["INPUTS", "MULTI_ROUND_PAGED_ATTENTION", "PAGED_ATTENTION", "PAGED_ATTENTION_MANUAL_SCOPE",
           "REFERENCE_SHAPES", "REF_SCALE", "build", "golden_per_block", "reference_case"]

REF_SCALE = 1.0                 # the reference generator's scale scalar (not 1/sqrt(head_dim))

_SMALL = {"num_heads": 16, "head_dim": 16, "block_size": 16, "max_model_len": 256}
_LARGE = {"context_len": 8192, "max_model_len": 32768}

# batch / num_heads / head_dim / block_size / context_len / max_model_len of the reference's
# paged-attention test cases (the same sets recur across its examples and scene tests).
REFERENCE_SHAPES: dict[str, dict[str, Any]] = {
    "CaseSmall1": {"batch": 1, **_SMALL, "context_len": 33},
    "CaseSmall2": {"batch": 1, **_SMALL, "context_len": 128},
    "CaseVarSeq2": {"batch": 2, **_SMALL, "context_len": [33, 17]},
    "CaseVarSeq4": {"batch": 4, **_SMALL, "context_len": [33, 64, 128, 15]},
    "Case1": {"batch": 256, "num_heads": 16, "head_dim": 128, "block_size": 128, **_LARGE},
    "Case2": {"batch": 64, "num_heads": 64, "head_dim": 128, "block_size": 64, **_LARGE},
    "Case3": {"batch": 64, "num_heads": 64, "head_dim": 256, "block_size": 64, **_LARGE},
}
_HARDWARE = frozenset({"Case1", "Case2", "Case3"})      # platforms ["a2a3"] only in the reference
_BIG = frozenset({"Case1", "Case2", "Case3"})           # >= 32k tasks, 256 MiB - 1 GiB of KV cache


def reference_case(name: str, shape: str | None = None, **extra: Any) -> dict[str, Any]:
    """Full parameters of a case named ``name`` with the reference shape ``shape`` (default: the
    same name), scale 1.0 and ``extra`` (e.g. ``unroll``)."""
    return {**case_params({**REFERENCE_SHAPES[shape or name], "scale": REF_SCALE, **extra}), "name": name}


def build(params: Mapping[str, Any], seed: int, alloc: Alloc) -> dict[str, np.ndarray]:
    """The five inputs (cases.generate_inputs) and a zeroed out [batch, heads, head_dim] fp32."""
    inp = generate_inputs(dict(params), seed, alloc=alloc)
    out = alloc(inp["query"].shape, np.float32)
    out[...] = 0
    return {**{n: inp[n] for n in INPUTS}, "out": out}


def golden_per_block(before: Mapping[str, np.ndarray], params: Mapping[str, Any],
                     variant: str) -> dict[str, np.ndarray]:
    """``out`` of the one-block-at-a-time online softmax, shaped as the out array."""
    o = golden(*(before[n] for n in INPUTS), float(params["scale"]), unroll=1)
    return {"out": o.reshape(before["out"].shape)}


def _orchestrate(rt: Any, t: dict, params: Mapping[str, Any], variant: str) -> dict[str, int]:
    batch, heads, head_dim = t["query"].shape
    # The reference flattens out to (batch * heads, head_dim) too, before taking q-tile views.
    out2d = t["out"].reshape(batch * heads, head_dim)
    return orchestrate(rt, *(t[n] for n in INPUTS), out2d, scale=float(params["scale"]), variant=variant,
                       unroll=1, chunk_scope=variant != "manual", kernels=_BLOCK_KERNELS)


_ORDER = ("CaseSmall1", "CaseVarSeq2", "CaseSmall2", "CaseVarSeq4", "Case2", "Case3", "Case1")
_KERNELS = ("kernels.workloads.paged_attention.kernels", "kernels.workloads.paged_attention.per_block")
_BLOCK_KERNELS = {"qk": per_block.qk_block, "sf": per_block.sf_block, "pv": per_block.pv_block}
PLAN_INPUTS = ("block_table", "context_lens")        # what the orchestration reads (rt.read)

PAGED_ATTENTION = Workload(
    name="paged_attention",
    summary="decode attention over a paged KV cache, one KV block per task: QK -> SF -> PV -> UP",
    features=("alloc_tensors", "nested scopes (one per KV block)", "views", "runtime tensors", "scalar arrays"),
    cases={n: reference_case(n, unroll=1) for n in _ORDER},
    build=build, outputs=("out",), orchestrate=_orchestrate, golden=golden_per_block,
    tolerance=(1e-3, 1e-3), variants=("alloc",), kernels=_KERNELS,
    hardware_only=_HARDWARE, big=_BIG, plan_inputs=PLAN_INPUTS,
    reference="examples/a2a3/tensormap_and_ringbuffer/paged_attention")


def _manual_platform(params: Mapping[str, Any]) -> dict[str, Any]:
    # The reference's Case1 doubles its ring task window (runtime_env ring_task_window 32768)
    # against a flow-control deadlock of long manual scopes; ptoemu's one window takes the size.
    return {"task_window": params["task_window"]} if "task_window" in params else {}


PAGED_ATTENTION_MANUAL_SCOPE = Workload(
    name="paged_attention_manual_scope",
    summary="paged_attention with one manual scope per (sequence, head tile) and every edge an explicit dep",
    features=("manual scope", "deps= (set_dependencies / add_dep)", "alloc_tensors task id as a dep",
              "views", "runtime tensors"),
    cases={n: reference_case(n, unroll=1, **({"task_window": 32768} if n == "Case1" else {})) for n in _ORDER},
    build=build, outputs=("out",), orchestrate=_orchestrate, golden=golden_per_block,
    tolerance=(1e-3, 1e-3), variants=("manual",), kernels=_KERNELS,
    hardware_only=_HARDWARE, big=_BIG, platform=_manual_platform, plan_inputs=PLAN_INPUTS,
    reference="examples/a2a3/tensormap_and_ringbuffer/paged_attention_manual_scope")

MULTI_ROUND_PAGED_ATTENTION = Workload(
    name="multi_round_paged_attention",
    summary="the paged_attention graph run several rounds from the same inputs (--rounds N)",
    features=("repeated runs on one device", "alloc_tensors", "nested scopes"),
    cases={"Case1": reference_case("Case1", "CaseSmall1", unroll=1),
           "CaseVarSeq2": reference_case("CaseVarSeq2", unroll=1),
           "Case2": reference_case("Case2", "CaseSmall2", unroll=1),
           "CaseVarSeq4": reference_case("CaseVarSeq4", unroll=1)},
    build=build, outputs=("out",), orchestrate=_orchestrate, golden=golden_per_block,
    tolerance=(1e-2, 1e-2), variants=("alloc",), kernels=_KERNELS, plan_inputs=PLAN_INPUTS,
    reference="tests/st/a2a3/tensormap_and_ringbuffer/multi_round_paged_attention",
    notes=("the number of rounds is the runner's: ptoemu run multi_round_paged_attention --rounds N",))
