"""Running one part of one task: what the worker does with a mailbox entry, and what the
sequential engine does at submit -- one function for both, so the two engines differ only in
*when* a task runs, never in how.

    record words ──ArgDecoder──▶ numpy views into GM (In views read-only) + scalars
                 ──fn(*tensors, *scalars)──▶ None, or a failure report (codec.TaskFailure:
                    tid, kernel, core, part, args, error, traceback, violation)

Recording (``ArgDecoder.count``): the kernel call runs under a tile-layer collector
(kernels/tile.py begin/end) and ``ArgDecoder.counts`` holds what it counted (kernels.tile.Counts,
None if the part ran no tile instruction) until the next part runs; the caller sends it on
(codec.write_counts). Without recording the call is not wrapped at all.

A report is built so that it always exists and always fits: an exception whose ``str()`` raises
is described without it, and long messages and tracebacks are cut to a size that fits a core's
error area (head of the message, tail of the traceback). A write into an ``In`` argument -- numpy
refuses it -- becomes a direction violation naming the argument.

A kernel must not fork: a copy of a core would return from the kernel too and report the task a
second time. After every call, a process that is not the one that made the decoder is such a copy
and exits at once, touching nothing (this also stops a fork made behind Python's back). It knows
by a page that the kernel wipes in any forked child (MADV_WIPEONFORK): a memory read, where a pid
check would be a system call per task (where the page cannot be had, it compares pids). The
process that called the kernel learns of the fork from an at-fork hook and fails the task, after
reaping the copies that exit.
"""

from __future__ import annotations

import mmap
import operator
import os
import struct
import time
import traceback
from collections.abc import Callable

import numpy as np

from device import codec as C
from device import sanitizer
from kernels import tile

ARG = struct.Struct(f"{C.ARG_WORDS}q")
MAX_ERROR_CHARS = 1000
MAX_TRACEBACK_CHARS = 8000
FORKED_COPY_EXIT = 70           # exit status of a forked copy of a core that returned from a kernel
REAP_COPIES_S = 1.0             # how long the caller waits for such copies to exit


def _children() -> set[int]:
    try:
        with open("/proc/thread-self/children") as f:
            return {int(p) for p in f.read().split()}
    except (OSError, ValueError):
        return set()


def _fork_mark() -> mmap.mmap | None:
    """A private page that reads 1 here and 0 in every process forked from here, or None."""
    try:
        m = mmap.mmap(-1, mmap.PAGESIZE, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
        m.madvise(getattr(mmap, "MADV_WIPEONFORK", 18))       # Linux >= 4.14 (the constant is 18)
    except (AttributeError, OSError, ValueError):
        return None
    m[0] = 1
    return m


_forked: list[int] = []         # children made by os.fork() in this process (at-fork hooks)
_before_fork: list[set[int]] = [set()]


def _note_fork() -> None:
    _forked.extend(_children() - _before_fork[0])


os.register_at_fork(before=lambda: _before_fork.__setitem__(0, _children()), after_in_parent=_note_fork)


class ArgDecoder:
    """Turns the tensor and scalar words of a task record into kernel arguments."""

    def __init__(self, q, f, ctrl_buf, gm_buf) -> None:
        self.q, self.f = q, f                   # the control segment as int64 / float64 words
        self.ctrl_buf = ctrl_buf                # ... and as bytes
        self.gm = gm_buf
        self.gm_ro = gm_buf.toreadonly()        # In views over it are read-only at no extra cost
        self.meta_cache: dict[int, tuple] = {}
        self.pid = os.getpid()                  # a kernel call that returns elsewhere is a forked copy:
        self.mark = _fork_mark()                # mark[0] == 0 there (else compare pids)
        self.count = False                      # recording: count each part's tile instructions
        self.counts: tile.Counts | None = None  # ... what the last part counted

    def _meta(self, meta: int) -> tuple:
        """(dtype, shape getter, strides getter, direction) of a meta word, made once: the
        getters pick the kept dimensions' words out of an argument's unpacked words."""
        m = self.meta_cache.get(meta)
        if m is None:
            d, _, dt, nd, drop = C.unpack_meta(meta)
            keep = [k for k in range(nd) if not drop >> k & 1]
            m = self.meta_cache[meta] = (dt, _getter([C.A_SHAPE + k for k in keep]),
                                         _getter([C.A_STRIDES + k for k in keep]), d)
        return m

    def tensors(self, r: int) -> list:
        """Numpy views of the record's tensor arguments (their directions in ``last_dirs``)."""
        gm, gm_ro, raw, unpack, meta = self.gm, self.gm_ro, self.ctrl_buf, ARG.unpack_from, self._meta
        out = []
        self.last_dirs = dirs = []
        a = (r + C.ARGS_OFF) * 8
        for _ in range(self.q[r + C.H_NTENSORS]):
            w = unpack(raw, a)
            a += C.ARG_WORDS * 8
            dt, shape, strides, d = meta(w[C.A_META])
            # A kernel writing its input is an error, always: In views are read-only.
            out.append(np.ndarray(shape(w), dt, gm_ro if d == C.DIR_IN else gm, w[C.A_LO], strides(w)))
            dirs.append(d)
        return out

    def scalars(self, r: int, out: list) -> list:
        """Append the record's scalars to ``out`` (device/codec.py decode_scalars)."""
        return C.decode_scalars(self.q, self.f, self.ctrl_buf, r, out)


def _getter(idx: list[int]) -> Callable[[tuple], tuple]:
    """A function picking ``idx`` out of a tuple, always as a tuple (itemgetter is C-fast)."""
    if len(idx) == 1:
        one = operator.itemgetter(idx[0])
        return lambda w: (one(w),)
    return operator.itemgetter(*idx) if idx else (lambda w: ())


def _describe(e: BaseException) -> str:
    """``Type: message`` of an exception, even if its ``__str__`` raises."""
    try:
        msg = str(e)
    except BaseException as e2:  # noqa: BLE001 - a broken __str__ must not lose the report
        msg = f"<str() of the exception failed: {type(e2).__name__}>"
    return f"{type(e).__name__}: {msg}" if msg else type(e).__name__


def _cut(text: str, limit: int, keep_end: bool) -> str:
    if len(text) <= limit:
        return text
    if keep_end:
        return f"... ({len(text) - limit} earlier characters cut)\n" + text[-limit:]
    return text[:limit] + f"... ({len(text) - limit} more characters)"


def _traceback(e: BaseException) -> str:
    """The frames (the innermost ones if there are many), then the cut message: formatting the
    exception itself would repeat a huge message or call a broken ``__str__``."""
    frames = _cut("".join(traceback.format_tb(e.__traceback__)), MAX_TRACEBACK_CHARS, keep_end=True)
    return f"Traceback (most recent call last):\n{frames}{_cut(_describe(e), MAX_ERROR_CHARS, False)}\n"


def run_part(fn: Callable, dec: ArgDecoder, r: int, tid: int, kernel: str, core: str,
             part: int) -> C.TaskFailure | None:
    """Run one part of the task whose record is at word ``r``: None if it returned, else the
    failure report."""
    tensors: list = []
    forks = len(_forked)
    if dec.count:
        tile.begin()
    try:
        tensors = dec.tensors(r)
        fn(*dec.scalars(r, list(tensors)))
        err = None
    except BaseException as e:  # noqa: BLE001 - a kernel may raise anything; report it all
        err = e
    if dec.count:
        try:
            dec.counts = tile.end()
        except Exception as e:  # noqa: BLE001 - the tile layer's own failure, reported as the task's
            dec.counts = None
            err = err or e
    mark = dec.mark
    if (mark[0] == 0) if mark is not None else (os.getpid() != dec.pid):   # a forked copy returned
        os._exit(FORKED_COPY_EXIT)
    if len(_forked) != forks:
        return _forked_report(dec, r, tid, kernel, core, part, forks)
    if err is None:
        return None
    dirs = dec.last_dirs if tensors else []
    violation = sanitizer.written_in(err, tensors, dirs, sanitizer.arg_names(fn, len(tensors)))
    return C.TaskFailure(tid, kernel, core, part, tuple(C.describe_args(dec.q, r)),
                         _cut(_describe(err), MAX_ERROR_CHARS, keep_end=False), _traceback(err),
                         violation or "")


def _forked_report(dec: ArgDecoder, r: int, tid: int, kernel: str, core: str, part: int,
                   forks: int) -> C.TaskFailure:
    """The kernel forked: reap the copies that exit (a copy returning from the kernel exits at
    once), and fail the task -- its effect on GM may have happened twice."""
    pids = _forked[forks:]
    del _forked[forks:]
    left, end = list(pids), time.monotonic() + REAP_COPIES_S
    while left and time.monotonic() < end:
        for p in list(left):
            try:
                if os.waitpid(p, os.WNOHANG)[0]:
                    left.remove(p)
            except ChildProcessError:
                left.remove(p)
        if left:
            time.sleep(0.001)
    who = ", ".join(map(str, pids)) or "unknown"
    still = f"; still running: {', '.join(map(str, left))}" if left else ""
    msg = (f"the kernel called os.fork() while it ran (child process {who}{still}): a forked copy of a "
           "core would return from the kernel and finish the task a second time, so kernels must not "
           "fork -- the copy exits as it returns, touching nothing, and this task fails because its "
           "effect on GM may have happened twice. Run other programs with subprocess (it execs at once).")
    return C.TaskFailure(tid, kernel, core, part, tuple(C.describe_args(dec.q, r)),
                         f"ForkInKernel: {msg}", "")


PRED_OPS = (operator.eq, operator.ne, operator.gt, operator.lt, operator.ge, operator.le)   # codec.PRED_OPS


def predicate_holds(q, r: int, gm) -> bool:
    """Does the predicate of the record at word ``r`` hold now? Its operand is the argument after
    the tensors (a one-element view into ``gm``), compared with the value in the operand's dtype.
    The task table asks when the task is ready (device/tasks.py settle), in either engine."""
    a = r + C.ARGS_OFF + q[r + C.H_NTENSORS] * C.ARG_WORDS
    dt = C.DTYPES[(q[a + C.A_META] >> 8) & 255]
    x = np.frombuffer(gm, dt, 1, q[a + C.A_LO])[0]
    v = np.frombuffer(q[r + C.H_PRED_VAL].to_bytes(8, "little", signed=True)[:dt.itemsize], dt)[0]
    return bool(PRED_OPS[q[r + C.H_PRED_OP] - 1](x, v))


def unwritten_report(dec: ArgDecoder, r: int, fn: Callable, tid: int, kernel: str, core: str,
                     check: sanitizer.TaskCheck | None = None) -> C.TaskFailure | None:
    """Sanitizer, after a task ran: a failure report if some Out element still holds the poison
    written before it started, or (with the task's ``check``) an In changed or SPMD blocks wrote
    the same element (device/sanitizer.py), else None."""
    arrays = dec.tensors(r)
    names = sanitizer.arg_names(fn, len(arrays))
    if check is not None:
        bad = check.problems(arrays, dec.last_dirs, names)
    else:
        bad = sanitizer.unwritten_outs(arrays, dec.last_dirs, names)
    if not bad:
        return None
    return C.TaskFailure(tid, kernel, core, 0, tuple(C.describe_args(dec.q, r)), "direction violation",
                         "", "; ".join(bad))
