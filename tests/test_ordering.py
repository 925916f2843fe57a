"""Memory ordering between processes (device/ordering.py): the fenced implementation, the one a
weakly ordered CPU (aarch64) gets, fences on the right side of every publication, and a device
built on it runs correctly (here on x86, where it is chosen by PTOEMU_MEMORY_ORDER=fenced)."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from device import ordering

ROOT = Path(__file__).resolve().parent.parent
TESTS = Path(__file__).resolve().parent


def test_the_mode_follows_the_cpu_unless_asked():
    if "PTOEMU_MEMORY_ORDER" in os.environ:
        pytest.skip("the mode was chosen by the environment")
    want = "tso" if platform.machine().lower() in ordering.TSO_MACHINES else "fenced"
    assert ordering.MODE == want


def test_fenced_publish_fences_before_the_store_and_observe_after_the_load(monkeypatch):
    words = [0, 0]
    seen = []

    def fence():
        seen.append(tuple(words))           # what the word held when the fence ran

    monkeypatch.setattr(ordering, "_lock_fence", fence)
    ordering._fenced_publish(words, 1, 7)
    assert seen == [(0, 0)] and words == [0, 7]         # the fence came first, then the store
    seen.clear()
    words[0] = 5
    assert ordering._fenced_observe(words, 0) == 5 and seen == [(5, 7)]   # the load, then the fence
    seen.clear()
    import numpy as np
    assert ordering._fenced_observe_all(np.array([1, 2])) == [1, 2] and len(seen) == 1


def test_the_lock_fence_is_a_release_then_an_acquire():
    calls = []

    class Lock:
        def acquire(self):
            calls.append("acquire")

        def release(self):
            calls.append("release")

    old, ordering._lock = ordering._lock, Lock()
    try:
        ordering._lock_fence()
    finally:
        ordering._lock = old
    # The middle pair is what makes it a full barrier on ARMv8 (a release followed by an
    # acquire); an acquire-release round trip alone would not be.
    assert calls[1:3] == ["release", "acquire"]


@pytest.mark.timeout(120)
def test_a_device_on_the_fenced_implementation_runs_right():
    body = """
        import numpy as np
        import testkernels as tk
        from device import ordering
        from host import Device, In, InOut, Out, Platform, KernelError
        assert ordering.MODE == "fenced"

        def chain(rt, x, out, y):
            for _ in range(200):
                rt.submit(tk.add_into, In(x), InOut(out))
            with rt.scope():
                t = rt.make_tensor((4,), np.float32)
                rt.submit(tk.copy, In(out), Out(t))
                assert rt.get_tensor_data(t, 0) == 200.0
                rt.set_tensor_data(t, 1, 5.0)
                rt.submit(tk.copy, In(t), Out(y))

        with Device(Platform.tiny(), kernels=[tk.add_into, tk.copy, tk.fail]) as dev:
            x = dev.to_device(np.ones(4, np.float32))
            for _ in range(3):
                out, y = dev.zeros((4,), np.float32), dev.zeros((4,), np.float32)
                dev.run(chain, x, out, y)
                assert dev.to_host(y).tolist() == [200.0, 5.0, 200.0, 200.0]
            try:
                dev.run(lambda rt: rt.submit(tk.fail, InOut(out), 0))
            except KernelError:
                pass
            else:
                raise AssertionError("no KernelError")
            assert dev.stats()["kernels"]
        print("OK")
    """
    code = f"import sys; sys.path[:0] = [{str(ROOT)!r}, {str(TESTS)!r}]\n" + textwrap.dedent(body)
    env = {**os.environ, "PTOEMU_MEMORY_ORDER": "fenced"}
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=100, env=env)
    assert p.returncode == 0 and p.stdout.strip() == "OK", p.stderr[-3000:]
