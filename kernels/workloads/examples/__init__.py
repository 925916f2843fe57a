"""Small examples that exercise the runtime the way the reference runtime's own examples do; each
is a catalogue workload (``ptoemu run NAME``, kernels/workloads/catalogue.py).

    vector_chain            (a+b+1)*(a+b+2) through runtime tensors
    tiled_matmul            AIC tile matmuls accumulated by AIV adds
    mixed_shapes            one task of each of the five core shapes, placements checked
    alternating_matmul_add  independent AIC matmuls and AIV adds on 1-D views (the reference's)
    mixed_example           five tasks per iteration, one of each core shape (the reference's)
    benchmark_bgemm         C = sum_k A[k] @ B[k] by groups (the reference's shape sweep)
"""
