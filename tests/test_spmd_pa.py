"""spmd_paged_attention (kernels/workloads/paged_attention/spmd.py): the reference's one-task SPMD
paged attention on intra-cluster pipes -- both engines bit for bit, lane-skew fuzzing, its launch.
(Its CI-sized cases against the golden run in tests/test_catalogue.py.)"""

from __future__ import annotations

import numpy as np
import pytest

from host import Device, Platform
from host.run import build_on, compare
from kernels.workloads import catalogue
from kernels.workloads.paged_attention import spmd

WL = catalogue.load("spmd_paged_attention")


def _run(case: str, blocks: int = 3, variant: str = "default", **device) -> tuple[np.ndarray, dict, dict]:
    params = WL.case(case)
    with Device(Platform(blocks=blocks, stall_timeout=60), kernels=list(WL.kernels), **device) as dev:
        arrays, tensors = build_on(dev, WL, params, 0)
        before = {k: v.copy() for k, v in arrays.items()}
        info = dev.run(WL.orchestrate, tensors, params, variant)
        st = dev.stats()
        return dev.to_host(tensors["out"]), before, {"info": info, "stats": st}


@pytest.mark.parametrize("case", ["small", "heads64"])
def test_both_engines_give_the_same_bits(case):
    got, _, _ = _run(case)
    inline, _, _ = _run(case, inline=True)
    np.testing.assert_array_equal(got, inline)


@pytest.mark.parametrize("case,skew,seed,variant", [
    ("small", "aiv1", 1, "default"), ("small", "aic", 2, "default"), ("heads64", "random", 3, "default"),
    ("small", "random", 4, "ffts")])
def test_lane_skew_fuzzing_keeps_the_golden_result(case, skew, seed, variant):
    got, before, _ = _run(case, variant=variant, schedule="random", seed=seed, jitter_us=50, skew=skew, skew_us=300)
    want = WL.golden(before, WL.case(case), variant)
    assert compare({"out": got}, want, WL.tolerance)["pass"]


def test_one_mixed_task_as_wide_as_the_device():
    _, _, r = _run("small", blocks=3)
    assert r["info"] == {"blocks": 3, "logical_blocks": 5, "q_tile": 16}
    assert r["stats"]["kernels"]["spmd_paged_attention.pa"]["tasks"] == 1
    _, _, r = _run("heads64", blocks=2, inline=True)
    assert r["info"] == {"blocks": 2, "logical_blocks": 3, "q_tile": 64}


def test_heads_not_a_multiple_of_the_q_tile_are_refused():
    params = dict(WL.case("small"), num_heads=24)
    with Device(Platform(blocks=1), kernels=list(WL.kernels), inline=True) as dev:
        _, tensors = build_on(dev, WL, params, 0)
        with pytest.raises(ValueError, match="num_heads=24 must be a multiple of q_tile=16"):
            dev.run(WL.orchestrate, tensors, params, "default")


def test_fifo_slots_are_sized_as_the_reference():
    # PAConfig<64>: SIJ 64 x 128 fp32, PIJ 64 x 128 bf16, OI 64 x 128 fp32, whatever the case's shapes
    assert spmd.slot_bytes(128, 128) == (32768, 16384, 32768)
    assert spmd.slot_bytes(64, 128) == (32768, 16384, 32768)


def test_the_coupled_prediction_counts_every_block_and_waits_for_the_slowest():
    from host.bench import pipe
    r = pipe.predict_spmd("small", blocks=3, log=lambda s: None)
    assert r["blocks"] == 3 and len(r["blocks_us"]) == 3
    assert r["us"] == max(r["blocks_us"]) and r["us_low"] <= r["us"] <= r["us_high"]
    assert r["us"] >= max(r["parts_alone_us"].values()) * 0.99      # coupling never makes a part faster


@pytest.mark.timeout(300)
def test_bench_pipe_command(tmp_path, capsys):
    from host.cli import main
    out = tmp_path / "pipe.json"
    assert main(["bench", "pipe", "--tiles", "50", "--rounds", "1", "--json", str(out)]) == 0
    text = capsys.readouterr().out
    assert "pipe round trip AIC -> AIV -> AIC" in text and "roundtrip" in text
    import json
    r = json.loads(out.read_text())
    assert r["bench"] == "pipe" and {row["scenario"] for row in r["rows"]} == {"roundtrip", "stream"}


def test_the_cost_law_replays_what_a_counted_run_of_the_kernels_couples():
    """ptoemu predict's law (counting pipes, no device) gives the busiest block's coupled time
    of a real counted run, for inputs whose sequences all have the cache's blocks / batch."""
    from collections import namedtuple

    from host.bench import pipe
    from kernels.cost import TaskInfo
    params = dict(WL.case("small"), name="uniform", context_len=64)       # 4 KV blocks of 16 each
    r = pipe.predict_spmd(params, blocks=2, log=lambda s: None)
    Arg = namedtuple("Arg", "dir dtype shape nbytes")
    cache = Arg("In", "bfloat16", (5 * 4, 16, 1, 32), 5 * 4 * 16 * 32 * 2)
    scalars = (0.17, 16, 32, 16, 16, 1, 5, 16)            # scale, heads, head_dim, block, cols, q_loop, total, q_tile
    cost = spmd.spmd_cost(TaskInfo("spmd_paged_attention.pa", "AIC_AIV_X2", [None, cache], scalars, blocks=2))
    assert cost.us == pytest.approx(r["us"], rel=1e-9)
    assert cost.hbm_bytes >= 3 * 2 * 4 * 16 * 32 * 2      # the busiest block's 3 sequences' K and V blocks


def test_the_schedule_fuzzer_takes_lane_skew():
    from host.fuzz import fuzz
    params = WL.case("small")

    def setup(dev):
        arrays, tensors = build_on(dev, WL, params, 0)
        return (tensors, params, "default"), {}, [tensors["out"]]

    report = fuzz(WL.orchestrate, setup, kernels=list(WL.kernels), seeds=range(2), platform=Platform(blocks=2),
                  skew="random", skew_us=200)
    assert report.ok, report
