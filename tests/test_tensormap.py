"""Overlap rules of the tensor map, driven directly (no processes)."""

from __future__ import annotations

import pytest

from device.tensormap import READ, READWRITE, WRITE, TensorMap, boxes_overlap


class Harness:
    """A tensor map over fake tasks: ``geo[ref]`` holds each access's (base, shape, strides)."""

    def __init__(self) -> None:
        self.done: set[int] = set()
        self.geo: dict[int, tuple] = {}
        self.tm = TensorMap(lambda t: t in self.done, lambda ref: self.geo[ref])
        self.tid = 0

    def access(self, mode: int, lo: int, hi: int, buf: int = 1, contig: bool = True,
               geo: tuple | None = None) -> list[int]:
        self.tid += 1
        ref = self.tid
        self.geo[ref] = geo or (lo, (hi - lo,), (1,))
        preds: list[int] = []
        self.tm.access(buf, self.tid, mode, lo, hi, int(contig), ref, preds)
        return sorted(set(preds))


@pytest.mark.timeout(10)
def test_read_after_write_write_after_read_write_after_write():
    h = Harness()
    assert h.access(WRITE, 0, 100) == []          # 1
    assert h.access(READ, 0, 50) == [1]           # 2: RAW
    assert h.access(READ, 50, 100) == [1]         # 3: RAW
    assert h.access(WRITE, 40, 60) == [1, 2, 3]   # 4: WAW + WAR
    assert h.access(READWRITE, 0, 10) == [1, 2]   # 5: InOut waits for writer and reader of [0,10)


@pytest.mark.timeout(10)
def test_reads_do_not_order_reads_and_disjoint_ranges_are_independent():
    h = Harness()
    assert h.access(READ, 0, 100) == []
    assert h.access(READ, 0, 100) == []
    assert h.access(WRITE, 100, 200) == []        # touching, not overlapping
    assert h.access(WRITE, 0, 100, buf=2) == []   # other buffer


@pytest.mark.timeout(10)
def test_finished_tasks_are_not_waited_for():
    h = Harness()
    h.access(WRITE, 0, 100)
    h.done.add(1)
    assert h.access(READ, 0, 100) == []


@pytest.mark.timeout(10)
def test_covering_write_keeps_chain_entries_at_one():
    h = Harness()
    for i in range(1000):
        preds = h.access(READWRITE, 0, 64)
        assert preds == ([i] if i else [])
    assert h.tm.entries() == 1


@pytest.mark.timeout(10)
def test_column_slices_of_a_matrix_do_not_overlap_but_a_row_does():
    # an (8, 16) int32 matrix at byte 0: strides (64, 4); geometry = (base, box shape, strides)
    h = Harness()
    assert h.access(WRITE, 0, 7 * 64 + 32, contig=False, geo=(0, (8, 8), (64, 4))) == []
    assert h.access(WRITE, 32, 7 * 64 + 64, contig=False, geo=(0, (8, 8), (64, 4))) == []
    row3 = h.access(READ, 3 * 64, 4 * 64, contig=True, geo=(0, (1, 16), (64, 4)))
    assert row3 == [1, 2]


@pytest.mark.timeout(10)
def test_boxes_overlap_exactly_for_same_layout_and_conservatively_otherwise():
    g = (0, (4, 4), (64, 4))
    assert not boxes_overlap(0, g, 16, g)            # cols 0-3 vs cols 4-7
    assert boxes_overlap(0, g, 3 * 64 + 12, g)       # rows 0-3 vs rows 3-6, cols 3-6
    assert not boxes_overlap(0, g, 4 * 64, g)        # rows 0-3 vs rows 4-7
    other = (0, (2, 8), (32, 4))                     # a reshaped view of the same bytes
    assert boxes_overlap(0, g, 16, other)            # different layout: conservative


@pytest.mark.timeout(10)
def test_reader_lists_are_pruned_when_never_scanned():
    h = Harness()
    for i in range(1, 5001):
        h.access(READ, 0, 100)
        h.done.add(i)
    assert h.tm.entries() < 100
