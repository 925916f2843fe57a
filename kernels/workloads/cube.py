"""The cube's one-step product, as the reference's simple cube kernels write it, for the
catalogue's kernels that make exactly that step (paged attention's one-block and batched QK and PV,
the examples' matmuls):

    left (m, k) ──TLOAD──▶ L1 ──TMOV──▶ L0A ┐
                                             ├─TMATMUL─▶ L0C (fp32) ──TSTORE──▶ out (m, n)
    right (k, n) ─TLOAD──▶ L1 ──TMOV──▶ L0B ┘

Kernels whose cube work is shaped otherwise (several blocks accumulated in L0C, prefetched loads,
TEXTRACT of sub-tiles, pipes) write their own sequence.
"""

from __future__ import annotations

import contextlib

import numpy as np

from kernels import tile
from kernels.tile import F32, L0A, L0B, L0C, L1

__all__ = ["cube_step"]


def cube_step(c: tile.Core, left: np.ndarray, right: np.ndarray, out: np.ndarray, names: tuple[str, str, str],
              loop: int = 0, index: np.ndarray | None = None) -> None:
    """One product as the reference's one-step cube kernels make it: TLOAD ``left`` (m, k) and
    ``right`` (k, n) to L1, TMOV to L0A / L0B, TMATMUL into L0C (fp32), TSTORE to ``out`` (m, n).
    ``names``: the L1 tiles' and the result's names (traces, errors). ``loop`` > 0: that many
    products in one ``c.loop`` -- ``left`` and ``out`` have a leading axis of ``loop``, ``right``
    is picked per iteration by ``index`` -- each closed by a pipe_barrier(PIPE_ALL)."""
    (m, k), n = left.shape[-2:], right.shape[-1]
    l1_left = c.tile(L1, (m, k), left.dtype, name=names[0])
    l1_right = c.tile(L1, (k, n), right.dtype, name=names[1])
    a = c.tile(L0A, (m, k), left.dtype, name="left")
    b = c.tile(L0B, (k, n), right.dtype, name="right")
    acc = c.tile(L0C, (m, n), F32, name=names[2])
    with c.loop(loop) if loop else contextlib.nullcontext():
        tile.load(l1_left, left)
        tile.load(l1_right, right, index=index)
        tile.move(a, l1_left)
        tile.move(b, l1_right)
        tile.matmul(acc, a, b)
        tile.store(out, acc)
        if loop:
            tile.barrier()
