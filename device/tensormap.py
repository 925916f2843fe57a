"""Tensor map: which earlier, unfinished tasks a new access must wait for.

    access(buf, tid, mode, lo, hi, contig, argref)  ──▶  [tids of unfinished overlapping accesses]

The scheduler calls ``access`` for every tensor argument of every task, in submission order. The
answer gives exactly the edges sequential consistency needs on overlapping bytes:

    new access   waits for earlier            why
    In           writers                      read after write
    Out / InOut  writers and readers          write after write, write after read

Per buffer the map keeps two lists of live entries ``(tid, lo, hi, contig, argref)``: writers
(Out and InOut) and readers (In). Reads never scan readers, so a buffer that thousands of tasks
only read (a KV cache) costs O(1) per read. Entries of finished tasks are dropped while scanning
(and, for reader lists that are never scanned, whenever a list doubles). A write that covers an
earlier entry's bytes makes that entry redundant (anything later that touches those bytes meets
the new writer first, which already waits for the old entry), so a chain of InOut tasks on one
buffer keeps a single entry.

Overlap is decided on byte ranges first. Only when both ranges meet and one view is not
contiguous (a column slice, say) does it compare footprint boxes: two views of the same base with
the same strides overlap iff their boxes intersect in every dimension. Views of one buffer seen
through different layouts (after a reshape) are treated as overlapping when their ranges meet:
conservative, never wrong. ``argref`` locates the view's geometry in its task record; the record
cannot be reused while its task is unfinished, and only entries of unfinished tasks are compared.
"""

from __future__ import annotations

from collections.abc import Callable

READ, WRITE, READWRITE = 1, 2, 3        # same codes as the record's direction field

Geometry = tuple[int, tuple[int, ...], tuple[int, ...]]     # (base, shape, strides) in bytes


def boxes_overlap(lo_a: int, ga: Geometry, lo_b: int, gb: Geometry) -> bool:
    """Do two strided views of one base (same strides) share an element? Both views' origins
    are decomposed into per-dimension start indices relative to the common base."""
    base_a, shape_a, strides_a = ga
    base_b, shape_b, strides_b = gb
    if base_a != base_b or strides_a != strides_b:
        return True                      # different layouts: be conservative
    ra, rb = lo_a - base_a, lo_b - base_b
    for n_a, n_b, s in zip(shape_a, shape_b, strides_a):
        if s <= 0:
            return True
        sa, ra = divmod(ra, s)
        sb, rb = divmod(rb, s)
        if sa >= sb + n_b or sb >= sa + n_a:
            return False
    return True


class TensorMap:
    """Access history per buffer id. ``is_done(tid)`` says whether a task has finished;
    ``geometry(argref)`` reads a view's footprint box from its task record."""

    def __init__(self, is_done: Callable[[int], bool], geometry: Callable[[int], Geometry]) -> None:
        self.is_done = is_done
        self.geometry = geometry
        self.bufs: dict[int, list] = {}      # buf -> [writers, readers, reader_prune_at]

    def __len__(self) -> int:
        return len(self.bufs)

    def entries(self) -> int:
        return sum(len(w) + len(r) for w, r, _ in self.bufs.values())

    def clear(self) -> None:
        self.bufs.clear()

    def drop(self, buf: int) -> None:
        """Forget a buffer whose memory has been released (its entries are all finished)."""
        self.bufs.pop(buf, None)

    def _overlaps(self, lo: int, hi: int, contig: int, ref: int, e: tuple) -> bool:
        if lo >= e[2] or e[1] >= hi:
            return False
        if contig and e[3]:
            return True
        return boxes_overlap(lo, self.geometry(ref), e[1], self.geometry(e[4]))

    def _scan(self, lst: list, tid: int, lo: int, hi: int, contig: int, ref: int,
              preds: list, write: bool) -> None:
        """Append overlapping unfinished entries to preds; drop finished ones and (for a write)
        ones the new access covers."""
        is_done = self.is_done
        keep = []
        for e in lst:
            t = e[0]
            if t == tid:
                keep.append(e)
                continue
            if is_done(t):
                continue
            if self._overlaps(lo, hi, contig, ref, e):
                preds.append(t)
                if write and contig and lo <= e[1] and e[2] <= hi:
                    continue                 # covered by this write: redundant from now on
            keep.append(e)
        lst[:] = keep

    def access(self, buf: int, tid: int, mode: int, lo: int, hi: int, contig: int, ref: int,
               preds: list) -> None:
        """Record an access of task ``tid`` and append the tids it must wait for to ``preds``."""
        st = self.bufs.get(buf)
        if st is None:
            st = self.bufs[buf] = [[], [], 16]
        writers, readers = st[0], st[1]
        entry = (tid, lo, hi, contig, ref)
        if writers:
            self._scan(writers, tid, lo, hi, contig, ref, preds, mode != READ)
        if mode == READ:
            readers.append(entry)
            if len(readers) > st[2]:
                is_done = self.is_done
                readers[:] = [e for e in readers if not is_done(e[0])]
                st[2] = 2 * len(readers) + 16
        else:
            if readers:
                self._scan(readers, tid, lo, hi, contig, ref, preds, True)
            writers.append(entry)
