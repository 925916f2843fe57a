"""The reference runtime's scene tests for its newer orchestration API, as runnable workloads.

    kernels.py      the scene kernels (write a constant, copy an element, write where an SPMD
                    block runs, add, ...), as the reference's scene tests share theirs
    deps.py         dummy_task, fanin_lookup_perf, chain_barrier, predicated_dispatch
    spmd.py         spmd_basic, spmd_multiblock_aiv/_mix, spmd_batch_dispatch_oob,
                    spmd_sync_start (+ _aiv, _edge, _stress, _early_dispatch, _mix_spill),
                    spmd_starvation, available_aicore_counts
    data.py         scalar_data, vector_example, heap_empty_ring_rebase

Cases, shapes and expected values are the reference's (docs/reference.md §§1-9, 11);
widths that depend on the device are read from ``rt.available_clusters()`` /
``rt.available_aiv()`` at run time and reported back through a ``layout`` tensor
(``rt.set_tensor_data``), from which the check rebuilds the expected values -- as the
reference's ``compare_outputs`` does. ``ptoemu run NAME`` runs any of them.
"""
