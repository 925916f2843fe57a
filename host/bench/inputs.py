"""``ptoemu bench inputs --workload NAME --cases C --blocks 2,8,24``: how long a workload's inputs
take to build, and that they are the same bits whoever builds them.

    for each case, each builder -- plain numpy (no device: the host fills every slice), a device of
    each --blocks size (its cores fill the big arrays, kernels/workloads/fill.py), the inline engine
    (the same tasks, one after the other in this process) -- and each of --rounds rounds:
        a fresh device, as ``ptoemu run`` starts one ─▶ host.run.build_on, timed: wall, CPU of
        this process, CPU of the device's processes ─▶ a digest of every array's bytes (not timed)
    ──▶ one row per (case, builder): build_s_{min,median,max}, host_cpu_s, device_cpu_s (medians),
        inputs_bytes, digest, same_bits (the digest equals the numpy builder's)

The exit status is 1 when any builder's bits differ from numpy's.
"""

from __future__ import annotations

import hashlib
import statistics
import time
from collections.abc import Callable

from host import run as runner
from host.bench import common
from host.device import Device
from host.platform import Platform
from kernels.workloads import catalogue
from kernels.workloads.workload import numpy_alloc


def _digest(arrays: dict) -> str:
    h = hashlib.blake2b(digest_size=8)
    for name in sorted(arrays):
        a = arrays[name]
        h.update(name.encode())
        h.update(memoryview(a.reshape(-1).view("u1")))
    return h.hexdigest()


def _build(wl, params: dict, seed: int, blocks: int | None, inline: bool) -> dict:
    """One build: numpy when ``blocks`` is None, else on a fresh device loaded with the fill kernel."""
    if blocks is None:
        t0, c0 = time.perf_counter(), time.process_time()
        arrays = wl.build(params, seed, numpy_alloc)
        wall, host = time.perf_counter() - t0, time.process_time() - c0
        return {"wall": wall, "host": host, "device": 0.0, "digest": _digest(arrays),
                "bytes": sum(a.nbytes for a in arrays.values())}
    platform = Platform(blocks=blocks, **(wl.platform(params) if wl.platform else {}))
    with Device(platform, kernels=[*wl.kernels, runner.FILL_KERNELS], inline=inline) as dev:
        d0 = sum(common.cpu_ns(dev.pids))
        t0, c0 = time.perf_counter(), time.process_time()
        arrays, _ = runner.build_on(dev, wl, params, seed)
        wall, host = time.perf_counter() - t0, time.process_time() - c0
        device = (sum(common.cpu_ns(dev.pids)) - d0) / 1e9
        return {"wall": wall, "host": host, "device": device, "digest": _digest(arrays),
                "bytes": sum(a.nbytes for a in arrays.values())}


def run(name: str, cases: list[str] | None, blocks: list[int], rounds: int, seed: int = 0,
        log: Callable[[str], None] = print) -> dict:
    wl = catalogue.load(name)
    cases = cases or [wl.smallest]
    builders = [("numpy", None, False), *(("device", b, False) for b in blocks), ("inline", 1, True)]
    rows = []
    for case in cases:
        params = wl.case(case)
        want = None
        for kind, b, inline in builders:
            got = [_build(wl, params, seed, b, inline) for _ in range(rounds)]
            walls = sorted(g["wall"] for g in got)
            digests = {g["digest"] for g in got}
            digest = digests.pop() if len(digests) == 1 else "differs between rounds"
            want = want or digest
            rows.append({"workload": name, "case": case, "builder": kind, "blocks": b if kind == "device" else None,
                         "rounds": rounds, "build_s_min": walls[0], "build_s_median": statistics.median(walls),
                         "build_s_max": walls[-1], "host_cpu_s": statistics.median(g["host"] for g in got),
                         "device_cpu_s": statistics.median(g["device"] for g in got),
                         "inputs_bytes": got[0]["bytes"], "digest": digest, "same_bits": digest == want})
            r = rows[-1]
            log(f"  {case} {kind}{f' {b} blocks' if kind == 'device' else ''}: build {r['build_s_median']:.3f} s "
                f"(host CPU {r['host_cpu_s']:.3f} s, device CPU {r['device_cpu_s']:.3f} s), digest {digest}"
                f"{'' if r['same_bits'] else ' DIFFERS from numpy'}")
    return common.results("inputs", {"workload": name, "cases": cases, "blocks": blocks, "rounds": rounds,
                                     "seed": seed}, rows, {"same_bits": all(r["same_bits"] for r in rows)})


def format(r: dict) -> str:
    cols = [("case", "{}"), ("builder", "{}"), ("blocks", "{}"), ("build_s_min", "{:.3f}"),
            ("build_s_median", "{:.3f}"), ("build_s_max", "{:.3f}"), ("host_cpu_s", "{:.3f}"),
            ("device_cpu_s", "{:.3f}"), ("digest", "{}"), ("same_bits", "{}")]
    mib = r["rows"][0]["inputs_bytes"] / 2**20 if r["rows"] else 0
    return common.table(f"inputs of {r['config']['workload']} ({mib:.0f} MiB), seed {r['config']['seed']}, "
                        f"{r['config']['rounds']} rounds", cols, r["rows"])


def plots(r: dict, prefix: str) -> list[str]:
    return []
