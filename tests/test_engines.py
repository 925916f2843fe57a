"""The two engines behind a Device -- processes, and the sequential engine (``inline=True``) --
share the record interpreter, the dependency gatherer and the heap: they record the same graph
under either semantics, fail alike on a heap too small, and the sequential engine refuses the
options it cannot honour. Also: under the reference's rules, get/set_tensor_data wait for a
runtime tensor's creator whatever the scope (issue 17, r11)."""

from __future__ import annotations

import re
import time
from pathlib import Path

import numpy as np
import pytest
import testkernels as tk

from host import DeadlockError, Device, In, InOut, NoDep, Out, Platform
from kernels import AIV, kernel


@kernel(AIV)
def slow_copy(x, out):
    time.sleep(0.05)        # a creator that is still running when the host asks for its output
    out[...] = x


def _mixed(rt, a, b, c):
    """Every kind of record and of dependency: RAW, WAR, WAW, untracked and views, a runtime
    tensor, deps=, a dummy, a predicate, a probe, a manual scope, an alloc."""
    rt.submit(tk.copy, In(a), Out(b))
    rt.submit(tk.add_into, In(b), InOut(c))
    rt.submit(tk.fill, Out(b), 2.0)                          # after a reader: write-after-read
    rt.submit(tk.copy, In(a[0:2]), Out(c[2:4]))
    with rt.scope():
        t = rt.make_tensor((4,), np.float32)
        t1 = rt.submit(tk.copy, In(c), Out(t))
        rt.submit(tk.add_into, In(t), InOut(b), deps=[t1])
        d = rt.submit_dummy(InOut(c))
        rt.submit(tk.fill, Out(a), 3.0, predicate=(b, (0,), ">", 100.0))
        rt.get_tensor_data(t, (1,))
        rt.submit(tk.copy, NoDep(t), Out(c), deps=[d])
    with rt.scope(manual=True):
        acc = rt.alloc_tensors(((4,), np.float32))
        u = rt.submit(tk.copy, In(b), InOut(acc[0]), deps=[acc.task_id])
        rt.submit(tk.add_into, In(acc[0]), InOut(c), deps=[u])


def _graph(inline: bool, semantics: str) -> list[tuple[int, str, tuple[int, ...], bool]]:
    with Device(Platform(blocks=1), kernels=[tk.copy, tk.add_into, tk.fill], inline=inline,
                semantics=semantics, record=True) as dev:
        a, b, c = (dev.to_device(np.arange(4, dtype=np.float32)) for _ in range(3))
        dev.run(_mixed, a, b, c)
        return [(r.tid, r.kind, tuple(r.preds), r.skipped) for r in dev.graph().records]


@pytest.mark.timeout(60)
@pytest.mark.parametrize("semantics", ["sequential", "reference"])
def test_both_engines_record_the_same_graph(semantics):
    seq, dev = _graph(True, semantics), _graph(False, semantics)
    assert seq == dev
    assert any(p for _, _, p, _ in seq) and any(s for *_, s in seq)     # edges and a false predicate


def _counts(inline: bool) -> tuple[dict, dict]:
    with Device(Platform(blocks=1), kernels=[tk.copy, tk.add_into, tk.fill], inline=inline) as dev:
        a, b, c = (dev.to_device(np.arange(4, dtype=np.float32)) for _ in range(3))
        dev.run(_mixed, a, b, c)
        st = dev.stats()
    return ({n: (k["tasks"], k["predicate_false"], k["skipped"], k["errors"]) for n, k in st["kernels"].items()},
            st["runtime_tasks"])


@pytest.mark.timeout(60)
def test_both_engines_count_what_ran_and_what_a_predicate_skipped():
    seq, dev = _counts(True), _counts(False)
    assert seq == dev
    assert seq[0][tk.fill.name][1] == 1 and all(seq[1].values())     # a false predicate; every runtime kind


@pytest.mark.timeout(60)
def test_the_reference_rules_record_fewer_edges_than_the_sequential_ones():
    seq, ref = _graph(True, "sequential"), _graph(True, "reference")
    assert sum(len(p) for _, _, p, _ in ref) < sum(len(p) for _, _, p, _ in seq)


@pytest.mark.parametrize("option,value", [("trace", True), ("schedule", "random"), ("jitter_us", 5.0)])
def test_the_sequential_engine_refuses_what_it_cannot_do(option, value):
    with pytest.raises(ValueError, match=rf"Device\(inline=True, {option}="):
        Device(Platform(blocks=1), kernels=[tk.copy], inline=True, **{option: value})


@pytest.mark.timeout(60)
@pytest.mark.parametrize("inline", [False, True], ids=["device", "sequential"])
def test_both_engines_are_what_a_device_drives(inline):
    import host.device
    from host.engine import Engine
    used = set(re.findall(r"_engine\.(\w+)", Path(host.device.__file__).read_text()))
    declared = {m for m in dir(Engine) if not m.startswith("_")} | set(Engine.__annotations__)
    assert used and used <= declared, used - declared           # Device uses only the protocol
    with Device(Platform(blocks=1), kernels=[tk.copy], inline=inline) as dev:
        assert isinstance(dev._engine, Engine)


def test_the_command_line_refuses_a_trace_of_the_sequential_engine(tmp_path, capsys):
    from host.cli import main
    with pytest.raises(SystemExit) as ei:
        main(["run", "vector_chain", "--inline", "--trace", str(tmp_path / "t.json")])
    assert ei.value.code == 2 and "--trace: not with --inline" in capsys.readouterr().err


def test_a_process_device_refuses_a_dry_run():
    with pytest.raises(ValueError, match=r"dry_run=True\) needs inline=True"):
        Device(Platform(blocks=1), kernels=[tk.copy], dry_run=True)


def _too_much_heap(rt, x):
    keep = []
    for _ in range(8):                       # the run's own scope keeps every tensor alive
        t = rt.make_tensor((4096,), np.float32)
        rt.submit(tk.fill, Out(t), 1.0)
        keep.append(t)
    rt.submit(tk.copy, In(keep[0][0:4]), Out(x))


@pytest.mark.timeout(60)
@pytest.mark.parametrize("inline", [False, True], ids=["device", "sequential"])
def test_both_engines_fail_alike_on_a_heap_too_small(inline):
    with Device(Platform(blocks=1, heap_bytes=64 << 10), kernels=[tk.fill, tk.copy], inline=inline) as dev:
        x = dev.zeros((4,), np.float32)
        with pytest.raises(DeadlockError, match=r"heap deadlock: task \d+ needs 16.0 KiB of heap"):
            dev.run(_too_much_heap, x)
        dev.run(lambda rt: rt.submit(tk.fill, Out(x), 7.0))          # and the device goes on
        assert dev.to_host(x).tolist() == [7.0] * 4


def _probe_in_manual_scope(rt, src, mode):
    with rt.scope(manual=True):
        t = rt.make_tensor((4,), np.float32)
        rt.submit(slow_copy, In(src), Out(t))                 # t's creator
        if mode == "get":
            return rt.get_tensor_data(t, 0)
        rt.set_tensor_data(t, 0, 1.0)
        return rt.read(t)[0]


@pytest.mark.timeout(60)
@pytest.mark.parametrize("mode,want", [("get", 9.0), ("set", 1.0)])
def test_reference_get_and_set_in_a_manual_scope_wait_for_the_creator(mode, want):
    with Device(Platform(blocks=1), kernels=[slow_copy], semantics="reference", record=True) as dev:
        src = dev.to_device(np.full(4, 9.0, np.float32))
        assert dev.run(_probe_in_manual_scope, src, mode) == want
        creator, probe = (r for r in dev.graph().records if r.kind in ("task", "dummy"))
        assert probe.kind == "dummy" and creator.tid in probe.preds


def _host_tensor_in_manual_scope(rt, src, h):
    with rt.scope(manual=True):
        rt.submit(tk.copy, In(src), Out(h))
        rt.get_tensor_data(h, 0)


@pytest.mark.timeout(60)
def test_reference_get_in_a_manual_scope_does_not_wait_for_a_host_tensor_writer():
    # As the README says: a task in a manual scope enters no tensor map, so under the reference's
    # rules nothing records it as the writer of a host tensor (the reference does the same).
    with Device(Platform(blocks=1), kernels=[tk.copy], semantics="reference", record=True) as dev:
        src, h = dev.to_device(np.ones(4, np.float32)), dev.zeros((4,), np.float32)
        dev.run(_host_tensor_in_manual_scope, src, h)
        writer, probe = (r for r in dev.graph().records if r.kind in ("task", "dummy"))
        assert probe.kind == "dummy" and writer.tid not in probe.preds
