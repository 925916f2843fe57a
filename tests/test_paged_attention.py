"""The paged-attention pipeline on the emulated device: every variant, every small case, the
task-count saving of first_output/alloc over hub, and tiny rings that force back-pressure."""

from __future__ import annotations

import numpy as np
import pytest

import kernels.workloads.paged_attention as pa
from host import Device, Platform
from host.run import build_on

SMALL_CASES = [n for n in pa.CASES if n not in ("Case1", "Case2", "Case3")]


def run_case(dev: Device, case: str, variant: str, unroll: int | None = None, seed: int = 0):
    params = pa.case_params(case)
    unroll = unroll or params["unroll"]
    h, data = build_on(dev, pa.WORKLOAD, params, seed)
    scale = pa.scale_of(params)
    before = dev.stats()
    shape = dev.run(pa.orchestrate, data["query"], data["key_cache"], data["value_cache"],
                    data["block_table"], data["context_lens"], data["out"], scale=scale,
                    variant=variant, unroll=unroll)
    after = dev.stats()
    want = pa.golden(h["query"], h["key_cache"], h["value_cache"], h["block_table"],
                     h["context_lens"], scale, unroll=unroll)
    got = dev.to_host(data["out"])
    worker = after.worker_tasks - before.worker_tasks
    runtime = after.runtime_tasks - before.runtime_tasks
    for t in ("query", "key_cache", "value_cache", "block_table", "context_lens", "out"):
        dev.free(data[t])
    return got, want, shape, worker, runtime


@pytest.fixture(scope="module")
def dev():
    with Device(Platform(blocks=4), kernels=["kernels.workloads.paged_attention"]) as d:
        yield d


@pytest.mark.timeout(300)
@pytest.mark.parametrize("case", SMALL_CASES)
@pytest.mark.parametrize("variant", pa.VARIANTS)
def test_variant_matches_golden(dev, case, variant):
    got, want, shape, worker, runtime = run_case(dev, case, variant)
    np.testing.assert_allclose(got, want, rtol=1e-3, atol=1e-3)
    expect = pa.expected_tasks(shape["groups"], shape["chunks"], variant)
    assert (worker, runtime) == (expect["worker"], expect["runtime"])


@pytest.mark.timeout(300)
def test_first_output_and_alloc_save_one_worker_task_per_group(dev):
    counts = {}
    for variant in pa.VARIANTS:
        got, want, shape, worker, runtime = run_case(dev, "mixed_lens", variant)
        counts[variant] = (worker, runtime)
        np.testing.assert_allclose(got, want, rtol=1e-3, atol=1e-3)
    groups = shape["groups"]
    assert counts["hub"][0] - counts["first_output"][0] == groups
    assert counts["hub"][0] - counts["alloc"][0] == groups
    assert counts["alloc"][1] == groups and counts["first_output"][1] == 0


def test_case1_task_counts_are_1280_and_1024():
    shape = {"groups": 256, "chunks": 256}                    # Case1, unroll 64: one chunk per group
    p = pa.case_params("Case1")
    assert sum(len(pa.chunks(p["context_len"], p["block_size"], 64)) for _ in range(p["batch"])) == 256
    assert pa.expected_tasks(shape["groups"], shape["chunks"], "hub")["worker"] == 1280
    assert pa.expected_tasks(shape["groups"], shape["chunks"], "first_output")["worker"] == 1024


@pytest.mark.timeout(300)
@pytest.mark.parametrize("variant", pa.VARIANTS)
def test_tiny_task_ring_and_heap_still_give_the_right_answer(variant):
    # A 32-slot ring (just above the 30 records of the largest group scope here: a scope's tasks
    # cannot retire before it ends, so one scope must fit) and a 64 KiB heap: the host waits for
    # space all the time and both rings wrap around many times.
    platform = Platform(blocks=2, task_window=32, heap_bytes=64 * 1024, gm_bytes=64 << 20)
    with Device(platform, kernels=["kernels.workloads.paged_attention"]) as d:
        got, want, *_ = run_case(d, "unroll_1", variant)
        np.testing.assert_allclose(got, want, rtol=1e-3, atol=1e-3)
        got, want, *_ = run_case(d, "mixed_lens", variant, unroll=2)
        np.testing.assert_allclose(got, want, rtol=1e-3, atol=1e-3)
        assert d.stats()["host"]["waits"] > 0           # back-pressure really happened


@pytest.mark.timeout(300)
def test_case1_shapes_on_the_72_core_device_bitwise_equal_inline():
    with Device(Platform.a2a3(), kernels=["kernels.workloads.paged_attention"]) as d:
        got, want, *_ = run_case(d, "case1_b2", "first_output")
    with Device(Platform.a2a3(), kernels=["kernels.workloads.paged_attention"], inline=True) as ref:
        inl, *_ = run_case(ref, "case1_b2", "first_output")
    np.testing.assert_allclose(got, want, rtol=1e-3, atol=1e-3)
    np.testing.assert_array_equal(got, inl)


@pytest.mark.timeout(60)
def test_orchestrate_rejects_a_bad_variant(dev):
    _, data = build_on(dev, pa.WORKLOAD, pa.case_params("small"), 0)
    with pytest.raises(ValueError, match="variant"):
        dev.run(pa.orchestrate, data["query"], data["key_cache"], data["value_cache"],
                data["block_table"], data["context_lens"], data["out"], scale=1.0, variant="nope")
