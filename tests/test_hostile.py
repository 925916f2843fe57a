"""What a hostile user tried next (reliability, round two): lifetimes, concurrency misuse, signals,
validation edges. Each test reproduces a case that once gave a wrong result, a crash, a leak or a
hang, through the public API only."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time

import numpy as np
import psutil
import pytest
import testkernels as tk
from conftest import mapped_anywhere

import kernels.workloads.paged_attention as pa
from host import (
    DeadlockError,
    Device,
    DeviceMemoryError,
    DirectionViolation,
    In,
    InOut,
    KernelError,
    Out,
    Platform,
    cli,
)
from host.cluster import DeviceGroup, ShardError
from host.run import build_on
from kernels import AIC, AIV, Kernel, Mixed, kernel, resolve

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TESTS = os.path.join(ROOT, "tests")

N = 64 * 1024


def _escape(rt, out):
    """A runtime tensor made at run level but first written inside an inner scope, then eight
    scopes that each allocate as much again, then a read of the first tensor."""
    t = rt.make_tensor((N,), np.float32)
    with rt.scope():
        rt.submit(tk.fill, Out(t), 1.0)
    for _ in range(8):
        with rt.scope():
            u = rt.make_tensor((N,), np.float32)
            rt.submit(tk.fill, Out(u), 2.0)
    rt.submit(tk.copy, In(t), Out(out))


@pytest.mark.timeout(60)
@pytest.mark.parametrize("inline", [False, True], ids=["device", "inline"])
def test_runtime_tensor_lives_until_the_end_of_the_scope_it_was_made_in(inline):
    with Device(Platform.tiny(), kernels=[tk.fill, tk.copy], inline=inline) as dev:
        out = dev.zeros((N,), np.float32)
        dev.run(_escape, out)
        assert np.unique(dev.to_host(out)).tolist() == [1.0]


@pytest.mark.timeout(60)
def test_reading_an_escaped_tensor_after_its_ring_slot_was_reused_does_not_hang():
    # The allocating task's ring slot is reused long before the read: the read must still find
    # the tensor's memory, and its use must not be counted against whatever task took the slot.
    def orch(rt, x, y, out):
        t = rt.make_tensor((16,), np.float32)
        with rt.scope():
            rt.submit(tk.fill, Out(t), 1.0)
        for _ in range(70):
            rt.submit(tk.add_into, In(out[:1]), Out(x))
        rt.synchronize()
        rt.submit(tk.copy, In(t), Out(out))
        for _ in range(80):
            rt.submit(tk.add_into, In(out[:1]), Out(y))

    with Device(Platform.tiny(stall_timeout=5), kernels=[tk.fill, tk.copy, tk.add_into]) as dev:
        x, y, out = dev.zeros((1,)), dev.zeros((1,)), dev.zeros((16,))
        dev.run(orch, x, y, out)
        assert dev.to_host(out).tolist() == [1.0] * 16


def _pa(dev, unroll=1, **kw):
    params = pa.case_params("small")
    h, data = build_on(dev, pa.WORKLOAD, params, 0)
    scale = pa.scale_of(params)
    want = pa.golden(h["query"], h["key_cache"], h["value_cache"], h["block_table"], h["context_lens"],
                     scale, unroll=unroll)
    dev.run(pa.orchestrate, data["query"], data["key_cache"], data["value_cache"], data["block_table"],
            data["context_lens"], data["out"], scale=scale, variant="first_output", unroll=unroll, **kw)
    return dev.to_host(data["out"]), want


@pytest.mark.timeout(120)
@pytest.mark.parametrize("inline", [False, True], ids=["device", "inline"])
def test_paged_attention_with_a_scope_per_chunk_is_right_on_a_small_heap(inline):
    # The accumulators are made in the group's scope and first written by the first UP, inside
    # the first chunk's scope: they must survive that scope. This is what the heap deadlock
    # message tells a user to do, so following the advice must give the right answer.
    platform = Platform(blocks=2, heap_bytes=32 << 10, gm_bytes=64 << 20)
    with Device(platform, kernels=["kernels.workloads.paged_attention"], inline=inline) as dev:
        got, want = _pa(dev, chunk_scope=True)
        np.testing.assert_allclose(got, want, rtol=1e-3, atol=1e-3)


@pytest.mark.timeout(120)
def test_the_heap_deadlock_advice_leads_to_a_correct_program():
    platform = Platform(blocks=2, heap_bytes=32 << 10, gm_bytes=64 << 20)
    with Device(platform, kernels=["kernels.workloads.paged_attention"]) as dev:
        with pytest.raises(DeadlockError, match=r"heap deadlock.*a rt.scope\(\) per step"):
            _pa(dev)
        got, want = _pa(dev, chunk_scope=True)
        np.testing.assert_allclose(got, want, rtol=1e-3, atol=1e-3)


# --------------------------------------------------------------------------------------------
# host views, threads, caught errors, broken exceptions


def _script(body: str, timeout: float = 60, new_session: bool = False) -> subprocess.CompletedProcess:
    """Run a script with the project and the test kernels importable (crashes stay in it)."""
    code = f"import sys; sys.path[:0] = [{ROOT!r}, {TESTS!r}]\n" + textwrap.dedent(body)
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=timeout,
                          start_new_session=new_session)


@pytest.mark.timeout(60)
def test_a_host_view_outlives_close_without_crashing_and_then_lets_go():
    r = _script("""
        import gc, os, numpy as np
        from host import Device, Platform
        def mapped(names):
            return sum(any(n in line for n in names) for line in open("/proc/self/maps"))
        dev = Device(Platform(blocks=1))
        names = dev.segment_names
        v = dev.host_view(dev.to_device(np.arange(8, dtype=np.float32)))
        dev.close()
        print(v.tolist(), mapped(names) > 0)        # still readable: the view keeps its mapping
        w = v[2:4]; del v; gc.collect()
        print(w.tolist(), mapped(names) > 0)        # a view of the view keeps it too
        del w; gc.collect()
        print(mapped(names))                        # the last view gone: unmapped
    """)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split("\n")[:3] == [str(list(map(float, range(8)))) + " True", "[2.0, 3.0] True", "0"]


@pytest.mark.timeout(60)
def test_submitting_from_another_thread_is_an_error_not_lost_tasks(make_device):
    dev = make_device(Platform(blocks=2), kernels=[tk.add_into])
    one, x = dev.to_device(np.ones(1, np.float32)), dev.zeros((1,), np.float32)
    errors = []

    def orch(rt):
        def worker():
            try:
                rt.submit(tk.add_into, In(one), InOut(x))
            except RuntimeError as e:
                errors.append(str(e))
        th = threading.Thread(target=worker)
        th.start()
        th.join()
        rt.submit(tk.add_into, In(one), InOut(x))
    with pytest.raises(RuntimeError, match=r"tasks may be missing: rt.submit\(testkernels.add_into\) was "
                                           r"called from thread .*not thread-safe"):
        dev.run(orch)
    assert errors and "orchestration's own thread" in errors[0]
    assert dev.to_host(x).tolist() == [1.0]           # the run's own submit ran; nothing half-done
    dev.run(lambda rt: rt.submit(tk.add_into, In(one), InOut(x)))     # and the device goes on
    assert dev.to_host(x).tolist() == [2.0]


@pytest.mark.timeout(60)
def test_submitting_after_catching_a_kernel_error_raises_the_first_failure_again(make_device):
    dev = make_device(Platform(blocks=1), kernels=[tk.fail, tk.fill])
    x = dev.zeros((4,), np.float32)
    seen = []

    def orch(rt):
        rt.submit(tk.fail, Out(x), 1)
        try:
            dev.synchronize()
        except KernelError as e:
            seen.append(e)
        rt.submit(tk.fill, Out(x), 1.0)
    t0 = time.monotonic()
    with pytest.raises(KernelError, match="kernel failed on purpose: 1") as ei:
        dev.run(orch)
    assert time.monotonic() - t0 < 5
    assert seen and "first failure again" in "".join(ei.value.__notes__)
    dev.run(lambda rt: rt.submit(tk.fill, Out(x), 2.0))         # the next run is clean
    assert dev.to_host(x).tolist() == [2.0] * 4


class _BadStr(Exception):
    def __str__(self):
        raise RuntimeError("str() of this exception fails")


@kernel(AIV)
def raise_badstr(x):
    raise _BadStr()


@kernel(AIV)
def raise_long(x):
    raise ValueError("L" * 200_000)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("inline", [False, True], ids=["device", "inline"])
def test_unprintable_and_huge_kernel_errors_still_give_a_full_report(make_device, inline):
    dev = make_device(Platform(blocks=1), kernels=[raise_badstr, raise_long], inline=inline)
    x = dev.zeros((4,), np.float32)
    with pytest.raises(KernelError) as ei:
        dev.run(lambda rt: rt.submit(raise_badstr, InOut(x)))
    e = ei.value
    assert e.task_id == 0 and e.kernel.endswith("raise_badstr") and e.core
    assert "_BadStr: <str() of the exception failed: RuntimeError>" in e.error
    assert "raise _BadStr()" in e.remote_traceback
    with pytest.raises(KernelError) as ei:
        dev.run(lambda rt: rt.submit(raise_long, InOut(x)))
    e = ei.value
    assert e.kernel.endswith("raise_long") and e.arguments == ("InOut(4,) float32",)
    assert "more characters)" in e.error and len(e.error) < 2000
    assert 'raise ValueError("L" * 200_000)' in e.remote_traceback and len(e.remote_traceback) < 12_000
    assert not dev.closed                                   # the worker lived through both


@kernel(AIV)
def writes_its_input(a, out):
    a[0] = 999
    out[...] = a


@pytest.mark.timeout(60)
@pytest.mark.parametrize("inline", [False, True], ids=["device", "inline"])
def test_a_kernel_writing_an_in_argument_fails_naming_it(make_device, inline):
    dev = make_device(Platform(blocks=1), kernels=[writes_its_input], inline=inline)
    a, out = dev.to_device(np.arange(4, dtype=np.float32)), dev.zeros((4,), np.float32)
    with pytest.raises(DirectionViolation, match=r"wrote to In argument 0 \(a, \(4,\) float32\)"):
        dev.run(lambda rt: rt.submit(writes_its_input, In(a), Out(out)))
    assert dev.to_host(a).tolist() == [0.0, 1.0, 2.0, 3.0]        # the input is intact


# --------------------------------------------------------------------------------------------
# signals, processes, leaks


@pytest.mark.timeout(60)
def test_a_stopped_scheduler_still_ends_in_the_stall_timeout(make_device):
    dev = make_device(Platform(blocks=1, stall_timeout=1), kernels=[tk.fill])
    x = dev.zeros((4,), np.float32)
    os.kill(dev.pids[0], signal.SIGSTOP)
    t0 = time.monotonic()
    try:
        with pytest.raises(DeadlockError, match=r"(?s)no task finished or retired for 1 s.*is stopped"):
            dev.run(lambda rt: rt.submit(tk.fill, Out(x), 1.0))
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(dev.pids[0], signal.SIGCONT)
    assert time.monotonic() - t0 < 8                    # stall timeout + a bounded diagnosis + shutdown


HANG_UP = """
    import os, time
    import testkernels as tk
    from host import Device, Platform, InOut
    dev = Device(Platform(blocks=1), kernels=[tk.spin_forever])
    x = dev.zeros((4,))
    print(os.getpid(), *dev.pids, flush=True)
    print(*dev.segment_names, flush=True)
    dev.run(lambda rt: rt.submit(tk.spin_forever, InOut(x)))
"""


def _all_gone(pids: list[int], segs: list[str]) -> bool:
    alive = [p for p in pids if psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE]
    return not alive and not mapped_anywhere(segs)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("sig,target", [(signal.SIGHUP, "group"), (signal.SIGQUIT, "group"),
                                        (signal.SIGTERM, "host"), (signal.SIGHUP, "host")])
def test_a_closed_terminal_or_a_killed_host_leaves_nothing_behind(sig, target):
    code = f"import sys; sys.path[:0] = [{ROOT!r}, {TESTS!r}]\n" + textwrap.dedent(HANG_UP)
    p = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, start_new_session=True)
    pids = [int(x) for x in p.stdout.readline().split()]
    segs = p.stdout.readline().split()
    assert len(pids) == 5 and len(segs) == 2
    os.killpg(p.pid, sig) if target == "group" else os.kill(p.pid, sig)
    p.wait(10)
    deadline = time.monotonic() + 10
    while not _all_gone(pids, segs) and time.monotonic() < deadline:
        time.sleep(0.05)                              # polling for an outcome, not synchronising
    assert _all_gone(pids, segs)


@pytest.mark.timeout(120)
def test_ctrl_c_while_a_device_starts_or_closes_leaves_nothing_behind():
    r = _script("""
        import os, signal, threading, time, psutil, gc
        from host import Device, Platform
        from conftest import live_children, our_segments
        left = []
        for i in range(12):
            delay = 0.005 + 0.015 * i
            tm = threading.Timer(delay, lambda: os.kill(os.getpid(), signal.SIGINT))
            try:
                tm.start()
                Device(Platform(blocks=24)).close()
                tm.join()
            except KeyboardInterrupt:
                pass
            tm.join()
            gc.collect()
            deadline = time.monotonic() + 5
            while (live_children() or our_segments()) and time.monotonic() < deadline:
                time.sleep(0.05)
            if live_children() or our_segments():
                left.append((delay, len(live_children()), our_segments()))
        print("LEFT", left)
    """, timeout=110)
    assert r.returncode == 0, r.stderr
    assert "LEFT []" in r.stdout, r.stdout


@pytest.mark.timeout(60)
def test_a_forked_child_that_exits_does_not_tear_down_the_parents_device():
    r = _script("""
        import os, sys
        import testkernels as tk
        from host import Device, Platform, In, InOut, DeviceClosed
        dev = Device(Platform(blocks=1), kernels=[tk.add_into])
        one, x = dev.to_device([1.0]), dev.zeros((1,))
        pid = os.fork()
        if pid == 0:
            try:
                dev.run(lambda rt: None)
            except DeviceClosed as e:
                print("child:", e, flush=True)
            sys.exit(0)                               # a normal exit: atexit hooks and finalizers run
        os.waitpid(pid, 0)
        dev.run(lambda rt: rt.submit(tk.add_into, In(one), InOut(x)))
        print("parent:", dev.to_host(x).tolist(), flush=True)
        dev.close()
    """)
    assert r.returncode == 0, r.stderr
    assert "a process forked from it cannot use it" in r.stdout
    assert "parent: [1.0]" in r.stdout
    assert "Traceback" not in r.stderr


@pytest.mark.timeout(60)
def test_an_unwritable_trace_path_fails_at_construction_and_creates_nothing():
    for kw in ({"trace": "/nonexistent/run.json"}, {"record": "/nonexistent/run.graph.jsonl"}):
        with pytest.raises(ValueError, match=r"directory /nonexistent does not exist"):
            Device(Platform(blocks=1), **kw)


@pytest.mark.timeout(60)
def test_close_always_completes_and_keeps_the_bodys_error(tmp_path):
    d = tmp_path / "traces"
    d.mkdir()
    with pytest.warns(RuntimeWarning, match="could not write"):
        with pytest.raises(KernelError, match="on purpose"):
            with Device(Platform(blocks=1), kernels=[tk.fail], trace=str(d / "run.json")) as dev:
                x = dev.zeros((4,), np.float32)
                d.rmdir()                                 # the trace cannot be written at close now
                dev.run(lambda rt: rt.submit(tk.fail, Out(x), 7))
    assert dev.closed


BAD_PLATFORMS = [
    ({"task_window": 2 ** 60}, ValueError, r"task_window=1152921504606846976\): expected 2..65536"),
    ({"task_window": 24}, ValueError, r"task_window=24\): must be a power of two"),
    ({"spin_us": float("nan")}, ValueError, r"spin_us=nan\): expected a finite number"),
    ({"spin_us": float("inf")}, ValueError, r"spin_us=inf\): expected a finite number"),
    ({"stall_timeout": float("nan")}, ValueError, r"stall_timeout=nan"),
    ({"stall_timeout": -1}, ValueError, r"stall_timeout=-1"),
    ({"heap_bytes": 1 << 50}, ValueError, r"heap_bytes=.*expected 4096"),
    ({"heap_bytes": 4096.0}, TypeError, r"heap_bytes=\.\.\.\) must be an int"),
    ({"mailbox_depth": 0}, ValueError, r"mailbox_depth=0\): expected 1..7"),
    ({"blocks": 25}, ValueError, r"blocks=25\): expected 1..24"),
    ({"gm_bytes": -1}, ValueError, r"gm_bytes=-1"),
    ({"name": ""}, TypeError, r"name=\.\.\.\) must be a non-empty string"),
]


@pytest.mark.timeout(60)
@pytest.mark.parametrize("kw,exc,match", BAD_PLATFORMS, ids=[next(iter(b[0])) + "=" + repr(b[0][next(iter(b[0]))])
                                                             for b in BAD_PLATFORMS])
def test_every_platform_field_is_validated_before_anything_is_made(kw, exc, match):
    with pytest.raises(exc, match=match):
        Device(Platform(**kw))


@pytest.mark.timeout(60)
def test_a_dead_device_in_a_group_is_always_replaced():
    shard = {"args": [np.ones(4, np.float32)], "outputs": [((4,), np.float32)]}
    with DeviceGroup(2, Platform(blocks=1), kernels=[tk.copy, tk.exit_process]) as g:
        with pytest.raises(ShardError, match="DeviceLost"):
            g.run_sharded(_copy_maybe_die, [shard, {**shard, "kwargs": {"die": True}}])
        res = g.run_sharded(_copy_maybe_die, [shard, shard, shard])
    assert all(r[0].tolist() == [1.0] * 4 for r in res)


def _copy_maybe_die(rt, x, out, die=False):
    rt.submit(tk.copy, In(x), Out(out))
    if die:
        rt.submit(tk.exit_process, InOut(out))


@pytest.mark.timeout(60)
def test_close_releases_every_file_descriptor_while_the_object_lives():
    before = len(os.listdir("/proc/self/fd"))
    dev = Device(Platform(blocks=1))
    dev.zeros((4,))
    dev.close()
    assert len(os.listdir("/proc/self/fd")) == before
    assert dev.closed                                    # (the object is still referenced here)


# --------------------------------------------------------------------------------------------
# smaller edges


def _part_a(x):
    x[0] = 1


def _part_b(x):
    x[1] = 2


part_a = kernel(AIC)(_part_a)
part_b = kernel(AIV)(_part_b)
composed = kernel(Mixed(aic=part_a, aiv0=part_b), name="test_hostile.composed")


@pytest.mark.timeout(60)
def test_a_mixed_kernel_of_decorated_parts_belongs_to_their_module():
    assert composed.module == __name__
    assert composed in resolve([__name__])
    with Device(Platform(blocks=1), kernels=[__name__]) as dev:
        x = dev.zeros((2,), np.float32)
        dev.run(lambda rt: rt.submit(composed, InOut(x)))
        assert dev.to_host(x).tolist() == [1.0, 2.0]


@pytest.mark.timeout(60)
def test_two_kernels_with_one_name_are_an_error():
    with pytest.raises(ValueError, match=r"kernel name 'tk.dup' is taken by a kernel of module testkernels"):
        kernel(AIV, name="tk.dup")(lambda x: None)
    a = kernel(Mixed(aic=_part_a, aiv0=_part_b), name="test_hostile.same")
    b = Kernel("test_hostile.same", a.shape, (_part_b, _part_a, None), a.module)
    with pytest.raises(ValueError, match=r"two different kernels are both named 'test_hostile.same'"):
        resolve([a, b])


@pytest.mark.timeout(60)
def test_scopes_ended_out_of_order_are_an_error(make_device):
    dev = make_device(Platform(blocks=1), kernels=[tk.fill])

    def orch(rt):
        outer, inner = rt.scope(), rt.scope()
        outer.__enter__()
        inner.__enter__()
        outer.__exit__(None, None, None)
    with pytest.raises(RuntimeError, match=r"scopes must end in the reverse order they began.*still open"):
        dev.run(orch)


@pytest.mark.timeout(60)
def test_an_orchestration_error_after_a_kernel_failure_carries_it(make_device):
    dev = make_device(Platform(blocks=1), kernels=[tk.fail])
    x = dev.zeros((4,), np.float32)

    def orch(rt):
        rt.submit(tk.fail, Out(x), 42)
        try:
            dev.synchronize()
        except KernelError:
            pass
        raise ValueError("the orchestration's own bug")
    with pytest.raises(ValueError, match="own bug") as ei:
        dev.run(orch)
    assert isinstance(ei.value.__cause__, KernelError)
    assert any("on purpose: 42" in n for n in ei.value.__notes__)


@pytest.mark.timeout(60)
def test_shape_errors_show_the_shape_given(make_device):
    dev = make_device(Platform(blocks=1))
    with pytest.raises(TypeError, match=r"only ints, got \(1.5,\)"):
        dev.empty((1.5,))
    with pytest.raises(DeviceMemoryError, match=r"make_tensor\(shape=\(4294967296, 4294967296\).*more than the "
                                                r"whole device heap"):
        dev.run(lambda rt: rt.make_tensor((2 ** 32, 2 ** 32), np.float32))


@pytest.mark.timeout(60)
@pytest.mark.parametrize("argv,flag", [
    (["paged-attention", "--batch", "0"], "--batch"), (["paged-attention", "--head-dim", "0"], "--head-dim"),
    (["paged-attention", "--block-size", "0"], "--block-size"), (["paged-attention", "--seed", "-1"], "--seed"),
    (["paged-attention", "--devices", "0"], "--devices"), (["paged-attention", "--case", "nope"], "--case"),
    (["bench", "dispatch", "--tasks", "-5"], "--tasks"), (["bench", "dispatch", "--tasks", "0"], "--tasks"),
    (["bench", "dispatch", "--rounds", "0"], "--rounds"), (["bench", "granularity", "--sizes", "1,x"], "--sizes"),
    (["bench", "paged-attention", "--cases", "Case1,nope"], "--cases"), (["stress", "--window", "12"], "--window"),
])
def test_bad_command_line_values_are_usage_errors(argv, flag, capsys):
    with pytest.raises(SystemExit) as ei:
        cli.main(argv)
    assert ei.value.code == 2
    assert f"argument {flag}:" in capsys.readouterr().err
