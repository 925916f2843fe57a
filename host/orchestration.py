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

    the reference's newer API (docs/reference.md)
           rt.submit(k, ..., deps=[t1, t2])      also wait for these task ids
           rt.submit_dummy(InOut(x), deps=[...]) a dependency-only task: no core, done when ready
           rt.submit(k, ..., blocks=n, sync_start=False)   SPMD: n logical blocks, one task
           rt.submit(k, ..., predicate=(t, i, ">", 0))     run only if t[i] > 0 when ready
           with rt.scope(manual=True): ...       no automatic dependencies (reference rules)
           rt.get_tensor_data(t, i) / rt.set_tensor_data(t, i, v)   one element, synchronised
           rt.make_tensor(shape, dtype, init=v)  a runtime tensor that starts filled with v
           rt.available_clusters() / rt.available_aiv()

Task ids: ``rt.submit`` and ``rt.submit_dummy`` return the id to pass in ``deps=``;
``rt.alloc_tensors`` returns its tensors as a list with a ``task_id`` attribute. ``rt.last_task`` is the id of
the record submitted last, whatever made it.

Semantics. By default (``Device(semantics="sequential")``) a run's result is that of running its
tasks one at a time in submission order: every overlap of bytes is ordered (read after write,
write after read, write after write), explicit deps add orderings, and the hints that *remove*
orderings on the chip -- ``NoDep``, ``manual_dep`` views, manual scopes -- are recorded but
ordered anyway, so nothing races. ``Device(semantics="reference")`` applies the reference's own
rules instead (device/tensormap.py: creator edges, no write-after-read, an ``Out`` on an existing
buffer does not wait for its previous writer, untracked arguments and manual scopes get no
automatic edges); with ``schedule="random"`` a run then shows the races a chip could show
(host/fuzz.py ``compare_semantics`` finds them).

Checks happen before anything is written, so a rejected submit leaves the run as it was; a record
that fails half-way (a wait for heap or dep-pool space interrupted) gives back what it took
(host/submit.py). A process forked during a run cannot use its ``rt`` (``DeviceClosed``).

The seam with the device is a ``RunSession``, made by ``Device.run`` for one run: the task
writer, the kernels, the heap size, how to wait and how to read. ``Device.run`` drives the run's
own scope with ``begin_run`` / ``end_run`` / ``close_scopes``; nothing else crosses.
"""

from __future__ import annotations

import contextlib
import enum
import itertools
import math
import os
import threading
import weakref
from array import array
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from device import codec as C
from device import layout as L
from device.codec import short
from host.errors import DeviceClosed, DeviceMemoryError, fmt_bytes
from host.submit import Extra
from host.tensor import Arg, Buffer, In, InOut, Out, Tensor, check_dtype, check_shape
from kernels.registry import SHAPE_AIV, Kernel

if TYPE_CHECKING:
    from host.submit import TaskWriter

MAX_SCOPE_DEPTH = 63
_RUNTIMES: weakref.WeakSet[Runtime] = weakref.WeakSet()


def _disown_in_fork_child() -> None:
    """A process forked while a run is in progress (``os.fork()`` in an orchestration, or in
    another thread) inherits the run's ``rt`` but not the right to use its device: there every
    ``rt`` goes inactive, so any call takes the slow path and is refused -- at no cost to submit."""
    for rt in list(_RUNTIMES):
        rt.active = False
        rt._forked = True


os.register_at_fork(after_in_child=_disown_in_fork_child)


class ScopeEnd(enum.Enum):
    """How a scope ends; the value is what a tensor made in it says when used afterwards."""

    ENDED = "its scope ended"            # normally: a scope-end record releases its heap holds
    RUN_FAILED = "the run failed"        # the run is being aborted: the scope is just forgotten


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
    clusters: int = 1                          # the device's blocks (1 AIC + 2 AIV each)
    wait_probe: Callable[[int], None] = lambda tid: None    # a FLAG_PROBE dummy has finished
    element: Callable[[Tensor], np.ndarray] | None = None   # a 0-d view of one element in GM


class TaskId(int):
    """A task id as the API gives it out: an int (compare, print, store it as one) whose type
    says which device issued it, so ``deps=`` refuses another device's ids. Each device has its
    own subclass (``task_id_type``): the check is a type test, and making one costs what making
    an int does. Arithmetic, numpy arrays and pickling give plain ints, which are taken as ids
    of the device they are passed to."""

    __slots__ = ()
    device = ""                                  # which device, for messages

    def __reduce__(self) -> tuple:
        return (int, (int(self),))


_ID_TYPES: weakref.WeakKeyDictionary[Any, type[TaskId]] = weakref.WeakKeyDictionary()
_DEVICE_NUMBERS = itertools.count(1)


def task_id_type(device: Any) -> type[TaskId]:
    """The TaskId subclass of ``device`` (made on its first run)."""
    t = _ID_TYPES.get(device)
    if t is None:
        p = getattr(device, "platform", None)
        name = f"device #{next(_DEVICE_NUMBERS)}" + (f" ({p.name}, blocks={p.blocks})" if p is not None else "")
        t = _ID_TYPES[device] = type("TaskId", (TaskId,), {"__slots__": (), "device": name})
    return t


class Allocated(list):
    """What rt.alloc_tensors returns: its tensors (a list, so ``a, b = ...`` works) and the id
    of the task that allocated them (``task_id``, for ``deps=``)."""

    def __init__(self, tensors: list[Tensor], task_id: int) -> None:
        super().__init__(tensors)
        self.task_id = task_id


class _Frame:
    __slots__ = ("depth", "start", "buffers", "manual")

    def __init__(self, depth: int, start: int, manual: bool = False) -> None:
        self.depth, self.start, self.buffers, self.manual = depth, start, [], manual


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
        self.last_task = -1                         # id of the last record submitted
        self._idt = task_id_type(session.device)    # ids this run gives out know their device
        self._id_kinds = {int, self._idt}           # what deps= takes without a closer look
        self._extra: Extra | None = None            # FLAG_MANUAL while inside a manual scope
        self._thread = threading.get_ident()       # the run's thread: the only one that may submit
        self._misuse: str | None = None            # first call from another thread, raised by dev.run
        self._owner_pid = os.getpid()
        self._forked = False                        # this is a copy made by os.fork(): no device here
        _RUNTIMES.add(self)

    # -- the run's own scope (Device.run) -----------------------------------------------------------
    def begin_run(self) -> None:
        """The run starts: its outermost scope (depth 0) opens and the API becomes usable."""
        self.active = True
        self._open()

    def end_run(self) -> None:
        """The orchestration returned: its scope ends (a scope-end record), the API closes."""
        self._close(self._frames[0], ScopeEnd.ENDED)
        self.active = False

    def close_scopes(self, why: ScopeEnd) -> None:
        """The orchestration failed: end every open scope, innermost first -- normally (their
        records written) if the run goes on to drain, or just forgotten if it is being aborted."""
        self.active = False
        while self._frames:
            self._close(self._frames[-1], why)

    # -- scopes ----------------------------------------------------------------------------------
    def _open(self, manual: bool = False) -> _Frame:
        if len(self._frames) > MAX_SCOPE_DEPTH:
            raise RuntimeError(f"rt.scope(): scopes nest at most {MAX_SCOPE_DEPTH} deep")
        fr = _Frame(len(self._frames), self._w.next_tid, manual)
        self._frames.append(fr)
        self._extra = Extra(C.FLAG_MANUAL) if manual else None
        return fr

    def _close(self, fr: _Frame, why: ScopeEnd) -> None:
        """End a scope: its runtime tensors die, and (if the device is healthy) a scope-end
        record releases the scope's hold on their writers."""
        if not self._frames or self._frames[-1] is not fr:
            top = self._frames[-1] if self._frames else None
            raise RuntimeError(
                f"rt.scope(): scopes must end in the reverse order they began, but the scope begun at "
                f"task {fr.start} (depth {fr.depth}) is ending while "
                + (f"the scope begun at task {top.start} (depth {top.depth}) is still open"
                   if top else "no scope is open") + "; nest them with `with rt.scope():`")
        if why is ScopeEnd.ENDED and self._forked:
            self._check_active("rt.scope() end")     # a forked copy writes no scope end
        for b in fr.buffers:
            b.alive = False
            b.why_dead = why.value
        if why is ScopeEnd.ENDED:          # the scope stays open (for diagnosis) until written
            self._w.write(C.KIND_SCOPE_END, 0, 0, [], (), fr.depth, None, "rt.scope() end",
                          aux=fr.depth)
        self._frames.pop()
        self._extra = Extra(C.FLAG_MANUAL) if self._frames and self._frames[-1].manual else None

    @contextlib.contextmanager
    def scope(self, manual: bool = False) -> Iterator[None]:
        """Runtime tensors made inside die at the end of the block, and their heap space is
        reclaimed once the tasks using them have run.

        ``manual=True``: tasks submitted inside get no automatic dependencies, only their
        ``deps=`` (the reference's PTO2ScopeMode::MANUAL) -- under Device(semantics="reference");
        the default sequential semantics keeps ordering them. Buffer lifetimes stay safe either
        way. Manual scopes may nest; an automatic scope inside a manual one is an error, as in
        the reference."""
        self._check_active("rt.scope()")
        if not isinstance(manual, (bool, np.bool_)):
            raise TypeError(f"rt.scope(manual=...): expected True or False, got {type(manual).__name__} {manual!r}")
        if not manual and self._frames[-1].manual:
            raise ValueError("rt.scope(): an automatic scope cannot be nested inside a manual one (the reference "
                             "rejects it too); open it with rt.scope(manual=True), or end the manual scope first")
        fr = self._open(bool(manual))
        try:
            yield
        except BaseException:
            if self._frames and self._frames[-1] is fr:
                self._end_after_error(fr)
            raise
        self._close(fr, ScopeEnd.ENDED)

    def _end_after_error(self, fr: _Frame) -> None:
        """Leave a scope that an exception is passing through: end it normally if the device is
        healthy (what was submitted stays valid), else just forget it (the run will abort)."""
        try:
            self._close(fr, ScopeEnd.ENDED)
        except BaseException:  # noqa: BLE001 - the original exception is the one to report
            if self._frames and self._frames[-1] is fr:
                self._close(fr, ScopeEnd.RUN_FAILED)

    # -- tensors ---------------------------------------------------------------------------------
    def make_tensor(self, shape: Any, dtype: Any = np.float32, init: Any = None) -> Tensor:
        """A runtime tensor; it gets GM from the heap ring when the first task that writes it
        (``Out``) is submitted, and lives until the end of the current scope. ``init``: every
        element starts as this value (filled when the memory is taken, before any task runs),
        and the tensor may then be read before anything writes it."""
        if not self.active or threading.get_ident() != self._thread:
            self._check_active("rt.make_tensor()")
        try:
            spec = self._specs.get((shape, dtype))     # (shape, dtype, nbytes), checked once
        except TypeError:                              # an unhashable shape (a list): no cache
            spec = None
        if spec is None:
            spec = self._tensor_spec(shape, dtype)
        fr = self._frames[-1]
        buf = Buffer(self._s.device, spec[2], None, True, fr,
                     None if init is None else _scalar_of(init, spec[1], "rt.make_tensor(init=...)"))
        fr.buffers.append(buf)
        return Tensor.whole(buf, spec[0], spec[1])

    def _tensor_spec(self, shape: Any, dtype: Any) -> tuple:
        shape_ = check_shape(shape, "rt.make_tensor(shape=...)")
        dt = check_dtype(dtype, "rt.make_tensor(dtype=...)")
        nbytes = math.prod(shape_) * dt.itemsize
        heap = self._s.heap_bytes
        if nbytes > heap:
            raise DeviceMemoryError(
                f"rt.make_tensor(shape={shape_}, dtype={dt}): {fmt_bytes(nbytes)} is more than the whole "
                f"device heap ({fmt_bytes(heap)}) that runtime tensors live in; raise "
                f"Platform(heap_bytes=...) to at least {fmt_bytes(1 << (nbytes - 1).bit_length())} or use "
                "a host tensor (dev.empty)")
        spec = (shape_, dt, nbytes)
        try:
            self._specs[(shape, dtype)] = spec
        except TypeError:
            pass
        return spec

    def alloc_tensors(self, *specs: Any) -> Allocated:
        """Allocate runtime tensors with a builtin task that completes without a worker.

        Each spec is ``(shape, dtype)``, ``(shape, dtype, init)`` or an unwritten runtime
        tensor. The tensors count as written (their contents are undefined unless ``init`` is
        given), so later tasks may take them ``InOut``. Returns the tensors as a list whose
        ``task_id`` is the allocating task's id (for ``deps=``; also ``rt.last_task``)."""
        self._check_active("rt.alloc_tensors()")
        if not specs:
            raise ValueError("rt.alloc_tensors(): give at least one (shape, dtype) or runtime tensor")
        ts = []
        for i, s in enumerate(specs):
            if isinstance(s, Tensor):
                t = s
            elif isinstance(s, tuple) and len(s) in (2, 3):
                t = self.make_tensor(*s)
            else:
                raise TypeError(f"rt.alloc_tensors(): spec {i} must be (shape, dtype), (shape, dtype, init) "
                                f"or a runtime tensor, got {s!r}")
            ts.append(t)
        if len(ts) > C.MAX_TENSORS:
            raise ValueError(f"rt.alloc_tensors(): {len(ts)} tensors; at most {C.MAX_TENSORS}")
        args = [Out(t) for t in ts]
        new = self._check_tensors(args, "rt.alloc_tensors()")
        if len(new) != len(ts):
            raise ValueError("rt.alloc_tensors(): every tensor must be a whole runtime tensor "
                             "not yet written (and given once)")
        self.last_task = self._idt(self._w.write(C.KIND_ALLOC, 0, 0, args, (), self._frames[-1].depth, new,
                                                 "rt.alloc_tensors()", extra=self._extra))
        return Allocated(ts, self.last_task)

    # -- tasks -----------------------------------------------------------------------------------
    def submit(self, kernel: Kernel, *args: Any, core: Any = None, deps: Any = None, blocks: int = 1,
               sync_start: bool = False, predicate: Any = None) -> int:
        """Submit a task: tensor arguments (In/Out/InOut/NoDep) first, then scalars. Returns its id.

        ``core`` (AIC, AIV or a Mixed) optionally states the core type the caller expects, as the
        reference's rt_submit_aic_task / rt_submit_aiv_task do; a mismatch is an error.
        ``deps``     task ids this task also waits for (finished or retired ones are satisfied)
        ``blocks``   SPMD: n logical blocks, each on its own cores of the kernel's shape (a whole
                     cluster's worth for a mixed kernel); ``core_info()`` gives block_idx,
                     block_num and sub_block_id; consumers wait for every block; more blocks
                     than free cores run in waves
        ``sync_start``  all blocks start together, before other ready work; more blocks than
                     the device holds at once is an error
        ``predicate``   ``(tensor, index, op, value)``, op one of == != > < >= <=: evaluated when
                     the task is ready (the element is a tracked read); if false the task
                     completes without running and its consumers still run"""
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
        extra = self._extra
        if deps is not None or blocks != 1 or sync_start or predicate is not None:
            extra = self._task_extra(kernel, what, deps, blocks, sync_start, predicate)
        new = self._check_tensors(tensors, what) if nt else None
        if extra is not None and extra.pred is not None and extra.pred[0].buf.gm is None:
            new = (new or []) + [extra.pred[0].buf]     # an init= tensor read first by the predicate
        tid = self._idt(self._w.write(C.KIND_TASK, k, kernel.shape, tensors, scalars,
                                      self._frames[-1].depth, new, what, extra=extra))
        self.tasks += 1
        self.last_task = tid
        return tid

    def _task_extra(self, kernel: Kernel, what: str, deps: Any, blocks: Any, sync_start: Any,
                    predicate: Any) -> Extra:
        """Check the newer-API keywords of a submit and pack them (nothing is written yet)."""
        flags = self._extra.flags if self._extra is not None else 0
        if not isinstance(blocks, (int, np.integer)) or isinstance(blocks, bool):
            raise TypeError(f"{what}, blocks={blocks!r}: expected an int >= 1")
        blocks = int(blocks)
        if not 1 <= blocks <= C.MAX_BLOCKS:
            raise ValueError(f"{what}, blocks={blocks}: expected 1..{C.MAX_BLOCKS} logical blocks")
        if not isinstance(sync_start, (bool, np.bool_)):
            raise TypeError(f"{what}, sync_start={sync_start!r}: expected True or False")
        if sync_start and blocks > 1:
            limit = self.available_aiv() if kernel.shape == SHAPE_AIV else self.available_clusters()
            if blocks > limit:
                unit = "AIV cores" if kernel.shape == SHAPE_AIV else "clusters"
                raise ValueError(f"{what}, blocks={blocks}, sync_start=True: all blocks must start together, "
                                 f"but the device has {limit} {unit} for a {kernel.shape_name} kernel; use at "
                                 f"most blocks={limit} (or sync_start=False to run in waves)")
            flags |= C.FLAG_SYNC
        pred = self._predicate(predicate, what) if predicate is not None else None
        return Extra(flags, blocks, self._deps(deps, what), pred)

    def _deps(self, deps: Any, what: str) -> Sequence[int] | None:
        """``deps=`` as a list of task ids this device issued so far (ValueError/TypeError
        otherwise). Ids come as an int, or any iterable of ints (a list, a tuple, a set, a 1-D
        int32/int64/uint32/uint64 array); bytes, strings, mappings, floats, bools and narrower
        integer arrays are not ids, and an id another device gave out is refused."""
        if deps is None:
            return None
        if isinstance(deps, (int, np.integer)) and not isinstance(deps, bool):
            deps = [deps]
        elif isinstance(deps, np.ndarray):
            if deps.ndim > 1 or deps.dtype.kind not in "iu" or deps.dtype.itemsize < 4:
                raise TypeError(f"{what}, deps: an array of shape {deps.shape} dtype {deps.dtype} does not hold task "
                                "ids; pass them as a list, or a 1-D int32/int64/uint32/uint64 array")
            deps = deps.reshape(-1).tolist()
        elif isinstance(deps, (str, bytes, bytearray, memoryview, Mapping)):
            raise TypeError(f"{what}, deps={short(deps)}: a {type(deps).__name__} does not hold task ids; pass "
                            "the ints rt.submit, rt.submit_dummy and rt.last_task give, as a list")
        try:
            ids = list(deps)
        except TypeError:
            raise TypeError(f"{what}, deps={short(deps)}: expected a list of task ids (what rt.submit "
                            "returns)") from None
        if len(ids) > L.DEP_SLOTS:
            raise ValueError(f"{what}: {len(ids)} explicit deps; at most {L.DEP_SLOTS} per task "
                             "(use a dummy task as a barrier: rt.submit_dummy(deps=...))")
        issued = self._w.next_tid
        if ids and set(map(type, ids)) <= self._id_kinds and min(ids) >= 0 and max(ids) < issued:
            return array("q", ids)     # the common case, checked at C speed (numpy takes an int
                                       # subclass slowly, an array at once)
        for i, d in enumerate(ids):
            if not isinstance(d, (int, np.integer)) or isinstance(d, (bool, np.bool_)):
                raise TypeError(f"{what}: deps[{i}] = {short(d)} is not a task id; expected the ints rt.submit, "
                                "rt.submit_dummy and rt.last_task give")
            if isinstance(d, TaskId) and type(d) is not self._idt:
                raise ValueError(f"{what}: deps[{i}] = {int(d)} is a task id of {d.device}, not of this one "
                                 f"({self._idt.device}); a task id names a task only on the device that issued it")
            if not 0 <= d < issued:
                raise ValueError(f"{what}: deps[{i}] = {short(int(d))} was never issued as a task id on this "
                                 f"device (ids so far: 0..{issued - 1})")
        return [int(d) for d in ids]

    def _predicate(self, predicate: Any, what: str) -> tuple[Tensor, int, int]:
        if not isinstance(predicate, tuple) or len(predicate) != 4:
            raise TypeError(f"{what}, predicate={predicate!r}: expected (tensor, index, op, value), "
                            f"op one of {' '.join(C.PRED_OPS)}")
        t, index, op, value = predicate
        if op not in C.PRED_OPS:
            raise ValueError(f"{what}, predicate op {op!r}: expected one of {', '.join(repr(o) for o in C.PRED_OPS)}")
        el = self._element_view(t, index, f"{what}, predicate")
        dt = t.dtype
        if dt.itemsize > 8:        # the value travels in one word of the record (H_PRED_VAL)
            raise TypeError(f"{what}, predicate on a {dt} tensor: a predicate compares one element that fits "
                            "in 8 bytes (bool, integer, floating or complex64); copy the element into such "
                            "a tensor with a task first")
        if dt.kind == "c" and op not in ("==", "!="):
            raise TypeError(f"{what}, predicate op {op!r} on a {dt} tensor: complex numbers have no order; "
                            "use '==' or '!='")
        v = _scalar_of(value, dt, f"{what}, predicate value")
        bits = int.from_bytes(v.tobytes().ljust(8, b"\0"), "little", signed=True)
        return el, C.PRED_OPS.index(op) + 1, bits

    def submit_dummy(self, *args: Any, deps: Any = None) -> int:
        """A dependency-only task: it takes part in dependency tracking as a task with these
        tensor arguments would, occupies no core, and completes as soon as it is ready (the
        reference's rt_submit_dummy_task). Returns its id."""
        what = "rt.submit_dummy()"
        self._check_active(what)
        for i, a in enumerate(args):
            if not isinstance(a, Arg):
                raise TypeError(f"{what}: argument {i} is {type(a).__name__} {a!r}; a dummy task takes only "
                                "tensor arguments (In/Out/InOut/NoDep) and deps=")
        if len(args) > C.MAX_TENSORS:
            raise ValueError(f"{what}: {len(args)} tensor arguments; at most {C.MAX_TENSORS}")
        deps_ = self._deps(deps, what)
        extra = self._extra
        if deps_:
            extra = Extra(extra.flags if extra is not None else 0, 1, deps_)
        new = self._check_tensors(args, what) if args else None
        tid = self._idt(self._w.write(C.KIND_DUMMY, 0, 0, args, (), self._frames[-1].depth, new, what,
                                      extra=extra))
        self.last_task = tid
        return tid

    # -- scalar data -----------------------------------------------------------------------------
    def _element_view(self, t: Any, index: Any, what: str) -> Tensor:
        """The one-element view ``t[index]`` (checked: a live tensor of this device, with data)."""
        if not isinstance(t, Tensor):
            raise TypeError(f"{what}: expected a device Tensor, got {type(t).__name__} {t!r}")
        b = t.buf
        if not b.alive:
            raise ValueError(f"{what}: {t!r} is no longer valid: {b.why_dead}")
        if b.device is not self._s.device:
            raise ValueError(f"{what}: the tensor belongs to another device")
        if b.gm is None and b.init is None:
            raise ValueError(f"{what}: runtime tensor {t!r} has not been written by any task, so it holds "
                             "nothing yet (make it with init=... to give it a value)")
        if isinstance(index, (int, np.integer)) and not isinstance(index, bool):
            index = (int(index),)
        if not isinstance(index, tuple) or len(index) != t.ndim or not all(
                isinstance(i, (int, np.integer)) and not isinstance(i, bool) for i in index):
            raise TypeError(f"{what}: index {index!r} must be {t.ndim} int(s), one per dimension of the tensor "
                            f"of shape {t.shape}")
        try:
            return t[index]
        except IndexError as e:
            raise IndexError(f"{what}: {e}") from None

    def get_tensor_data(self, t: Tensor, index: Any) -> Any:
        """One element of ``t`` as a Python scalar, once the tasks that write those bytes have
        finished (it waits for them, not for the whole device)."""
        what = "rt.get_tensor_data()"
        self._check_active(what)
        el = self._element_view(t, index, what)
        self._probe(In(el), what)
        v = self._s.element(el)[()]
        return v.item() if t.dtype.kind in "biuc" else float(v)

    def set_tensor_data(self, t: Tensor, index: Any, value: Any) -> None:
        """Write one element of ``t`` once the earlier writers and readers of those bytes have
        finished; tasks submitted afterwards see the new value."""
        what = "rt.set_tensor_data()"
        self._check_active(what)
        el = self._element_view(t, index, what)
        v = _scalar_of(value, t.dtype, f"{what}, value")
        self._probe(InOut(el), what)
        self._s.element(el)[()] = v[()]

    def _probe(self, arg: Arg, what: str) -> None:
        """A dummy record with this one-element argument, and a wait until it has finished."""
        new = self._check_tensors([arg], what)
        extra = Extra(C.FLAG_PROBE | (self._extra.flags if self._extra is not None else 0))
        tid = self._w.write(C.KIND_DUMMY, 0, 0, [arg], (), self._frames[-1].depth, new, what, extra=extra)
        self.last_task = self._idt(tid)
        self._s.wait_probe(tid)

    def available_clusters(self) -> int:
        """Clusters (blocks of 1 AIC + 2 AIV) of the device: the widest sync_start launch of an
        AIC or mixed kernel."""
        return self._s.clusters

    def available_aiv(self) -> int:
        """Vector cores of the device (2 per cluster): the widest sync_start AIV launch."""
        return 2 * self._s.clusters

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
        if self._forked:
            raise DeviceClosed(f"{what}: this run belongs to process {self._owner_pid}; a process forked "
                               "from it cannot use its device (make a new Device there)")
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
                if a.dir != C.DIR_OUT and b.init is None:
                    self._unwritten_in_out(args, i, what)
                    raise ValueError(
                        f"{what}: tensor argument {i} is {type(a).__name__}({t!r}) but no earlier "
                        "task has written this runtime tensor, so there is nothing to read; the "
                        "first task to use it must take it as Out (or allocate it with "
                        "rt.alloc_tensors, or make it with init=...)")
                if b not in new:
                    new.append(b)
        return new

    @staticmethod
    def _unwritten_in_out(args: tuple | list, i: int, what: str) -> None:
        """Argument ``i`` reads an unwritten runtime tensor: if the same task also takes it as
        Out, name both (the Out is not the missing writer: the In would read what it overwrites)."""
        b = args[i].tensor.buf
        for j, o in enumerate(args):
            if o.dir == C.DIR_OUT and o.tensor.buf is b:
                raise ValueError(
                    f"{what}: tensor argument {i} is {type(args[i]).__name__}({args[i].tensor!r}) and argument {j} "
                    f"is Out({o.tensor!r}), of the same runtime tensor, which no earlier task has written: within "
                    "one task the In side would read bytes nothing wrote (an Out's old contents are undefined). "
                    "Write it in an earlier task first (then take it as InOut), or take it only as Out")


def _scalar_of(value: Any, dtype: np.dtype, what: str) -> np.ndarray:
    """``value`` as a 0-d array of ``dtype``: exact for integer and bool dtypes (ValueError if it
    does not fit), rounded to the nearest value for floating ones (ValueError if a finite value
    overflows, or a complex one has an imaginary part a real dtype cannot hold)."""
    if isinstance(value, np.ndarray) and value.shape == ():
        value = value[()]
    if not isinstance(value, (bool, int, float, complex, np.number, np.bool_)):
        raise TypeError(f"{what}: expected a number, got {type(value).__name__} {short(value)}")
    if dtype.kind in "iub":
        if isinstance(value, (float, np.floating)) and not float(value).is_integer():
            raise ValueError(f"{what}: {value!r} is not a whole number, so it cannot be a {dtype} value")
        if isinstance(value, (complex, np.complexfloating)):
            raise ValueError(f"{what}: {value!r} cannot be a {dtype} value")
        iv = int(value)
        if dtype.kind == "b":
            if iv not in (0, 1):
                raise ValueError(f"{what}: {short(value)} is not a bool")
        else:
            info = np.iinfo(dtype)
            if not info.min <= iv <= info.max:
                raise ValueError(f"{what}: {short(value)} does not fit in {dtype} ({info.min}..{info.max})")
        return np.array(iv, dtype)
    if dtype.kind != "c" and isinstance(value, (complex, np.complexfloating)):
        if value.imag:
            raise ValueError(f"{what}: {value!r} is complex; a {dtype} value is real")
        value = value.real
    finite = not isinstance(value, (float, complex, np.inexact)) or bool(np.isfinite(value))
    try:
        with np.errstate(all="ignore"):
            out = np.array(value).astype(dtype)
    except OverflowError:
        out = None
    if out is None or (finite and not np.isfinite(out)):
        raise ValueError(f"{what}: {short(value)} is beyond the range of {dtype} "
                         f"(largest finite value {float(np.finfo(dtype).max):.4g})")
    return out

