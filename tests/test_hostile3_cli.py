"""What a hostile user tried on the command line (reliability, round three): ``ptoemu predict`` on
broken recordings and parameters the model divides by, output paths that cannot be written (checked
before the work, never a traceback after it), a workload run narrower than it can be. Each is a
one-line message and exit code 2. Commands are called in-process (host.cli.main)."""

from __future__ import annotations

import json
import os

import pytest

from host import run as runner
from host.cli import main
from kernels.workloads import catalogue

ARG = ["InOut", "float32", [4], 16, 0, -1, [0, 16], 0]
HEAD = {"format": "ptoemu-graph", "version": 1, "platform": {"name": "a2a3", "blocks": 2},
        "kernels": [{"name": "k.inc", "shape": "AIV", "module": "k"}], "runs": [[0, 2]], "records": 2}


def _write(path, head, recs) -> str:
    with open(path, "w") as f:
        f.write(json.dumps(head) + "\n")
        for r in recs:
            f.write(json.dumps(r) + "\n")
    return str(path)


@pytest.fixture
def ok_graph(tmp_path) -> str:
    return _write(tmp_path / "ok.jsonl", HEAD, [{"t": 0, "k": "task", "d": 0, "kn": 0, "a": [ARG]},
                                                 {"t": 1, "k": "task", "d": 0, "kn": 0, "a": [ARG], "p": [0]}])


def _usage(argv, capsys, *needles: str) -> str:
    """Run ``ptoemu argv``: exit code 2, one message on stderr holding every needle, no traceback;
    returns what it printed on stdout."""
    try:
        rc = main(argv)
    except SystemExit as e:              # argparse's own usage errors
        rc = e.code
    out, err = capsys.readouterr()
    assert rc == 2, (rc, err)
    assert "Traceback" not in err
    for n in needles:
        assert n in err, (n, err)
    return out


# -- ptoemu predict on recordings that are not ----------------------------------------------------

@pytest.mark.timeout(30)
def test_predict_names_what_is_wrong_with_a_recording(tmp_path, capsys):
    cycle = _write(tmp_path / "cycle.jsonl", HEAD, [{"t": 0, "k": "task", "d": 0, "kn": 0, "a": [ARG], "p": [1]},
                                                     {"t": 1, "k": "task", "d": 0, "kn": 0, "a": [ARG], "p": [0]}])
    _usage(["predict", cycle], capsys, "record 0 (task 0) waits for task 1, recorded after it", "cycle")
    short = _write(tmp_path / "short.jsonl", dict(HEAD, runs=[[0, 1]], records=1),
                   [{"t": 0, "k": "task", "d": 0, "kn": 0, "a": [["In", "float32"]]}])
    _usage(["predict", short], capsys, "record 0 (task 0): tensor argument ['In', 'float32']: expected [dir")
    nokern = _write(tmp_path / "nokern.jsonl", {"format": "ptoemu-graph", "version": 1, "records": 1},
                    [{"t": 0, "k": "task", "d": 0, "kn": 0}])
    _usage(["predict", nokern], capsys, "the header has no 'kernels' list")
    badkern = _write(tmp_path / "badkern.jsonl", dict(HEAD, runs=[[0, 1]], records=1),
                     [{"t": 0, "k": "task", "d": 0, "kn": 7, "sk": True}])
    _usage(["predict", badkern], capsys, "kernel index 7 is not in the header's 1 kernels")
    garbage = _write(tmp_path / "garbage.jsonl", dict(HEAD, runs=[[0, 1]], records=1), [])
    with open(garbage, "a") as f:
        f.write('{"t": 0, "k": "task"} trailing\n')
    _usage(["predict", garbage], capsys, "line 2: a record is not valid JSON")
    truncated = _write(tmp_path / "trunc.jsonl", HEAD, [{"t": 0, "k": "task", "d": 0, "kn": 0, "a": [ARG]}])
    _usage(["predict", truncated], capsys, "the header announces 2 records but the file holds 1 (truncated?)")


@pytest.mark.timeout(30)
@pytest.mark.parametrize("name", ["hbm_gbps", "core_gbps", "aic_tflops"])
def test_predict_refuses_parameters_it_would_divide_by_zero(name, ok_graph, capsys):
    _usage(["predict", ok_graph, "--set", f"{name}=0"], capsys, f"parameter {name}='0': expected a value > 0")
    _usage(["predict", ok_graph, "--sweep", f"{name}=1,0"], capsys, f"parameter {name}='0': expected a value > 0")
    assert main(["predict", ok_graph, "--set", f"{name}=0.5"]) == 0          # small but positive: fine


# -- output files ---------------------------------------------------------------------------------

@pytest.mark.timeout(60)
@pytest.mark.parametrize("flag", ["--json", "--trace"])
def test_predict_checks_its_output_files_first_and_reports_a_full_device(flag, ok_graph, tmp_path, capsys):
    out = _usage(["predict", ok_graph, flag, str(tmp_path / "no_such_dir" / "p.json")], capsys,
                 f"argument {flag}: cannot write", "does not exist")
    assert "predicted a2a3 time" not in out                                # refused before predicting
    _usage(["predict", ok_graph, flag, str(tmp_path)], capsys, f"argument {flag}: cannot write", "is a directory")
    if os.path.exists("/dev/full"):       # accepted (it opens), then the write fails: a message, not a traceback
        _usage(["predict", ok_graph, flag, "/dev/full"], capsys,
               f"argument {flag}: could not write /dev/full: No space left on device")
    out = tmp_path / "p.json"
    assert main(["predict", ok_graph, flag, str(out)]) == 0 and out.stat().st_size > 0
    _usage(["predict", ok_graph, ok_graph, "--trace", str(out)], capsys, "--trace writes one prediction's timeline")


@pytest.mark.timeout(60)
@pytest.mark.parametrize("argv", [
    ["run", "vector_chain", "--blocks", "2", "--json", "{dir}"],
    ["run", "vector_chain", "--blocks", "2", "--json", "{dir}/missing/r.json"],
    ["run", "vector_chain", "--blocks", "2", "--trace", "{dir}/missing/t.json"],
    ["run", "vector_chain", "--blocks", "2", "--record", "{dir}/missing/g.jsonl"],
    ["bench", "workload", "--workload", "vector_chain", "--blocks", "2", "--rounds", "1", "--json", "{dir}"],
    ["bench", "paged-attention", "--trace", "{dir}/missing/pa", "--rounds", "1"],
    ["trace", "summary", "{dir}/t.json", "--json", "{dir}/missing/s.json"],
], ids=["run-json-dir", "run-json-missing", "run-trace", "run-record", "bench-json-dir", "bench-trace-prefix",
        "trace-json"])
def test_output_paths_are_checked_before_the_work(argv, tmp_path, capsys):
    argv = [a.format(dir=tmp_path) for a in argv]
    flag = next(a for a in argv if a in ("--json", "--trace", "--record"))
    out = _usage(argv, capsys, f"argument {flag}: cannot write")
    assert "device run" not in out and "PASS" not in out                   # nothing ran


@pytest.mark.timeout(120)
def test_run_json_to_a_full_device_is_a_message_after_the_results_are_shown(capsys):
    if not os.path.exists("/dev/full"):
        pytest.skip("no /dev/full")
    out = _usage(["run", "vector_chain", "--blocks", "2", "--inline", "--json", "/dev/full"], capsys,
                 "argument --json: could not write /dev/full")
    assert "PASS" in out                         # the results were shown before the write failed


# -- a workload narrower than it can run ----------------------------------------------------------

@pytest.mark.timeout(60)
def test_a_workload_that_needs_more_blocks_says_so_before_running(capsys):
    wl = catalogue.load("spmd_starvation")
    assert wl.min_blocks == 6
    _usage(["run", "spmd_starvation", "--blocks", "4"], capsys, "argument --blocks: workload spmd_starvation needs "
           "--blocks 6 or more")
    _usage(["bench", "workload", "--workload", "spmd_starvation", "--blocks", "5"], capsys, "needs --blocks 6")
    with pytest.raises(ValueError, match="at least 6 blocks"):
        runner.run("spmd_starvation", blocks=4, inline=True)


@pytest.mark.timeout(120)
def test_every_workload_runs_at_its_declared_minimum_width_and_not_below():
    from host import Device, Platform
    from host.run import build_on

    def runs(wl, blocks: int) -> bool:
        for c in wl.cases:
            if c in wl.big:
                continue
            params = wl.case(c)
            plat = Platform(blocks=blocks, **(wl.platform(params) if wl.platform else {}))
            with Device(plat, kernels=list(wl.kernels), inline=True, dry_run=True) as dev:
                _, t = build_on(dev, wl, params, 0)
                try:
                    for v in wl.variants:
                        dev.run(wl.orchestrate, t, params, v)
                except ValueError:
                    return False
        return True

    for name in catalogue.names():
        wl = catalogue.load(name)
        assert runs(wl, wl.min_blocks), f"{name} fails on {wl.min_blocks} blocks, its declared minimum"
        if wl.min_blocks > 1:
            assert not runs(wl, wl.min_blocks - 1), f"{name} runs on {wl.min_blocks - 1} blocks: min_blocks too high"


# -- ptoemu list --counts without building gigabytes ------------------------------------------------

@pytest.mark.timeout(120)
def test_counting_with_only_the_plan_inputs_built_gives_the_same_counts():
    from dataclasses import replace

    from kernels.workloads.workload import numpy_alloc
    checked = 0
    for name in catalogue.names():
        wl = catalogue.load(name)
        if wl.plan_inputs is None:
            continue
        for c in wl.cases:
            if c in wl.big:
                continue
            arrays = wl.build(wl.case(c), 0, numpy_alloc)
            # discard every array larger than the plan inputs: the declaration itself is under test
            limit = 1 + max((arrays[k].nbytes for k in wl.plan_inputs), default=0)
            discarded = [k for k, v in arrays.items() if v.nbytes >= limit]
            assert discarded, (name, c)
            full = runner.task_counts(replace(wl, plan_inputs=None), c)
            assert runner.task_counts(wl, c, discard_from=limit) == full, (name, c, discarded)
            checked += 1
    assert checked > 20


@pytest.mark.timeout(60)
def test_discarded_arrays_leave_device_memory_unwritten():
    import numpy as np

    from host import Device, Platform
    wl = catalogue.load("vector_chain")
    with Device(Platform(blocks=1), kernels=list(wl.kernels), inline=True, dry_run=True) as dev:
        arrays, tensors = runner.build_on(dev, wl, wl.case(wl.smallest), 0, discard_from=0)
        assert all(isinstance(v, runner.Discarding) for v in arrays.values())
        assert all(not dev.to_host(t).any() for t in tensors.values())      # never written
        kept, _ = runner.build_on(dev, wl, wl.case(wl.smallest), 0)
        assert any(np.asarray(v).any() for v in kept.values())              # (the builder does write values)
