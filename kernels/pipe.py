"""Intra-cluster pipes: pto-isa's ``TPipe`` with ``TPUSH`` / ``TPOP`` -- a FIFO of tiles in GM
between the cube part and the vector parts of one mixed task, as the chip's a2a3 pipes are.

    TPipe(ring, C2V, (rows, cols), F32, depth=2, split="up_down")
                                                  the AIC part and the AIV parts build it on the
                                                  same ring (a GM view): one channel per
                                                  (cluster, ring)
    AIC:  pipe.push(acc_tile)   wait for a free slot ─▶ TSTORE into slot n % depth ─▶ count n+1
    AIVk: pipe.pop(ub_tile)     wait for tile n ─▶ TLOAD its half ─▶ popped n+1 (slot free once
                                                   every consuming lane popped it)

    ring bytes:  [ slot 0 | slot 1 | ... | slot depth-1 ]     a slot = one (rows, cols) tile, row-major
    split        C2V (AIC pushes a whole tile)              V2C (AIC pops a whole tile)
    "up_down"    AIV lane k pops rows k*rows/2 ..           lane k pushes rows k*rows/2 ..; the AIC
                 (row halves)                               pops once both halves are in
    "left_right" AIV lane k pops columns k*cols/2 ..        lane k pushes columns k*cols/2 ..
    "none"       each lane pops the whole tile; both lanes  lane 0 pushes the whole tile; lane 1's
                 take part in the sync                      push only syncs (its tile is not written)
                 (a task with one vector part: that part, any split but "none" is an error)

State. Each side counts in its own sync words (kernels/waits.py): the producer the tiles it
pushed, each consumer the tiles it popped -- one writer per word, per (cluster, part slot), a
table of up to ``CHANNELS`` channels keyed by the ring's address. A push waits while ``depth``
slots hold tiles some consumer has not popped; a pop waits until its next tile is pushed; after
each it publishes its count and wakes the cluster's waiting parts. The counts persist across the
tasks of a run (a kernel may leave tiles for the next mixed task on that cluster, as the
reference's pipelines do) and start at 0 every run; a task that ends with tiles left in a pipe
is reported (device: a notice per run, dev.stats()["notices"] and a RuntimeWarning).

A wait that can never end -- a pop whose producer has finished, a push nobody pops -- is found
by the stall detector, which names the kernel, the pipe's direction, the cluster, the lane and
the tiles pushed and popped ("pipe" kind, ``describe``); a kernel error in another part releases
the wait (WaitAborted). The lane-skew fuzzer delays a chosen part at every push and pop
(``Device(skew=...)``).

Counting. ``push`` of a Tile is a TSTORE (L0C -> GM on the cube's FIX/MTE3, UB -> GM on MTE3),
``pop`` into a Tile a TLOAD (GM -> UB / L1 on MTE2) -- what TPUSH / TPOP are on a2a3 -- plus the
flags (tile.handshake) that couple the parts' timelines in kernels/a2a3.py ``couple``. Plain
numpy arrays may be pushed and popped too (uncounted).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from kernels import a2a3, tile
from kernels import waits as kw

__all__ = ["C2V", "V2C", "CHANNELS", "SPLITS", "CountingPipe", "TPipe", "load_slot", "slot_parts"]

C2V, V2C = "C2V", "V2C"
SPLITS = ("up_down", "left_right", "none")
CHANNELS = 8                  # pipes per core in a run (the chip: 16 cross-core flags, 2 per pipe)
_KEYS = kw.claim("pipe", 3 * CHANNELS)     # per sync core: keys | configurations | counts
_CONFS, _COUNTS = _KEYS + CHANNELS, _KEYS + 2 * CHANNELS
_DIRS = (C2V, V2C)
_PUSH, _POP = 1, 2


def _describe(obj: int, d: tuple[int, ...]) -> str:
    op, direction, split, depth = d[0] & 3, (d[0] >> 2) & 1, (d[0] >> 3) & 3, d[0] >> 5
    cluster, slot = d[1] >> 2, d[1] & 3
    who = "AIC" if slot == 0 else f"AIV lane {slot - 1}"
    what = "a free slot to push into" if op == _PUSH else "a tile to pop"
    return (f"pipe {_DIRS[direction]} ({SPLITS[split]}, depth {depth}, ring at GM address {obj:#x}) on "
            f"cluster {cluster}, {who}: waits for {what}; tiles pushed so far {d[2]}, popped {d[3]}")


KIND = kw.register_kind(1, "pipe", _describe)


def _check(cond: bool, msg: str) -> None:
    if not cond:
        raise ValueError(f"TPipe: {msg}")


class TPipe:
    """One side of an intra-cluster pipe (module docstring)."""

    def __init__(self, ring: np.ndarray, direction: str, slot_shape: tuple[int, int], dtype: Any,
                 depth: int = 2, split: str = "up_down") -> None:
        w = self.w = kw.current("TPipe")
        rows, cols, dt = self._geometry(direction, slot_shape, dtype, depth, split, w.slots)
        if not isinstance(ring, np.ndarray):
            raise TypeError(f"TPipe: ring must be a numpy view of a kernel argument (GM), got {type(ring).__name__}")
        _check(ring.flags.c_contiguous, f"ring must be contiguous (a slice of a 1-D FIFO tensor); got a view of "
               f"shape {ring.shape} strides {ring.strides}")
        _check(ring.flags.writeable, "ring must be writable: pass the FIFO tensor as Out or InOut")
        slot_bytes = rows * cols * dt.itemsize
        _check(ring.nbytes >= depth * slot_bytes,
               f"ring of {ring.nbytes} bytes is too small for depth {depth} x slot {rows}x{cols} {dt.name} "
               f"({slot_bytes} bytes): it needs {depth * slot_bytes} bytes")
        addr = ring.__array_interface__["data"][0]
        _check(w.in_device_memory(addr, ring.nbytes),
               "ring must be a view of a kernel argument in device memory (the other parts of the task "
               "cannot see a local array)")
        self._sides(w.slot, w.slots, addr, ring)
        self.conf = (_DIRS.index(direction) | SPLITS.index(split) << 1 | int(depth) << 3
                     | (slot_bytes % (1 << 36)) << 24)
        self.base = 3 * w.cluster
        self.mine = self._channel(self.base + self.slot, create=True)
        self.my_word = kw.word(self.base + self.slot, _COUNTS + self.mine)
        self.count = w.get(self.my_word)
        self.peer_words: list[int] | None = None                 # their count words, once all built it
        self.code = (self.c2v ^ 1) << 2 | SPLITS.index(split) << 3 | self.depth << 5
        self.where = w.cluster << 2 | self.slot
        self.clusters = (w.cluster,)

    def _geometry(self, direction: str, slot_shape: tuple[int, int], dtype: Any, depth: int, split: str,
                  slots: tuple[bool, bool, bool]) -> tuple[int, int, np.dtype]:
        """Check the definition against the task's parts; set direction, split, depth, shape."""
        _check(direction in _DIRS, f"direction={direction!r}: expected C2V or V2C (kernels.C2V, kernels.V2C)")
        _check(split in SPLITS, f"split={split!r}: expected one of {', '.join(SPLITS)}")
        _check(isinstance(depth, (int, np.integer)) and 1 <= depth <= 1 << 20, f"depth={depth!r}: expected an int >= 1")
        try:
            rows, cols = (int(x) for x in slot_shape)
        except (TypeError, ValueError):
            rows = cols = 0
        _check(rows > 0 and cols > 0, f"slot_shape={slot_shape!r}: expected (rows, cols) of positive ints")
        vec = [s for s in (1, 2) if slots[s]]
        _check(slots[0] and vec, "a pipe joins the cube part and the vector parts of a mixed kernel "
               f"(kernel(Mixed(aic=..., aiv0=..., aiv1=...))); this task has parts {_parts(slots)}")
        _check(split == "none" or len(vec) == 2,
               f"split={split!r} divides a tile between the two vector parts, but this task has one "
               "(Mixed(aic=, aiv=)): use split='none'")
        _check(split != "up_down" or rows % 2 == 0, f"split='up_down' needs an even number of rows, got {rows}")
        _check(split != "left_right" or cols % 2 == 0,
               f"split='left_right' needs an even number of columns, got {cols}")
        dt = np.dtype(dtype)
        self.direction, self.split, self.depth, self.shape, self.dtype = direction, split, int(depth), (rows, cols), dt
        self.c2v = direction == C2V
        vec_t = tuple(vec)
        self.producers = (0,) if self.c2v else vec_t
        self.consumers = vec_t if self.c2v else (0,)
        return rows, cols, dt

    def _sides(self, slot: int, slots: tuple[bool, bool, bool], key: int, ring: np.ndarray) -> None:
        """This part's side of the pipe (``slot``), its channel key and its slot views on ``ring``."""
        self.slot, self.key = slot, key
        self.producing = slot in self.producers
        self.peers = self.consumers if self.producing else self.producers
        self.lane = slot - 1
        # what this side pushes / pops of slot i
        self.parts = slot_parts(ring, self.shape, self.dtype, self.depth, -1 if self.split == "none" else self.lane,
                                self.split)
        self.writes = self.c2v or self.split != "none" or self.lane == 0

    # -- the channel table -----------------------------------------------------------------------
    def _channel(self, core: int, create: bool = False) -> int:
        """This pipe's entry in ``core``'s table (-1 if that core has not built it yet)."""
        w = self.w
        for i in range(CHANNELS):
            k = w.get(kw.word(core, _KEYS + i))
            if k == self.key:
                conf = w.get(kw.word(core, _CONFS + i))
                _check(conf == self.conf, f"the ring at GM address {self.key:#x} is used by another pipe definition "
                       f"on cluster {core // 3} (direction, split, depth or slot size differ between the parts)")
                return i
            if k == 0:
                if not create:
                    return -1
                w.set(kw.word(core, _CONFS + i), self.conf)
                w.set(kw.word(core, _KEYS + i), self.key)          # last: a reader that finds it sees the rest
                return i
        _check(not create, f"more than {CHANNELS} pipes on one core in a run (the chip has 16 cross-core flags, "
               "2 per pipe)")
        return -1

    def _peer_min(self) -> int:
        """The fewest tiles pushed (producers) or popped (consumers) by a part on the other side;
        0 while one of them has not built the pipe yet."""
        words = self.peer_words
        if words is None:
            found = [self._channel(self.base + s) for s in self.peers]
            if min(found) < 0:
                return 0
            words = self.peer_words = [kw.word(self.base + s, _COUNTS + i) for s, i in zip(self.peers, found)]
        get = self.w.get
        if len(words) == 1:
            return get(words[0])
        return min(get(words[0]), get(words[1]))

    def _await_free(self, n: int) -> None:
        """Before push n: wait until a slot is free (every consumer popped tile n - depth)."""
        self.w.pause()
        depth = self.depth
        if n - self._peer_min() >= depth:
            self._wait(_PUSH, lambda: n - self._peer_min() < depth)

    def _await_data(self, m: int) -> None:
        """Before pop m: wait until tile m is pushed (by every producing lane)."""
        self.w.pause()
        if self._peer_min() <= m:
            self._wait(_POP, lambda: self._peer_min() > m)

    def _published(self, n: int) -> None:
        """This side's count is n now: tell the other side (and wake it if it waits on this pipe)."""
        w = self.w
        self.count = n
        w.set(self.my_word, n)
        w.wake(self.clusters, self.key)

    def _wait(self, op: int, ready: Any) -> None:
        mine, theirs = self.count, self._peer_min()
        pushed, popped = (mine, theirs) if self.producing else (theirs, mine)
        self.w.wait(ready, KIND, self.key, (self.code | op, self.where, pushed, popped))

    def _misuse(self, op: str) -> None:
        side, other = ("AIC", "the AIC pushes") if self.slot == 0 else ("AIV", "the AIVs push")
        if not self.c2v:
            other = "the AIVs push" if self.slot == 0 else "the AIC pushes"
        raise ValueError(f"TPipe: {op} on the {side} side of a {self.direction} pipe: {other}, the other side pops")

    # -- push and pop ----------------------------------------------------------------------------
    def push(self, src: Any = None) -> None:
        """TPUSH: ``src`` (a Tile -- L0C on the AIC, UB on an AIV -- or a numpy array) into the
        next slot, once one is free. On V2C with split "none", lane 1 only syncs (``src`` may be
        None)."""
        if not self.producing:
            self._misuse("push")
        n = self.count
        depth = self.depth
        self._await_free(n)
        rec = tile.collecting()
        if rec and n >= depth:
            tile.handshake(a2a3.WAIT, self.key, a2a3.FREE, n - depth + 1, self.consumers, a2a3.MTE3)
        if self.writes:
            dst = self.parts[n % depth]
            if isinstance(src, tile.Tile):
                if src.core.n or src.shape != dst.shape:
                    _check(src.core.n == 0, "push inside c.loop(): a pipe operation cannot be batched (use c.range())")
                    _check(False, f"push of {src!r} into a slot part of shape {dst.shape}")
                tile.store(dst, src)
            else:
                a = np.asarray(src)
                if a.shape != dst.shape:
                    _check(False, f"push of an array of shape {a.shape} into a slot part of shape {dst.shape}")
                dst[...] = a
        if rec:
            tile.handshake(a2a3.SET, self.key, a2a3.DATA, n + 1, (self.slot,), a2a3.MTE3)
        self._published(n + 1)

    def pop(self, dst: Any = None) -> Any:
        """TPOP: the next tile (this lane's part of it), once pushed: loaded into ``dst`` (a Tile --
        UB on an AIV, L1 on the AIC -- returned) or returned as a numpy array. The slot is free
        for the producer once every consuming lane popped it."""
        if self.producing:
            self._misuse("pop")
        m = self.count
        self._await_data(m)
        rec = tile.collecting()
        if rec:
            tile.handshake(a2a3.WAIT, self.key, a2a3.DATA, m + 1, self.producers, a2a3.MTE2)
        part = self.parts[m % self.depth]
        if isinstance(dst, tile.Tile):
            if dst.core.n or dst.shape != part.shape:
                _check(dst.core.n == 0, "pop inside c.loop(): a pipe operation cannot be batched (use c.range())")
                _check(False, f"pop of a slot part of shape {part.shape} into {dst!r}")
            load_slot(dst, part)
            out = dst
        else:
            if dst is not None:
                _check(False, f"pop(dst): expected a Tile or nothing, got {type(dst).__name__}")
            out = part.copy()
        if rec:
            tile.handshake(a2a3.SET, self.key, a2a3.FREE, m + 1, (self.slot,), a2a3.MTE2)
        self._published(m + 1)
        return out

    def __repr__(self) -> str:
        return (f"TPipe({self.direction}, {self.shape[0]}x{self.shape[1]} {self.dtype.name}, depth {self.depth}, "
                f"{self.split}, {'AIC' if self.slot == 0 else f'AIV lane {self.lane}'}: {self.count} "
                f"{'pushed' if self.producing else 'popped'})")


def slot_parts(ring: np.ndarray, shape: tuple[int, int], dtype: np.dtype, depth: int, lane: int,
               split: str = "up_down") -> list[np.ndarray]:
    """The ``depth`` slots of ``ring``'s bytes as (rows, cols) tiles of ``dtype``, each cut to the
    part vector lane ``lane`` pushes or pops (row halves for "up_down", column halves for
    "left_right"); ``lane`` -1: the whole tile (the AIC's side)."""
    rows, cols = shape
    nbytes = rows * cols * np.dtype(dtype).itemsize
    raw = ring.reshape(-1).view(np.uint8)
    tiles = [raw[i * nbytes:(i + 1) * nbytes].view(dtype).reshape(rows, cols) for i in range(depth)]
    if lane < 0:
        return tiles
    if split == "up_down":
        h = rows // 2
        return [t[lane * h:(lane + 1) * h] for t in tiles]
    h = cols // 2
    return [t[:, lane * h:(lane + 1) * h] for t in tiles]


def load_slot(dst: tile.Tile, part: np.ndarray) -> None:
    """TLOAD a slot's ``part`` into ``dst`` -- as a copy: the slot is the producer's again after
    the pop (a widening load copies anyway); read-only, so no later store of this core needs to
    check it for overlap."""
    if dst.vdtype != part.dtype:
        tile.load(dst, part)
    else:
        mine = part.copy()
        mine.flags.writeable = False
        tile.load(dst, mine)


class CountingPipe(TPipe):
    """A pipe side that only counts: the same transfers and flags as a TPipe, into a private
    ring, never waiting -- what a cost law replays a mixed kernel's part with, outside a device,
    to feed a2a3.couple (the flags couple the parts; ``key`` must be the same on every part)."""

    def __init__(self, slot: int, key: int, direction: str, slot_shape: tuple[int, int], dtype: Any,
                 depth: int = 2, split: str = "up_down", slots: tuple[bool, bool, bool] = (True, True, True)) -> None:
        rows, cols, dt = self._geometry(direction, slot_shape, dtype, depth, split, slots)
        self._sides(slot, slots, key, np.zeros(int(depth) * rows * cols * dt.itemsize, np.uint8))
        self.count = 0

    def _await_free(self, n: int) -> None:
        pass

    def _await_data(self, m: int) -> None:
        pass

    def _published(self, n: int) -> None:
        self.count = n


def _parts(slots: tuple[bool, bool, bool]) -> str:
    names = [n for n, s in zip(("aic", "aiv0", "aiv1"), slots) if s]
    return "+".join(names) or "none"


@kw.task_end_check
def leftovers(get: Any, clusters: Any) -> list[str]:
    """Pipes of ``clusters`` that hold tiles some consumer has not popped (``get(i)``: sync word i)."""
    out = []
    for b in clusters:
        base = 3 * b
        seen: dict[int, dict[int, tuple[int, int]]] = {}       # key -> slot -> (conf, count)
        for s in range(3):
            for i in range(CHANNELS):
                k = get(kw.word(base + s, _KEYS + i))
                if k == 0:
                    break
                seen.setdefault(k, {})[s] = (get(kw.word(base + s, _CONFS + i)), get(kw.word(base + s, _COUNTS + i)))
        for k, by_slot in seen.items():
            conf = next(iter(by_slot.values()))[0]
            c2v = conf & 1 == 0
            prods = [s for s in by_slot if (s == 0) == c2v]
            cons = [s for s in by_slot if (s == 0) != c2v]
            if not prods:
                continue
            pushed = min(by_slot[s][1] for s in prods)
            popped = min((by_slot[s][1] for s in cons), default=0)
            if pushed > popped:
                out.append(f"pipe {_DIRS[conf & 1]} on cluster {b} (ring at GM address {k:#x}) holds "
                           f"{pushed - popped} tile(s) not popped when the task ended ({pushed} pushed, "
                           f"{popped} popped): the next mixed task on that cluster will pop them")
    return out
