"""Seeded inputs filled slice by slice (kernels/workloads/fill.py, issue 18 item 9): the same bits
whoever fills them -- plain numpy, a device of any size, the inline engine -- the distributions a
workload asks for, and big fills really running on the device's cores.

The full-size check (Case1 in numpy, on 2, 8 and 24 blocks and on the inline engine, 1 GiB each) is
a command, not a test: ``ptoemu bench inputs`` (a digest of the bits per builder, and build times).
"""

from __future__ import annotations

import math

import ml_dtypes
import numpy as np
import pytest

import kernels.workloads.paged_attention as pa
from host import Device, Platform
from host.graph import Graph
from host.run import FILL_KERNELS, build_on
from host.run import run as run_workload
from kernels.workloads import catalogue
from kernels.workloads import fill as F
from kernels.workloads.workload import Workload

BF16 = np.dtype(ml_dtypes.bfloat16)
FILL_TASK = F.fill_slice.name
CASE = "case1_b2"                 # Case1's shapes on 2 sequences: K and V are 2 slices each


def bits(a: np.ndarray) -> np.ndarray:
    return a.reshape(-1).view(f"u{a.dtype.itemsize}")


# -- one slice, one stream ---------------------------------------------------------------------------
@pytest.mark.timeout(60)
def test_a_slice_depends_only_on_its_stream():
    n = 2 * F.SLICE + 4099                       # a partial last slice, not a whole number of words
    whole = np.empty(n, BF16)
    F.fill(whole, F.uniform(-1, 1), 7, "x")
    # the slices filled one by one, last first, into memory holding garbage
    table = F.dist_table(F.uniform(-1, 1), BF16)
    parts = np.full(n, 3.0, BF16)
    for i in reversed(range(3)):
        F.fill_slice(parts[i * F.SLICE:(i + 1) * F.SLICE], table, 7, F.stream_id("x"), i)
    np.testing.assert_array_equal(bits(parts), bits(whole))
    # another seed, another name: other values
    for seed, name in ((8, "x"), (7, "y")):
        other = np.empty(n, BF16)
        F.fill(other, F.uniform(-1, 1), seed, name)
        assert (bits(other) != bits(whole)).mean() > 0.9


@pytest.mark.timeout(60)
@pytest.mark.parametrize("dtype", [BF16, np.dtype(np.float16), np.dtype(np.float32)], ids=str)
@pytest.mark.parametrize("lo,hi", [(-0.5, 0.5), (-1.0, 1.0), (0.25, 3.0), (-3.0, -0.25)])
def test_uniform_stays_in_range_and_is_flat(dtype, lo, hi):
    a = np.empty(1 << 21, dtype)
    F.fill(a, F.uniform(lo, hi), 0, "u")
    x = a.astype(np.float64)
    assert x.min() >= lo and x.max() < hi
    width = hi - lo
    assert abs(x.mean() - (lo + hi) / 2) < 0.01 * width
    assert abs(x.std() - width / math.sqrt(12)) < 0.01 * width
    counts, _ = np.histogram(x, bins=8, range=(lo, hi))
    assert np.all(np.abs(counts / x.size - 1 / 8) < 0.01), counts
    # the table: each bin's centre taken toward zero onto the dtype's grid (or clamped into range)
    t = F.dist_table(F.uniform(lo, hi), dtype).astype(np.float64)
    centres = lo + (np.arange(1 << 16) + 0.5) / (1 << 16) * width
    assert np.all(np.abs(t) <= np.abs(centres)) or lo * hi > 0
    assert np.abs(t - centres).max() <= np.abs(centres).max() * float(ml_dtypes.finfo(dtype).eps) * 2


@pytest.mark.timeout(60)
def test_symmetric_uniform_has_mean_zero_and_normal_its_moments():
    a = np.empty(1 << 22, BF16)
    F.fill(a, F.uniform(-0.5, 0.5), 1, "q")
    assert abs(a.astype(np.float64).mean()) < 1e-3          # rounding toward zero keeps it centred
    z = np.empty(1 << 22, np.float32)
    F.fill(z, F.normal(0.0, 0.01), 1, "A")
    assert abs(z.mean()) < 2e-5 and abs(z.std() - 0.01) < 1e-4
    assert abs(np.abs(z).max() - 4.3e-2) < 2e-3              # the outermost bins' centres: 4.3 std
    assert abs((np.abs(z) < 0.01).mean() - 0.6827) < 0.005   # one std holds 68.3 %


@pytest.mark.timeout(30)
def test_bad_fills_are_clear_errors():
    a = np.empty((4, 4), np.float32)
    with pytest.raises(ValueError, match="C-contiguous"):
        F.fill(a[:, ::2], F.uniform(0, 1), 0, "a")
    with pytest.raises(ValueError, match=r"seed=-1.*\[0, 2\*\*63\)"):
        F.fill(a, F.uniform(0, 1), -1, "a")
    with pytest.raises(ValueError, match="dtype int32"):
        F.fill(np.empty(4, np.int32), F.uniform(0, 1), 0, "a")
    with pytest.raises(ValueError, match="lo < hi"):
        F.uniform(1, 1)
    with pytest.raises(ValueError, match="std > 0"):
        F.normal(0, 0)
    with pytest.raises(TypeError, match="uniform.. or normal"):
        F.fill(a, (0, 1), 0, "a")
    with pytest.raises(ValueError, match="C-contiguous out"):
        F.fill_slice(a[:, ::2], F.dist_table(F.uniform(0, 1), np.float32), 0, 0, 0)


# -- the same bits on any device ---------------------------------------------------------------------
def _odd_build(params, seed, alloc):
    """An fp32 array of 2 slices and a bit (device-filled) and a small bf16 one (host-filled)."""
    big, small = alloc((2 * F.SLICE + 7,), np.float32), alloc((3, 5), BF16)
    F.fill(big, F.normal(0.5, 2.0), seed, "big", alloc)
    F.fill(small, F.uniform(-2, 2), seed, "small", alloc)
    return {"big": big, "small": small}


ODD = Workload(name="odd_fill", summary="fills of odd sizes", features=(), cases={"c": {}}, build=_odd_build,
               outputs=(), orchestrate=lambda rt, t, p, v: None, golden=lambda b, p, v: {})


@pytest.mark.timeout(300)
@pytest.mark.parametrize("wl,case,tasks", [(catalogue.load("paged_attention_unroll"), CASE, 4), (ODD, "c", 3)],
                         ids=["paged_attention", "odd_sizes"])
def test_same_bits_on_any_device_and_in_numpy(wl, case, tasks):
    params = wl.case(case)
    want = wl.build(params, 5, lambda shape, dtype: np.empty(shape, dtype))
    for blocks, inline in ((2, False), (8, False), (2, True)):
        with Device(Platform(blocks=blocks), kernels=[*wl.kernels, FILL_KERNELS], inline=inline) as dev:
            got, _ = build_on(dev, wl, params, 5)
            filled = dev.stats()["kernels"].get(FILL_TASK, {}).get("tasks", 0)
            for k, w in want.items():
                np.testing.assert_array_equal(bits(got[k]), bits(w), err_msg=f"{k} on {blocks} blocks")
        # device tasks fill the arrays of 2 slices or more, one task per slice: K and V (2 each),
        # big (3); the rest is filled in the host
        assert filled == tasks, (blocks, inline, filled)


@pytest.mark.timeout(120)
def test_generate_inputs_equals_the_runner_build():
    """Existing callers of generate_inputs (tests, sharding, benches) get the device's values."""
    inp = pa.generate_inputs(CASE, 3)
    wl = catalogue.load("paged_attention_unroll_4dims")       # a 4-D query over the same bytes
    params = {**wl.case("small"), **pa.CASES[CASE], "name": CASE}
    with Device(Platform(blocks=2), kernels=[*wl.kernels, FILL_KERNELS]) as dev:
        got, _ = build_on(dev, wl, params, 3)
    assert got["query"].shape == (2, 1, 16, 128)
    for k in ("query", "key_cache", "value_cache", "block_table", "context_lens"):
        np.testing.assert_array_equal(bits(got[k].reshape(inp[k].shape)), bits(inp[k]), err_msg=k)


@pytest.mark.timeout(180)
def test_a_recorded_run_holds_only_the_workload(tmp_path):
    """Inputs of a traced or recorded run are filled in the host: the graph and the trace are the
    workload's own; a plain run fills on the device and its rows count only the workload's tasks."""
    path = tmp_path / "g.jsonl"
    rows = run_workload("paged_attention_unroll", CASE, "first_output", blocks=2, record=str(path),
                        progress=False, log=lambda s: None)
    g = Graph.load(str(path))
    assert len(g.runs) == 1 and all(k["name"] != FILL_TASK for k in g.kernels)
    plain = run_workload("paged_attention_unroll", CASE, "first_output", blocks=2, progress=False,
                         log=lambda s: None)
    assert rows[0]["pass"] and plain[0]["pass"]
    assert plain[0]["tasks"] == rows[0]["tasks"] and FILL_TASK.rsplit(".", 1)[-1] not in plain[0]["tasks_by_kernel"]


@pytest.mark.timeout(180)
def test_bench_inputs_command_times_builders_and_compares_bits(capsys, tmp_path):
    from host.cli import main
    out = tmp_path / "inputs.json"
    assert main(["bench", "inputs", "--cases", CASE, "--blocks", "2", "--rounds", "1", "--json", str(out)]) == 0
    text = capsys.readouterr().out
    assert "paged_attention_unroll" in text and "DIFFERS" not in text
    import json
    r = json.loads(out.read_text())
    assert [(x["builder"], x["blocks"]) for x in r["rows"]] == [("numpy", None), ("device", 2), ("inline", None)]
    assert r["summary"]["same_bits"] and len({x["digest"] for x in r["rows"]}) == 1
    assert all(x["build_s_median"] > 0 and x["inputs_bytes"] == r["rows"][0]["inputs_bytes"] for x in r["rows"])
