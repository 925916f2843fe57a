"""``ptoemu bench KIND --sweep blocks=1,8,24 unroll=1,8,64 [--backend ray]``: one run per configuration.

Configurations are the cartesian product of the sweep values. With ``--backend ray`` each one runs
as a Ray task on its own worker (asking for ``cpus`` CPUs, so that configurations sharing a node
do not disturb each other's timings); with ``local`` they run one after another here. The merged
result is one results file: every row carries the configuration it came from, the summary lists
each configuration's own summary, and a configuration that failed is reported (with its error)
without stopping the others.
"""

from __future__ import annotations

import itertools
import json
import traceback
from collections.abc import Callable

from host.bench import common

SWEEPABLE = {
    "dispatch": {"blocks", "tasks", "rounds"},
    "granularity": {"blocks", "rounds"},
    "paged-attention": {"blocks", "unroll", "case", "variant", "rounds"},
}


def parse(items: list[str]) -> dict[str, list]:
    out = {}
    for it in items:
        key, _, vals = it.partition("=")
        if not vals:
            raise ValueError(f"--sweep {it!r}: expected name=v1,v2,...")
        out[key] = [int(v) if v.lstrip("-").isdigit() else v for v in vals.split(",")]
    return out


def configs(sweep: dict[str, list]) -> list[dict]:
    keys = list(sweep)
    return [dict(zip(keys, combo)) for combo in itertools.product(*(sweep[k] for k in keys))]


def run_one(kind: str, base: dict, cfg: dict) -> dict:
    """Run one bench configuration (in whatever process this is) and return its results."""
    from host.bench import dispatch, granularity, paged_attention
    p = {**base, **cfg}
    quiet = lambda s: None  # noqa: E731
    if kind == "dispatch":
        return dispatch.run([p["blocks"]], p.get("tasks", 20000), p.get("rounds", 3), log=quiet)
    if kind == "granularity":
        return granularity.run([p["blocks"]], p.get("sizes", [0, 10, 30, 100, 300, 1000]), p.get("rounds", 3),
                               log=quiet)
    r = paged_attention.run([p.get("case", "Case1")], [p["variant"]] if "variant" in p else
                            ["hub", "first_output", "alloc"], [p.get("unroll")], p.get("blocks", 24),
                            p.get("rounds", 3), log=quiet)
    r.pop("traces", None)
    return r


def _safe(kind: str, base: dict, cfg: dict) -> dict:
    try:
        return {"ok": True, "result": run_one(kind, base, cfg)}
    except Exception as e:  # noqa: BLE001 - a failed configuration is reported, the sweep goes on
        return {"ok": False, "error": f"{type(e).__name__}: {e}", "traceback": traceback.format_exc()}


def run(kind: str, base: dict, sweep: dict[str, list], backend: str = "local", cpus: float = 2,
        log: Callable[[str], None] = print) -> dict:
    bad = set(sweep) - SWEEPABLE[kind]
    if bad:
        raise ValueError(f"--sweep {', '.join(sorted(bad))}: {kind} can sweep {', '.join(sorted(SWEEPABLE[kind]))}")
    cfgs = configs(sweep)
    if backend == "ray":
        import ray
        if not ray.is_initialized():
            ray.init(ignore_reinit_error=True, include_dashboard=False, log_to_driver=False)
        total = int(ray.cluster_resources().get("CPU", 1))
        remote = ray.remote(num_cpus=min(cpus, total), max_retries=0)(_safe)
        refs = [remote.remote(kind, base, c) for c in cfgs]
        outcomes = []
        for c, ref in zip(cfgs, refs):
            try:
                outcomes.append(ray.get(ref))
            except Exception as e:  # noqa: BLE001 - a lost worker fails only its configuration
                outcomes.append({"ok": False, "error": f"{type(e).__name__}: {e}"})
            log(f"  {c}: {'done' if outcomes[-1]['ok'] else 'FAILED: ' + outcomes[-1]['error']}")
    else:
        outcomes = []
        for c in cfgs:
            outcomes.append(_safe(kind, base, c))
            log(f"  {c}: {'done' if outcomes[-1]['ok'] else 'FAILED: ' + outcomes[-1]['error']}")
    rows, per, failed = [], [], []
    for c, o in zip(cfgs, outcomes):
        if o["ok"]:
            rows += [{**{f"sweep_{k}": v for k, v in c.items()}, **row} for row in o["result"]["rows"]]
            per.append({"config": c, "summary": o["result"]["summary"]})
        else:
            failed.append({"config": c, "error": o["error"]})
    return common.results(f"{kind}-sweep", {"base": base, "sweep": sweep, "backend": backend}, rows,
                          {"configs": per, "failed": failed})


def format(r: dict) -> str:
    lines = [f"sweep of {len(r['summary']['configs']) + len(r['summary']['failed'])} configuration(s) "
             f"({r['config']['backend']} backend): {len(r['rows'])} rows"]
    for c in r["summary"]["configs"]:
        lines.append(f"  {c['config']}: {json.dumps(c['summary'], default=str)[:300]}")
    for f in r["summary"]["failed"]:
        lines.append(f"  FAILED {f['config']}: {f['error']}")
    return "\n".join(lines)
