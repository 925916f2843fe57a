"""Start, stop, idle, interrupt and clean-up of whole devices (processes and segments)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import psutil
import pytest
import testkernels as tk
from conftest import mapped_anywhere

from host import Device, DeviceLost, In, InOut, KernelError, Platform

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def cpu_seconds(pids: list[int]) -> float:
    total = 0.0
    for p in pids:
        t = psutil.Process(p).cpu_times()
        total += t.user + t.system
    return total


@pytest.mark.timeout(120)
def test_a2a3_device_starts_72_workers_and_stops_clean():
    dev = Device(Platform.a2a3(), kernels=[tk.noop])
    try:
        pids = dev.pids
        assert len(pids) == 73
        assert all(psutil.pid_exists(p) for p in pids)
        segs = dev.segment_names
        assert sorted(mapped_anywhere(segs)) == sorted([os.getpid(), *pids])   # every process maps both
    finally:
        dev.close()
    assert not any(psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE
                   for p in pids)
    assert not mapped_anywhere(segs)             # so the kernel has freed the memory
    dev.close()                                  # idempotent


@pytest.mark.timeout(120)
def test_idle_device_does_not_spin(make_device):
    dev = make_device(Platform.a2a3(), kernels=[tk.noop])
    dev.run(lambda rt: [rt.submit(tk.noop) for _ in range(200)])
    pids = dev.pids
    time.sleep(0.5)                              # let every spinner give up and block
    c0 = cpu_seconds(pids)
    time.sleep(2.0)
    used = cpu_seconds(pids) - c0
    # 73 processes that block use ~0; one that spun would use ~2 s. 0.2 s is a generous bound
    # for 10 ms tick accounting and the once-a-second orphan checks.
    assert used < 0.2, f"idle device used {used:.2f} s of CPU in 2 s"


@pytest.mark.timeout(60)
def test_exception_inside_with_closes_the_device():
    with pytest.raises(ZeroDivisionError):
        with Device(Platform(blocks=2), kernels=[tk.noop]) as dev:
            pids = dev.pids
            raise ZeroDivisionError("user code failed")
    assert dev.closed
    assert not any(psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE
                   for p in pids)


@pytest.mark.timeout(60)
def test_kernel_error_names_task_kernel_core_and_device_stays_usable(make_device):
    dev = make_device(Platform(blocks=1), kernels=[tk.fail, tk.add_into])
    x = dev.zeros((4,), np.float32)
    failing = []

    def orch(rt):
        rt.submit(tk.add_into, In(x), InOut(x))
        failing.append(rt.submit(tk.fail, In(x), 42))
        for _ in range(50):
            rt.submit(tk.add_into, In(x), InOut(x))
    with pytest.raises(KernelError) as ei:
        dev.run(orch)
    e = ei.value
    assert e.task_id == failing[0] and e.kernel == tk.fail.name and "AIV" in e.core
    assert "kernel failed on purpose: 42" in str(e) and "raise ValueError" in e.remote_traceback
    assert "In(4,) float32" in str(e)
    one = dev.to_device(np.ones(4, np.float32))
    dev.run(lambda rt: rt.submit(tk.add_into, In(one), InOut(x)))
    assert dev.to_host(x).tolist() == [1.0] * 4


@pytest.mark.timeout(60)
def test_killed_worker_gives_device_lost_quickly(make_device):
    dev = make_device(Platform(blocks=1), kernels=[tk.noop])
    victim = dev.pids[2]
    os.kill(victim, signal.SIGKILL)
    t0 = time.monotonic()
    with pytest.raises(DeviceLost, match="SIGKILL"):
        dev.run(lambda rt: [rt.submit(tk.noop) for _ in range(100)])
    assert time.monotonic() - t0 < 2.0
    assert dev.closed


SCRIPT = textwrap.dedent("""
    import sys, time
    sys.path.insert(0, {root!r}); sys.path.insert(0, {tests!r})
    import numpy as np
    import testkernels as tk
    from host import Device, Platform
    from kernels import AIV, kernel

    @kernel(AIV)
    def slow(*a):
        time.sleep(0.01)

    dev = Device(Platform(blocks=2), kernels=[slow])
    print("PIDS", *dev.pids, flush=True)
    print("SEGS", *dev.segment_names, flush=True)
    try:
        dev.run(lambda rt: [rt.submit(slow) for _ in range(100000)])
    except KeyboardInterrupt:
        print("INTERRUPTED", flush=True)
        dev.close()
        sys.exit(3)
""")


def _start_script() -> tuple[subprocess.Popen, list[int], list[str]]:
    code = SCRIPT.format(root=ROOT, tests=os.path.join(ROOT, "tests"))
    p = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    pids = [int(x) for x in p.stdout.readline().split()[1:]]
    segs = p.stdout.readline().split()[1:]
    assert pids and segs
    return p, pids, segs


def _gone(pids: list[int], segs: list[str]) -> bool:
    alive = [p for p in pids if psutil.pid_exists(p)
             and psutil.Process(p).status() != psutil.STATUS_ZOMBIE]
    return not alive and not mapped_anywhere(segs)


@pytest.mark.timeout(60)
def test_ctrl_c_in_the_host_interrupts_the_run_and_cleans_up():
    p, pids, segs = _start_script()
    time.sleep(0.3)                                  # let the run get going
    p.send_signal(signal.SIGINT)
    out, _ = p.communicate(timeout=20)
    assert "INTERRUPTED" in out and p.returncode == 3
    assert _gone(pids, segs)


@pytest.mark.timeout(60)
def test_sigkill_of_the_host_leaves_no_orphans_or_segments():
    p, pids, segs = _start_script()
    time.sleep(0.3)
    p.kill()
    p.wait(10)
    deadline = time.monotonic() + 10
    while not _gone(pids, segs) and time.monotonic() < deadline:
        time.sleep(0.1)                              # polling an outcome, not synchronising
    assert _gone(pids, segs)
