"""ptoemu predict streams its recording: in this process, or through a reader process for big files
(host/predict/stream.py). Both must give exactly the prediction of the whole graph held in memory,
report a bad record by its number, and leave no process behind (conftest checks)."""

from __future__ import annotations

import json

import pytest

import kernels.workloads.paged_attention as pa
from host import Device, Platform
from host.graph import Graph
from host.predict import predict, stream
from host.run import build_on


@pytest.fixture(scope="module")
def pa_graph(tmp_path_factory) -> str:
    """Three runs (hub, first_output, alloc) of a small paged attention."""
    path = str(tmp_path_factory.mktemp("stream") / "pa.graph.jsonl")
    with Device(Platform(blocks=4), kernels=["kernels.workloads.paged_attention"], record=path, inline=True) as dev:
        params = pa.case_params("small")
        _, d = build_on(dev, pa.WORKLOAD, params, 0)
        for variant in ("hub", "first_output", "alloc"):
            dev.run(pa.orchestrate, d["query"], d["key_cache"], d["value_cache"], d["block_table"],
                    d["context_lens"], d["out"], scale=pa.scale_of(params), variant=variant, unroll=4)
    return path


def _same(a, b) -> bool:
    return json.dumps(a.to_json(), sort_keys=True) == json.dumps(b.to_json(), sort_keys=True)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("run", [None, 1])
def test_file_in_process_reader_process_and_graph_give_the_same_prediction(pa_graph, run, monkeypatch):
    whole = predict(Graph.load(pa_graph), run=run, task_window=64)     # the graph held in memory
    inline = predict(pa_graph, run=run, task_window=64)
    monkeypatch.setattr(stream, "READER_MIN_BYTES", 0)                  # every file through a reader process
    piped = predict(pa_graph, run=run, task_window=64)
    whole.source = inline.source = piped.source = "x"
    assert _same(whole, inline) and _same(whole, piped)
    assert len(piped.inputs[0].kind) == piped.runs[0].counts["records"]      # the model saw every record


@pytest.mark.timeout(60)
@pytest.mark.parametrize("piped", [False, True], ids=["in-process", "reader-process"])
def test_a_bad_record_half_way_is_named(pa_graph, piped, tmp_path, monkeypatch):
    if piped:
        monkeypatch.setattr(stream, "READER_MIN_BYTES", 0)
    lines = open(pa_graph).read().splitlines()
    head = json.loads(lines[0])
    k = len(lines) // 2
    bad = json.loads(lines[k])
    bad["a"] = [["In", "float32"]]                                       # a truncated argument
    lines[k] = json.dumps(bad)
    path = tmp_path / "bad.jsonl"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(ValueError, match=rf"record {k - 1} \(task \d+\): tensor argument \['In', 'float32'\]"):
        predict(str(path))
    cut = tmp_path / "cut.jsonl"
    cut.write_text("\n".join(lines[:k]) + "\n")                          # truncated: fewer records than announced
    with pytest.raises(ValueError, match=f"announces {head['records']} records but the file holds {k - 1}|"
                                         r"records \[\d+, \d+\) announced, the recording ends after"):
        predict(str(cut))


@pytest.mark.timeout(30)
def test_a_predicate_operand_is_submitted_and_holds_its_allocator_like_an_argument():
    from host.graph import Arg, Record
    from host.predict import Cost
    kernels = [{"name": "t.k", "shape": "AIV", "module": "ptoemu_no_such_module"}]
    rt = Arg("Out", "float32", (4,), 16, 0, 0, (0, 16))                 # a runtime buffer task 0 allocates
    op = Arg("In", "float32", (), 4, 0, 0, (0, 4))                      # t[0] of it, read by a predicate

    def graph(pred: bool) -> Graph:
        recs = [Record(0, "task", 1, 0, [rt], heap=16), Record(1, "scope_end", 1),
                Record(2, "task", 0, 0, [], preds=[0], pred=(op, "==", 1.0) if pred else None)]
        return Graph(kernels, recs, runs=[(0, 3)])

    law = {"k": lambda t: Cost(10.0, 0)}
    without, with_pred = predict(graph(False), laws=law), predict(graph(True), laws=law)
    p = with_pred.params
    assert with_pred.orchestration_busy_us - without.orchestration_busy_us == pytest.approx(p.orch_arg_us)
    assert list(with_pred.inputs[0].owners[2]) == [0] and not list(without.inputs[0].owners[2])
