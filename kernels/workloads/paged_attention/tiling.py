"""Work decomposition of decode paged attention: head tiles and KV chunks.

This is the small integer arithmetic that turns one sequence into tasks, kept in one place so that
the orchestration and the sequential test driver cannot disagree about it:

* a **group** is (sequence b, head tile): ``q_tile = min(num_heads, 128)`` consecutive query heads
  (rows ``b * num_heads + h0 .. + q_tile`` of the flattened query / output); the last tile is
  shorter when ``num_heads`` is not a multiple of 128;
* a group walks the sequence's ``ceil(context_len / block_size)`` KV blocks (columns of its
  block-table row) in **chunks** of up to ``unroll`` blocks; every block of a chunk is full except
  possibly the chunk's last block, which holds ``valid_len_last`` (1 .. block_size) tokens — and
  only the sequence's final chunk can have ``valid_len_last < block_size``.

Per chunk the pipeline is QK -> SF -> PV -> UP with ``block_ids = block_table[b, first_block :
first_block + n_blocks]``; UP gets ``is_first`` / ``is_last`` from the chunk.
"""

from __future__ import annotations

from typing import NamedTuple

__all__ = ["MAX_Q_TILE", "Chunk", "chunks", "head_tiles", "num_blocks", "q_tile_size"]

MAX_Q_TILE = 128          # query heads per group (rows of one QK/SF/PV/UP task)


class Chunk(NamedTuple):
    """One QK/SF/PV/UP round of a group: ``n_blocks`` consecutive block-table entries."""

    index: int            # chunk number within the sequence, 0 ..
    first_block: int      # first column of the sequence's block-table row
    n_blocks: int         # 1 .. unroll
    valid_len_last: int   # valid tokens in the chunk's last block, 1 .. block_size
    is_first: bool
    is_last: bool


def q_tile_size(num_heads: int) -> int:
    """Rows per head tile: ``min(num_heads, 128)``."""
    if num_heads < 1:
        raise ValueError(f"num_heads must be >= 1, got {num_heads}")
    return min(num_heads, MAX_Q_TILE)


def head_tiles(num_heads: int) -> list[tuple[int, int]]:
    """``[(first_head, n_heads), ...]`` covering ``num_heads``; all but the last are full tiles."""
    qt = q_tile_size(num_heads)
    return [(h0, min(qt, num_heads - h0)) for h0 in range(0, num_heads, qt)]


def num_blocks(context_len: int, block_size: int) -> int:
    """KV blocks holding ``context_len`` tokens: ``ceil(context_len / block_size)``."""
    if context_len < 1:
        raise ValueError(f"context_len must be >= 1, got {context_len}")
    if block_size < 1:
        raise ValueError(f"block_size must be >= 1, got {block_size}")
    return -(-context_len // block_size)


def chunks(context_len: int, block_size: int, unroll: int = 64) -> list[Chunk]:
    """The chunks of one sequence, in submission order.

    >>> chunks(300, 32, unroll=4)   # 10 blocks: 4 + 4 + 2, last block holds 300 - 9*32 = 12 tokens
    ... # doctest: +NORMALIZE_WHITESPACE
    [Chunk(index=0, first_block=0, n_blocks=4, valid_len_last=32, is_first=True, is_last=False),
     Chunk(index=1, first_block=4, n_blocks=4, valid_len_last=32, is_first=False, is_last=False),
     Chunk(index=2, first_block=8, n_blocks=2, valid_len_last=12, is_first=False, is_last=True)]
    """
    if unroll < 1:
        raise ValueError(f"unroll must be >= 1, got {unroll}")
    total = num_blocks(context_len, block_size)
    out = []
    for i, first in enumerate(range(0, total, unroll)):
        n = min(unroll, total - first)
        # Tokens before the chunk's last block are all valid; the rest of the sequence, capped at
        # one block, is what the last block holds (as the reference orchestration computes it).
        valid_last = min(block_size, context_len - (first + n - 1) * block_size)
        out.append(Chunk(i, first, n, valid_last, first == 0, first + n >= total))
    return out
