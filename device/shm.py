"""Shared memory of a device, and pickled reports in fixed areas of the control segment.

    host:  Segment("gm", n)  memfd_create + mmap ──fork──▶ scheduler, workers inherit the mapping
           ...
           Segment.close()   unmap (or leave the mapping to views a user still holds) and close
                             the fd; the kernel frees the memory when the last mapping is gone

Segments are anonymous (``memfd_create``): they have no name in /dev/shm, so no signal, crash or
kill -9 of any process can orphan them -- the memory lives exactly as long as some process maps
it. (The alternatives were to unlink a named segment once every child had forked, which leaves
a window, or to have the next Device collect stale names, which leaves the memory held until
then.) A live device's memory shows in ``/proc/<pid>/maps`` as ``/memfd:ptoemu-<pid>-<n>-gm``.
Children are forked, so nothing ever attaches by name and the pre-3.13 resource tracker (which
unlinks segments an attaching process registered) never sees these segments.
"""

from __future__ import annotations

import itertools
import mmap
import os

PREFIX = "ptoemu"
_counter = itertools.count()


class Segment:
    """One shared-memory segment, created and closed by the host process."""

    def __init__(self, what: str, nbytes: int) -> None:
        self.name = f"{PREFIX}-{os.getpid()}-{next(_counter)}-{what}"
        self.nbytes = nbytes
        self.owner_pid = os.getpid()
        self._fd = os.memfd_create(self.name, os.MFD_CLOEXEC)
        try:
            os.ftruncate(self._fd, max(nbytes, 1))
            self._mmap: mmap.mmap | None = mmap.mmap(self._fd, max(nbytes, 1))
        except BaseException:
            os.close(self._fd)
            raise
        self.buf: memoryview = memoryview(self._mmap)

    def reserve(self, offset: int, nbytes: int) -> None:
        """Make the kernel allocate the pages of [offset, offset+nbytes) now, so that running out
        of memory is an OSError here rather than a SIGBUS in whichever process touches the page."""
        if nbytes > 0:
            os.posix_fallocate(self._fd, offset, nbytes)

    def prefault(self, offset: int, nbytes: int) -> None:
        """Touch every page once in this process (first touch of shm is 10x slower than later ones)."""
        if nbytes > 0:
            self.reserve(offset, nbytes)
            mv = self.buf[offset:offset + nbytes]
            step = mmap.PAGESIZE
            for i in range(0, nbytes, step):
                mv[i] = 0
            mv.release()

    def close(self) -> None:
        """Unmap and close (idempotent). If a numpy view a user holds still maps the memory, the
        mapping becomes that view's and goes away with the last such view."""
        if os.getpid() != self.owner_pid or self._mmap is None:
            return
        try:
            if self.buf is not None:
                self.buf.release()
            self._mmap.close()
        except BufferError:
            pass                    # exported to a user's view (Device.host_view): it owns it now
        self.buf = None  # type: ignore[assignment]
        self._mmap = None
        os.close(self._fd)
        self._fd = -1
