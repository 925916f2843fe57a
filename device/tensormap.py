"""Tensor map: which earlier, unfinished tasks a new access must wait for.

    access(buf, tid, mode, lo, hi, contig, argref)  ──▶  [tids of unfinished overlapping accesses]

The gatherer (device/deps.py) calls ``access`` for every tensor argument of every task, in
submission order. The answer gives exactly the edges sequential consistency needs on overlapping
bytes:

    new access   waits for earlier            why
    In           writers                      read after write
    Out / InOut  writers and readers          write after write, write after read

While every access to a buffer covers the same contiguous bytes (a chain of InOut on one tensor,
many readers of one KV cache) the buffer is in *exact* mode: it keeps only the last writer and
the readers since it, and an access costs a few comparisons. The first access to other bytes
turns it into the general form below (the entries it had become ordinary ones).

In general, per buffer the map keeps two lists of live entries ``(tid, lo, hi, contig,
footprint)``, sorted by first byte: writers (Out and InOut) and readers (In). Reads never scan readers, so a buffer
that thousands of tasks only read (a KV cache) costs O(1) per read, and a scan only visits
entries whose byte range can reach the access (many disjoint tiles of one buffer stay cheap).
Entries of finished tasks are dropped while scanning, and whenever a list has doubled since its
last clean. A write that covers an earlier entry's bytes makes that entry redundant (anything
later that touches those bytes meets the new writer first, which already waits for the old
entry), so a chain of InOut tasks on one buffer keeps a single entry.

With ``keep_done`` (tracing) finished entries are kept too, so the answer is every earlier
access the new one depends on -- the graph's edges -- and the caller filters the unfinished ones.

Reference semantics (``access_ref``, Device(semantics="reference")): only writers are entries
(no write-after-read ordering); device/deps.py says, per argument, whether it looks up earlier
overlapping writers and whether it becomes an entry (the reference's table).

Overlap is decided on byte ranges first. Only when both ranges meet and one view is not
contiguous (a column slice, say) does it compare footprint boxes: two views of the same base with
the same strides overlap iff their boxes intersect in every dimension. Views of one buffer seen
through different layouts (after a reshape) are treated as overlapping when their ranges meet:
conservative, never wrong. ``footprint`` is where the view's box lives in its task record (read
only when needed: the record cannot be reused while its task is unfinished, and only unfinished
entries are compared) -- or, when tracing keeps finished entries, the box itself.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
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


class _Entries:
    """Accesses of one kind (writes or reads) to one buffer, sorted by first byte. An entry can
    only reach a query range [lo, hi) if it starts in (lo - longest entry, hi), so a scan looks at
    that slice only: many disjoint tiles of one buffer cost O(log n) per access, not O(n)."""

    __slots__ = ("los", "items", "maxlen", "prune_at")

    def __init__(self) -> None:
        self.los: list[int] = []
        self.items: list[tuple] = []
        self.maxlen = 0
        self.prune_at = 32

    def __len__(self) -> int:
        return len(self.items)

    def add(self, e: tuple, is_done: Callable[[int], bool]) -> None:
        i = bisect_right(self.los, e[1])
        self.los.insert(i, e[1])
        self.items.insert(i, e)
        if e[2] - e[1] > self.maxlen:
            self.maxlen = e[2] - e[1]
        if len(self.items) > self.prune_at:      # entries no query reaches: drop finished ones
            keep = [x for x in self.items if not is_done(x[0])]
            self.items = keep
            self.los = [x[1] for x in keep]
            self.prune_at = 2 * len(keep) + 32

    def window(self, lo: int, hi: int) -> tuple[int, int]:
        return bisect_right(self.los, lo - self.maxlen), bisect_left(self.los, hi)


class _Exact:
    """A buffer every access of which so far covered exactly [lo, hi), contiguously."""

    __slots__ = ("lo", "hi", "writer", "readers", "prune_at")

    def __init__(self, lo: int, hi: int) -> None:
        self.lo, self.hi, self.writer, self.readers, self.prune_at = lo, hi, -1, [], 32

    def general(self) -> tuple[_Entries, _Entries]:
        """The same history as writer/reader entries; the footprint is the byte range itself,
        which box tests treat as overlapping anything it may touch (conservative)."""
        geo = (self.lo, (self.hi - self.lo,), (1,))
        writers, readers = _Entries(), _Entries()
        if self.writer >= 0:
            writers.items.append((self.writer, self.lo, self.hi, 1, geo))
            writers.los.append(self.lo)
            writers.maxlen = self.hi - self.lo
        readers.items = [(t, self.lo, self.hi, 1, geo) for t in self.readers]
        readers.los = [self.lo] * len(self.readers)
        readers.maxlen = self.hi - self.lo if self.readers else 0
        return writers, readers


class TensorMap:
    """Access history per buffer id. ``is_done(tid)`` says whether a task has finished;
    ``geometry(argref)`` reads a view's footprint box from its task record."""

    def __init__(self, is_done: Callable[[int], bool], geometry: Callable[[int], Geometry],
                 keep_done: bool = False) -> None:
        # keep_done (tracing): also answer with finished tasks, so that every dependency of the
        # graph is known, not only the ones that still had to be waited for.
        self.is_done = (lambda t: False) if keep_done else is_done
        self.eager = keep_done
        self.geometry = geometry
        self.bufs: dict[int, _Exact | tuple[_Entries, _Entries]] = {}   # buf -> exact, or (writers, readers)

    def __len__(self) -> int:
        return len(self.bufs)

    def entries(self) -> int:
        return sum((st.writer >= 0) + len(st.readers) if type(st) is _Exact else len(st[0]) + len(st[1])
                   for st in self.bufs.values())

    def clear(self) -> None:
        self.bufs.clear()

    def drop(self, buf: int) -> None:
        """Forget a buffer whose memory has been released (its entries are all finished)."""
        self.bufs.pop(buf, None)

    def _scan(self, ents: _Entries, tid: int, lo: int, hi: int, contig: int, ref: int,
              preds: list, write: bool) -> None:
        """Append overlapping unfinished entries to preds; drop finished ones and (for a write)
        ones the new access covers."""
        i0, i1 = ents.window(lo, hi)
        if i0 >= i1:
            return
        is_done = self.is_done
        items = ents.items
        gone = []
        geo = None
        for i in range(i0, i1):
            e = items[i]
            t = e[0]
            if t == tid:
                continue
            if is_done(t):
                gone.append(i)
                continue
            if e[2] <= lo:
                continue
            if not (contig and e[3]):
                if geo is None:
                    geo = self.geometry(ref)
                g = e[4]
                if not boxes_overlap(lo, geo, e[1], g if type(g) is tuple else self.geometry(g)):
                    continue
            preds.append(t)
            if write and contig and lo <= e[1] and e[2] <= hi:
                gone.append(i)           # covered by this write: redundant from now on
        for i in reversed(gone):
            del items[i]
            del ents.los[i]

    def _exact(self, st: _Exact, tid: int, mode: int, preds: list) -> None:
        """An access to the bytes every earlier access of the buffer covered: wait for the last
        writer, and (for a write) for the readers since it; then be one of them."""
        is_done = self.is_done
        w = st.writer
        if w >= 0 and w != tid and not is_done(w):
            preds.append(w)
        if mode == READ:
            rs = st.readers
            rs.append(tid)
            if len(rs) > st.prune_at:           # finished readers no later write waits for
                rs[:] = [t for t in rs if not is_done(t)]
                st.prune_at = 2 * len(rs) + 32
        else:
            for t in st.readers:
                if t != tid and not is_done(t):
                    preds.append(t)
            st.writer = tid
            st.readers = []

    def access_ref(self, buf: int, tid: int, look: bool, enter: bool, lo: int, hi: int, contig: int,
                   ref: int, preds: list) -> None:
        """The reference's rules (device/deps.py decides which apply): ``look`` up earlier
        overlapping writers; ``enter`` as a writer entry -- after a look-up, replacing the
        entries the access covers (an InOut), else beside them (an Out on an existing buffer)."""
        if hi <= lo:
            return
        st = self.bufs.get(buf)
        if st is None:
            st = self.bufs[buf] = (_Entries(), _Entries())
        elif type(st) is _Exact:
            st = self.bufs[buf] = st.general()
        writers = st[0]
        if look and writers.items:
            self._scan(writers, tid, lo, hi, contig, ref, preds, enter)
        if enter:
            writers.add((tid, lo, hi, contig, self.geometry(ref) if self.eager else ref), self.is_done)

    def access(self, buf: int, tid: int, mode: int, lo: int, hi: int, contig: int, ref: int,
               preds: list) -> None:
        """Record an access of task ``tid`` and append the tids it must wait for to ``preds``."""
        if hi <= lo:
            return                       # an empty view touches no byte
        st = self.bufs.get(buf)
        if st is None:
            if contig:
                st = self.bufs[buf] = _Exact(lo, hi)
            else:
                st = self.bufs[buf] = (_Entries(), _Entries())
        if type(st) is _Exact:
            if lo == st.lo and hi == st.hi and contig:
                self._exact(st, tid, mode, preds)
                return
            st = self.bufs[buf] = st.general()
        writers, readers = st
        # The footprint box is read from the task record when needed -- safe while the task is
        # unfinished (its record cannot be reused). Tracing keeps finished tasks, so there the
        # box is copied into the entry up front.
        entry = (tid, lo, hi, contig, self.geometry(ref) if self.eager else ref)
        if writers.items:
            self._scan(writers, tid, lo, hi, contig, ref, preds, mode != READ)
        if mode == READ:
            readers.add(entry, self.is_done)
        else:
            if readers.items:
                self._scan(readers, tid, lo, hi, contig, ref, preds, True)
            writers.add(entry, self.is_done)
