"""ptoemu predict: the a2a3 model against closed forms, on recorded paged attention, and its command line.

Synthetic graphs are built as host.graph.Graph objects with one kernel whose cost law is given to
predict(laws=...), so every expected time below is computed from the model's parameters.
"""

from __future__ import annotations

import json
import math
import re

import pytest

import kernels.workloads.paged_attention as pa
from host import Device, Platform
from host.cli import main
from host.graph import Arg, Graph, Record
from host.predict import Cost, ModelDeadlock, TaskInfo, compare, predict, resolve
from host.run import build_on
from kernels.workloads.paged_attention import laws as pa_laws

# A module name that cannot be imported: the synthetic kernel's law comes from predict(laws=...).
NO_MODULE = "ptoemu_test_predict_no_such_module"

# Every control-path cost off: only kernel time and the core count are left.
ZERO = {"orch_submit_us": 0, "orch_arg_us": 0, "orch_edge_us": 0, "orch_scope_end_us": 0, "orch_scope_task_us": 0,
        "sched_task_us": 0, "sched_edge_us": 0, "sched_poll_us": 0, "dispatch_start_us": 0, "fin_visible_us": 0,
        "core_switch_us": 0, "run_overhead_us": 0}


def synth(n: int, *, shape: str = "AIV", chain: bool = False, nbytes: int = 0) -> Graph:
    """n tasks of one kernel, each with one In argument of ``nbytes``; a chain if ``chain``."""
    recs = [Record(i, "task", 0, 0, [Arg("In", "float32", (max(nbytes // 4, 1),), nbytes, i, -1)], [], 0,
                   [i - 1] if chain and i else []) for i in range(n)]
    return Graph([{"name": "synth.k", "shape": shape, "module": NO_MODULE}], recs, runs=[(0, n)])


def law(us: float, hbm: float = 0) -> dict:
    return {"k": lambda t: Cost(us, int(hbm))}


def close(got: float, expected: float, tol: float = 0.02) -> bool:
    return abs(got - expected) <= tol * expected


# -- closed forms ---------------------------------------------------------------------------------


@pytest.mark.timeout(30)
def test_independent_tasks_run_in_waves_over_the_vector_cores():
    p = resolve(None, ZERO)
    n, d = 5 * 2 * p.clusters + 1, 10.0          # five full waves over the 48 AIV cores, and one task more
    pr = predict(synth(n), laws=law(d), **ZERO)
    assert close(pr.device_us, math.ceil(n / (2 * p.clusters)) * d)
    assert pr.bound_resource == "AIV"


@pytest.mark.timeout(30)
def test_chain_pays_the_control_path_once_per_task():
    n, d = 100, 10.0
    pr = predict(synth(n, chain=True), laws=law(d), sched_poll_us=0)
    p = pr.params
    per_task = p.sched_dispatch_us + p.dispatch_start_us + d + p.fin_visible_us + p.sched_complete_us
    first_submit = p.orch_submit_us + p.orch_arg_us
    # every completion but the last also releases its one consumer (sched_edge_us); the critical
    # path, a floor, leaves that out
    assert close(pr.device_us, p.run_overhead_us + first_submit + n * per_task + (n - 1) * p.sched_edge_us, 0.001)
    assert pr.effective_us == pytest.approx(pr.device_us - p.run_overhead_us)
    assert pr.critical_path_us == pytest.approx(p.run_overhead_us + first_submit + n * per_task)
    assert pr.counts["critical_path_tasks"] == n
    assert pr.bound_resource == "critical path"


@pytest.mark.timeout(30)
def test_chain_on_one_cluster_waits_for_the_poll_sweep():
    # One thread sweeping one cluster (3 cores, period P): a completion is noticed at the first read of
    # its core after end + fin, and the successor is dispatched at the end of that sweep.
    n, d = 100, 10.0
    pr = predict(synth(n, chain=True, shape="AIC"), laws=law(d), clusters=1, sched_threads=1)
    p = pr.params
    P = 3 * p.sched_poll_us
    sweeps = math.ceil((p.dispatch_start_us + d + p.fin_visible_us) / P)
    per_task = p.sched_dispatch_us + p.sched_complete_us + P * (sweeps + 1)
    first_dispatch = math.ceil((p.orch_submit_us + p.orch_arg_us) / P) * P
    expected = p.run_overhead_us + first_dispatch + n * per_task - (P - p.sched_poll_us) + (n - 1) * p.sched_edge_us
    assert close(pr.device_us, expected, 0.001)
    assert pr.device_us > pr.critical_path_us         # the poll phase is not in the critical path


@pytest.mark.timeout(30)
def test_hbm_bound_graph_takes_total_bytes_over_the_cap():
    n, nbytes = 960, 1 << 20                    # each task alone would stream 1 MiB in 5 us (210 GB/s)
    pr = predict(synth(n, nbytes=nbytes), laws=law(5.0, nbytes), run_overhead_us=0, orch_submit_us=0,
                 orch_arg_us=0)
    cap = pr.params.hbm_gbps * 1e3               # bytes per us
    assert close(pr.device_us, n * nbytes / cap)
    assert pr.bound_resource == "HBM"
    assert 0.95 <= pr.utilisation["HBM"] <= 1.0
    slower = predict(synth(n, nbytes=nbytes), laws=law(5.0, nbytes), run_overhead_us=0, orch_submit_us=0,
                     orch_arg_us=0, hbm_gbps=pr.params.hbm_gbps / 2)
    assert close(slower.device_us, 2 * pr.device_us)


@pytest.mark.timeout(30)
def test_orchestrator_bound_graph_takes_one_submit_per_task():
    n = 2000
    pr = predict(synth(n), laws=law(1.0), orch_submit_us=1.0, sched_task_us=0.3)
    p = pr.params
    assert close(pr.device_us, p.run_overhead_us + n * (p.orch_submit_us + p.orch_arg_us))
    assert pr.bound_resource == "orchestrator"
    assert pr.orchestration_busy_us == pytest.approx(n * (p.orch_submit_us + p.orch_arg_us))


@pytest.mark.timeout(30)
def test_scheduler_bound_graph_takes_sched_task_us_per_task_per_thread():
    n = 3000                                    # tiny tasks, plenty of idle cores, a near-free orchestrator
    pr = predict(synth(n), laws=law(1.0), orch_submit_us=0.01, orch_arg_us=0, sched_poll_us=0,
                 run_overhead_us=0)
    p = pr.params
    assert close(pr.device_us, n / p.sched_threads * p.sched_task_us)
    assert pr.bound_resource.startswith("sched")
    slower = predict(synth(n), laws=law(1.0), orch_submit_us=0.01, orch_arg_us=0, sched_poll_us=0,
                     run_overhead_us=0, sched_task_us=2 * p.sched_task_us)
    assert close(slower.device_us, 2 * pr.device_us)


@pytest.mark.timeout(30)
def test_spmd_mixed_and_coreless_tasks():
    d = 10.0

    def one(blocks: int, sync: bool = False) -> Graph:
        return Graph([{"name": "synth.k", "shape": "AIV", "module": NO_MODULE}],
                     [Record(0, "task", 0, 0, blocks=blocks, sync=sync)], runs=[(0, 1)])

    assert predict(one(48), laws=law(d), **ZERO).device_us == pytest.approx(d)       # one block per AIV core
    assert predict(one(49), laws=law(d), **ZERO).device_us == pytest.approx(2 * d)
    assert predict(one(48, sync=True), laws=law(d), **ZERO).device_us == pytest.approx(d)
    with pytest.raises(ValueError, match="sync SPMD launch of 49 AIV blocks"):
        predict(one(49, sync=True), laws=law(d))
    mixed = synth(50, shape="AIC_AIV_X2")                   # a whole cluster each: 24 at a time
    assert predict(mixed, laws=law(d), **ZERO).device_us == pytest.approx(3 * d)
    # task -> dummy -> skipped task -> task: the two without a core cost one completion each
    recs = [Record(0, "task", 0, 0), Record(1, "dummy", 0, preds=[0]),
            Record(2, "task", 0, 0, preds=[1], skipped=True), Record(3, "task", 0, 0, preds=[2])]
    g = Graph([{"name": "synth.k", "shape": "AIV", "module": NO_MODULE}], recs, runs=[(0, 4)])
    pr = predict(g, laws=law(d), sched_poll_us=0)
    p = pr.params
    on_core = p.sched_dispatch_us + p.dispatch_start_us + d + p.fin_visible_us + p.sched_complete_us
    expected = p.run_overhead_us + p.orch_submit_us + 2 * on_core + 2 * p.sched_complete_us + 3 * p.sched_edge_us
    assert pr.device_us == pytest.approx(expected)
    assert pr.counts["jobs"] == 2 and pr.counts["dummies"] == 1 and pr.counts["skipped"] == 1


# -- rings ----------------------------------------------------------------------------------------


def scoped(groups: int, per_group: int) -> Graph:
    """groups scopes of per_group chained tasks, each allocating 1 KiB of heap, then a scope end."""
    recs: list[Record] = []
    for _ in range(groups):
        first = len(recs)
        for j in range(per_group):
            t = len(recs)
            recs.append(Record(t, "task", 1, 0, [Arg("Out", "float32", (256,), 1024, t, t)], [], 1024,
                               [t - 1] if j else []))
        recs.append(Record(len(recs), "scope_end", 1))
        assert recs[first].heap
    return Graph([{"name": "synth.k", "shape": "AIV", "module": NO_MODULE}], recs, runs=[(0, len(recs))])


@pytest.mark.timeout(30)
def test_a_small_task_window_blocks_the_orchestrator():
    g = scoped(groups=20, per_group=8)
    free = predict(g, laws=law(5.0))
    tight = predict(g, laws=law(5.0), task_window=10)        # room for one scope and a bit
    assert free.total.orchestration_blocked_us == 0
    assert tight.total.orchestration_blocked_us > 0
    assert tight.orchestration_us > free.orchestration_us + 100
    heap = predict(g, laws=law(5.0), heap_bytes=9 * 1024)     # the heap ring holds one scope
    assert heap.total.orchestration_blocked_us > 0


@pytest.mark.timeout(30)
def test_a_scope_larger_than_the_window_is_a_clear_error():
    g = scoped(groups=2, per_group=8)
    with pytest.raises(ModelDeadlock, match=r"task_window.*--set task_window=8"):
        predict(g, laws=law(5.0), task_window=4)
    with pytest.raises(ModelDeadlock, match="heap_bytes"):
        predict(g, laws=law(5.0), heap_bytes=4096)


# -- parameters and laws --------------------------------------------------------------------------


@pytest.mark.timeout(30)
def test_bad_parameters_name_the_key_and_what_was_expected():
    with pytest.raises(ValueError, match=r"'nope'.*known: clusters"):
        predict(synth(1), laws=law(1.0), nope=1)
    with pytest.raises(ValueError, match=r"task_window.*whole number"):
        predict(synth(1), laws=law(1.0), task_window=1.5)
    with pytest.raises(ValueError, match=r"sched_task_us.*>= 0"):
        predict(synth(1), laws=law(1.0), sched_task_us=-1)


@pytest.mark.timeout(30)
def test_kernels_without_a_law_get_the_roofline_and_say_so():
    p = resolve()
    big = 4 * (1 << 20)                                      # 4 MiB at core_gbps: above the floor
    pr = predict(synth(1, nbytes=big), **{**ZERO, "sched_task_us": 0})
    assert pr.laws["synth.k"] == "roofline default"
    assert any("roofline" in n and NO_MODULE in n for n in pr.notes)
    assert pr.device_us == pytest.approx(big / (p.core_gbps * 1e3))
    tiny = predict(synth(1, nbytes=64), **ZERO)
    assert tiny.device_us == pytest.approx(p.kernel_floor_us)


@pytest.mark.timeout(30)
def test_qk_law_charges_the_blocks_it_reads_not_the_whole_cache():
    cache = Arg("In", "bfloat16", (16384, 128, 1, 128), 16384 * 128 * 128 * 2, 2, -1)
    qi = Arg("In", "bfloat16", (16, 128), 16 * 128 * 2, 1, -1)
    sij = Arg("Out", "float32", (16, 64 * 128), 16 * 64 * 128 * 4, 3, 0)
    c = pa_laws.qk_cost(TaskInfo("kernels.workloads.paged_attention.kernels.qk", "AIC", [qi, cache, sij],
                                 [list(range(64))]))
    assert c.hbm_bytes == 64 * 128 * 128 * 2 + qi.nbytes
    assert c.us == pytest.approx(55.0)                       # the hardware median at Case1 shapes


# -- recorded paged attention ---------------------------------------------------------------------

PA_CASE = {"batch": 24, "num_heads": 16, "head_dim": 64, "block_size": 32, "context_len": 300,
           "max_model_len": 512, "unroll": 4}


@pytest.fixture(scope="module")
def pa_graph(tmp_path_factory) -> str:
    """One recording, three runs: hub, first_output, alloc (24 groups of 3 chunks)."""
    path = str(tmp_path_factory.mktemp("predict") / "pa.graph.jsonl")
    with Device(Platform(blocks=4), kernels=["kernels.workloads.paged_attention"], record=path, inline=True) as dev:
        _, d = build_on(dev, pa.WORKLOAD, pa.case_params(PA_CASE), 0)
        for variant in ("hub", "first_output", "alloc"):
            dev.run(pa.orchestrate, d["query"], d["key_cache"], d["value_cache"], d["block_table"],
                    d["context_lens"], d["out"], scale=pa.scale_of(pa.case_params(PA_CASE)), variant=variant,
                    unroll=4)
    return path


@pytest.mark.timeout(60)
def test_paged_attention_predicts_with_its_laws(pa_graph):
    pr = predict(pa_graph)
    assert [r.counts["tasks"] for r in pr.runs] == [24 * 13, 24 * 12, 24 * 12]
    assert pr.runs[2].counts["allocs"] == 24 and pr.runs[0].counts["allocs"] == 0
    # (other kernels of the package, e.g. the batched ones another test imported, may be loaded too)
    pipeline = {k: v for k, v in pr.laws.items() if k.rsplit(".", 1)[-1] in ("qk", "sf", "pv", "up", "hub")}
    # the kernels are on the tile layer: every task was counted as it ran, laws are the fallback
    assert len(pipeline) == 5 and all(v == "counted (tile layer)" for v in pipeline.values())
    assert all(c == {"counted": n, "law": 0, "roofline": 0} for c, n in
               zip((pr.kernel_costs[k] for k in ("qk", "sf", "pv", "up")), (24 * 3 * 3,) * 4))
    assert not pr.notes and not pr.roofline_kernels
    hub, first_output, alloc = pr.runs
    assert first_output.device_us < hub.device_us
    assert first_output.orchestration_busy_us < alloc.orchestration_busy_us     # alloc still submits
    for r in (*pr.runs, pr.total):
        assert r.bound.startswith("Bound by")
        assert set(r.utilisation) == {"AIC", "AIV", "orchestrator", "sched0", "sched1", "sched2", "HBM"}
        assert all(0.0 <= u <= 1.0 for u in r.utilisation.values())
        assert 0 < r.critical_path_us <= r.device_us
    assert pr.device_us == pytest.approx(sum(r.device_us for r in pr.runs))
    cmp = compare(pr.run(0), pr.run(1), labels=("hub", "first_output"))
    assert "faster" in cmp.sentence and re.search(r"-24 (tasks|submits)", cmp.sentence)   # one HUB per group


@pytest.mark.timeout(60)
def test_prediction_is_deterministic(pa_graph):
    a = json.dumps(predict(pa_graph, sched_task_us=1.7).to_json())
    b = json.dumps(predict(pa_graph, sched_task_us=1.7).to_json())
    assert a == b


# -- command line ---------------------------------------------------------------------------------


@pytest.mark.timeout(60)
def test_cli_predicts_and_writes_json_and_trace(pa_graph, tmp_path, capsys):
    out, trace = tmp_path / "p.json", tmp_path / "t.json"
    assert main(["predict", pa_graph, "--run", "1", "--set", "sched_task_us=2.5", "--json", str(out),
                 "--trace", str(trace)]) == 0
    assert "Bound by" in capsys.readouterr().out
    js = json.loads(out.read_text())
    assert {"device_us", "orchestration_us", "critical_path_us", "bound", "utilisation"} <= set(js)
    assert js["params"]["sched_task_us"] == 2.5
    ev = json.loads(trace.read_text())["traceEvents"]
    names = {(e["pid"], e["args"]["name"]) for e in ev if e.get("name") in ("thread_name", "process_name")}
    assert {(0, "runtime"), (0, "orchestrator"), (0, "scheduler 0"), (0, "scheduler 2"), (1, "block 0"),
            (1, "AIC"), (1, "AIV0"), (1, "AIV1")} <= names
    slices = {e["name"] for e in ev if e.get("ph") == "X" and e.get("cat") == "task"}
    assert slices == {"qk", "sf", "pv", "up"}


@pytest.mark.timeout(60)
def test_cli_compares_two_runs_and_sweeps(pa_graph, tmp_path, capsys):
    assert main(["predict", pa_graph, "--run", "0", "--run", "1"]) == 0
    out = capsys.readouterr().out
    assert "B is" in out and "submits" in out
    sweep = tmp_path / "s.json"
    assert main(["predict", pa_graph, "--run", "0", "--sweep", "sched_task_us=1,3", "--json", str(sweep)]) == 0
    rows = json.loads(sweep.read_text())["rows"]
    assert [r["sched_task_us"] for r in rows] == [1.0, 3.0]
    assert rows[0]["device_us"] < rows[1]["device_us"]


@pytest.mark.timeout(30)
def test_cli_rejects_bad_parameters_with_exit_2(capsys):
    assert main(["predict", "--params"]) == 0
    assert "sched_task_us" in capsys.readouterr().out
    assert main(["predict", "x.graph.jsonl", "--set", "bogus=1"]) == 2
    err = capsys.readouterr().err
    assert "'bogus'" in err and "known:" in err and "hbm_gbps" in err
    assert main(["predict", "x.graph.jsonl", "--set", "hbm_gbps=fast"]) == 2
    assert "hbm_gbps" in capsys.readouterr().err
    assert main(["predict", "x.graph.jsonl", "--sweep", "law_scale="]) == 2
    assert main(["predict", "/nonexistent/x.graph.jsonl"]) == 2


@pytest.mark.timeout(120)
def test_runs_can_predict_as_they_go(capsys, tmp_path):
    # ptoemu paged-attention --predict: the run is recorded as it goes and predicted right after
    assert main(["paged-attention", "--case", "small", "--variant", "all", "--blocks", "2", "--inline",
                 "--predict", "--record", str(tmp_path / "g.jsonl")]) == 0
    out = capsys.readouterr().out
    assert out.count("predicted on an a2a3 chip:") == len(pa.VARIANTS) and "PASS" in out
    g = Graph.load(str(tmp_path / "g.jsonl"))
    assert len(g.runs) == len(pa.VARIANTS) and g.n_edges > 0
    # bench paged-attention --predict: one predicted time per (case, unroll, variant)
    from host.bench import paged_attention as bench
    r = bench.run(["small"], ["hub", "first_output"], [None], blocks=2, rounds=1, predict=True, log=lambda s: None)
    assert all(row["predicted_a2a3_us"] > 0 and row["predicted_bound"] for row in r["rows"])
