"""Decode paged attention (a2a3 ``paged_attention_unroll``): kernels, golden, cases.

    kernels.py   QK (AIC), SF (AIV), PV (AIC), UP (AIV), HUB (AIV) — numpy, in-place outputs
    tiling.py    head tiles and KV chunks of a sequence (block ids, valid_len_last, is_first/last)
    golden.py    independent vectorised numpy model of the chunked online-softmax recurrence
    orchestration.py   orchestrate(rt, ...) in the hub / first_output / alloc / manual variants,
                 INPUTS (its input tensors, in order), scale_of(params)
    unroll.py    the catalogue workload (WORKLOAD): build, orchestrate, golden of a case
    cases.py     CASES (small, Case1-3, edge cases) and generate_inputs
    bench.py     per-kernel timings: ``python -m kernels.workloads.paged_attention.bench``
"""

from kernels.workloads.paged_attention.cases import CASES, case_params, generate_inputs, input_specs
from kernels.workloads.paged_attention.golden import golden
from kernels.workloads.paged_attention.kernels import hub, pv, qk, sf, up
from kernels.workloads.paged_attention.orchestration import INPUTS, VARIANTS, expected_tasks, orchestrate, scale_of
from kernels.workloads.paged_attention.tiling import Chunk, chunks, head_tiles, num_blocks, q_tile_size
from kernels.workloads.paged_attention.unroll import WORKLOAD

__all__ = [
    "CASES",
    "Chunk",
    "case_params",
    "chunks",
    "generate_inputs",
    "golden",
    "head_tiles",
    "hub",
    "input_specs",
    "num_blocks",
    "pv",
    "q_tile_size",
    "qk",
    "sf",
    "up",
    "orchestrate",
    "scale_of",
    "INPUTS",
    "WORKLOAD",
    "expected_tasks",
    "VARIANTS",
]
