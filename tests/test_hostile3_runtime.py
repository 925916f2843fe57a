"""What a hostile user broke in the runtime in round three (issue 17): forked copies of an
orchestration or a kernel, failed submits that changed the run, predicates on dtypes they cannot
carry, the sanitizer's blind spots, misleading heap diagnoses, and loosely checked deps and
scalars. Each test reproduces a case that once gave a wrong result, a crash, a leak or a raw
message, through the public API only."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import testkernels as tk

from host import DeadlockError, DirectionViolation, In, InOut, KernelError, Out, Platform
from kernels import AIV, kernel

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TESTS = os.path.join(ROOT, "tests")


def _script(body: str, timeout: float = 60) -> subprocess.CompletedProcess:
    """Run a script with the project and the test kernels importable (forks stay in it)."""
    code = f"import sys; sys.path[:0] = [{ROOT!r}, {TESTS!r}]\n" + textwrap.dedent(body)
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=timeout)


# --------------------------------------------------------------------------------------------
# forked copies (r06, r08)

@pytest.mark.timeout(60)
@pytest.mark.parametrize("child", ["submits", "returns"])
def test_a_child_forked_in_an_orchestration_cannot_submit_and_loses_the_parent_nothing(child):
    # r06: the child's rt.submit used to run on the parent's device, and the parent's next task
    # was lost. "returns": the child does not exit but leaves the orchestration (and dev.run)
    # as the parent would -- it must not end the parent's scopes nor abort its run.
    r = _script(f"""
        import os
        import testkernels as tk
        from host import Device, Platform, In, InOut, DeviceClosed
        with Device(Platform(blocks=1), kernels=[tk.add_into]) as dev:
            one, x, y = dev.to_device([1.0]), dev.zeros((1,)), dev.zeros((1,))
            def orch(rt):
                with rt.scope():
                    for _ in range(20):
                        rt.submit(tk.add_into, In(one), InOut(x))
                    pid = os.fork()
                    if pid == 0 and {child == "submits"}:
                        try:
                            rt.submit(tk.add_into, In(one), InOut(y))
                        except DeviceClosed as e:
                            print("child:", e, flush=True)
                        os._exit(0)
                    if pid == 0:
                        return                     # leaves the scope and the run, in the child
                    os.waitpid(pid, 0)
                    for _ in range(10):
                        rt.submit(tk.add_into, In(one), InOut(x))
            try:
                dev.run(orch)
            except DeviceClosed as e:
                print("child run:", e, flush=True)
                os._exit(0)
            dev.run(lambda rt: rt.submit(tk.add_into, In(one), InOut(x)))   # still usable
            print("parent:", dev.to_host(x).tolist(), dev.to_host(y).tolist(), flush=True)
    """)
    assert r.returncode == 0, r.stderr
    assert "parent: [31.0] [0.0]" in r.stdout, r.stdout + r.stderr
    assert "a process forked from it cannot use its device" in r.stdout


@kernel(AIV)
def fork_and_return(a):
    os.fork()                      # both processes return from the kernel
    a += 1


@kernel(AIV)
def runs_a_program(a):
    import subprocess
    subprocess.run(["true"], check=True)      # fork + exec: no copy of the core returns
    a += 1


@pytest.mark.timeout(60)
@pytest.mark.parametrize("inline", [False, True], ids=["device", "inline"])
def test_a_kernel_that_forks_fails_its_task_and_the_copy_touches_nothing(make_device, inline):
    # r08: the forked copy of the worker used to report the task a second time: a wrong result
    # in silence, then a scheduler crash (DeviceLost) on the next run.
    dev = make_device(Platform(blocks=1), kernels=[fork_and_return, runs_a_program, tk.add_into], inline=inline)
    x, y, one = dev.zeros((1,)), dev.zeros((1,)), dev.to_device([1.0])
    dev.run(lambda rt: rt.submit(runs_a_program, InOut(y)))        # subprocess is fine
    assert dev.to_host(y).tolist() == [1.0]
    first = dev.progress()[1]                          # the id the next record gets
    with pytest.raises(KernelError, match=r"ForkInKernel: the kernel called os.fork\(\) while it ran") as ei:
        dev.run(lambda rt: [rt.submit(fork_and_return, InOut(x)) for _ in range(3)])
    assert ei.value.task_id == first and "kernels must not fork" in str(ei.value)
    dev.run(lambda rt: [rt.submit(tk.add_into, In(one), InOut(y)) for _ in range(500)])
    assert dev.to_host(y).tolist() == [501.0]           # the device is whole and usable
    assert not dev.closed


# --------------------------------------------------------------------------------------------
# submits that fail: checked first, or taken back (r01, r02)

@pytest.mark.timeout(60)
@pytest.mark.parametrize("inline", [False, True], ids=["device", "inline"])
def test_a_predicate_on_a_dtype_it_cannot_carry_is_refused_at_submit(make_device, inline):
    # r01: a complex128 operand used to crash the scheduler (DeviceLost) or raise struct.error.
    dev = make_device(Platform(blocks=1), kernels=[tk.add_into], inline=inline)
    one, x = dev.to_device([1.0]), dev.zeros((1,))
    c = dev.to_device(np.array([1 + 1j], np.complex128))
    for value in (1 + 1j, 1 + 0j):
        with pytest.raises(TypeError, match=r"predicate on a complex128 tensor: a predicate compares one "
                                            r"element that fits in 8 bytes"):
            dev.run(lambda rt, v=value: rt.submit(tk.add_into, In(one), InOut(x), predicate=(c, 0, "==", v)))
    c64 = dev.to_device(np.array([1 + 1j], np.complex64))
    with pytest.raises(TypeError, match=r"op '>' on a complex64 tensor: complex numbers have no order"):
        dev.run(lambda rt: rt.submit(tk.add_into, In(one), InOut(x), predicate=(c64, 0, ">", 0)))
    f = dev.to_device(np.array([2.0], np.float32))
    with pytest.raises(ValueError, match=r"predicate value: \(1\+1j\) is complex; a float32 value is real"):
        dev.run(lambda rt: rt.submit(tk.add_into, In(one), InOut(x), predicate=(f, 0, "==", 1 + 1j)))
    dev.run(lambda rt: rt.submit(tk.add_into, In(one), InOut(x), predicate=(c64, 0, "==", 1 + 1j)))
    dev.run(lambda rt: rt.submit(tk.add_into, In(one), InOut(x), predicate=(c64, 0, "!=", 1 + 1j)))
    assert dev.to_host(x).tolist() == [1.0] and not dev.closed


def _heap_hungry(rt):
    """Needs the whole 64 KiB heap at once."""
    with rt.scope():
        for _ in range(4):
            rt.submit(tk.fill, Out(rt.make_tensor((4096,), np.float32)), 2.0)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("inline", [False, True], ids=["device", "inline"])
def test_a_rejected_submit_leaves_its_runtime_tensor_unwritten_and_its_heap_free(make_device, inline):
    # r02: the submit failed after its Out tensor got heap space: the tensor counted as written
    # (a later In read it, though no task wrote it) and the heap range was held for good.
    dev = make_device(Platform(blocks=1, heap_bytes=64 << 10), kernels=[tk.fill, tk.copy], inline=inline,
                      record=True)
    out = dev.zeros((4096,), np.float32)
    c = dev.to_device(np.array([1 + 1j], np.complex128))
    add = dev._recorder.add

    def fail_once(*a, **kw):                  # a failure after placement (here: recording it)
        dev._recorder.add = add
        raise RuntimeError("recording failed")

    def orch(rt, fail):
        t = rt.make_tensor((4096,), np.float32)
        first = rt.submit(tk.fill, Out(out), 0.0)
        with pytest.raises((TypeError, RuntimeError)):
            if fail == "record":
                dev._recorder.add = fail_once
                rt.submit(tk.fill, Out(t), 1.0, deps=[first])
            else:
                rt.submit(tk.fill, Out(t), 1.0, predicate=(c, 0, "==", 1 + 1j))
        with pytest.raises(ValueError, match=r"no earlier task has written this runtime tensor"):
            rt.submit(tk.copy, In(t), Out(out))
        rt.submit(tk.fill, Out(t), 3.0, deps=[first])  # and it can still be written, then read
        rt.submit(tk.copy, In(t), Out(out))

    for fail in ("predicate", "record"):
        dev.run(orch, fail)
        assert np.unique(dev.to_host(out)).tolist() == [3.0]
        dev.run(_heap_hungry)                         # the whole heap is there: nothing was kept


# --------------------------------------------------------------------------------------------
# heap diagnoses (r07)

KB = 1024


def _fragment(rt, first_long_lived=False):
    """Four 1 KiB tensors that live to the run's end, placed between 12 KiB ones that die at
    their scope's end; then a 40 KiB tensor, which fits in no hole."""
    small = [rt.make_tensor((256,), np.float32) for _ in range(4)]
    if first_long_lived:
        rt.alloc_tensors(*small)                       # placed together, before the others
    with rt.scope():
        for s in small:
            rt.submit(tk.fill, Out(rt.make_tensor((3 * KB,), np.float32)), 2.0)
            rt.submit(tk.fill, InOut(s) if first_long_lived else Out(s), 1.0)
    rt.synchronize()
    rt.submit(tk.fill, Out(rt.make_tensor((10 * KB,), np.float32)), 3.0)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("inline", [False, True], ids=["device", "inline"])
def test_a_fragmented_heap_is_named_with_a_fix_that_works_and_both_engines_agree(make_device, inline):
    # r07: reported as a heap deadlock whose advice was the heap's own size; the inline engine
    # did not enforce heap_bytes at all and passed.
    dev = make_device(Platform(blocks=1, heap_bytes=64 * KB), kernels=[tk.fill], inline=inline)
    with pytest.raises(DeadlockError) as ei:
        dev.run(_fragment)
    msg = str(ei.value)
    assert ("heap fragmentation: task 9 needs one block of 40.0 KiB, and 60.0 KiB of the 64.0 KiB heap is "
            "free, but in 5 pieces, the largest 12.0 KiB") in msg, msg
    assert "4.0 KiB by 4 allocation(s) of tensors made at scope depth 0 (the run itself)" in msg
    fix = int(float(msg.split("raise Platform(heap_bytes=...) to at least ")[1].split(" KiB")[0]) * KB)
    assert fix > 64 * KB
    dev.run(_fragment, first_long_lived=True)          # the first fix it names works
    bigger = make_device(Platform(blocks=1, heap_bytes=fix), kernels=[tk.fill], inline=inline)
    bigger.run(_fragment)                              # and so does the second


@pytest.mark.timeout(60)
def test_the_inline_engine_keeps_to_heap_bytes_as_the_device_does(make_device):
    def held(rt):                                       # 80 KiB held by one scope at once
        with rt.scope():
            for _ in range(5):
                rt.submit(tk.fill, Out(rt.make_tensor((4 * KB,), np.float32)), 1.0)
    msgs = []
    for inline in (False, True):
        dev = make_device(Platform(blocks=1, heap_bytes=64 * KB), kernels=[tk.fill], inline=inline)
        with pytest.raises(DeadlockError, match=r"heap deadlock: task 4 needs 16.0 KiB of heap, but 64.0 KiB "
                                                r"of the 64.0 KiB heap is held") as ei:
            dev.run(held)
        msgs.append(str(ei.value))
        dev.run(_heap_hungry)                           # the failed run's heap came back
    assert msgs[0] == msgs[1]


# --------------------------------------------------------------------------------------------
# deps and scalars: what is an id, and messages that name the argument

@pytest.mark.timeout(60)
def test_deps_take_task_ids_of_this_device_only(make_device):
    a = make_device(Platform(blocks=1), kernels=[tk.add_into], inline=True)
    b = make_device(Platform(blocks=1), kernels=[tk.add_into], inline=True)
    one, x = a.to_device([1.0]), a.zeros((1,))
    ids = a.run(lambda rt: [rt.submit(tk.add_into, In(one), InOut(x)) for _ in range(3)])
    assert ids == [0, 1, 2] and all(isinstance(t, int) for t in ids)

    def sub(deps):
        return lambda rt: rt.submit(tk.add_into, In(one), InOut(x), deps=deps)
    for bad, exc, match in [
            (b"\x00\x01", TypeError, r"deps=b'\\x00\\x01': a bytes does not hold task ids"),
            ({0: 1}, TypeError, r"deps=\{0: 1\}: a dict does not hold task ids"),
            ("01", TypeError, r"a str does not hold task ids"),
            (np.array([0, 1], np.uint8), TypeError, r"dtype uint8 does not hold task ids"),
            (np.array([[0]]), TypeError, r"shape \(1, 1\) dtype int64 does not hold task ids"),
            (np.array([True]), TypeError, r"dtype bool does not hold task ids"),
            ([0, 1.0], TypeError, r"deps\[1\] = 1.0 is not a task id"),
            ([10**400], ValueError, r"deps\[0\] = an int of 401 digits was never issued")]:
        with pytest.raises(exc, match=match):
            a.run(sub(bad))
    for good in (ids, tuple(ids), set(ids), np.array(ids), np.array(ids, np.uint32), ids[2], np.int64(1)):
        a.run(sub(good))
    assert a.to_host(x).tolist() == [10.0]
    one_b, y = b.to_device([1.0]), b.zeros((1,))
    b.run(lambda rt: [rt.submit(tk.add_into, In(one_b), InOut(y)) for _ in range(5)])
    with pytest.raises(ValueError, match=r"deps\[0\] = 1 is a task id of device #\d+ \(a2a3, blocks=1\), not "
                                         r"of this one"):
        b.run(lambda rt: rt.submit(tk.add_into, In(one_b), InOut(y), deps=[ids[1]]))
    assert b.to_host(y).tolist() == [5.0]


@pytest.mark.timeout(60)
def test_scalar_and_value_errors_name_the_argument(make_device):
    dev = make_device(Platform(blocks=1), kernels=[tk.echo_scalars, tk.add_into], inline=True)
    o, x = dev.zeros((64,), np.uint8), dev.zeros((1,))
    for scalars, exc, match in [
            (([1, [2, 3]],), TypeError, r"scalar argument 0 is list \[1, \[2, 3\]\]; a scalar array is a flat list"),
            ((1, [[1], [2, 3]]), TypeError, r"scalar argument 1 is list \[\[1\], \[2, 3\]\]"),
            ((10**400,), ValueError, r"scalar argument 0 = an int of 401 digits does not fit in int64"),
            (([1, 10**30],), ValueError, r"scalar argument 0 holds an int beyond int64 \(10+\)"),
            (([None],), TypeError, r"scalar argument 0 is list \[None\]")]:
        with pytest.raises(exc, match=match):
            dev.run(lambda rt, s=scalars: rt.submit(tk.echo_scalars, Out(o), *s))
    for call, match in [
            (lambda rt: rt.make_tensor((4,), np.float32, init=10**400),
             r"rt.make_tensor\(init=...\): an int of 401 digits is beyond the range of float32"),
            (lambda rt: rt.make_tensor((4,), np.float16, init=1e10),
             r"rt.make_tensor\(init=...\): 10000000000.0 is beyond the range of float16"),
            (lambda rt: rt.set_tensor_data(x, 0, 10**400), r"rt.set_tensor_data\(\), value: an int of 401 digits"),
            (lambda rt: rt.submit(tk.add_into, In(x), InOut(x), predicate=(x, 0, "<", 10**400)),
             r"predicate value: an int of 401 digits is beyond the range of float32")]:
        with pytest.raises(ValueError, match=match):
            dev.run(call)
    dev.run(lambda rt: rt.make_tensor((4,), np.float32, init=-np.inf))     # an explicit inf is a value


# --------------------------------------------------------------------------------------------
# the sanitizer's blind spots (r10, D6, M9)

@kernel(AIV)
def write_in_setflags(a, out):
    a.setflags(write=True)         # the usual answer to "assignment destination is read-only"
    a[...] = 555
    out[...] = a


@kernel(AIV)
def write_in_raw(a, out):
    import ctypes
    raw = (ctypes.c_char * a.nbytes).from_address(a.__array_interface__["data"][0])
    np.frombuffer(raw, a.dtype, a.size)[...] = 777
    out[...] = a


@kernel(AIV)
def every_block_writes_all(out):
    from kernels import core_info
    out[...] = core_info().block_idx


@pytest.mark.timeout(60)
@pytest.mark.parametrize("inline", [False, True], ids=["device", "inline"])
def test_the_sanitizer_sees_an_in_written_around_its_read_only_view(make_device, inline):
    # r10: the input changed silently, also under sanitize=True.
    dev = make_device(Platform(blocks=1), kernels=[write_in_setflags, write_in_raw, tk.copy], sanitize=True,
                      inline=inline)
    for k in (write_in_setflags, write_in_raw):
        a, o = dev.to_device(np.arange(4.0)), dev.zeros((4,))
        with pytest.raises(DirectionViolation, match=r"In argument 0 \(a, \(4,\) float64\) changed while the task "
                                                     r"ran: the kernel wrote it around its read-only view"):
            dev.run(lambda rt, k=k, a=a, o=o: rt.submit(k, In(a), Out(o)))
    a, o = dev.to_device(np.arange(4.0)), dev.zeros((4,))
    dev.run(lambda rt: rt.submit(tk.copy, In(a), Out(o)))          # an honest kernel passes
    assert dev.to_host(o).tolist() == [0.0, 1.0, 2.0, 3.0]


@pytest.mark.timeout(60)
@pytest.mark.parametrize("inline", [False, True], ids=["device", "inline"])
def test_the_sanitizer_reports_spmd_blocks_writing_the_same_elements(make_device, inline):
    # D6: blocks of one SPMD task writing overlapping parts of an Out raced silently.
    dev = make_device(Platform(blocks=2), kernels=[every_block_writes_all, tk.spmd_rows, tk.spmd_rows_mixed],
                      sanitize=True, inline=inline)
    out = dev.zeros((8,), np.int64)
    for d in (Out, InOut):
        with pytest.raises(DirectionViolation, match=d.__name__ + r" argument 0 \(out, \(8,\) int64\): blocks 0 and 1 "
                                                     r"both wrote element \(0,\) \(8 element\(s\) in all\); the 3 "
                                                     r"blocks of an SPMD task run in parallel"):
            dev.run(lambda rt, d=d: rt.submit(every_block_writes_all, d(out), blocks=3))
    for k in (tk.spmd_rows, tk.spmd_rows_mixed):                     # blocks that keep to their rows
        dev.run(lambda rt, k=k: rt.submit(k, Out(out), 5, blocks=4))
        assert dev.to_host(out).tolist() == [(5 * 7 + i % 4) % tk.MOD for i in range(8)]
    # Blocks that start together may wait for each other, so they keep running together: no map.
    dev.run(lambda rt: rt.submit(every_block_writes_all, Out(out), blocks=2, sync_start=True))


@pytest.mark.timeout(60)
@pytest.mark.parametrize("inline", [False, True], ids=["device", "inline"])
def test_in_and_out_of_the_same_bytes_blame_the_overlap(make_device, inline):
    # M9: the sanitizer blamed the Out ("computed them from an Out argument it read") and a
    # runtime tensor's error blamed the In alone, advising the Out the task already had.
    dev = make_device(Platform(blocks=1), kernels=[tk.copy], sanitize=True, inline=inline)
    a = dev.to_device(np.arange(4.0))
    with pytest.raises(DirectionViolation, match=r"Out argument 1 \(out, \(4,\) float64\) overlaps In argument 0 "
                                                 r"\(x, \(4,\) float64\) of the same task.*as InOut"):
        dev.run(lambda rt: rt.submit(tk.copy, In(a), Out(a)))

    def orch(rt):
        t = rt.make_tensor((4,))
        rt.submit(tk.copy, In(t), Out(t))
    with pytest.raises(ValueError, match=r"tensor argument 0 is In\(.*\) and argument 1 is Out\(.*\), of the same "
                                         r"runtime tensor, which no earlier task has written"):
        dev.run(orch)
