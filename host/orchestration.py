"""The orchestration API (``rt``): what an orchestration function calls while ``dev.run`` runs it.

    dev.run(orchestrate, *args)
      └─ orchestrate(rt, *args)              runs here, in the host process
           rt.make_tensor(shape, dtype)     runtime tensor: GM from the heap ring at first write
           rt.submit(kernel, In(a), Out(t), 3)   validate ─▶ TaskWriter.write ─▶ task id
           with rt.scope(): ...             tensors made inside die at the end; the scope's
                                            hold on their writers is dropped (a scope-end record)
           rt.alloc_tensors(...)            a builtin task: allocates, completes without a worker
           rt.synchronize()                 wait for everything submitted so far
           rt.read(t)                       a tensor's values (block tables, lengths, ...)

Checks happen before anything is written, so a rejected submit leaves the run as it was.

The seam with the device is a ``RunSession``, made by ``Device.run`` for one run: the task
writer, the kernels, the heap size, how to wait and how to read. ``Device.run`` drives the run's
own scope with ``begin_run`` / ``end_run`` / ``close_scopes``; nothing else crosses.
"""

from __future__ import annotations

import contextlib
import math
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from device import codec as C
from host.errors import DeviceMemoryError
from host.submit import _fmt_bytes
from host.tensor import Arg, Buffer, Out, Tensor, check_dtype, check_shape
from kernels.registry import Kernel

if TYPE_CHECKING:
    from host.submit import TaskWriter

MAX_SCOPE_DEPTH = 63


@dataclass(frozen=True)
class RunSession:
    """What one run's orchestration API may use of its device."""

    device: Any                                # identity: which tensors belong to this device
    writer: TaskWriter                         # the host end of the task ring and the heap
    kernels: list[Kernel]                      # loaded kernels, in kernel-index order
    kernel_index: dict[Kernel, int]
    heap_bytes: int
    wait_completed: Callable[[], None]         # every task submitted so far has finished
    read: Callable[[Tensor], np.ndarray]       # a copy of a tensor's values


class _Frame:
    __slots__ = ("depth", "start", "buffers")

    def __init__(self, depth: int, start: int) -> None:
        self.depth, self.start, self.buffers = depth, start, []


class Runtime:
    """The ``rt`` handed to an orchestration function."""

    def __init__(self, session: RunSession) -> None:
        self._s = session
        self._w = session.writer
        self._kidx = session.kernel_index
        self._what = [f"rt.submit({k.name})" for k in session.kernels]
        self._specs: dict[tuple, tuple] = {}       # make_tensor: (shape, dtype) -> checked spec
        self._frames: list[_Frame] = []
        self.active = False
        self.tasks = 0
        self._thread = threading.get_ident()       # the run's thread: the only one that may submit
        self._misuse: str | None = None            # first call from another thread, raised by dev.run

    # -- the run's own scope (Device.run) -----------------------------------------------------------
    def begin_run(self) -> None:
        """The run starts: its outermost scope (depth 0) opens and the API becomes usable."""
        self.active = True
        self._open()

    def end_run(self) -> None:
        """The orchestration returned: its scope ends (a scope-end record), the API closes."""
        self._close(self._frames[0], "its scope ended")
        self.active = False

    def close_scopes(self, why: str) -> None:
        """The orchestration failed: end every open scope, innermost first -- normally (their
        records written) if the run goes on to drain, or just forgotten if it is being aborted."""
        self.active = False
        while self._frames:
            self._close(self._frames[-1], why)

    # -- scopes ----------------------------------------------------------------------------------
    def _open(self) -> _Frame:
        if len(self._frames) > MAX_SCOPE_DEPTH:
            raise RuntimeError(f"rt.scope(): scopes nest at most {MAX_SCOPE_DEPTH} deep")
        fr = _Frame(len(self._frames), self._w.next_tid)
        self._frames.append(fr)
        return fr

    def _close(self, fr: _Frame, why: str) -> None:
        """End a scope: its runtime tensors die, and (if the device is healthy) a scope-end
        record releases the scope's hold on their writers."""
        if not self._frames or self._frames[-1] is not fr:
            top = self._frames[-1] if self._frames else None
            raise RuntimeError(
                f"rt.scope(): scopes must end in the reverse order they began, but the scope begun at "
                f"task {fr.start} (depth {fr.depth}) is ending while "
                + (f"the scope begun at task {top.start} (depth {top.depth}) is still open"
                   if top else "no scope is open") + "; nest them with `with rt.scope():`")
        for b in fr.buffers:
            b.alive = False
            b.why_dead = why
        if why == "its scope ended":       # the scope stays open (for diagnosis) until written
            self._w.write(C.KIND_SCOPE_END, 0, 0, [], (), fr.depth, None, "rt.scope() end",
                          aux=fr.depth)
        self._frames.pop()

    @contextlib.contextmanager
    def scope(self) -> Iterator[None]:
        """Runtime tensors made inside die at the end of the block, and their heap space is
        reclaimed once the tasks using them have run."""
        self._check_active("rt.scope()")
        fr = self._open()
        try:
            yield
        except BaseException:
            if self._frames and self._frames[-1] is fr:
                self._end_after_error(fr)
            raise
        self._close(fr, "its scope ended")

    def _end_after_error(self, fr: _Frame) -> None:
        """Leave a scope that an exception is passing through: end it normally if the device is
        healthy (what was submitted stays valid), else just forget it (the run will abort)."""
        try:
            self._close(fr, "its scope ended")
        except BaseException:  # noqa: BLE001 - the original exception is the one to report
            if self._frames and self._frames[-1] is fr:
                self._close(fr, "the run failed")

    # -- tensors ---------------------------------------------------------------------------------
    def make_tensor(self, shape: Any, dtype: Any = np.float32) -> Tensor:
        """A runtime tensor; it gets GM from the heap ring when the first task that writes it
        (``Out``) is submitted, and lives until the end of the current scope."""
        if not self.active or threading.get_ident() != self._thread:
            self._check_active("rt.make_tensor()")
        try:
            spec = self._specs.get((shape, dtype))     # (shape, dtype, nbytes), checked once
        except TypeError:                              # an unhashable shape (a list): no cache
            spec = None
        if spec is None:
            spec = self._tensor_spec(shape, dtype)
        fr = self._frames[-1]
        buf = Buffer(self._s.device, spec[2], None, True, fr)
        fr.buffers.append(buf)
        return Tensor.whole(buf, spec[0], spec[1])

    def _tensor_spec(self, shape: Any, dtype: Any) -> tuple:
        shape_ = check_shape(shape, "rt.make_tensor(shape=...)")
        dt = check_dtype(dtype, "rt.make_tensor(dtype=...)")
        nbytes = math.prod(shape_) * dt.itemsize
        heap = self._s.heap_bytes
        if nbytes > heap:
            raise DeviceMemoryError(
                f"rt.make_tensor(shape={shape_}, dtype={dt}): {_fmt_bytes(nbytes)} is more than the whole "
                f"device heap ({_fmt_bytes(heap)}) that runtime tensors live in; raise "
                f"Platform(heap_bytes=...) to at least {_fmt_bytes(1 << (nbytes - 1).bit_length())} or use "
                "a host tensor (dev.empty)")
        spec = (shape_, dt, nbytes)
        try:
            self._specs[(shape, dtype)] = spec
        except TypeError:
            pass
        return spec

    def alloc_tensors(self, *specs: Any) -> list[Tensor]:
        """Allocate runtime tensors with a builtin task that completes without a worker.

        Each spec is ``(shape, dtype)`` or an unwritten runtime tensor. The tensors count as
        written (their contents are undefined), so later tasks may take them ``InOut``."""
        self._check_active("rt.alloc_tensors()")
        if not specs:
            raise ValueError("rt.alloc_tensors(): give at least one (shape, dtype) or runtime tensor")
        ts = []
        for i, s in enumerate(specs):
            if isinstance(s, Tensor):
                t = s
            elif isinstance(s, tuple) and len(s) == 2:
                t = self.make_tensor(*s)
            else:
                raise TypeError(f"rt.alloc_tensors(): spec {i} must be (shape, dtype) or a runtime "
                                f"tensor, got {s!r}")
            ts.append(t)
        if len(ts) > C.MAX_TENSORS:
            raise ValueError(f"rt.alloc_tensors(): {len(ts)} tensors; at most {C.MAX_TENSORS}")
        args = [Out(t) for t in ts]
        new = self._check_tensors(args, "rt.alloc_tensors()")
        if len(new) != len(ts):
            raise ValueError("rt.alloc_tensors(): every tensor must be a whole runtime tensor "
                             "not yet written (and given once)")
        self._w.write(C.KIND_ALLOC, 0, 0, args, (), self._frames[-1].depth, new,
                      "rt.alloc_tensors()")
        return ts

    # -- tasks -----------------------------------------------------------------------------------
    def submit(self, kernel: Kernel, *args: Any, core: Any = None) -> int:
        """Submit a task: tensor arguments (In/Out/InOut) first, then scalars. Returns its id.

        ``core`` (AIC, AIV or a Mixed) optionally states the core type the caller expects, as the
        reference's rt_submit_aic_task / rt_submit_aiv_task do; a mismatch is an error."""
        try:
            k = self._kidx.get(kernel)
        except TypeError:                       # not hashable: not a kernel either
            k = None
        if k is None or core is not None or not self.active or threading.get_ident() != self._thread:
            k = self._submit_checks(kernel, core)
        what = self._what[k]                    # "rt.submit(name)", made once per kernel
        nt = 0
        for a in args:
            if isinstance(a, Arg):
                nt += 1
            else:
                break
        if nt == len(args):
            tensors, scalars = args, ()
        else:
            tensors, scalars = args[:nt], args[nt:]
            for i, s in enumerate(scalars):
                if isinstance(s, Arg):
                    raise TypeError(f"{what}: tensor argument {nt + i} ({s!r}) comes after a scalar; "
                                    "put all In/Out/InOut tensors before the scalars")
                if isinstance(s, Tensor):
                    raise TypeError(f"{what}: argument {nt + i} is a bare Tensor; wrap it in In(), "
                                    "Out() or InOut() to say how the kernel uses it")
        if nt > C.MAX_TENSORS:
            raise ValueError(f"{what}: {nt} tensor arguments; at most {C.MAX_TENSORS}")
        new = self._check_tensors(tensors, what) if nt else None
        tid = self._w.write(C.KIND_TASK, k, kernel.shape, tensors, scalars,
                            self._frames[-1].depth, new, what)
        self.tasks += 1
        return tid

    def _submit_checks(self, kernel: Any, core: Any) -> int:
        """The checks a plain submit skips: an unknown kernel, a core-type claim, a run that is
        not active or a call from another thread. Returns the kernel index."""
        k = self._kidx.get(kernel) if isinstance(kernel, Kernel) else None
        if k is None:
            self._bad_kernel(kernel)
        what = self._what[k]
        if core is not None and getattr(core, "shape", None) != kernel.shape:
            raise TypeError(f"{what}, core={core!r}: {kernel.name} is an {kernel.shape_name} kernel, "
                            f"not {getattr(core, 'name', core)}")
        self._check_active(what)
        return k

    def synchronize(self) -> None:
        """Wait until every task submitted so far has finished."""
        self._check_active("rt.synchronize()")
        self._s.wait_completed()

    def read(self, tensor: Tensor) -> np.ndarray:
        """A numpy copy of a tensor's current values, as the orchestration (the AICPU) reads GM:
        waits for the tasks submitted so far if any are still running."""
        self._check_active("rt.read()")
        return self._s.read(tensor)

    # -- checks ----------------------------------------------------------------------------------
    def check_misuse(self) -> None:
        """Raise (once the run is over) what another thread tried to do to this run."""
        if self._misuse:
            raise RuntimeError(self._misuse)

    def _check_active(self, what: str) -> None:
        if threading.get_ident() != self._thread:
            msg = (f"{what} was called from thread {threading.current_thread().name}, but this run's "
                   f"orchestration runs in another thread; the orchestration API is not thread-safe: "
                   "call it from the orchestration's own thread (hand work over with a queue)")
            if self._misuse is None:
                self._misuse = f"dev.run(): tasks may be missing: {msg}"
            raise RuntimeError(msg)
        if not self.active:
            raise RuntimeError(f"{what} called outside dev.run(...): the orchestration API is only "
                               "usable while its run is in progress")

    def _bad_kernel(self, kernel: Any) -> None:
        if isinstance(kernel, Kernel):
            loaded = ", ".join(sorted(k.name for k in self._kidx)) or "none"
            raise ValueError(f"rt.submit(): kernel {kernel.name} is not loaded on this device; "
                             f"pass it (or its module name) in Device(kernels=[...]). Loaded: {loaded}")
        raise TypeError(f"rt.submit(): the first argument must be a kernel registered with "
                        f"@kernel(...), got {type(kernel).__name__} {kernel!r}")

    def _check_tensors(self, args: tuple | list, what: str) -> list[Buffer]:
        """Validate the tensor arguments; return the runtime buffers this task writes first."""
        new: list[Buffer] = []
        dev = self._s.device
        for i, a in enumerate(args):
            t = a.tensor
            b = t.buf
            if not b.alive:
                raise ValueError(f"{what}: tensor argument {i} ({t!r}) is no longer valid: "
                                 f"{b.why_dead}")
            if b.device is not dev:
                raise ValueError(f"{what}: tensor argument {i} belongs to another device")
            if b.gm is None:
                if a.dir != C.DIR_OUT:
                    raise ValueError(
                        f"{what}: tensor argument {i} is {type(a).__name__}({t!r}) but no earlier "
                        "task has written this runtime tensor, so there is nothing to read; the "
                        "first task to use it must take it as Out (or allocate it with "
                        "rt.alloc_tensors)")
                if b not in new:
                    new.append(b)
        return new
