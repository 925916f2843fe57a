"""The public contract and the core behaviours of a device, end to end on real processes."""

from __future__ import annotations

import ml_dtypes
import numpy as np
import pytest
import testkernels as tk

from host import Device, In, InOut, Out, Platform
from kernels import AIV, Mixed, kernel
from kernels.workloads.examples import mixed_shapes, tiled_matmul, vector_chain


@kernel(AIV)
def add(a, b, out):
    np.add(a, b, out=out)


@kernel(AIV)
def scale(x, out, factor):
    np.multiply(x, factor, out=out)


def contract_orchestration(rt, a, b, c):
    with rt.scope():
        t = rt.make_tensor(a.shape, np.float32)
        rt.submit(add, In(a), In(b), Out(t))
        rt.submit(scale, In(t), Out(c), 0.5)


@pytest.mark.timeout(60)
def test_contract_snippet_from_the_issue():
    with Device(Platform(blocks=2), kernels=[add, scale]) as dev:
        a = dev.to_device(np.arange(1024, dtype=np.float32))
        b = dev.to_device(np.ones(1024, dtype=np.float32))
        c = dev.empty((1024,), np.float32)
        dev.run(contract_orchestration, a, b, c)
        assert np.allclose(dev.to_host(c), (np.arange(1024) + 1) * 0.5)
        st = dev.stats()
        assert st["kernels"][add.name]["tasks"] == 1 and st["kernels"][scale.name]["tasks"] == 1
        assert st["cores"]["AIV"]["parts_run"] == 2 and st["cores"]["AIC"]["parts_run"] == 0
        assert "tasks" in str(st)


@pytest.mark.timeout(60)
def test_device_has_scheduler_and_three_processes_per_block(make_device):
    dev = make_device(Platform(blocks=3), kernels=[tk.noop])
    assert len(dev.pids) == 1 + 9 and len(set(dev.pids)) == 10
    assert len(dev.segment_names) == 2


@pytest.mark.timeout(60)
def test_round_trip_of_dtypes_including_bfloat16(make_device):
    dev = make_device(kernels=[tk.noop])
    for dt in (np.float32, np.float64, np.int8, np.int32, np.uint16, ml_dtypes.bfloat16, np.bool_):
        x = (np.arange(60) % 7).astype(dt).reshape(3, 4, 5)
        assert np.array_equal(dev.to_host(dev.to_device(x)), x)


@pytest.mark.timeout(60)
def test_scalars_arrive_with_their_types(make_device):
    dev = make_device(kernels=[tk.echo_scalars])
    out = dev.zeros((4096,), np.uint8)
    scalars = (3, -2**63, 2.5, True, np.int32(7), np.float32(0.25),
               np.array([5, 6, 7], np.int32), np.array([1.5, -2.0], np.float32), [1, 2])
    dev.run(lambda rt: rt.submit(tk.echo_scalars, Out(out), *scalars))
    got = bytes(dev.to_host(out)).rstrip(b"\0").decode()
    expect = repr([("int", None, 3), ("int", None, -2**63), ("float", None, 2.5), ("bool", None, True),
                   ("int", None, 7), ("float", None, 0.25), ("ndarray", "int32", [5, 6, 7]),
                   ("ndarray", "float32", [1.5, -2.0]), ("ndarray", "int64", [1, 2])])
    assert got == expect


@pytest.mark.timeout(60)
def test_limits_16_tensors_and_128_scalars_are_accepted(make_device):
    dev = make_device(kernels=[tk.mix, tk.noop])
    bufs = [dev.zeros((4,), np.int64) for _ in range(16)]
    dirs = np.array([1] * 15 + [3])

    def orch(rt):
        rt.submit(tk.mix, *[In(b) for b in bufs[:15]], InOut(bufs[15]), dirs, 5)
        rt.submit(tk.noop, *range(128))
    dev.run(orch)
    assert dev.to_host(bufs[15]).tolist() != [0, 0, 0, 0]


@pytest.mark.timeout(60)
def test_views_write_disjoint_parts_and_task_ids_increase(make_device):
    dev = make_device(Platform(blocks=2), kernels=[tk.fill])
    m = dev.zeros((6, 8), np.int32)
    ids = []

    def orch(rt):
        ids.append(rt.submit(tk.fill, Out(m[0]), 1))                 # a row (int index)
        ids.append(rt.submit(tk.fill, Out(m[1:3, 2:5]), 2))          # a box
        ids.append(rt.submit(tk.fill, Out(m.view((2, 2), (4, 6))), 3))
        ids.append(rt.submit(tk.fill, Out(m[5, :2]), 4))
    dev.run(orch)
    ref = np.zeros((6, 8), np.int32)
    ref[0] = 1
    ref[1:3, 2:5] = 2
    ref[4:6, 6:8] = 3
    ref[5, :2] = 4
    assert np.array_equal(dev.to_host(m), ref)
    assert ids == sorted(ids) and len(set(ids)) == 4


@pytest.mark.timeout(60)
def test_reshape_and_view_of_runtime_tensor(make_device):
    dev = make_device(Platform(blocks=2), kernels=[tk.fill, tk.add_into])
    out = dev.zeros((4, 6), np.float32)

    def orch(rt):
        with rt.scope():
            t = rt.make_tensor((24,), np.float32)
            rt.submit(tk.fill, Out(t), 1.5)
            rt.submit(tk.add_into, In(t.reshape(4, 6)), InOut(out))
            rt.submit(tk.add_into, In(t.reshape(4, 6)[1:3]), InOut(out[1:3]))
    dev.run(orch)
    ref = np.full((4, 6), 1.5, np.float32)
    ref[1:3] += 1.5
    assert np.array_equal(dev.to_host(out), ref)


@pytest.mark.timeout(60)
def test_chain_through_inout_is_ordered(make_device):
    dev = make_device(Platform(blocks=2), kernels=[tk.mix])
    x = dev.zeros((16,), np.int64)
    dirs = np.array([3])

    def orch(rt, n):
        for i in range(n):
            rt.submit(tk.mix, InOut(x), dirs, i)
    dev.run(orch, 500)
    ref = Device(Platform(blocks=1), kernels=[tk.mix], inline=True)
    xr = ref.zeros((16,), np.int64)
    x_saved, x = x, xr
    ref.run(orch, 500)
    assert np.array_equal(dev.to_host(x_saved), ref.to_host(xr))
    ref.close()


@pytest.mark.timeout(60)
def test_device_runs_many_times_and_synchronize(make_device):
    dev = make_device(Platform(blocks=2), kernels=[tk.add_into])
    acc = dev.zeros((8,), np.float32)
    one = dev.to_device(np.ones(8, np.float32))
    for _ in range(5):
        dev.run(lambda rt: [rt.submit(tk.add_into, In(one), InOut(acc)) for _ in range(20)])
    dev.synchronize()
    assert dev.to_host(acc).tolist() == [100.0] * 8
    assert dev.stats()["runs"] == 5


@pytest.mark.timeout(60)
def test_rt_synchronize_mid_run_sees_results(make_device):
    dev = make_device(Platform(blocks=1), kernels=[tk.fill])
    x = dev.zeros((4,), np.int32)
    seen = []

    def orch(rt):
        rt.submit(tk.fill, Out(x), 9)
        rt.synchronize()
        seen.append(dev.to_host(x).tolist())
    dev.run(orch)
    assert seen == [[9, 9, 9, 9]]


@pytest.mark.timeout(60)
def test_alloc_tensors_is_a_runtime_task_no_worker_runs(make_device):
    dev = make_device(Platform(blocks=1), kernels=[tk.add_into, tk.fill])
    out = dev.zeros((4,), np.float32)

    def orch(rt):
        with rt.scope():
            (acc,) = rt.alloc_tensors(((4,), np.float32))
            rt.submit(tk.fill, Out(acc), 2.0)
            rt.submit(tk.add_into, In(acc), InOut(out))
    dev.run(orch)
    st = dev.stats()
    assert st.runtime_tasks == 1 and st.worker_tasks == 2
    assert dev.to_host(out).tolist() == [2.0] * 4


@pytest.mark.timeout(120)
def test_examples_run_and_match_their_references(make_device):
    dev = make_device(Platform(blocks=3), kernels=["kernels.workloads.examples.vector_chain",
                                                   "kernels.workloads.examples.tiled_matmul",
                                                   "kernels.workloads.examples.mixed_shapes"])
    rng = np.random.default_rng(1)
    a = rng.standard_normal(5000).astype(np.float32)
    b = rng.standard_normal(5000).astype(np.float32)
    out = dev.empty((5000,), np.float32)
    dev.run(vector_chain.orchestrate, dev.to_device(a), dev.to_device(b), out, tile=512)
    assert np.allclose(dev.to_host(out), vector_chain.reference(a, b), rtol=1e-6)

    A = rng.standard_normal((96, 160)).astype(np.float32)
    B = rng.standard_normal((160, 72)).astype(np.float32)
    C = dev.empty((96, 72), np.float32)
    dev.run(tiled_matmul.orchestrate, dev.to_device(A), dev.to_device(B), C, tile=32)
    assert np.allclose(dev.to_host(C), tiled_matmul.reference(A, B, tile=32), rtol=1e-5, atol=1e-5)

    placements = dev.zeros((20 * 5, 3, 4), np.int64)
    dev.run(mixed_shapes.orchestrate, placements, 20)
    assert mixed_shapes.check(dev.to_host(placements)) == []


@pytest.mark.timeout(60)
def test_kernels_given_by_module_name_are_loaded(make_device):
    dev = make_device(kernels=["kernels.workloads.examples.vector_chain"])
    names = {k.name for k in dev.kernels}
    assert {"kernels.workloads.examples.vector_chain.add", "kernels.workloads.examples.vector_chain.mul"} <= names


@pytest.mark.timeout(60)
def test_mixed_needs_a_part():
    with pytest.raises(ValueError, match="at least one part"):
        Mixed()
