"""Dependency scenes: explicit deps, dummy tasks, dense fan-in, predicated dispatch.

    dummy_task            X, Y, W: 16 f32 at -1. 4 cases (docs/reference.md §2):
      SingleDummyAutoDep        WRITE_CONST(InOut X) -> dummy(InOut X) -> COPY_FIRST(In X, InOut Y)
      LongDummyChain            the same with 4 chained InOut-X dummies
      DummyExplicitDepBarrier   A = WRITE_CONST(X), B = WRITE_CONST(W), dummy(deps A, B),
                                COPY_FIRST(In X, InOut Y, deps dummy)
      DenseFanoutFanin          A = WRITE_CONST(X); 18 dummies (deps A); COPY_FIRST(deps all 18)
    expected: X[0] = Y[0] = 42 (and W[0] = 42 in case 3), everything else -1
    fanin_lookup_perf     64 producers WRITE_CONST into their own 16-float slice of producer_out,
                          64 consumers (deps = all 64 producers) into their own slice of
                          consumer_out (4,096 explicit edges); dummy mode: the same graph of
                          dummy tasks (both tensors stay -1)
    chain_barrier         n producers WRITE_CONST(InOut X), one dummy with deps = all n, one
                          COPY_FIRST(In X, InOut Y, deps dummy); n = 64, 65, 200, 391
    predicated_dispatch   g = WRITE_GATE(InOut gate, v); WRITE_CONST(InOut X);
                          CLOBBER(InOut X, deps g, predicate gate[0] > 0); COPY_FIRST(In X, InOut Y)
                          v = 0: X[0] = Y[0] = 42 (CLOBBER skipped);  v = 1: 999
"""

from __future__ import annotations

import numpy as np

from kernels import In, InOut
from kernels.workloads.scenes.kernels import clobber, copy_first, write_const, write_gate
from kernels.workloads.workload import Alloc, Workload

MOD = "kernels.workloads.scenes.kernels"


def _minus_one(alloc: Alloc, **shapes: tuple) -> dict:
    out = {}
    for name, (shape, dt) in shapes.items():
        out[name] = alloc(shape, dt)
        out[name][...] = -1
    return out


# -- dummy_task ------------------------------------------------------------------------------------
def _dummy_orch(rt, t, p, variant):
    X, Y, W = t["X"], t["Y"], t["W"]
    case = p["case"]
    if case in (1, 2):
        rt.submit(write_const, InOut(X))
        for _ in range(1 if case == 1 else 4):
            rt.submit_dummy(InOut(X))
        rt.submit(copy_first, In(X), InOut(Y))
    elif case == 3:
        a = rt.submit(write_const, InOut(X))
        b = rt.submit(write_const, InOut(W))
        d = rt.submit_dummy(deps=[a, b])
        rt.submit(copy_first, In(X), InOut(Y), deps=[d])
    else:
        a = rt.submit(write_const, InOut(X))
        ds = [rt.submit_dummy(deps=[a]) for _ in range(18)]
        rt.submit(copy_first, In(X), InOut(Y), deps=ds)


def _dummy_golden(before, p, variant):
    want = {k: np.full(16, -1, np.float32) for k in ("X", "Y", "W")}
    want["X"][0] = want["Y"][0] = 42
    if p["case"] == 3:
        want["W"][0] = 42
    return want


DUMMY_TASK = Workload(
    name="dummy_task", summary="dependency-only tasks: auto-dep chains, explicit barriers, dense fan-out/fan-in",
    features=("submit_dummy", "deps=", "InOut auto deps"),
    cases={"SingleDummyAutoDep": {"case": 1}, "LongDummyChain": {"case": 2},
           "DummyExplicitDepBarrier": {"case": 3}, "DenseFanoutFanin": {"case": 4}},
    build=lambda p, seed, alloc: _minus_one(alloc, X=((16,), np.float32), Y=((16,), np.float32),
                                            W=((16,), np.float32)),
    outputs=("X", "Y", "W"), orchestrate=_dummy_orch, golden=_dummy_golden, tolerance=(0, 0), kernels=(MOD,),
    reference="tests/st/a2a3/tensormap_and_ringbuffer/dummy_task")


# -- fanin_lookup_perf ---------------------------------------------------------------------------
def _fanin_orch(rt, t, p, variant):
    prod, cons = t["producer_out"], t["consumer_out"]
    n = p["n"]
    real = p["use_real_kernels"]
    ids = []
    for i in range(n):
        v = InOut(prod.view((16,), (16 * i,)))
        ids.append(rt.submit(write_const, v) if real else rt.submit_dummy(v))
    for i in range(n):
        v = InOut(cons.view((16,), (16 * i,)))
        if real:
            rt.submit(write_const, v, deps=ids)
        else:
            rt.submit_dummy(v, deps=ids)


def _fanin_golden(before, p, variant):
    want = {k: np.full(16 * p["n"], -1, np.float32) for k in ("producer_out", "consumer_out")}
    if p["use_real_kernels"]:
        for w in want.values():
            w[::16] = 42
    return want


FANIN_LOOKUP_PERF = Workload(
    name="fanin_lookup_perf", summary="64 producers x 64 consumers, each consumer depends on all 64 (4,096 edges)",
    features=("deps=", "submit_dummy", "views"),
    cases={"SwimlaneProducers64Consumers64": {"n": 64, "use_real_kernels": 1},
           "DummyProducers64Consumers64": {"n": 64, "use_real_kernels": 0}},
    build=lambda p, seed, alloc: _minus_one(alloc, producer_out=((16 * p["n"],), np.float32),
                                            consumer_out=((16 * p["n"],), np.float32)),
    outputs=("producer_out", "consumer_out"), orchestrate=_fanin_orch, golden=_fanin_golden, tolerance=(0, 0),
    kernels=(MOD,), reference="tests/st/a2a3/tensormap_and_ringbuffer/fanin_lookup_perf")


# -- chain_barrier -----------------------------------------------------------------------------
def _chain_orch(rt, t, p, variant):
    X, Y = t["X"], t["Y"]
    ids = [rt.submit(write_const, InOut(X)) for _ in range(p["n"])]
    d = rt.submit_dummy(deps=ids)
    rt.submit(copy_first, In(X), InOut(Y), deps=[d])


def _chain_golden(before, p, variant):
    want = {k: np.full(16, -1, np.float32) for k in ("X", "Y")}
    want["X"][0] = want["Y"][0] = 42
    return want


CHAIN_BARRIER = Workload(
    name="chain_barrier", summary="n producers, one dummy barrier with n explicit deps, one consumer",
    features=("deps=", "submit_dummy"),
    cases={f"n_{n}": {"n": n} for n in (64, 65, 200, 391)},
    build=lambda p, seed, alloc: _minus_one(alloc, X=((16,), np.float32), Y=((16,), np.float32)),
    outputs=("X", "Y"), orchestrate=_chain_orch, golden=_chain_golden, tolerance=(0, 0), kernels=(MOD,),
    reference="tests/st/a2a3/tensormap_and_ringbuffer/dfx/dep_gen (chain_barrier_orch)")


# -- predicated_dispatch -------------------------------------------------------------------------
def _pred_orch(rt, t, p, variant):
    X, Y, gate = t["X"], t["Y"], t["gate"]
    g = rt.submit(write_gate, InOut(gate), p["gate_value"])
    rt.submit(write_const, InOut(X))
    rt.submit(clobber, InOut(X), deps=[g], predicate=(gate, 0, ">", 0))
    rt.submit(copy_first, In(X), InOut(Y))


def _pred_golden(before, p, variant):
    v = 999.0 if p["gate_value"] > 0 else 42.0
    want = {k: np.full(16, -1, np.float32) for k in ("X", "Y")}
    want["X"][0] = want["Y"][0] = v
    want["gate"] = np.full(16, -1, np.int32)
    want["gate"][0] = p["gate_value"]
    return want


PREDICATED_DISPATCH = Workload(
    name="predicated_dispatch", summary="a task that runs only if a gate written by an earlier task is > 0",
    features=("predicate=", "deps="),
    cases={"PredicateFalseSkips": {"gate_value": 0}, "PredicateTrueDispatches": {"gate_value": 1}},
    build=lambda p, seed, alloc: _minus_one(alloc, X=((16,), np.float32), Y=((16,), np.float32),
                                            gate=((16,), np.int32)),
    outputs=("X", "Y", "gate"), orchestrate=_pred_orch, golden=_pred_golden, tolerance=(0, 0), kernels=(MOD,),
    reference="tests/st/a2a3/tensormap_and_ringbuffer/predicated_dispatch")
