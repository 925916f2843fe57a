"""The ``ptoemu`` command.

    ptoemu paged-attention [--case Case1] [--variant first_output] [--unroll 64] [--blocks 24] ...
    ptoemu bench dispatch  [--tasks 20000] [--rounds 3] [--blocks 1,2,4,8,16,24] [--json FILE]
    ptoemu bench granularity [--sizes 0,10,30,100,300,1000] [--blocks 2,8,24] [--json FILE]
    ptoemu bench paged-attention [--cases Case1] [--unroll 1,8,64] [--trace PREFIX] [--json FILE]
    ptoemu bench inputs    [--workload NAME] [--cases Case1] [--blocks 2,8,24]   build time, same bits
    ptoemu bench pipe [--tiles 2000] [--rounds 3] [--predict [--cases Case1,Case2]] [--json FILE]
    ptoemu bench KIND --sweep blocks=1,8,24 unroll=1,8,64 [--backend ray]
    ptoemu paged-attention --devices 4 --backend ray|local
    ptoemu trace summary run.json
    ptoemu stress --seconds 600   soak: tiny tasks, tiny rings, results and memory checked
    ptoemu cases           list the paged-attention cases
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Sequence

from host.cliargs import OutputError, count, listed, number, output, unwritable
from host.platform import A2A3_BLOCKS, MAX_TASK_WINDOW
from kernels.workloads import catalogue
from kernels.workloads.paged_attention.cases import CASES
from kernels.workloads.workload import Workload

MAIN_WORKLOAD = "paged_attention_unroll"     # what ``ptoemu paged-attention`` runs


def _say(msg: str) -> None:
    print(msg, flush=True)


def cmd_paged_attention_sharded(a: argparse.Namespace, params: dict, unroll: int) -> int:
    """--devices N: shard the batch over N devices (local processes or Ray actors)."""
    import kernels.workloads.paged_attention as pa
    from host import Platform
    from host.cluster import DeviceGroup
    from kernels.workloads.paged_attention import sharding

    variant = "first_output" if a.variant == "all" else a.variant
    t0 = time.perf_counter()
    inp = pa.generate_inputs(params, a.seed)
    _say(f"  inputs generated on the host in {time.perf_counter() - t0:.2f} s")
    shards = sharding.shard(inp, a.devices, variant=variant, unroll=unroll)
    t1 = time.perf_counter()
    with DeviceGroup(a.devices, Platform(blocks=a.blocks), kernels=["kernels.workloads.paged_attention"],
                     backend=a.backend) as group:
        _say(f"  {a.devices} devices ({a.backend}) started in {time.perf_counter() - t1:.2f} s")
        t2 = time.perf_counter()
        res = group.run_sharded(pa.orchestrate, shards)
        wall = time.perf_counter() - t2
        timings = group.timings
    out = sharding.gather(shards, res)
    _say(f"variant {variant} on {a.devices} devices: wall {wall:.3f} s")
    for i, t in enumerate(timings):
        _say(f"  shard {i}: rows {shards[i]['rows']}, to device {t['to_device_s']:.3f} s, run {t['run_s']:.3f} s, "
             f"to host {t['to_host_s']:.3f} s, total {t['total_s']:.3f} s (attempts {t['attempts']})")
    ok = True
    if not a.no_check:
        t3 = time.perf_counter()
        g = pa.golden(inp["query"], inp["key_cache"], inp["value_cache"], inp["block_table"],
                      inp["context_lens"], inp["scale"], unroll=unroll)
        from host.run import compare
        from kernels.workloads.paged_attention.unroll import WORKLOAD
        c = compare({"out": out}, {"out": g}, WORKLOAD.tolerance)     # the runner's check, the workload's tolerance
        ok = c["pass"]
        _say(f"  golden {time.perf_counter() - t3:.3f} s; max abs error {c['max_abs']:.3e}: {'PASS' if ok else 'FAIL'}")
    if a.backend == "ray":
        import ray
        ray.shutdown()
    return 0 if ok else 1


def cmd_paged_attention(a: argparse.Namespace) -> int:
    """The main job: ``ptoemu run paged_attention_unroll`` with the paged-attention options (case
    parameters as flags, --devices to shard over several devices)."""
    import kernels.workloads.paged_attention as pa
    from host import run as runner

    params = dict(pa.case_params(a.case))
    over = {}
    for key, val in (("batch", a.batch), ("num_heads", a.heads), ("head_dim", a.head_dim),
                     ("block_size", a.block_size), ("unroll", a.unroll),
                     ("context_len", a.context_len[0] if a.context_len and len(a.context_len) == 1
                      else a.context_len)):
        if val is not None:
            over[key] = val
    params.update(over)
    if a.devices > 1 or a.backend != "local":
        return cmd_paged_attention_sharded(a, params, params.get("unroll", 64))
    t0 = time.perf_counter()
    rows = runner.run(MAIN_WORKLOAD, a.case, a.variant, blocks=a.blocks, seed=a.seed, inline=a.inline,
                      trace=a.trace, record=a.record, predict=a.predict, check=not a.no_check, log=_say,
                      overrides=over)
    _say(f"total {time.perf_counter() - t0:.1f} s")
    return 0 if all(r.get("pass", True) for r in rows) else 1


def cmd_bench(a: argparse.Namespace) -> int:
    from host.bench import common, dispatch, granularity, paged_attention, sweep
    from host.bench import pipe as pipe_bench
    from host.bench import workload as workload_bench
    if a.what == "inputs":
        from host.bench import inputs
        name, blocks = a.workload or MAIN_WORKLOAD, a.blocks or [2, 8, 24]
        _say(f"input build benchmark: {name}, cases {a.cases or 'the smallest'}, numpy / devices of {blocks} "
             f"blocks / inline, {a.rounds} rounds")
        r = inputs.run(name, a.cases, blocks, a.rounds, log=_say)
        _say(inputs.format(r))
        if a.json:
            common.write_json(r, a.json)
            _say(f"results written to {a.json}")
        return 0 if r["summary"]["same_bits"] else 1
    if a.what == "workload" or a.workload:
        if not a.workload:
            raise SystemExit("ptoemu bench workload: give --workload NAME (see `ptoemu list`)")
        blocks = (a.blocks or [24])[-1]
        _say(f"workload benchmark: {a.workload}, cases {a.cases or 'the smallest'}, variant {a.variant}, "
             f"{blocks} blocks, {a.rounds} rounds")
        r = workload_bench.run(a.workload, a.cases, a.variant, blocks, a.rounds, log=_say)
        _say(workload_bench.format(r))
        if a.json:
            with output(a.json, "--json"):
                common.write_json(r, a.json)
            _say(f"results written to {a.json}")
        return 0 if all(x["pass"] for x in r["rows"]) else 1
    if a.sweep or a.backend == "ray":
        base = {"rounds": a.rounds, "tasks": a.tasks}
        if a.what == "paged-attention":
            base.update(case=a.cases[0])
        if a.what == "granularity":
            base.update(sizes=a.sizes)
        spec = sweep.parse(a.sweep or [])
        spec.setdefault("blocks", a.blocks or [24])
        _say(f"{a.what} sweep over {spec} ({a.backend} backend)")
        r = sweep.run(a.what, base, spec, a.backend, log=_say)
        _say(sweep.format(r))
        if a.json:
            with output(a.json, "--json"):
                common.write_json(r, a.json)
                _say(f"results written to {a.json}")
                mod = {"dispatch": dispatch, "granularity": granularity}.get(a.what)
                if mod and r["rows"]:                # the merged rows plot like a single run's
                    for p in mod.plots(r, a.json.rsplit(".", 1)[0]):
                        _say(f"plot written to {p}")
        if a.backend == "ray":
            import ray
            ray.shutdown()
        return 0 if not r["summary"]["failed"] else 1
    if a.what == "pipe":
        _say(f"pipe benchmark: {a.tiles} tiles per run, {a.rounds} rounds, a process device and the sequential engine")
        mod, r = pipe_bench, pipe_bench.run(a.tiles, a.rounds, log=_say)
        if a.predict:
            variants = list(catalogue.load("spmd_paged_attention").variants) if a.variant == "all" else [a.variant]
            r["summary"]["predicted"] = [pipe_bench.predict_spmd(c, log=_say, variant=v)
                                         for c in a.cases or ["Case1"] for v in variants]
    elif a.what == "dispatch":
        blocks = a.blocks or [1, 2, 4, 8, 16, 24]
        _say(f"dispatch benchmark: {a.tasks} no-op tasks per run, {a.rounds} rounds, blocks {blocks}")
        mod, r = dispatch, dispatch.run(blocks, a.tasks, a.rounds, log=_say)
    elif a.what == "granularity":
        blocks = a.blocks or [2, 8, 24]
        sizes = a.sizes
        _say(f"granularity benchmark: busy kernels of {sizes} us, blocks {blocks}, {a.rounds} rounds")
        mod, r = granularity, granularity.run(blocks, sizes, a.rounds, log=_say)
    else:
        cases = a.cases
        variants = ["hub", "first_output", "alloc", "manual"] if a.variant == "all" else [a.variant]
        unrolls: list[int | None] = list(a.unroll or []) or [None]
        blocks = (a.blocks or [24])[-1]
        _say(f"paged-attention benchmark: cases {cases}, variants {variants}, unroll "
             f"{','.join(map(str, a.unroll)) if a.unroll else 'case default'}, {blocks} blocks, {a.rounds} rounds")
        mod, r = paged_attention, paged_attention.run(cases, variants, unrolls, blocks, a.rounds,
                                                      trace_prefix=a.trace, predict=a.predict, log=_say)
    _say(mod.format(r))
    traces = r.pop("traces", None)
    if a.json:
        with output(a.json, "--json"):
            common.write_json(r, a.json)
            _say(f"results written to {a.json}")
            r["traces"] = traces
            for p in mod.plots(r, a.json.rsplit(".", 1)[0]):
                _say(f"plot written to {p}")
    return 0


def cmd_trace(a: argparse.Namespace) -> int:
    import json

    from host.trace import format_summary, summarize
    with open(a.file) as f:
        s = summarize(json.load(f))
    _say(format_summary(s))
    if a.json:
        with output(a.json, "--json"), open(a.json, "w") as f:
            json.dump(s, f, indent=2)
    return 0


def cmd_stress(a: argparse.Namespace) -> int:
    from host import stress
    _say(f"soak: {a.seconds:.0f} s of tiny tasks on {a.blocks} blocks, task window {a.window}, "
         f"heap {a.heap_kib} KiB")
    v = stress.soak(a.seconds, a.blocks, a.window, a.heap_kib, log=_say)
    _say(f"{v['tasks']:,} tasks; growth since the first round (MiB): "
         + ", ".join(f"{k} {x:+.1f}" for k, x in v["growth_mib"].items()))
    _say("PASS" if v["ok"] else "FAIL: " + "; ".join(v["problems"]))
    return 0 if v["ok"] else 1


def cmd_run(a: argparse.Namespace) -> int:
    from host import run as runner
    rows = runner.run(a.workload, a.case, a.variant, blocks=a.blocks, rounds=a.rounds, seed=a.seed,
                      inline=a.inline, trace=a.trace, record=a.record, predict=a.predict, check=not a.no_check,
                      log=_say, semantics=a.semantics)
    if a.json:
        from host.bench import common
        with output(a.json, "--json"):
            common.write_json(common.results("run", vars(a) | {"fn": None}, rows, {}), a.json)
        _say(f"results written to {a.json}")
    return 0 if all(r.get("pass", True) for r in rows) else 1


def cmd_list(a: argparse.Namespace) -> int:
    from host import run as runner
    _say(runner.listing(a.counts))
    return 0


def cmd_cases(a: argparse.Namespace) -> int:
    import kernels.workloads.paged_attention as pa
    for name, p in pa.CASES.items():
        _say(f"{name:<18} " + ", ".join(f"{k}={v}" for k, v in p.items()))
    return 0


def _power_of_two(text: str) -> int:
    v = count(2, MAX_TASK_WINDOW)(text)
    if v & (v - 1):
        raise argparse.ArgumentTypeError(f"expected a power of two, got {v}")
    return v


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="ptoemu", description="An emulated Ascend a2a3 device in processes.")
    sub = p.add_subparsers(dest="cmd", required=True)

    pa = sub.add_parser("paged-attention", help="run the decode paged-attention pipeline and check it")
    pa.add_argument("--case", default="Case1", choices=list(CASES), metavar="CASE",
                    help="case name (see `ptoemu cases`; default Case1)")
    pa.add_argument("--variant", default="first_output", choices=["hub", "first_output", "alloc", "manual", "all"])
    pa.add_argument("--unroll", type=count(1), default=None, help="KV blocks per chunk (N_UNROLL; default 64)")
    pa.add_argument("--blocks", type=count(1, A2A3_BLOCKS), default=24, help="device blocks (1 AIC + 2 AIV each)")
    pa.add_argument("--seed", type=count(0), default=0)
    pa.add_argument("--batch", type=count(1))
    pa.add_argument("--heads", type=count(1))
    pa.add_argument("--head-dim", type=count(1))
    pa.add_argument("--block-size", type=count(1))
    pa.add_argument("--context-len", type=listed(count(1)),
                    help="tokens per sequence, or a comma-separated list (per sequence)")
    pa.add_argument("--inline", action="store_true",
                    help="run tasks in this process, one at a time in submission order (the sequential engine)")
    pa.add_argument("--no-check", action="store_true", help="skip the golden comparison")
    pa.add_argument("--trace", default=None, help="write a Chrome/Perfetto trace of the runs to this file")
    pa.add_argument("--record", default=None, metavar="FILE",
                    help="record the task graph of the runs to FILE (input of `ptoemu predict`)")
    pa.add_argument("--predict", action="store_true",
                    help="also predict each run's time on an a2a3 chip (ptoemu predict's model)")
    pa.add_argument("--devices", type=count(1), default=1, help="shard the batch over this many devices")
    pa.add_argument("--backend", default="local", choices=["local", "ray"],
                    help="where the devices live: this machine, or one Ray actor each")
    pa.set_defaults(fn=cmd_paged_attention)

    b = sub.add_parser("bench", help="measurement harness (results as JSON, PNG plots with matplotlib)")
    b.add_argument("what", choices=["dispatch", "granularity", "paged-attention", "workload", "inputs", "pipe"])
    b.add_argument("--workload", default=None, choices=catalogue.names(), metavar="NAME",
                   help="bench this catalogued workload (see `ptoemu list`); --cases picks its cases")
    b.add_argument("--rounds", type=count(1), default=3)
    b.add_argument("--blocks", type=listed(count(1, A2A3_BLOCKS)), default=None,
                   help="comma-separated device sizes (defaults: dispatch 1,2,4,8,16,24; granularity "
                   "2,8,24; paged-attention 24; inputs 2,8,24)")
    b.add_argument("--tasks", type=count(1), default=20000, help="dispatch: tasks per run")
    b.add_argument("--tiles", type=count(1), default=2000, help="pipe: tiles (round trips) per run")
    b.add_argument("--sizes", type=listed(number(0)), default=[0.0, 10.0, 30.0, 100.0, 300.0, 1000.0],
                   help="granularity: task sizes in us")
    b.add_argument("--cases", type=listed(str), default=None,
                   help="comma-separated case names (paged-attention, inputs without --workload: default "
                   "Case1; workload: its smallest)")
    b.add_argument("--variant", default="all", help="a variant of the workload, or all")
    b.add_argument("--unroll", type=listed(count(1)), default=None,
                   help="paged-attention: comma-separated N_UNROLL values")
    b.add_argument("--trace", default=None, help="paged-attention: write traces PREFIX-<point>.json")
    b.add_argument("--predict", action="store_true",
                   help="paged-attention: add the predicted a2a3 time of every point (ptoemu predict); pipe: "
                   "the coupled prediction of spmd_paged_attention --cases (default Case1)")
    b.add_argument("--json", help="write results as JSON to this file (and plots beside it)")
    b.add_argument("--sweep", nargs="*", default=None, metavar="NAME=V1,V2",
                   help="run one configuration per combination, e.g. blocks=1,8,24 unroll=1,8,64")
    b.add_argument("--backend", default="local", choices=["local", "ray"],
                   help="ray: fan the sweep's configurations out over a Ray cluster")
    b.set_defaults(fn=cmd_bench)

    t = sub.add_parser("trace", help="analyse a trace written with --trace / Device(trace=...)")
    t.add_argument("action", choices=["summary"])
    t.add_argument("file")
    t.add_argument("--json", help="also write the summary as JSON")
    t.set_defaults(fn=cmd_trace)

    s = sub.add_parser("stress", help="soak: tiny tasks through tiny rings, checking results and memory")
    s.add_argument("--seconds", type=number(0, open_lo=True), default=60.0)
    s.add_argument("--blocks", type=count(1, A2A3_BLOCKS), default=2)
    s.add_argument("--window", type=_power_of_two, default=16)
    s.add_argument("--heap-kib", type=count(4), default=16)
    s.set_defaults(fn=cmd_stress)

    r = sub.add_parser("run", help="run a catalogue workload on an emulated device and check it")
    r.add_argument("workload", choices=catalogue.names(), metavar="WORKLOAD", help="see `ptoemu list`")
    r.add_argument("--case", default=None, help="case name, or all (default: the workload's smallest)")
    r.add_argument("--variant", default=None, help="variant, or all (default: the workload's first)")
    r.add_argument("--blocks", type=count(1, A2A3_BLOCKS), default=24, help="device blocks")
    r.add_argument("--rounds", type=count(1), default=1, help="run the orchestration this many times")
    r.add_argument("--seed", type=count(0), default=0)
    r.add_argument("--inline", action="store_true",
                   help="run tasks in this process, one at a time in submission order (the sequential engine)")
    r.add_argument("--semantics", default=None, choices=["sequential", "reference"],
                   help="dependency rules: ptoemu's sequential ones, or the reference runtime's weaker ones "
                        "(default: the workload's -- sequential, but reference for qwen3_14b_decode)")
    r.add_argument("--no-check", action="store_true", help="skip the golden comparison")
    r.add_argument("--trace", default=None, help="write a Chrome/Perfetto trace of the runs to this file")
    r.add_argument("--record", default=None, metavar="FILE", help="record the task graph to FILE")
    r.add_argument("--predict", action="store_true", help="also predict each run's a2a3 time")
    r.add_argument("--json", help="write the result rows as JSON to this file")
    r.set_defaults(fn=cmd_run)

    ls = sub.add_parser("list", help="the workload catalogue: cases, task counts, features")
    ls.add_argument("--counts", action="store_true",
                    help="also count the tasks of the big cases (by running their orchestrations dry, no kernels)")
    ls.set_defaults(fn=cmd_list)

    c = sub.add_parser("cases", help="list the paged-attention cases")
    c.set_defaults(fn=cmd_cases)

    from host.predict.cli import add_parser as add_predict
    add_predict(sub)            # ptoemu predict: sets fn itself
    return p


def _check_outputs(p: argparse.ArgumentParser, a: argparse.Namespace) -> None:
    """Every output file asked for can be written -- before the work that produces it."""
    for flag in ("json", "trace", "record"):
        path = getattr(a, flag, None)
        if not path:
            continue
        if a.cmd == "bench" and flag == "trace":        # a prefix: PREFIX-<point>.json
            d = os.path.dirname(os.path.abspath(path))
            if not os.path.isdir(d):
                p.error(f"argument --trace: cannot write traces {path}-<point>.json: directory {d} does not exist")
            continue
        problem = unwritable(path)
        if problem:
            p.error(f"argument --{flag}: cannot write {path}: {problem}")


def _check_blocks(p: argparse.ArgumentParser, wl: Workload, blocks: int | None) -> None:
    if blocks is not None and blocks < wl.min_blocks:
        p.error(f"argument --blocks: workload {wl.name} needs --blocks {wl.min_blocks} or more (its orchestration "
                f"launches {wl.min_blocks} blocks at once); got {blocks}")


def _check_bench_args(p: argparse.ArgumentParser, a: argparse.Namespace) -> None:
    """Case and variant names depend on the bench (and the workload): checked once parsed."""
    if a.cmd == "run":
        wl = catalogue.load(a.workload)
        if a.case not in (None, "all") and a.case not in wl.cases:
            p.error(f"argument --case: unknown case {a.case!r} of {wl.name}; known: {', '.join(wl.cases)}, all")
        if a.variant not in (None, "all") and a.variant not in wl.variants:
            p.error(f"argument --variant: unknown variant {a.variant!r} of {wl.name}; known: "
                    f"{', '.join(wl.variants)}, all")
        _check_blocks(p, wl, a.blocks)
        return
    if a.cmd != "bench":
        return
    if a.what == "inputs" and not a.workload:
        a.cases = a.cases or ["Case1"]                  # the main job's inputs
        a.workload = MAIN_WORKLOAD
    if a.workload or a.what == "workload":
        wl = catalogue.load(a.workload) if a.workload else None
        if wl:
            _check_blocks(p, wl, (a.blocks or [24])[-1])
        known_cases, known_variants = (list(wl.cases), list(wl.variants)) if wl else ([], [])
    elif a.what == "paged-attention":
        known_cases, known_variants = list(CASES), ["hub", "first_output", "alloc", "manual"]
        a.cases = a.cases or ["Case1"]
    elif a.what == "pipe":
        wl = catalogue.load("spmd_paged_attention")
        known_cases, known_variants = list(wl.cases), list(wl.variants)
    else:
        return
    for c in a.cases or []:
        if known_cases and c not in known_cases:
            p.error(f"argument --cases: unknown case {c!r}; known: {', '.join(known_cases)}")
    if a.variant != "all" and known_variants and a.variant not in known_variants:
        p.error(f"argument --variant: unknown variant {a.variant!r}; known: {', '.join(known_variants)}, all")


def main(argv: Sequence[str] | None = None) -> int:
    p = parser()
    a = p.parse_args(argv)
    if getattr(a, "inline", False) and getattr(a, "trace", None):
        p.error("argument --trace: not with --inline (the sequential engine keeps no times; --record keeps its graph)")
    _check_bench_args(p, a)
    _check_outputs(p, a)
    try:
        return a.fn(a)
    except OutputError as e:
        print(f"ptoemu {a.cmd}: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:              # `ptoemu list | head`: the reader has gone, nothing to say
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


if __name__ == "__main__":
    sys.exit(main())
