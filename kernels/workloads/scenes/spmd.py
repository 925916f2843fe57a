"""SPMD scenes: multi-block tasks, start-together launches, waves (docs/reference.md §6, §9).

Every scene is a *launch plan*: a list of launches (kernel kind, blocks, sync_start, spin) run in
order, each writing the cache lines (CL, 16 f32) of its blocks from a running base CL:

    mix launch   block i of the launch:  CL base + 3i (AIC), base + 3i + 1 + s (AIV lane s) = i
    aiv launch   block i:                CL base + i = i

All launches take the one ``out`` tensor InOut (so the reference chains them, and so do we). The
orchestration reports each launch's (blocks, base CL) in ``layout`` with rt.set_tensor_data; the
check rebuilds the expected ``out`` from it (every other element stays 0). Widths that depend on
the device come from rt.available_clusters() (C) and rt.available_aiv() (A) at run time:

    spmd_multiblock_aiv       aiv 4, 16, 24, 48, 96 blocks                  (188 blocks)
    spmd_multiblock_mix       mix 2, 8, 12, 24, 48                          (94 blocks)
    spmd_batch_dispatch_oob   mix 48, 48 (more than a chip's 24 clusters: waves)
    spmd_sync_start           mix C/12, C/3, C/12, C/2; sync T T F T
    spmd_sync_start_aiv       aiv A/12, A/3, A/12, A/2; sync T T F T
    spmd_sync_start_edge      mix 1, C/3, C/3+1, C-1, 1; sync T T T T F
    spmd_sync_start_stress    6 rounds of: 4 x mix C/6, 2 x sync mix C/2, 2 x sync aiv C/3,
                              1 x aiv C/6                                  (54 tasks)
    spmd_starvation           6 x mix 4, sync mix 6, 6 x mix 4, sync mix 6, 6 x mix 4  (20 tasks)
    spmd_sync_start_early_dispatch   in a manual scope: a spinning AIC producer of 50 blocks,
                              then a sync mix launch of C blocks with deps = [producer]: a
                              producer wider than the device must not deadlock the launch
    spmd_sync_start_mix_spill a spinning aiv producer of A blocks, then sync mix C (deps it)
    (widths below 1 are 1)
    spmd_basic                one mix task of 1 block: AIC writes [block_idx, block_num] at CL 0,
                              AIV lane s writes [block_idx, block_num, sub_block_id] at CL 1 + s
    available_aicore_counts   one sync mix launch of C blocks; ``shape`` = [C, A] from the
                              orchestration; C in 1..24, A = 2C
"""

from __future__ import annotations

import numpy as np

from kernels import InOut
from kernels.workloads.scenes.kernels import (
    CL,
    spmd_context,
    spmd_write_aic_spin,
    spmd_write_aiv,
    spmd_write_aiv_spin,
    spmd_write_mix,
)
from kernels.workloads.workload import Alloc, Workload

MOD = "kernels.workloads.scenes.kernels"
MAX_CL = 1024                 # room for every plan on up to 24 clusters
SPIN_US = 2000                # a "long" producer (the reference spins 10^6..10^7 iterations)


def _w(x: float) -> int:
    return max(1, int(x))


# A plan: (C, A) -> [(kind, blocks, sync, spin_us, manual_dep_on_previous)]
PLANS = {
    "spmd_multiblock_aiv": lambda C, A: [("aiv", n, False, 0, False) for n in (4, 16, 24, 48, 96)],
    "spmd_multiblock_mix": lambda C, A: [("mix", n, False, 0, False) for n in (2, 8, 12, 24, 48)],
    "spmd_batch_dispatch_oob": lambda C, A: [("mix", 48, False, 0, False)] * 2,
    "spmd_sync_start": lambda C, A: [("mix", _w(C / 12), True, 0, False), ("mix", _w(C / 3), True, 0, False),
                                     ("mix", _w(C / 12), False, 0, False), ("mix", _w(C / 2), True, 0, False)],
    "spmd_sync_start_aiv": lambda C, A: [("aiv", _w(A / 12), True, 0, False), ("aiv", _w(A / 3), True, 0, False),
                                         ("aiv", _w(A / 12), False, 0, False), ("aiv", _w(A / 2), True, 0, False)],
    "spmd_sync_start_edge": lambda C, A: [("mix", 1, True, 0, False), ("mix", _w(C / 3), True, 0, False),
                                          ("mix", _w(C / 3) + 1 if C > 3 else 1, True, 0, False),
                                          ("mix", _w(C - 1), True, 0, False), ("mix", 1, False, 0, False)],
    "spmd_sync_start_stress": lambda C, A: 6 * ([("mix", _w(C / 6), False, 0, False)] * 4
                                                + [("mix", _w(C / 2), True, 0, False)] * 2
                                                + [("aiv", _w(C / 3), True, 0, False)] * 2
                                                + [("aiv", _w(C / 6), False, 0, False)]),
    "spmd_starvation": lambda C, A: ([("mix", 4, False, 0, False)] * 6 + [("mix", 6, True, 0, False)]
                                     + [("mix", 4, False, 0, False)] * 6 + [("mix", 6, True, 0, False)]
                                     + [("mix", 4, False, 0, False)] * 6),
    "spmd_sync_start_early_dispatch": lambda C, A: [("aic", 50, False, SPIN_US, False), ("mix", C, True, 0, True)],
    "spmd_sync_start_mix_spill": lambda C, A: [("aiv", A, False, SPIN_US, False), ("mix", C, True, 0, True)],
}
_KERNEL = {"aiv": spmd_write_aiv, "mix": spmd_write_mix}
_CLS = {"aiv": 1, "aic": 1, "mix": 3}


def _plan_orch(name: str):
    def orchestrate(rt, t, p, variant):
        out, layout = t["out"], t["layout"]
        plan = PLANS[name](rt.available_clusters(), rt.available_aiv())
        manual = any(x[4] for x in plan)
        with rt.scope(manual=manual):
            base, prev = 0, None
            for i, (kind, n, sync, spin, dep) in enumerate(plan):
                rt.set_tensor_data(layout, 2 * i, n)
                rt.set_tensor_data(layout, 2 * i + 1, base)
                deps = [prev] if dep else None
                if spin:
                    k = spmd_write_aic_spin if kind == "aic" else spmd_write_aiv_spin
                    prev = rt.submit(k, InOut(out), base, float(spin), blocks=n, sync_start=sync, deps=deps)
                else:
                    prev = rt.submit(_KERNEL[kind], InOut(out), base, blocks=n, sync_start=sync, deps=deps)
                base += _CLS[kind] * n
        return {"launches": len(plan), "blocks": sum(x[1] for x in plan)}
    return orchestrate


def _plan_check(name: str):
    def check(after, before, p):
        layout, out = after["layout"], after["out"]
        plan = PLANS[name](1, 2)                      # only the kinds are taken from here
        want = np.zeros_like(out)
        problems = []
        for i, (kind, *_rest) in enumerate(plan):
            n, base = int(layout[2 * i]), int(layout[2 * i + 1])
            if n < 1:
                problems.append(f"launch {i}: layout reports {n} blocks")
                continue
            for b in range(n):
                cls = [base + b] if kind != "mix" else [base + 3 * b + j for j in range(3)]
                for c in cls:
                    want[c * CL] = b
        bad = np.flatnonzero(want != out)
        if len(bad):
            problems.append(f"{len(bad)} element(s) differ from the layout-derived golden, first at CL "
                            f"{bad[0] // CL} (element {bad[0]}): got {out[bad[0]]}, want {want[bad[0]]}")
        if name == "spmd_sync_start_mix_spill" and int(layout[0]) != 2 * int(layout[2]):
            problems.append(f"AIV count {layout[0]} is not twice the cluster count {layout[2]}")
        return problems
    return check


def _plan_build(name: str):
    def build(p, seed, alloc: Alloc):
        out = alloc((MAX_CL * CL,), np.float32)
        out[...] = 0
        layout = alloc((2 * len(PLANS[name](24, 48)),), np.int32)
        layout[...] = -1
        return {"out": out, "layout": layout}
    return build


def _scene(name: str, summary: str, features: tuple[str, ...], hardware_only: bool = False,
           min_blocks: int = 1) -> Workload:
    return Workload(name=name, summary=summary, features=features, cases={"Case1": {}},
                    build=_plan_build(name), outputs=(), orchestrate=_plan_orch(name),
                    golden=lambda before, p, v: {}, check=_plan_check(name), tolerance=(0, 0), kernels=(MOD,),
                    reference=f"tests/st/a2a3/tensormap_and_ringbuffer/{name}", min_blocks=min_blocks)


SPMD_MULTIBLOCK_AIV = _scene("spmd_multiblock_aiv", "5 AIV launches of 4..96 blocks (188 blocks)", ("blocks=",))
SPMD_MULTIBLOCK_MIX = _scene("spmd_multiblock_mix", "5 mixed launches of 2..48 blocks (94 blocks)", ("blocks=",))
SPMD_BATCH_DISPATCH_OOB = _scene("spmd_batch_dispatch_oob", "2 mixed launches of 48 blocks (waves)", ("blocks=",))
SPMD_SYNC_START = _scene("spmd_sync_start", "4 mixed launches, 3 of them start-together, widths from C",
                         ("blocks=", "sync_start", "available_clusters", "set_tensor_data"))
SPMD_SYNC_START_AIV = _scene("spmd_sync_start_aiv", "4 AIV launches, 3 start-together, widths from A",
                             ("blocks=", "sync_start", "available_aiv", "set_tensor_data"))
SPMD_SYNC_START_EDGE = _scene("spmd_sync_start_edge", "start-together at the boundaries: 1, C-1 blocks",
                              ("blocks=", "sync_start", "available_clusters"))
SPMD_SYNC_START_STRESS = _scene("spmd_sync_start_stress", "6 rounds of 9 mixed/AIV, normal/start-together launches",
                                ("blocks=", "sync_start"))
SPMD_STARVATION = _scene("spmd_starvation", "start-together launches among many normal ones (20 tasks)",
                         ("blocks=", "sync_start"), min_blocks=6)        # its fixed start-together width
SPMD_SYNC_START_EARLY_DISPATCH = _scene(
    "spmd_sync_start_early_dispatch", "a 50-block producer wider than the device, then a start-together launch",
    ("blocks=", "sync_start", "manual scope", "deps="))
SPMD_SYNC_START_MIX_SPILL = _scene("spmd_sync_start_mix_spill",
                                   "an all-AIV producer, then a start-together mixed launch",
                                   ("blocks=", "sync_start", "deps="))


# -- spmd_basic ----------------------------------------------------------------------------------
def _basic_build(p, seed, alloc):
    out = alloc((48,), np.float32)
    out[...] = 0
    return {"out": out}


def _basic_golden(before, p, v):
    want = np.zeros(48, np.float32)
    want[0:2] = (0, 1)
    want[16:19] = (0, 1, 0)
    want[32:35] = (0, 1, 1)
    return {"out": want}


SPMD_BASIC = Workload(
    name="spmd_basic", summary="one mixed task reads its SPMD context (block_idx, block_num, sub_block_id)",
    features=("core_info",), cases={"Case1": {}}, build=_basic_build, outputs=("out",),
    orchestrate=lambda rt, t, p, v: rt.submit(spmd_context, InOut(t["out"])),
    golden=_basic_golden, tolerance=(0, 0), kernels=(MOD,),
    reference="tests/st/a2a3/tensormap_and_ringbuffer/spmd_basic")


# -- available_aicore_counts ---------------------------------------------------------------------
def _counts_build(p, seed, alloc):
    blocks = alloc((72 * CL,), np.float32)
    blocks[...] = 0
    shape = alloc((2,), np.int32)
    shape[...] = -1
    return {"blocks": blocks, "shape": shape}


def _counts_orch(rt, t, p, v):
    C, A = rt.available_clusters(), rt.available_aiv()
    rt.set_tensor_data(t["shape"], 0, C)
    rt.set_tensor_data(t["shape"], 1, A)
    rt.submit(spmd_write_mix, InOut(t["blocks"]), 0, blocks=C, sync_start=True)


def _counts_check(after, before, p):
    C, A = (int(x) for x in after["shape"])
    problems = []
    if not 1 <= C <= 24:
        problems.append(f"clusters = {C}, expected 1..24")
    if A != 2 * C:
        problems.append(f"aiv = {A}, expected 2 x clusters = {2 * C}")
    want = np.zeros(72 * CL, np.float32)
    for i in range(C):
        want[3 * i * CL:(3 * i + 3) * CL:CL] = i
    if not np.array_equal(want, after["blocks"]):
        problems.append("blocks differ from float(i) at CL 3i, 3i+1, 3i+2 for i < clusters")
    return problems


AVAILABLE_AICORE_COUNTS = Workload(
    name="available_aicore_counts", summary="a start-together launch as wide as the device, widths reported",
    features=("available_clusters", "available_aiv", "sync_start", "set_tensor_data"), cases={"Default": {}},
    build=_counts_build, outputs=(), orchestrate=_counts_orch, golden=lambda before, p, v: {},
    check=_counts_check, tolerance=(0, 0), kernels=(MOD,),
    reference="tests/st/a2a3/tensormap_and_ringbuffer/available_aicore_counts")
