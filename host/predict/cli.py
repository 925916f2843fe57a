"""``ptoemu predict``: the command line of the a2a3 model.

    ptoemu predict FILE                      predict every run of a recording (per run + total)
    ptoemu predict FILE --run N              one run
    ptoemu predict A B                       compare two recordings (e.g. hub vs first_output)
    ptoemu predict FILE --run 0 --run 1      compare two runs of one recording
    ptoemu predict FILE --sweep sched_task_us=1,2,3 [--sweep hbm_gbps=800,1600]
                                             device time and bound over a grid of parameter values
    ptoemu predict --params [--set k=v]      every parameter: value, range, unit, trust, source
    ptoemu predict --validate [--catalogue] [--keep DIR]
                                             record and predict the calibration set (host/predict/
                                             validate.py), published vs predicted; --catalogue: also
                                             every other catalogue workload's full-size case
    common: --set NAME=VALUE (repeatable), --json OUT, --trace OUT (one prediction: Perfetto JSON)

    args ──▶ overrides (params.parse_assignment / resolve: bad name or value ──▶ exit 2)
         ──▶ each file's header checked ──▶ predict() per subject (and sweep point), streaming the
             file ──▶ print / --json / --trace
Exit codes: 0 done, 1 the model found a ring deadlock, 2 bad arguments, an unreadable recording or
an output file that cannot be written (checked before the prediction: host/cli.py).
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
from typing import Any

from host.cliargs import output
from host.graph import Recording
from host.predict import ModelDeadlock, compare, predict
from host.predict.params import format_table, parse_assignment, parse_value, resolve
from host.predict.report import Prediction


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register ``predict`` on the ``ptoemu`` subcommands."""
    p = sub.add_parser("predict", help="predict a2a3 hardware time of a recorded task graph",
                       description="Replay a recorded task graph (Device(record=...), ptoemu paged-attention "
                                   "--record) on a discrete-event model of the a2a3 chip.")
    p.add_argument("files", nargs="*", metavar="RECORDED_FILE",
                   help="one recording to predict, or two to compare")
    p.add_argument("--set", action="append", default=[], metavar="NAME=VALUE", dest="sets",
                   help="change a model parameter (see --params), e.g. --set sched_task_us=2.5")
    p.add_argument("--run", action="append", type=int, default=[], metavar="N",
                   help="predict run N only; twice (one file) compares two runs of it")
    p.add_argument("--sweep", action="append", default=[], metavar="NAME=V1,V2,...",
                   help="predict over these values of a parameter (repeatable: every combination)")
    p.add_argument("--json", metavar="OUT", help="write the prediction / comparison / sweep as JSON")
    p.add_argument("--trace", metavar="OUT", help="write the predicted timeline as Perfetto/Chrome JSON")
    p.add_argument("--params", action="store_true", help="list every model parameter and exit")
    p.add_argument("--validate", action="store_true",
                   help="record and predict the calibration set (paged_attention_unroll Case1, "
                        "alternating_matmul_add Case1, paged_attention Case1) on the sequential engine and print "
                        "predicted vs published a2a3 figures with signed errors (a minute or two)")
    p.add_argument("--catalogue", action="store_true",
                   help="with --validate: also predict every other catalogue workload's full-size case (minutes)")
    p.add_argument("--keep", metavar="DIR", help="with --validate: keep the recordings in DIR (and reuse those "
                                                 "already there)")
    p.set_defaults(fn=run)


class _Usage(ValueError):
    """Bad arguments: reported and exit code 2."""


def _say(msg: str) -> None:
    print(msg, flush=True)


def _subjects(files: list[str], runs: list[int]) -> list[tuple[str, int | None]]:
    """(file, run or None for all runs) for each prediction asked for."""
    if len(files) > 2 or len(runs) > 2:
        raise _Usage(f"give one recording (or two to compare) and at most two --run; got {len(files)} file(s), "
                     f"{len(runs)} --run")
    if len(files) == 1:
        return [(files[0], r) for r in runs] if runs else [(files[0], None)]
    if len(runs) == 2:
        return [(files[0], runs[0]), (files[1], runs[1])]
    r = runs[0] if runs else None
    return [(files[0], r), (files[1], r)]


def _sweep_grid(items: list[str]) -> list[dict[str, Any]]:
    axes = []
    for text in items:
        name, values = parse_assignment(text)
        vals = [parse_value(name, v) for v in values.split(",") if v.strip()]
        if not vals:
            raise _Usage(f"--sweep {text!r}: expected NAME=V1,V2,...")
        axes.append([(name, v) for v in vals])
    return [dict(c) for c in itertools.product(*axes)]


def _write_json(path: str, obj: Any) -> None:
    with output(path, "--json"), open(path, "w") as f:
        json.dump(obj, f, indent=1)
    _say(f"wrote {path}")


def _sweep(source: str, run: int | None, base: dict[str, Any], grid: list[dict[str, Any]],
           json_out: str | None) -> int:
    names = list(grid[0])
    rows = []
    for point in grid:
        pr = predict(source, {**base, **point}, run=run)
        rows.append({**point, "effective_us": pr.effective_us, "effective_us_range": list(pr.effective_us_range),
                     "device_us": pr.device_us, "device_us_range": list(pr.device_us_range),
                     "orchestration_us": pr.orchestration_us,
                     "critical_path_us": pr.critical_path_us, "bound_resource": pr.bound_resource,
                     "bound": pr.bound, "utilisation": pr.utilisation})
    cols = names + ["effective_us", "device_us", "orch_us", "crit_us", "bound", "busiest"]
    table = [cols]
    for r in rows:
        top = sorted(r["utilisation"].items(), key=lambda kv: -kv[1])[:2]
        table.append([f"{r[n]:g}" for n in names] + [f"{r['effective_us']:.1f}", f"{r['device_us']:.1f}",
                                                     f"{r['orchestration_us']:.1f}",
                     f"{r['critical_path_us']:.1f}", r["bound_resource"],
                     ", ".join(f"{k} {100 * v:.0f} %" for k, v in top)])
    w = [max(len(t[i]) for t in table) for i in range(len(cols))]
    _say(f"sweep over {', '.join(names)} for {source}" + (f" run {run}" if run is not None else ""))
    for t in table:
        _say("  " + "  ".join(f"{t[i]:>{w[i]}}" for i in range(len(cols))))
    if json_out:
        _write_json(json_out, {"source": source, "run": run, "base": base, "rows": rows})
    return 0


def _validate(a: argparse.Namespace, overrides: dict[str, Any]) -> int:
    from host.predict import validate as v
    if a.files:
        raise _Usage("--validate records its own workloads: give no recording")
    _say("calibration set: recording on the sequential engine, then predicting (a minute or two)")
    rows = v.calibration_rows(a.keep, _say, params=overrides)
    _say(v.format_rows(rows))
    out: dict[str, Any] = {"calibration": [r.to_json() for r in rows]}
    if a.catalogue:
        _say("every other catalogue workload, its full-size case:")
        cat = v.catalogue_rows(a.keep, _say)
        _say(v.format_catalogue(cat))
        out["catalogue"] = cat
    if a.json:
        _write_json(a.json, out)
    return 0


def run(a: argparse.Namespace) -> int:
    """The ``ptoemu predict`` command; returns the exit code."""
    try:
        return _run(a)
    except ValueError as e:                     # _Usage, bad parameters, unreadable recordings
        print(f"ptoemu predict: {e}", file=sys.stderr)
        return 2
    except ModelDeadlock as e:
        print(f"ptoemu predict: {e}", file=sys.stderr)
        return 1


def _run(a: argparse.Namespace) -> int:
    overrides = dict(parse_assignment(s) for s in a.sets)
    params = resolve(None, overrides)           # checks names and values before any file is read
    grid = _sweep_grid(a.sweep) if a.sweep else []
    if a.params:
        _say(format_table(params))
        if not a.files:
            return 0
    if a.catalogue and not a.validate:
        raise _Usage("--catalogue goes with --validate")
    if a.validate:
        return _validate(a, overrides)
    if not a.files:
        raise _Usage("give a recorded graph (Device(record=...) or ptoemu paged-attention --record FILE)")
    subjects = _subjects(a.files, a.run)
    if a.trace and (len(subjects) > 1 or grid):
        raise _Usage("--trace writes one prediction's timeline; drop the second recording, the second --run "
                     "or --sweep")
    for f in dict.fromkeys(f for f, _ in subjects):
        Recording(f).close()                    # a recording? (its header, before any work)
    if grid:
        if len(subjects) > 1:
            raise _Usage("--sweep takes one recording (and at most one --run)")
        f, r = subjects[0]
        return _sweep(f, r, overrides, grid, a.json)
    preds: list[Prediction] = []
    for f, r in subjects:                       # each streamed from its file (host/predict/__init__.py)
        pr = predict(f, params, run=r)
        pr.source = f if r is None else f"{f} run {r}"
        preds.append(pr)
    if len(preds) == 1:
        pr = preds[0]
        _say(str(pr))
        if a.json:
            _write_json(a.json, pr.to_json())
        if a.trace:
            with output(a.trace, "--trace"):
                pr.write_trace(a.trace)
            _say(f"wrote {a.trace} (open in https://ui.perfetto.dev)")
        return 0
    cmp = compare(preds[0], preds[1])
    for tag, pr in zip("AB", preds):
        _say(f"{tag}: {pr.source}: effective {pr.effective_us:.1f} us, device {pr.device_us:.1f} us. {pr.bound}")
    _say(str(cmp))
    if a.json:
        _write_json(a.json, {"a": preds[0].to_json(), "b": preds[1].to_json(), "comparison": cmp.to_json()})
    return 0
