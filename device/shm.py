"""Shared-memory segments of a device, and pickled reports in fixed areas of the control segment.

    host:  Segment.create("gm", n) ──fork──▶ scheduler, workers (inherit the mapping; never attach)
           ...
           Segment.destroy()   unlink the name, then unmap (once every view into it is gone)

Segments are POSIX shared memory (``/dev/shm/ptoemu-<pid>-<n>-<what>``) so a user can see what a
live device holds. Because children are forked, no process ever attaches by name, which sidesteps
the pre-3.13 resource tracker behaviour of unlinking a segment when an attaching process exits.
The creating process does register the name with the resource tracker: if the host is killed with
SIGKILL the tracker unlinks the segment once every process that maps it has exited, and the
orphaned scheduler unlinks it first (see ``scheduler.orphaned``).
"""

from __future__ import annotations

import itertools
import mmap
import os
import pickle

from multiprocess import shared_memory

PREFIX = "ptoemu"
_counter = itertools.count()


class Segment:
    """One named shared-memory segment, owned (created and unlinked) by the host process."""

    def __init__(self, what: str, nbytes: int) -> None:
        self.name = f"{PREFIX}-{os.getpid()}-{next(_counter)}-{what}"
        self.nbytes = nbytes
        self._shm = shared_memory.SharedMemory(name=self.name, create=True, size=max(nbytes, 1))
        self.buf: memoryview = self._shm.buf
        self.owner_pid = os.getpid()

    def reserve(self, offset: int, nbytes: int) -> None:
        """Make tmpfs allocate the pages of [offset, offset+nbytes) now, so that running out of
        /dev/shm is an OSError here rather than a SIGBUS in whichever process touches the page."""
        if nbytes > 0:
            os.posix_fallocate(self._shm._fd, offset, nbytes)

    def prefault(self, offset: int, nbytes: int) -> None:
        """Touch every page once in this process (first touch of shm is 10x slower than later ones)."""
        if nbytes > 0:
            self.reserve(offset, nbytes)
            mv = self.buf[offset:offset + nbytes]
            step = mmap.PAGESIZE
            for i in range(0, nbytes, step):
                mv[i] = 0
            mv.release()

    def unlink(self) -> None:
        """Remove the name (idempotent); the memory lives on while someone maps it."""
        try:
            self._shm.unlink()
        except FileNotFoundError:
            pass

    def close(self) -> None:
        """Unlink, then unmap if no numpy view still exports the buffer (else the GC unmaps it)."""
        if os.getpid() != self.owner_pid:
            return
        self.unlink()
        self.buf = None  # type: ignore[assignment]
        try:
            self._shm.close()
        except BufferError:
            pass  # a user still holds a view; the mapping goes away with it


def unlink_name(name: str) -> None:
    """Unlink a segment by name from a process that does not own the object (orphan cleanup)."""
    try:
        from _posixshmem import shm_unlink

        from multiprocess import resource_tracker
        shm_unlink("/" + name)
        resource_tracker.unregister("/" + name, "shared_memory")
    except (FileNotFoundError, OSError, ImportError):
        pass


def write_report(words: memoryview, off: int, nwords: int, report: object) -> bool:
    """Pickle ``report`` into an area of ``nwords`` words at word ``off``; False if the area is
    still full (its reader has not taken the previous report) -- the first report wins."""
    if words[off] != 0:
        return False
    data = pickle.dumps(report, protocol=pickle.HIGHEST_PROTOCOL)
    room = (nwords - 1) * 8
    if len(data) > room:
        data = pickle.dumps({"truncated": True, "summary": repr(report)[: room // 2]})
    raw = words.cast("B")
    start = (off + 1) * 8
    raw[start:start + len(data)] = data
    words[off] = len(data)          # length last: the reader sees a whole report or none
    return True


def read_report(words: memoryview, off: int, clear: bool = True) -> object | None:
    n = words[off]
    if n <= 0:
        return None
    raw = words.cast("B")
    start = (off + 1) * 8
    report = pickle.loads(bytes(raw[start:start + n]))
    if clear:
        words[off] = 0
    return report
