"""Several devices behind one API: local processes and Ray actors give the same results as one
device; a lost device is replaced and its shard retried; sweeps merge and report failures."""

from __future__ import annotations

import importlib.util
import os
import signal

import numpy as np
import pytest
import testkernels as tk

import kernels.workloads.paged_attention as pa
from host import Device, KernelError, Platform
from host.bench import sweep
from host.cluster import DeviceGroup, ShardError
from kernels import Out
from kernels.workloads.paged_attention import sharding

HAVE_RAY = importlib.util.find_spec("ray") is not None


def one_device(inp, variant="first_output", unroll=4):
    with Device(Platform(blocks=2), kernels=["kernels.workloads.paged_attention"]) as dev:
        t = [dev.to_device(inp[n]) for n in ("query", "key_cache", "value_cache", "block_table", "context_lens")]
        b, h, d = inp["query"].shape
        out = dev.empty((b * h, d), np.float32)
        dev.run(pa.orchestrate, *t, out, scale=inp["scale"], variant=variant, unroll=unroll)
        return dev.to_host(out)


@pytest.fixture
def ray_local():
    import ray
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        yield ray
    finally:
        ray.shutdown()


@pytest.mark.timeout(300)
@pytest.mark.parametrize("case", ["mixed_lens", "small"])
def test_local_group_shards_equal_one_device(case):
    inp = pa.generate_inputs(case, 3)
    unroll = pa.case_params(case)["unroll"]
    want = one_device(inp, unroll=unroll)
    shards = sharding.shard(inp, 3, unroll=unroll)
    with DeviceGroup(2, Platform(blocks=2), kernels=["kernels.workloads.paged_attention"]) as g:   # 3 shards queue on 2
        got = sharding.gather(shards, g.run_sharded(pa.orchestrate, shards))
        assert all(t["attempts"] == 1 for t in g.timings)
    np.testing.assert_array_equal(got, want)


@pytest.mark.timeout(300)
def test_lost_device_is_replaced_and_its_shard_retried():
    inp = pa.generate_inputs("small", 1)
    want = one_device(inp)
    shards = sharding.shard(inp, 2, unroll=4)
    with DeviceGroup(2, Platform(blocks=1), kernels=["kernels.workloads.paged_attention"]) as g:
        os.kill(g.pids()[0][1], signal.SIGKILL)                 # a worker of device 0 dies
        got = sharding.gather(shards, g.run_sharded(pa.orchestrate, shards))
        assert g.retries == 1 and g.timings[0]["attempts"] == 2
    np.testing.assert_array_equal(got, want)


@pytest.mark.timeout(120)
def test_kernel_error_in_a_shard_is_reported_with_the_device_error():
    shards = [{"args": [np.zeros(4, np.float32)], "outputs": [], "kwargs": {}}] * 2

    def orch(rt, x):
        rt.submit(tk.fail, Out(x), 5)
    with DeviceGroup(2, Platform(blocks=1), kernels=[tk.fail]) as g:
        with pytest.raises(ShardError) as ei:
            g.run_sharded(orch, shards)
    assert isinstance(ei.value.error, KernelError) and "failed on purpose: 5" in str(ei.value)


@pytest.mark.timeout(300)
def test_local_sweep_merges_configurations_and_reports_a_failed_one():
    r = sweep.run("dispatch", {"tasks": 300, "rounds": 1}, {"blocks": [1, 2, 99]}, "local", log=lambda s: None)
    assert {row["sweep_blocks"] for row in r["rows"]} == {1, 2}
    assert [f["config"] for f in r["summary"]["failed"]] == [{"blocks": 99}]
    assert "blocks=99" in r["summary"]["failed"][0]["error"]


@pytest.mark.skipif(not HAVE_RAY, reason="the ray extra is not installed")
@pytest.mark.timeout(600)
def test_ray_group_equals_one_device_and_retries_a_lost_actor_device(ray_local):
    inp = pa.generate_inputs("mixed_lens", 2)
    want = one_device(inp)
    shards = sharding.shard(inp, 2, unroll=4)
    with DeviceGroup(2, Platform(blocks=1), kernels=["kernels.workloads.paged_attention"], backend="ray") as g:
        got = sharding.gather(shards, g.run_sharded(pa.orchestrate, shards))
        np.testing.assert_array_equal(got, want)
        os.kill(g.pids()[1][0], signal.SIGKILL)                # device 1's scheduler dies
        got = sharding.gather(shards, g.run_sharded(pa.orchestrate, shards))
        assert g.retries == 1
    np.testing.assert_array_equal(got, want)


@pytest.mark.skipif(not HAVE_RAY, reason="the ray extra is not installed")
@pytest.mark.timeout(600)
def test_ray_sweep(ray_local):
    r = sweep.run("granularity", {"rounds": 1, "sizes": [0, 300]}, {"blocks": [1, 2]}, "ray", cpus=1,
                  log=lambda s: None)
    assert not r["summary"]["failed"] and {row["sweep_blocks"] for row in r["rows"]} == {1, 2}
