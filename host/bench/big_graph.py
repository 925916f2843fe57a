"""A recorded graph of any size, for measuring ``ptoemu predict`` at scale.

    python -m host.bench.big_graph OUT.graph.jsonl [--tasks 1000000] [--case small] [--variant first_output]
    /usr/bin/time -v ptoemu predict OUT.graph.jsonl        (wall time, "Maximum resident set size")

Records one run of ``paged_attention_unroll`` (the case and variant given) on a dry inline device,
then writes its records again and again, each copy with its task ids, producers and runtime
buffers moved past the previous copy's, into one run of at least ``--tasks`` tasks: the kernels,
arguments, scalars, scopes and heap allocations of a real run, so the cost laws and every part of
the model are exercised. Copies share the host tensors (the KV cache), as successive layers would.
The file is streamed out: generating a million tasks holds one copy in memory.
"""

from __future__ import annotations

import argparse
import json
import sys

from host.device import Device
from host.graph import Graph
from host.platform import Platform
from host.run import build_on
from kernels.workloads import catalogue


def template(case: str, variant: str) -> Graph:
    """One recorded run of paged_attention_unroll (no kernels run: the structure is what counts)."""
    wl = catalogue.load("paged_attention_unroll")
    params = wl.case(case)
    with Device(Platform(blocks=24), kernels=list(wl.kernels), inline=True, dry_run=True, record=True) as dev:
        _, tensors = build_on(dev, wl, params, 0)
        dev.run(wl.orchestrate, tensors, params, variant)
        return dev.graph()


def write(path: str, tasks: int, case: str = "small", variant: str = "first_output") -> tuple[int, int]:
    """Write a graph of at least ``tasks`` tasks to ``path``; returns (records, tasks) written."""
    g = template(case, variant)
    first, end = g.runs[-1]
    recs = [r.to_json() for r in g.records[first:end]]
    per_copy = sum(1 for r in recs if r["k"] == "task")
    copies = -(-tasks // per_copy)
    tid0 = recs[0]["t"]
    span = recs[-1]["t"] - tid0 + 1
    nbufs = 1 + max((a[4] for r in recs for a in r.get("a", ())), default=0)
    runtime = {a[4] for r in recs for a in r.get("a", ()) if a[5] >= 0}
    n = copies * len(recs)
    head = g.header() | {"runs": [[0, n]], "records": n, "edges": g.n_edges * copies}
    with open(path, "w") as f:
        f.write(json.dumps(head) + "\n")
        for c in range(copies):
            shift = c * span
            for r in recs:
                d = dict(r, t=r["t"] + shift)
                if "p" in r:
                    d["p"] = [p + shift for p in r["p"]]
                if "a" in r:
                    d["a"] = [a if a[5] < 0 else
                              [*a[:4], a[4] + c * nbufs if a[4] in runtime else a[4], a[5] + shift, *a[6:]]
                              for a in r["a"]]
                f.write(json.dumps(d, separators=(",", ":")) + "\n")
    return n, copies * per_copy


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m host.bench.big_graph", description=__doc__.split("\n\n")[0])
    ap.add_argument("out", help="the recording to write (.graph.jsonl)")
    ap.add_argument("--tasks", type=int, default=1_000_000, help="at least this many tasks (default 1,000,000)")
    ap.add_argument("--case", default="small", help="paged_attention_unroll case to replicate (default small)")
    ap.add_argument("--variant", default="first_output")
    a = ap.parse_args(argv)
    n, tasks = write(a.out, a.tasks, a.case, a.variant)
    print(f"wrote {a.out}: {n:,} records, {tasks:,} tasks")
    return 0


if __name__ == "__main__":
    sys.exit(main())
