"""Small examples that exercise the runtime the way the reference runtime's own examples do.

    vector_chain   (a+b+1)*(a+b+2) through runtime tensors          python -m kernels.examples.vector_chain
    tiled_matmul   AIC tile matmuls accumulated by AIV adds          python -m kernels.examples.tiled_matmul
    mixed_shapes   one task of each of the five core shapes          python -m kernels.examples.mixed_shapes
"""
