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

from host import Device, In, InOut, KernelError, Out, Platform
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


@pytest.mark.timeout(60)
@pytest.mark.parametrize("inline", [False, True], ids=["device", "inline"])
def test_a_kernel_that_forks_fails_its_task_and_the_copy_touches_nothing(make_device, inline):
    # r08: the forked copy of the worker used to report the task a second time: a wrong result
    # in silence, then a scheduler crash (DeviceLost) on the next run.
    dev = make_device(Platform(blocks=1), kernels=[fork_and_return, tk.add_into], inline=inline)
    x, y, one = dev.zeros((1,)), dev.zeros((1,)), dev.to_device([1.0])
    with pytest.raises(KernelError, match=r"ForkInKernel: the kernel called os.fork\(\) while it ran") as ei:
        dev.run(lambda rt: [rt.submit(fork_and_return, InOut(x)) for _ in range(3)])
    assert ei.value.task_id == 0 and "kernels must not fork" in str(ei.value)
    dev.run(lambda rt: [rt.submit(tk.add_into, In(one), InOut(y)) for _ in range(500)])
    assert dev.to_host(y).tolist() == [500.0]           # the device is whole and usable
    assert not dev.closed
