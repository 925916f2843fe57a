"""Faults, stalls and bad input end in a clear error -- never a hang or a leak -- and the direction
sanitizer and schedule fuzzing catch wrong direction declarations."""

from __future__ import annotations

import os
import time

import numpy as np
import pytest
import testkernels as tk

import kernels.workloads.paged_attention as pa
from host import (
    DeadlockError,
    Device,
    DeviceClosed,
    DeviceLost,
    DeviceMemoryError,
    DirectionViolation,
    In,
    InOut,
    KernelError,
    Out,
    Platform,
)
from host.fuzz import fuzz
from host.run import build_on
from host.stress import soak
from kernels import AIC, AIV, Mixed, kernel

# --------------------------------------------------------------------------------------------
# process death


@pytest.mark.timeout(60)
def test_worker_killed_mid_run_gives_device_lost_naming_it(make_device):
    dev = make_device(Platform(blocks=1), kernels=[tk.kill_self, tk.add_into])
    x = dev.zeros((4,), np.float32)
    t0 = time.monotonic()
    with pytest.raises(DeviceLost) as ei:
        dev.run(lambda rt: [rt.submit(tk.add_into, In(x), InOut(x)) for _ in range(20)]
                + [rt.submit(tk.kill_self, In(x))])
    took = time.monotonic() - t0
    msg = str(ei.value)
    assert "worker AIV" in msg and "SIGKILL" in msg and "while running task" in msg
    assert took < 1.5, f"DeviceLost took {took:.2f} s"
    assert dev.closed
    with pytest.raises(DeviceClosed, match="lost"):
        dev.empty((4,))


@pytest.mark.timeout(60)
def test_scheduler_killed_mid_run_gives_device_lost(make_device):
    dev = make_device(Platform(blocks=1), kernels=[tk.kill_pid])
    x = dev.zeros((4,), np.float32)
    t0 = time.monotonic()
    with pytest.raises(DeviceLost, match="the scheduler .* SIGKILL"):
        dev.run(lambda rt: rt.submit(tk.kill_pid, In(x), dev.pids[0]))
    assert time.monotonic() - t0 < 1.5


# --------------------------------------------------------------------------------------------
# stalls


@pytest.mark.timeout(60)
def test_a_scope_larger_than_the_task_ring_runs(make_device):
    # Ring slots go back as soon as their tasks finish; only heap memory is held by scopes. So a
    # scope of 40 tasks runs through a 16-slot ring, and its runtime tensors stay valid to its end.
    dev = make_device(Platform(blocks=1, task_window=16), kernels=[tk.fill, tk.copy])
    out = dev.zeros((40, 4), np.float32)

    def orch(rt):
        with rt.scope():
            ts = []
            for i in range(40):
                t = rt.make_tensor((4,), np.float32)
                rt.submit(tk.fill, Out(t), float(i))
                ts.append(t)
            for i, t in enumerate(ts):                 # read them all back at the scope's end
                rt.submit(tk.copy, In(t), Out(out[i]))
    dev.run(orch)
    assert dev.to_host(out)[:, 0].tolist() == [float(i) for i in range(40)]
    assert dev.stats()["host"]["waits"] > 0            # the ring really was full on the way


@pytest.mark.timeout(60)
def test_heap_held_by_an_open_scope_is_a_deadlock_error(make_device):
    dev = make_device(Platform(blocks=1, heap_bytes=8192), kernels=[tk.fill])

    def orch(rt):
        with rt.scope():
            for _ in range(20):
                rt.submit(tk.fill, Out(rt.make_tensor((256,), np.float32)), 1.0)
    t0 = time.monotonic()
    with pytest.raises(DeadlockError, match=r"heap deadlock.*held \(8.0 KiB by 8 allocation\(s\) of tensors "
                                            r"made at scope depth 1.*heap_bytes=\.\.\.\) to at least"):
        dev.run(orch)
    assert time.monotonic() - t0 < 2.0                # diagnosed, not timed out
    out = dev.zeros((4,), np.float32)
    dev.run(lambda rt: rt.submit(tk.fill, Out(out), 2.0))    # the device is still usable
    assert dev.to_host(out).tolist() == [2.0] * 4


@pytest.mark.timeout(60)
def test_allocation_bigger_than_the_heap_fails_at_once(make_device):
    dev = make_device(Platform(blocks=1, heap_bytes=8192), kernels=[tk.fill, tk.mix])

    def one_too_big(rt):
        rt.make_tensor((4096,), np.float32)
    with pytest.raises(DeviceMemoryError,
                       match=r"make_tensor.*16.0 KiB is more than the whole device heap \(8.0 KiB\).*heap_bytes"):
        dev.run(one_too_big)

    def two_too_big_together(rt):                    # each fits alone, not both at once
        a, b = rt.make_tensor((1536,), np.float32), rt.make_tensor((1536,), np.float32)
        rt.submit(tk.mix, Out(a), Out(b), np.array([2, 2]), 0)
    with pytest.raises(DeviceMemoryError, match=r"need 12.0 KiB of heap, but the heap is 8.0 KiB.*heap_bytes"):
        dev.run(two_too_big_together)


@pytest.mark.timeout(60)
def test_stuck_kernel_ends_in_a_stall_error_naming_it(make_device):
    dev = make_device(Platform(blocks=1, stall_timeout=1.0), kernels=[tk.spin_forever])
    x = dev.zeros((4,), np.float32)
    t0 = time.monotonic()
    with pytest.raises(DeadlockError, match=r"(?s)no task finished or retired for 1 s.*running: task \d+ "
                                            r"\(testkernels.spin_forever\) on AIV") as ei:
        dev.run(lambda rt: rt.submit(tk.spin_forever, In(x)))
    assert time.monotonic() - t0 < 10
    assert dev.closed and "device was shut down" in "".join(ei.value.__notes__)


# --------------------------------------------------------------------------------------------
# kernel errors


@pytest.mark.timeout(60)
def test_kernel_error_skips_the_rest_and_reports_it_in_stats(make_device):
    dev = make_device(Platform(blocks=1), kernels=[tk.fail, tk.add_into])
    x = dev.zeros((4,), np.float32)
    submitted = 0

    def orch(rt):
        nonlocal submitted
        rt.submit(tk.fail, In(x), 7)
        for _ in range(30):
            rt.submit(tk.add_into, In(x), InOut(x))   # each depends on the failed task's reader
            submitted += 1                             # (once the failure is seen, submit raises it)
    with pytest.raises(KernelError):
        dev.run(orch)
    st = dev.stats()["kernels"]
    assert st[tk.fail.name]["errors"] == 1
    add = st.get(tk.add_into.name, {"tasks": 0, "skipped": 0})
    # none of them may run (they all wait for the failed task); every one submitted is skipped
    assert add["tasks"] == 0 and add["skipped"] == submitted


# --------------------------------------------------------------------------------------------
# bad input: every case names the argument and what was expected


def _run(dev, fn):
    return dev.run(fn)


BAD_SUBMITS = [
    ("unloaded kernel", lambda rt, d: rt.submit(tk.noop), ValueError, "not loaded on this device"),
    ("not a kernel", lambda rt, d: rt.submit(print), TypeError, "registered with @kernel"),
    ("wrong core type", lambda rt, d: rt.submit(tk.fill, Out(d["x"]), 1, core=AIC), TypeError,
     "is an AIV kernel, not AIC"),
    ("33 tensors", lambda rt, d: rt.submit(tk.fill, *[In(d["x"])] * 33), ValueError,
     "33 tensor arguments; at most 32"),
    ("129 scalars", lambda rt, d: rt.submit(tk.fill, Out(d["x"]), *range(129)), ValueError,
     "129 scalar arguments; at most 128"),
    ("str scalar", lambda rt, d: rt.submit(tk.fill, Out(d["x"]), "1"), TypeError,
     "scalar argument 0 has type str"),
    ("dict scalar", lambda rt, d: rt.submit(tk.fill, Out(d["x"]), {}), TypeError, "has type dict"),
    ("2-D scalar array", lambda rt, d: rt.submit(tk.fill, Out(d["x"]), np.zeros((2, 2))), TypeError,
     "scalar arrays must be 1-D"),
    ("int64 overflow", lambda rt, d: rt.submit(tk.fill, Out(d["x"]), 1 << 70), ValueError,
     "does not fit in int64"),
    ("too many scalar words", lambda rt, d: rt.submit(tk.fill, Out(d["x"]), np.arange(300)), ValueError,
     "does not fit"),
    ("tensor after scalar", lambda rt, d: rt.submit(tk.fill, 1, Out(d["x"])), TypeError,
     "comes after a scalar"),
    ("bare tensor", lambda rt, d: rt.submit(tk.fill, d["x"], 1), TypeError, "wrap it in In"),
    ("numpy array as tensor", lambda rt, d: In(np.zeros(3)), TypeError, "dev.to_device first"),
    ("read unwritten runtime tensor", lambda rt, d: rt.submit(tk.fill, In(rt.make_tensor((4,)))), ValueError,
     "no earlier task has written"),
    ("InOut unwritten runtime tensor", lambda rt, d: rt.submit(tk.add_into, In(d["x"]),
                                                               InOut(rt.make_tensor((4,)))),
     ValueError, "nothing to read"),
    ("tensor of another device", lambda rt, d: rt.submit(tk.fill, Out(d["other"]), 1), ValueError,
     "belongs to another device"),
    ("freed tensor", lambda rt, d: rt.submit(tk.fill, Out(d["freed"]), 1), ValueError,
     "freed with dev.free"),
    ("make_tensor bad dtype", lambda rt, d: rt.make_tensor((4,), "U8"), TypeError, "cannot live in device"),
    ("make_tensor negative", lambda rt, d: rt.make_tensor((-1, 4)), ValueError, "negative extent"),
    ("make_tensor 6 dims", lambda rt, d: rt.make_tensor((1,) * 6), ValueError, "at most 5"),
    ("alloc_tensors nothing", lambda rt, d: rt.alloc_tensors(), ValueError, "at least one"),
    ("nested run", lambda rt, d: d["dev"].run(lambda r: None), RuntimeError, "already in progress"),
]


@pytest.mark.timeout(120)
@pytest.mark.parametrize("name,call,exc,match", BAD_SUBMITS, ids=[b[0] for b in BAD_SUBMITS])
def test_bad_submit_is_rejected_and_loses_nothing(make_device, name, call, exc, match):
    dev = make_device(Platform(blocks=1), kernels=[tk.fill, tk.add_into])
    other = make_device(Platform(blocks=1), kernels=[tk.fill])
    acc = dev.zeros((4,), np.float32)
    one = dev.to_device(np.ones(4, np.float32))
    d = {"x": dev.zeros((4,), np.float32), "other": other.zeros((4,), np.float32), "dev": dev,
         "freed": dev.zeros((4,), np.float32)}
    dev.free(d["freed"])
    caught = []

    def orch(rt):
        for i in range(10):
            rt.submit(tk.add_into, In(one), InOut(acc))
            if i == 4:
                try:
                    call(rt, d)
                except exc as e:          # the orchestration may catch it and go on
                    caught.append(str(e))
    dev.run(orch)
    assert caught and match in caught[0], caught
    assert dev.to_host(acc).tolist() == [10.0] * 4     # nothing submitted was lost

    def orch_uncaught(rt):
        for _ in range(5):
            rt.submit(tk.add_into, In(one), InOut(acc))
        call(rt, d)
    with pytest.raises(exc, match=match.replace("(", r"\(").replace(")", r"\)").replace(".", r"\.")):
        dev.run(orch_uncaught)
    assert dev.to_host(acc).tolist() == [15.0] * 4     # ran to completion before the error came back


BAD_CALLS = [
    ("blocks 0", lambda: Platform(blocks=0), ValueError, r"Platform\(blocks=0\): expected 1..24"),
    ("blocks 25 for a2a3", lambda: Platform.a2a3(blocks=25), ValueError, "for the a2a3 preset"),
    ("window not a power of two", lambda: Platform(task_window=100), ValueError, "power of two"),
    ("tiny heap", lambda: Platform(heap_bytes=10), ValueError, "heap_bytes=10"),
    ("mailbox depth", lambda: Platform(mailbox_depth=9), ValueError, "mailbox_depth=9"),
    ("blocks not int", lambda: Platform(blocks=2.5), TypeError, "must be an int"),
    ("platform not Platform", lambda: Device("a2a3"), TypeError, "expects a Platform"),
    ("kernels not kernels", lambda: Device(Platform(blocks=1), kernels=[42]), TypeError,
     "expected Kernel objects"),
    ("unknown kernel module", lambda: Device(Platform(blocks=1), kernels=["no.such.mod"]), ValueError,
     "cannot import kernel module"),
    ("module without kernels", lambda: Device(Platform(blocks=1), kernels=["json"]), ValueError,
     "registers no kernels"),
    ("schedule", lambda: Device(Platform(blocks=1), schedule="lifo"), ValueError, "schedule='lifo'"),
    ("Mixed without parts", lambda: Mixed(), ValueError, "at least one part"),
    ("Mixed bad part", lambda: Mixed(aic=3), TypeError, "expects a function or True"),
]


@pytest.mark.timeout(60)
@pytest.mark.parametrize("name,call,exc,match", BAD_CALLS, ids=[b[0] for b in BAD_CALLS])
def test_bad_launch_arguments(name, call, exc, match):
    with pytest.raises(exc, match=match):
        call()


@pytest.mark.timeout(60)
def test_bad_transfers_and_views(make_device):
    dev = make_device(Platform(blocks=1, gm_bytes=1 << 20), kernels=[tk.fill])
    with pytest.raises(TypeError, match="object arrays cannot live"):
        dev.to_device(np.array([object()]))
    with pytest.raises(TypeError, match="dtype <U3 cannot live in device memory"):
        dev.to_device(np.array(["abc"]))
    with pytest.raises(DeviceMemoryError, match=r"GM exhausted.*Platform\(gm_bytes=\.\.\.\)"):
        dev.empty((1 << 20,), np.float32)
    t = dev.zeros((4, 6), np.float32)
    with pytest.raises(ValueError, match=r"dimension 1 covers \[4, 8\) but the tensor has 6"):
        t.view((2, 4), (0, 4))
    with pytest.raises(ValueError, match="negative extent"):
        t.view((-1, 2), (0, 0))
    with pytest.raises(ValueError, match="offset -1 of dimension 0"):
        t.view((1, 2), (-1, 0))
    with pytest.raises(ValueError, match="step 1 only"):
        t[::2]
    with pytest.raises(IndexError, match="out of bounds"):
        t[4]
    with pytest.raises(ValueError, match="not contiguous"):
        t[:, 1:3].reshape(8)
    with pytest.raises(TypeError, match="expected a function"):
        dev.run(42)
    with pytest.raises(RuntimeError, match="outside dev.run"):
        rts = []
        dev.run(lambda rt: rts.append(rt))
        rts[0].submit(tk.fill, Out(t), 1)
    kept = []
    dev.run(lambda rt: kept.append(rt.make_tensor((4,))) or rt.submit(tk.fill, Out(kept[0]), 1.0))
    with pytest.raises(ValueError, match="no longer valid: its scope ended"):
        dev.to_host(kept[0])
    with pytest.raises(ValueError, match="runtime tensors are released by their scope"):
        dev.free(kept[0])
    dev.close()
    with pytest.raises(DeviceClosed, match=r"dev.empty\(\): the device is closed"):
        dev.empty((4,))
    with pytest.raises(DeviceClosed, match="the device is closed"):
        dev.to_host(t)


# --------------------------------------------------------------------------------------------
# direction sanitizer


def _pa_setup(case="mixed_lens", **kw):
    def setup(dev):
        params = pa.case_params(case)
        _, data = build_on(dev, pa.WORKLOAD, params, 0)
        args = tuple(data[n] for n in ("query", "key_cache", "value_cache", "block_table",
                                       "context_lens", "out"))
        return args, {"scale": pa.scale_of(params), "unroll": params["unroll"], **kw}, [data["out"]]
    return setup


@pytest.mark.timeout(120)
def test_sanitizer_proves_up_never_reads_accumulators_when_first(make_device):
    dev = make_device(Platform(blocks=2), kernels=["kernels.workloads.paged_attention"], sanitize=True)
    args, kw, outs = _pa_setup()(dev)
    dev.run(pa.orchestrate, *args, variant="first_output", **kw)      # no violation
    h = [dev.to_host(a) for a in args[:5]]
    np.testing.assert_allclose(dev.to_host(outs[0]), pa.golden(*h, kw["scale"], unroll=kw["unroll"]),
                               rtol=1e-3, atol=1e-3)


@pytest.mark.timeout(120)
@pytest.mark.parametrize("inline", [False, True])
def test_sanitizer_catches_an_up_that_reads_its_accumulators(make_device, inline):
    dev = make_device(Platform(blocks=2), kernels=["kernels.workloads.paged_attention", tk.up_reads_acc_when_first],
                      sanitize=True, inline=inline)
    args, kw, _ = _pa_setup()(dev)
    broken = {"up": tk.up_reads_acc_when_first}
    dev.run(pa.orchestrate, *args, variant="hub", kernels=broken, **kw)   # fine after a hub
    with pytest.raises(DirectionViolation, match=r"Out argument 3 \(mi_acc.*poison") as ei:
        dev.run(pa.orchestrate, *args, variant="first_output", kernels=broken, **kw)
    assert ei.value.kernel == tk.up_reads_acc_when_first.name


@pytest.mark.timeout(60)
@pytest.mark.parametrize("inline", [False, True])
def test_sanitizer_names_a_written_input_and_unwritten_output(make_device, inline):
    dev = make_device(Platform(blocks=1), kernels=[tk.writes_its_input, tk.half_writer],
                      sanitize=True, inline=inline)
    a, b = dev.zeros((4,), np.float32), dev.zeros((4,), np.float32)
    with pytest.raises(DirectionViolation, match=r"wrote to In argument 0 \(src"):
        dev.run(lambda rt: rt.submit(tk.writes_its_input, In(a), Out(b)))
    with pytest.raises(DirectionViolation, match=r"Out argument 0 \(out, \(4,\) float32\): 2 of 4"):
        dev.run(lambda rt: rt.submit(tk.half_writer, Out(b)))


# --------------------------------------------------------------------------------------------
# schedule fuzzing


@pytest.mark.timeout(300)
def test_fuzzing_paged_attention_is_bit_identical_across_seeds():
    rep = fuzz(pa.orchestrate, _pa_setup("small", variant="first_output"),
               kernels=["kernels.workloads.paged_attention"], seeds=range(4), platform=Platform(blocks=3),
               jitter_us=200)
    assert rep.ok, str(rep)


@pytest.mark.timeout(300)
def test_fuzzing_random_graphs_is_bit_identical_across_seeds():
    from test_property import HOST_SHAPES, KERNELS, make_program
    prog = make_program(2024, 150, 16, 8)

    def setup(dev):
        host = [dev.to_device((np.arange(np.prod(s)) % 13).astype(dt).reshape(s)) for s, dt in HOST_SHAPES]
        return tuple(host), {}, host
    rep = fuzz(prog, setup, kernels=KERNELS, seeds=range(5),
               platform=Platform(blocks=2, task_window=16, heap_bytes=8192, gm_bytes=1 << 20), jitter_us=100)
    assert rep.ok, str(rep)


@kernel(AIV)
def _mix_past_the_flag(x, dirs, salt):
    """Writes x whatever its direction says, as a compiled kernel would (numpy's read-only flag
    on In views stops Python code, not a C extension or a numba kernel)."""
    x.setflags(write=True)
    tk._mix_body((x, np.array([3]), salt))


def _racy(declare_write_as_in: bool):
    """Writer then reader of x, repeated; the writer's direction may be (wrongly) declared In."""
    def orch(rt, x, log):
        wdir = In if declare_write_as_in else InOut
        for i in range(12):
            rt.submit(_mix_past_the_flag, wdir(x), np.array([3]), i)      # the kernel writes x
            rt.submit(tk.mix, In(x), Out(log[i]), np.array([1, 2]), i)
    return orch


def _racy_setup(dev):
    x = dev.zeros((16,), np.int64)
    log = dev.zeros((12, 16), np.int64)
    return (x, log), {}, [log]


@pytest.mark.timeout(300)
def test_fuzzing_catches_a_wrong_direction():
    good = fuzz(_racy(False), _racy_setup, kernels=[tk.mix, _mix_past_the_flag], seeds=range(3), jitter_us=300)
    assert good.ok, str(good)
    bad = fuzz(_racy(True), _racy_setup, kernels=[tk.mix, _mix_past_the_flag], seeds=range(6), jitter_us=300)
    assert not bad.ok
    assert "a direction is probably wrong" in str(bad) and "differ" in str(bad)


# --------------------------------------------------------------------------------------------
# stress and soak


@pytest.mark.timeout(120)
def test_short_soak_keeps_results_right_and_memory_flat():
    v = soak(4.0, blocks=2, window=16, heap_kib=16, tasks=8000, log=lambda s: None)
    assert v["ok"], v["problems"]
    assert len(v["rounds"]) >= 3 and v["tasks"] >= 24000


@pytest.mark.timeout(300)
def test_fifty_devices_in_a_row_leak_nothing():
    fds0 = len(os.listdir("/proc/self/fd"))
    for i in range(50):
        with Device(Platform(blocks=1 + i % 3), kernels=[tk.add_into]) as dev:
            x = dev.zeros((4,), np.float32)
            dev.run(lambda rt, x=x: rt.submit(tk.add_into, In(x), InOut(x)))
    assert len(os.listdir("/proc/self/fd")) <= fds0 + 2      # the resource tracker pipe, at most
