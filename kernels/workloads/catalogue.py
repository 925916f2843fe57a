"""The workload catalogue: every runnable workload, by the name the reference gives it.

    ptoemu list                 what is here: workloads, cases, task counts, features
    ptoemu run NAME [--case C]  one workload on an emulated device, checked against its golden

Each entry is a module with a ``WORKLOAD`` (kernels/workloads/workload.py), or ``module:NAME`` for a module
holding several; it is imported only when asked for, so listing names costs nothing.
"""

from __future__ import annotations

import importlib

from kernels.workloads.workload import Workload

MODULES: dict[str, str] = {
    "vector_chain": "kernels.workloads.examples.vector_chain",
    "tiled_matmul": "kernels.workloads.examples.tiled_matmul",
    "mixed_shapes": "kernels.workloads.examples.mixed_shapes",
    "alternating_matmul_add": "kernels.workloads.examples.alternating_matmul_add",
    "mixed_example": "kernels.workloads.examples.mixed_example",
    "benchmark_bgemm": "kernels.workloads.examples.benchmark_bgemm",
    "paged_attention": "kernels.workloads.paged_attention.baseline:PAGED_ATTENTION",
    "paged_attention_manual_scope": "kernels.workloads.paged_attention.baseline:PAGED_ATTENTION_MANUAL_SCOPE",
    "multi_round_paged_attention": "kernels.workloads.paged_attention.baseline:MULTI_ROUND_PAGED_ATTENTION",
    "paged_attention_unroll": "kernels.workloads.paged_attention.unroll",
    "paged_attention_unroll_manual_scope": "kernels.workloads.paged_attention.unroll:MANUAL_SCOPE",
    "paged_attention_unroll_4dims": "kernels.workloads.paged_attention.unroll_4dims:PAGED_ATTENTION_UNROLL_4DIMS",
    "batch_paged_attention": "kernels.workloads.paged_attention.batch:BATCH_PAGED_ATTENTION",
    "paged_attention_ringbuffer": "kernels.workloads.paged_attention.batch:PAGED_ATTENTION_RINGBUFFER",
    "qwen3_14b_decode": "kernels.workloads.qwen3",
    "spmd_paged_attention": "kernels.workloads.paged_attention.spmd",
    # the reference's scene tests for its newer API (kernels/workloads/scenes)
    "vector_example": "kernels.workloads.scenes.data:VECTOR_EXAMPLE",
    "scalar_data": "kernels.workloads.scenes.data:SCALAR_DATA",
    "heap_empty_ring_rebase": "kernels.workloads.scenes.data:HEAP_EMPTY_RING_REBASE",
    "dummy_task": "kernels.workloads.scenes.deps:DUMMY_TASK",
    "fanin_lookup_perf": "kernels.workloads.scenes.deps:FANIN_LOOKUP_PERF",
    "chain_barrier": "kernels.workloads.scenes.deps:CHAIN_BARRIER",
    "predicated_dispatch": "kernels.workloads.scenes.deps:PREDICATED_DISPATCH",
    "spmd_basic": "kernels.workloads.scenes.spmd:SPMD_BASIC",
    "spmd_multiblock_aiv": "kernels.workloads.scenes.spmd:SPMD_MULTIBLOCK_AIV",
    "spmd_multiblock_mix": "kernels.workloads.scenes.spmd:SPMD_MULTIBLOCK_MIX",
    "spmd_batch_dispatch_oob": "kernels.workloads.scenes.spmd:SPMD_BATCH_DISPATCH_OOB",
    "spmd_sync_start": "kernels.workloads.scenes.spmd:SPMD_SYNC_START",
    "spmd_sync_start_aiv": "kernels.workloads.scenes.spmd:SPMD_SYNC_START_AIV",
    "spmd_sync_start_edge": "kernels.workloads.scenes.spmd:SPMD_SYNC_START_EDGE",
    "spmd_sync_start_stress": "kernels.workloads.scenes.spmd:SPMD_SYNC_START_STRESS",
    "spmd_starvation": "kernels.workloads.scenes.spmd:SPMD_STARVATION",
    "spmd_sync_start_early_dispatch": "kernels.workloads.scenes.spmd:SPMD_SYNC_START_EARLY_DISPATCH",
    "spmd_sync_start_mix_spill": "kernels.workloads.scenes.spmd:SPMD_SYNC_START_MIX_SPILL",
    "available_aicore_counts": "kernels.workloads.scenes.spmd:AVAILABLE_AICORE_COUNTS",
}


def names() -> list[str]:
    return list(MODULES)


def load(name: str) -> Workload:
    """The workload called ``name`` (ValueError naming the known ones otherwise)."""
    if name not in MODULES:
        raise ValueError(f"unknown workload {name!r}; known: {', '.join(MODULES)}")
    mod, _, attr = MODULES[name].partition(":")
    return getattr(importlib.import_module(mod), attr or "WORKLOAD")
