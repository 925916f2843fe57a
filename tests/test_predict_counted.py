"""Predictions from counted costs (issue 19): the tile layer's counts travel from the cores into the
recorded graph (format 2) on both engines; predict prices a task from them first, from its
kernel's law second, from the roofline last (and says so in its first line); both metrics come
with a band that holds the point; version 1 recordings still predict. The calibration points are
in tests/test_predict_calibration.py."""

from __future__ import annotations

import json

import numpy as np
import pytest
import testkernels as tk

import kernels.workloads.paged_attention as pa
from host import Device, In, Out, Platform
from host.cli import main
from host.graph import COUNT_FIELDS, Graph, Recording
from host.predict import Cost, predict
from host.run import build_on
from kernels import a2a3, tile
from kernels.workloads.examples import alternating_matmul_add as alt

US = COUNT_FIELDS.index("us")
PA_CASE = {"batch": 6, "num_heads": 16, "head_dim": 32, "block_size": 16, "context_len": 100,
           "max_model_len": 256, "unroll": 2}


def _record(path: str, inline: bool, variants=("hub", "first_output")) -> str:
    with Device(Platform(blocks=2), kernels=["kernels.workloads.paged_attention"], record=path,
                inline=inline) as dev:
        params = pa.case_params(PA_CASE)
        _, d = build_on(dev, pa.WORKLOAD, params, 0)
        for variant in variants:
            dev.run(pa.orchestrate, d["query"], d["key_cache"], d["value_cache"], d["block_table"],
                    d["context_lens"], d["out"], scale=pa.scale_of(params), variant=variant, unroll=2)
    return path


@pytest.fixture(scope="module")
def graphs(tmp_path_factory) -> dict[str, str]:
    """The same paged attention recorded on a process device and on the sequential engine."""
    tmp = tmp_path_factory.mktemp("counted")
    return {"device": _record(str(tmp / "device.jsonl"), False), "inline": _record(str(tmp / "inline.jsonl"), True)}


# -- counts into the recording --------------------------------------------------------------------


@pytest.mark.timeout(120)
def test_both_engines_record_every_task_counted_and_the_same_counts(graphs):
    dev, inl = Graph.load(graphs["device"]), Graph.load(graphs["inline"])
    with Recording(graphs["device"]) as rec:
        assert rec.head["version"] == 2 and rec.head["counted"] == len(dev.tasks)
    assert dev.tasks and all(r.counts is not None for r in dev.tasks)
    for a, b in zip(dev.tasks, inl.tasks):                 # a kernel's count depends on its shapes only
        assert a.counts == b.counts
    # one part per single-core kernel, in its lane: QK/PV on the cube, SF/UP/HUB on a vector core
    names = [k["name"].rsplit(".", 1)[-1] for k in dev.kernels]
    for r in dev.tasks:
        lane = 0 if names[r.kernel] in ("qk", "pv") else 1
        assert [i for i, c in enumerate(r.counts) if c is not None] == [lane]


@pytest.mark.timeout(120)
@pytest.mark.parametrize("inline", [False, True], ids=["device", "inline"])
def test_spmd_blocks_fold_into_the_slowest_block_and_all_bytes(tmp_path, inline):
    # 5 tiles over 3 blocks: blocks 0 and 1 take two tiles, block 2 one
    x = np.arange(5 * 16 * 64, dtype=np.float32).reshape(80, 64)
    path = str(tmp_path / "g.jsonl")
    with Device(Platform(blocks=2), kernels=[tk.tile_spmd_scale, tk.tile_mixed_half], record=path,
                inline=inline) as dev:
        gx, gout = dev.to_device(x), dev.empty(x.shape, np.float32)
        gy = dev.empty((32, 128), np.float32)
        dev.run(lambda rt: (rt.submit(tk.tile_spmd_scale, In(gx), Out(gout), 2.0, blocks=3),
                            rt.submit(tk.tile_mixed_half, In(dev.to_device(np.ones((32, 128), np.float32))),
                                      Out(gy), 3.0)))
        assert np.array_equal(dev.to_host(gout), 2 * x)
    spmd, mixed = Graph.load(path).tasks
    two = tile.count(tk.tile_spmd_scale.fn, x[:32], np.empty((32, 64), np.float32), 2.0)   # a two-tile block
    assert spmd.counts[1][US] == pytest.approx(two.us, rel=1e-3)          # the slowest block's Counts
    assert spmd.gm == (x.nbytes, x.nbytes)                               # every block's bytes
    assert mixed.counts is None            # its AIC part runs no tile instruction: not counted at all


@pytest.mark.timeout(30)
def test_task_time_is_the_slowest_part():
    c = tile.count(alt.add.fn, *(np.zeros(16384, np.float32) for _ in range(3)))
    m = tile.count(alt.matmul.fn, *(np.zeros(16384, np.float32) for _ in range(3)))
    assert a2a3.task_time([m, c, None]) == (max(m.us, c.us), max(m.us_low, c.us_low), max(m.us_high, c.us_high))
    assert a2a3.task_time([None, c, None]) == (c.us, c.us_low, c.us_high)
    with pytest.raises(ValueError, match="at least one part"):
        a2a3.task_time([None, None, None])


@pytest.mark.timeout(30)
def test_alternating_kernels_count_what_the_reference_kernels_move():
    n = 3
    a, b = (np.random.default_rng(0).standard_normal(n * 16384).astype(np.float32) for _ in range(2))
    c, z = np.empty_like(a), np.empty_like(a)
    mm, ad = tile.count(alt.matmul.fn, a, b, c), tile.count(alt.add.fn, a, b, z)
    t = n * 16384 * 4                                    # bytes of one operand
    assert (mm.gm_read, mm.gm_write, ad.gm_read, ad.gm_write) == (2 * t, t, 2 * t, t)
    assert np.allclose(c.reshape(n, 128, 128), a.reshape(n, 128, 128) @ b.reshape(n, 128, 128), rtol=1e-4, atol=1e-4)
    assert np.array_equal(z, a + b)
    assert mm.cube > 0 and ad.vector > 0 and mm.us_low < mm.us < mm.us_high


# -- predict: counted first, law second, roofline last --------------------------------------------


@pytest.mark.timeout(60)
def test_counted_costs_come_before_the_law(graphs):
    counted = predict(graphs["inline"])
    assert all(v == "counted (tile layer)" for k, v in counted.laws.items() if k.endswith((".qk", ".sf", ".pv")))
    g = Graph.load(graphs["inline"])
    qk = g.kernels.index(next(k for k in g.kernels if k["name"].endswith(".qk")))
    for r in g.records:
        if r.counts is not None and r.kernel == qk:
            r.counts[0][US] *= 10                       # counted QK ten times slower: the prediction follows
    slower = predict(g)
    assert slower.total.busy["AIC"] > counted.total.busy["AIC"] * 3
    # a law given to predict() is a what-if: it replaces the counted costs of its kernel
    what_if = predict(g, laws={"qk": lambda t: Cost(1.0, 0)})
    n_qk = sum(1 for r in g.tasks if r.kernel == qk)
    assert what_if.kernel_costs["qk"] == {"counted": 0, "law": n_qk, "roofline": 0}
    assert what_if.total.busy["AIC"] < counted.total.busy["AIC"]


@pytest.mark.timeout(60)
def test_version_1_recordings_still_predict_from_their_laws(graphs, tmp_path):
    lines = open(graphs["inline"]).read().splitlines()
    head = json.loads(lines[0])
    head["version"] = 1
    del head["counted"]
    old = [json.dumps(head)]
    for text in lines[1:]:
        d = json.loads(text)
        d.pop("c", None)
        d.pop("cg", None)
        old.append(json.dumps(d))
    v1 = tmp_path / "v1.jsonl"
    v1.write_text("\n".join(old) + "\n")
    pr = predict(str(v1))
    law = "law kernels.workloads.paged_attention.laws."
    assert all(pr.laws[k["name"]].startswith(law) for k in Graph.load(str(v1)).kernels
               if k["name"].rsplit(".", 1)[-1] in ("qk", "sf", "pv", "up", "hub"))
    assert pr.kernel_costs["qk"] == {"counted": 0, "law": 2 * 6 * 4, "roofline": 0}     # 2 runs, 6 x 4 chunks
    assert pr.effective_us > 0 and not pr.roofline_kernels
    assert pr.effective_us != predict(graphs["inline"]).effective_us


@pytest.mark.timeout(60)
def test_a_roofline_guess_is_named_in_the_first_line_and_widens_the_band(capsys, tmp_path):
    # no counts (a numpy kernel) and no law: the roofline default
    path = str(tmp_path / "g.jsonl")
    with Device(Platform(blocks=1), kernels=[tk.mix], record=path, inline=True) as dev:
        a = dev.to_device(np.arange(4096, dtype=np.int64))
        out = dev.empty((4096,), np.int64)
        dev.run(lambda rt: [rt.submit(tk.mix, In(a), Out(out), np.array([1, 2]), i) for i in range(4)])
    pr = predict(path)
    assert pr.roofline_kernels == ["mix"] and pr.kernel_costs["mix"]["roofline"] == 4
    first = str(pr).splitlines()[0]
    assert "ROOFLINE GUESS" in first and "mix" in first
    assert main(["predict", path]) == 0
    assert "ROOFLINE GUESS for kernel mix" in capsys.readouterr().out.splitlines()[0]
    narrow = predict(path, roofline_band=1.0)            # [1/2, 1]x instead of [1/2, 4]x
    assert pr.effective_us_range[1] > narrow.effective_us_range[1]
    assert pr.to_json()["roofline_kernels"] == ["mix"] and "ROOFLINE" in pr.to_json()["headline"]


# -- both metrics, each with a band ---------------------------------------------------------------


@pytest.mark.timeout(60)
def test_every_band_holds_its_point_and_the_old_keys_stay(graphs):
    pr = predict(graphs["device"])
    for r, runs in ((pr.runs[0], 1), (pr.runs[1], 1), (pr.total, 2)):
        lo, hi = r.effective_us_range
        assert lo < r.effective_us < hi                  # a real band around the point
        dlo, dhi = r.device_us_range
        assert dlo <= r.device_us <= dhi
        assert r.device_us == pytest.approx(r.effective_us + runs * pr.params.run_overhead_us)
    js = pr.to_json()
    assert {"device_us", "orchestration_us", "critical_path_us", "bound", "bound_resource", "utilisation",
            "effective_us", "effective_us_range", "device_us_range", "kernel_costs", "band"} <= set(js)
    assert all({"effective_us", "effective_us_range", "device_us_range"} <= set(r) for r in js["runs"])
    flat = predict(graphs["device"], band=False)
    assert flat.effective_us == pr.effective_us and flat.effective_us_range == (pr.effective_us,) * 2
    # every parameter has a stated range or is exact: none is left without one by mistake
    from host.predict.params import PARAMS
    assert all(p.low is not None or p.high is not None or p.name in EXACT for p in PARAMS)


EXACT = {"clusters", "sched_threads", "task_window", "heap_bytes", "core_slots", "law_scale", "aic_tflops",
         "law_band", "roofline_band", "hbm_peak_gbps"}


@pytest.mark.timeout(60)
def test_run_predict_prints_both_metrics(capsys, tmp_path):
    assert main(["run", "paged_attention_unroll", "--inline", "--blocks", "2", "--predict"]) == 0
    line = next(x for x in capsys.readouterr().out.splitlines() if "predicted on an a2a3 chip" in x)
    assert "effective" in line and "device wall" in line and "[" in line


@pytest.mark.timeout(30)
def test_validate_flags_are_checked_before_any_work(capsys, tmp_path):
    assert main(["predict", "--catalogue"]) == 2
    assert "--catalogue goes with --validate" in capsys.readouterr().err
    assert main(["predict", "--validate", str(tmp_path / "x.jsonl")]) == 2
    assert "give no recording" in capsys.readouterr().err
    with pytest.raises(SystemExit) as ei:                # an output that cannot be written: before minutes of work
        main(["predict", "--validate", "--json", str(tmp_path / "no" / "such" / "dir.json")])
    assert ei.value.code == 2 and "--json" in capsys.readouterr().err


@pytest.mark.timeout(30)
def test_the_carried_fields_are_the_tile_layers_and_a_bad_row_is_named(tmp_path, graphs):
    # the graph's "c" rows carry these Counts fields, in this order: a field renamed in the tile
    # layer must be renamed here too (device/codec.py COUNT_FIELDS)
    assert set(COUNT_FIELDS) <= set(tile.Counts.__slots__)
    lines = open(graphs["inline"]).read().splitlines()
    k = next(i for i, x in enumerate(lines) if '"c":' in x)
    bad = json.loads(lines[k])
    bad["c"] = [[1, 2, 3], None, None]                    # a truncated row
    lines[k] = json.dumps(bad)
    path = tmp_path / "bad.jsonl"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(ValueError, match=rf"task \d+: counted costs .*: expected \[AIC, AIV0, AIV1\].*"
                                         rf"{len(COUNT_FIELDS)} numbers"):
        predict(str(path))
