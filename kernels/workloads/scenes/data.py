"""Data scenes: scalar reads and writes from the orchestration, initial values, runtime outputs,
heap reuse across scopes (docs/reference.md §4, §8, §10).

    scalar_data              a = 2.0 (16384 f32), b = arange; 8 records (6 kernels, 2 allocs):
      c = add(a, b)                                 check[0] = c[0] = 2,  check[1] = c[100] = 102
      s = alloc_tensors(init 77.0)                  check[2] = s[0] = 77
      noop(InOut s)                                 check[3] = 77;  check[4] = check[0] + check[2] = 79
      set s[0] = 42                                 check[5] = 42
      d = alloc_tensors(); set d[0] = 10; e = add(d, a)           check[6] = e[0] = 12
      add(In c, In b); set c[0] = 88 (waits for that reader too)   check[7] = 88
      noop(Out b); set b[0] = 55 (waits for the noop)               check[8] = 55; b[0] back to 0
      result = add(a, b) (Out on the existing buffer)
    expected: check = [2, 102, 77, 77, 79, 42, 12, 88, 55], result = a + b
    vector_example           f = (a + b + 1)(a + b + 2) + (a + b), a = 2, b = 3 -> 47 (16384 f32):
                             c = add(a, b) (a runtime output); in a nested scope d = c + 1,
                             e = c + 2, g = d * e, f = g + c written into the external f
    heap_empty_ring_rebase   a 1.5 MiB heap; two scopes one after the other, each making a 1 MiB
                             runtime tensor (FILL_CONST 42) and copying its first element into
                             Y1 / Y2: the second must reuse the first one's memory
"""

from __future__ import annotations

import numpy as np

from kernels import In, InOut, Out
from kernels.workloads.examples.vector_chain import add, add_scalar, mul
from kernels.workloads.scenes.kernels import copy_first, fill_const, noop
from kernels.workloads.workload import Alloc, Workload

MOD = ("kernels.workloads.scenes.kernels", "kernels.workloads.examples.vector_chain")
N = 16384
F32 = np.float32


# -- scalar_data ---------------------------------------------------------------------------------
def _scalar_build(p, seed, alloc: Alloc):
    arrays = {"a": alloc((N,), F32), "b": alloc((N,), F32), "result": alloc((N,), F32),
              "check": alloc((9,), F32)}
    arrays["a"][...] = 2.0
    arrays["b"][...] = np.arange(N, dtype=F32)
    arrays["result"][...] = 0
    arrays["check"][...] = 0
    return arrays


def _scalar_orch(rt, t, p, v):
    a, b, result, check = t["a"], t["b"], t["result"], t["check"]
    get, put = rt.get_tensor_data, rt.set_tensor_data
    c = rt.make_tensor((N,), F32)
    rt.submit(add, In(a), In(b), Out(c))
    put(check, 0, get(c, 0))
    put(check, 1, get(c, 100))
    (s,) = rt.alloc_tensors(((1,), F32, 77.0))
    put(check, 2, get(s, 0))
    rt.submit(noop, InOut(s))
    put(check, 3, get(s, 0))
    put(check, 4, get(check, 0) + get(check, 2))
    put(s, 0, 42.0)
    put(check, 5, get(s, 0))
    (d,) = rt.alloc_tensors(((N,), F32))
    put(d, 0, 10.0)
    e = rt.make_tensor((N,), F32)
    rt.submit(add, In(d), In(a), Out(e))
    put(check, 6, get(e, 0))
    c2 = rt.make_tensor((N,), F32)
    rt.submit(add, In(c), In(b), Out(c2))
    put(c, 0, 88.0)
    put(check, 7, get(c, 0))
    rt.submit(noop, Out(b))
    put(b, 0, 55.0)
    put(check, 8, get(b, 0))
    put(b, 0, 0.0)
    rt.submit(add, In(a), In(b), Out(result))


SCALAR_DATA = Workload(
    name="scalar_data", summary="get/set_tensor_data around tasks: read-after-write, write-after-read/write, init",
    features=("get_tensor_data", "set_tensor_data", "alloc_tensors init", "Out on an existing buffer"),
    cases={"Default": {}}, build=_scalar_build, outputs=("check", "result"), orchestrate=_scalar_orch,
    golden=lambda before, p, v: {"check": np.array([2, 102, 77, 77, 79, 42, 12, 88, 55], F32),
                                 "result": before["a"] + np.arange(N, dtype=F32)},
    tolerance=(0, 0), kernels=MOD, hardware_only=frozenset({"Default"}),
    reference="examples/a2a3/tensormap_and_ringbuffer/scalar_data")


# -- vector_example ------------------------------------------------------------------------------
def _vector_build(p, seed, alloc: Alloc):
    arrays = {"a": alloc((N,), F32), "b": alloc((N,), F32), "f": alloc((N,), F32)}
    arrays["a"][...] = p["a"]
    arrays["b"][...] = p["b"]
    arrays["f"][...] = 0
    return arrays


def _vector_orch(rt, t, p, v):
    a, b, f = t["a"], t["b"], t["f"]
    c = rt.make_tensor((N,), F32)
    rt.submit(add, In(a), In(b), Out(c))
    with rt.scope():
        d, e, g = (rt.make_tensor((N,), F32) for _ in range(3))
        rt.submit(add_scalar, In(c), Out(d), 1.0)
        rt.submit(add_scalar, In(c), Out(e), 2.0)
        rt.submit(mul, In(d), In(e), Out(g))
        rt.submit(add, In(g), In(c), Out(f))


VECTOR_EXAMPLE = Workload(
    name="vector_example", summary="f = (a+b+1)(a+b+2) + (a+b) through runtime outputs and a nested scope",
    features=("runtime outputs", "nested scope", "Out on an existing buffer"),
    cases={"Default": {"a": 2.0, "b": 3.0}, "orch_so_cache_1": {"a": 1.0, "b": 4.0},
           "orch_so_cache_2": {"a": 0.5, "b": 0.5}},
    build=_vector_build, outputs=("f",), orchestrate=_vector_orch,
    golden=lambda before, p, v: {"f": (before["a"] + before["b"] + 1) * (before["a"] + before["b"] + 2)
                                 + (before["a"] + before["b"])},
    tolerance=(0, 0), kernels=MOD, reference="examples/a2a3/tensormap_and_ringbuffer/vector_example")


# -- heap_empty_ring_rebase ----------------------------------------------------------------------
def _rebase_build(p, seed, alloc: Alloc):
    arrays = {"Y1": alloc((16,), F32), "Y2": alloc((16,), F32)}
    for y in arrays.values():
        y[...] = -1
    return arrays


def _rebase_orch(rt, t, p, v):
    for y in (t["Y1"], t["Y2"]):
        with rt.scope():
            big = rt.make_tensor((1024, 256), F32)          # 1 MiB of a 1.5 MiB heap
            rt.submit(fill_const, Out(big))
            rt.submit(copy_first, In(big), InOut(y))


def _rebase_golden(before, p, v):
    want = np.full(16, -1, F32)
    want[0] = 42
    return {"Y1": want, "Y2": want.copy()}


HEAP_EMPTY_RING_REBASE = Workload(
    name="heap_empty_ring_rebase", summary="two scopes each filling a 1 MiB runtime tensor in a 1.5 MiB heap",
    features=("nested scopes", "heap reuse"), cases={"EmptyRingRebase": {}}, build=_rebase_build,
    outputs=("Y1", "Y2"), orchestrate=_rebase_orch, golden=_rebase_golden, tolerance=(0, 0), kernels=MOD,
    platform=lambda p: {"heap_bytes": 3 << 19},
    reference="tests/st/a2a3/tensormap_and_ringbuffer/heap_empty_ring_rebase")
