"""``ptoemu bench pipe``: what an intra-cluster pipe costs (kernels/pipe.py on device/waits.py).

    scenario     one mixed task, ``--tiles`` N small tiles (16 x 16 fp32)               measured
    roundtrip    AIC push (C2V) -> AIV pop, push back (V2C) -> AIC pop, N times        us per round trip
    stream       AIC pushes N tiles through a depth-2 ring, both AIVs pop halves        us per tile
                 (split up_down): the producer waits for the slower lane

Each on a process device (one block: 3 worker processes; a waiting part sleeps on its core's
semaphore after a short yield-spin) and on the sequential engine (the parts as threads). A run's
wall time, minus an empty run of the same kernel (dispatch and completion), over N. CPU: all the
device's processes, from /proc (schedstat, ns), per round trip or tile.

Rows: {"scenario", "engine", "tiles", "rounds", "us_min", "us_median", "us_max", "cpu_us"};
summary: roundtrip_us (device, median) and stream_us.

``ptoemu bench pipe --predict Case1``: the predicted a2a3 time of ``spmd_paged_attention`` (its
one mixed task), from the kernels' own counted instructions: the workload runs on the sequential
engine with every part's tile instructions and pipe flags collected, each block's three parts are
replayed as coupled timelines (kernels/a2a3.py ``couple_us``: a stage that waits for a pipe flag
pays the handshake latency, so the pipeline runs at its slowest stage's pace), and the task takes
as long as its slowest block (the blocks run on clusters of their own); ``--variant ffts`` does
the same for the variant whose pipes are written out as cross-core flags. ``ptoemu predict`` on a
recording uses the kernel's law (spmd.spmd_cost), which replays the busiest block's parts with
counting pipes: the same time when every sequence has the cache's blocks / batch.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import numpy as np

from host.bench import common
from host.device import Device
from host.platform import Platform
from host.run import build_on
from kernels import C2V, V2C, InOut, Mixed, TPipe, a2a3, core_info, kernel, tile
from kernels.workloads import catalogue
from kernels.workloads.paged_attention import spmd
from kernels.workloads.paged_attention.orchestration import INPUTS, scale_of

SHAPE = (16, 16)


def _pair(ring_a: np.ndarray, ring_b: np.ndarray) -> tuple[TPipe, TPipe]:
    return (TPipe(ring_a, C2V, SHAPE, np.float32, split="none"), TPipe(ring_b, V2C, SHAPE, np.float32, split="none"))


def _roundtrip_aic(ring_a, ring_b, n):
    there, back = _pair(ring_a, ring_b)
    t = np.ones(SHAPE, np.float32)
    for _ in range(n):
        there.push(t)
        t = back.pop()


def _roundtrip_aiv(ring_a, ring_b, n):
    there, back = _pair(ring_a, ring_b)
    for _ in range(n):
        back.push(there.pop() + 1)


def _stream_aic(ring_a, ring_b, n):
    p = TPipe(ring_a, C2V, SHAPE, np.float32)
    t = np.ones(SHAPE, np.float32)
    for _ in range(n):
        p.push(t)


def _stream_aiv(ring_a, ring_b, n):
    p = TPipe(ring_a, C2V, SHAPE, np.float32)
    for _ in range(n):
        p.pop()


roundtrip = kernel(Mixed(aic=_roundtrip_aic, aiv=_roundtrip_aiv), name="bench.pipe_roundtrip")
stream = kernel(Mixed(aic=_stream_aic, aiv0=_stream_aiv, aiv1=_stream_aiv), name="bench.pipe_stream")
SCENARIOS = {"roundtrip": roundtrip, "stream": stream}


def _measure(dev: Device, k, n: int, rounds: int) -> tuple[list[float], float]:
    ring_a = dev.zeros((2 * SHAPE[0] * SHAPE[1],), np.float32)
    ring_b = dev.zeros((2 * SHAPE[0] * SHAPE[1],), np.float32)

    def once(count: int) -> float:
        t0 = time.perf_counter()
        dev.run(lambda rt: rt.submit(k, InOut(ring_a), InOut(ring_b), count))
        return time.perf_counter() - t0

    once(n)                                           # warm: imports, scratch, first faults
    pids = dev.pids

    def cpu_ns() -> int:      # the device's processes, or (inline) this one with its part threads
        return sum(common.cpu_ns(pids)) if pids else time.process_time_ns()

    times, cpus = [], []
    for _ in range(rounds):
        empty = once(0)
        c0 = cpu_ns()
        full = once(n)
        cpus.append((cpu_ns() - c0) / n / 1e3)
        times.append(max(full - empty, 0.0) / n * 1e6)
    return times, statistics.median(cpus)


def run(tiles: int = 2000, rounds: int = 3, log: Callable[[str], None] = print) -> dict:
    rows = []
    for engine in ("device", "inline"):
        with Device(Platform(blocks=1), kernels=list(SCENARIOS.values()), inline=engine == "inline") as dev:
            for name, k in SCENARIOS.items():
                times, cpu = _measure(dev, k, tiles, rounds)
                row = {"scenario": name, "engine": engine, "tiles": tiles, "rounds": rounds,
                       "us_min": min(times), "us_median": statistics.median(times), "us_max": max(times),
                       "cpu_us": cpu}
                rows.append(row)
                unit = "round trip" if name == "roundtrip" else "tile"
                log(f"{name:<10} {engine:<7} {row['us_median']:8.1f} us per {unit} "
                    f"(min {row['us_min']:.1f}, max {row['us_max']:.1f}; CPU {cpu:.1f} us)")
    med = {(r["scenario"], r["engine"]): r["us_median"] for r in rows}
    summary = {"roundtrip_us": med[("roundtrip", "device")], "stream_us": med[("stream", "device")],
               "roundtrip_us_inline": med[("roundtrip", "inline")]}
    return common.results("pipe", {"tiles": tiles, "rounds": rounds}, rows, summary)


def predict_spmd(case: str | dict = "Case1", blocks: int = 24, seed: int = 0,
                 log: Callable[[str], None] = print, variant: str = "default") -> dict:
    """The coupled prediction of one ``spmd_paged_attention`` run (module docstring): per block
    its parts' counted programs coupled, the task the slowest block. ``case``: a case name or a
    full parameter dict; ``variant``: "default" (TPipes) or "ffts" (hand-written flag pipes)."""
    wl = catalogue.load("spmd_paged_attention")
    params = wl.case(case) if isinstance(case, str) else dict(case)
    case = params.get("name", "custom")
    programs: dict[tuple[int, int], list] = {}
    alone: dict[tuple[int, int], float] = {}

    def counted(fn: Callable) -> Callable:
        def part(*args: object) -> None:
            tile.begin()
            try:
                fn(*args)
            finally:
                counts = tile.end()
                ci = core_info()
                key = (ci.block_idx, 0 if ci.kind == "AIC" else ci.lane + 1)
                programs[key] = tile.program() or []
                alone[key] = counts.us if counts else 0.0
        return part

    k = kernel(Mixed(aic=counted(spmd.pa_aic), aiv0=counted(spmd.pa_aiv), aiv1=counted(spmd.pa_aiv)),
               name="bench.spmd_pa_counted")
    t0 = time.perf_counter()
    with Device(Platform(blocks=blocks), kernels=[k], inline=True) as dev:
        _, tensors = build_on(dev, wl, params, seed)
        info = dev.run(spmd.orchestrate, *(tensors[n] for n in INPUTS), tensors["out"], scale=scale_of(params), pa=k,
                       flags=variant == "ffts")
    log(f"{case}: {info['logical_blocks']} logical blocks over {info['blocks']} blocks, q_tile {info['q_tile']}; "
        f"counted on the sequential engine in {time.perf_counter() - t0:.1f} s")
    t0 = time.perf_counter()
    per_block = {}
    for b in range(info["blocks"]):
        per_block[b] = a2a3.couple_us([(slot, programs[(b, slot)]) for slot in range(3) if (b, slot) in programs])
    worst = max(per_block, key=lambda b: per_block[b][0])
    us, lo, hi = per_block[worst]
    solo = {name: alone.get((worst, slot), 0.0) for slot, name in enumerate(("aic", "aiv0", "aiv1"))}
    log(f"coupled in {time.perf_counter() - t0:.1f} s: slowest block {worst}: {us:,.0f} us [{lo:,.0f}, {hi:,.0f}]; "
        "its parts alone (no waiting): " + ", ".join(f"{n} {v:,.0f} us" for n, v in solo.items()))
    return {"case": case, "variant": variant, "blocks": info["blocks"], "logical_blocks": info["logical_blocks"],
            "q_tile": info["q_tile"],
            "us": us, "us_low": lo, "us_high": hi, "slowest_block": worst, "parts_alone_us": solo,
            "blocks_us": [per_block[b][0] for b in sorted(per_block)],
            "handshake_cycles": a2a3.PARAMS["handshake_cycles"].value}


def format(r: dict) -> str:
    lines = [f"{'scenario':<10} {'engine':<7} {'us median':>10} {'min':>8} {'max':>8} {'CPU us':>8}"]
    for row in r["rows"]:
        lines.append(f"{row['scenario']:<10} {row['engine']:<7} {row['us_median']:>10.1f} {row['us_min']:>8.1f} "
                     f"{row['us_max']:>8.1f} {row['cpu_us']:>8.1f}")
    s = r["summary"]
    lines.append(f"pipe round trip AIC -> AIV -> AIC ({SHAPE[0]}x{SHAPE[1]} fp32) on a process device: "
                 f"{s['roundtrip_us']:.1f} us; one tile through a depth-2 ring to both lanes: {s['stream_us']:.1f} us")
    for p in s.get("predicted", []):
        lines.append(f"spmd_paged_attention {p['case']} ({p.get('variant', 'default')}) predicted on a2a3 (coupled "
                     f"parts, slowest of {p['blocks']} blocks): {p['us']:,.0f} us [{p['us_low']:,.0f}, "
                     f"{p['us_high']:,.0f}]")
    return "\n".join(lines)


def plots(r: dict, prefix: str) -> list[str]:
    return []
