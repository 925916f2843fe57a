"""Kernels of the reference's scene tests (its ``kernels/aic`` and ``kernels/aiv`` folders).

A cache line (CL) is 16 float32: the SPMD kernels write ``float(block_idx)`` into element 0 of
the cache line their block owns, so a result shows which logical block ran where.
"""

from __future__ import annotations

import time

from kernels import AIC, AIV, Mixed, core_info, kernel

CL = 16


@kernel(AIC)
def write_const(x):
    """WRITE_CONST: x[0] = 42.0."""
    x.reshape(-1)[0] = 42.0


@kernel(AIC)
def copy_first(x, y):
    """COPY_FIRST: y[0] = x[0]."""
    y.reshape(-1)[0] = x.reshape(-1)[0]


@kernel(AIC)
def clobber(x):
    """CLOBBER: x[0] = 999.0."""
    x.reshape(-1)[0] = 999.0


@kernel(AIC)
def write_gate(gate, value):
    """WRITE_GATE: gate[0] = (int32) value."""
    gate[0] = value


@kernel(AIC)
def fill_const(x):
    """FILL_CONST: every element 42.0 (a 1 MiB output)."""
    x[...] = 42.0


def _spin(us: float) -> None:
    """Stand for a long kernel (the reference spins 10^6..10^7 iterations): burn CPU time."""
    end = time.thread_time_ns() + int(us * 1000)
    while time.thread_time_ns() < end:
        pass


def _block() -> tuple[int, int, int]:
    info = core_info()
    return (info.block_idx, info.block_num, info.sub_block_id) if info else (0, 1, 0)


@kernel(AIV)
def spmd_write_aiv(out, base_cl):
    """One CL per block: out[(base + block_idx) * 16] = block_idx."""
    idx, _, _ = _block()
    out[(base_cl + idx) * CL] = idx


def _mix_aic(out, base_cl, spin_us=0.0):
    idx, _, _ = _block()
    _spin(spin_us)
    out[(base_cl + 3 * idx) * CL] = idx


def _mix_aiv(out, base_cl, spin_us=0.0):
    idx, _, sub = _block()
    out[(base_cl + 3 * idx + 1 + sub) * CL] = idx


spmd_write_mix = kernel(Mixed(aic=_mix_aic, aiv0=_mix_aiv, aiv1=_mix_aiv), name=f"{__name__}.spmd_write_mix")


@kernel(AIC)
def spmd_write_aic_spin(out, base_cl, spin_us):
    """A long AIC producer: spin, then out[(base + block_idx) * 16] = block_idx."""
    idx, _, _ = _block()
    _spin(spin_us)
    out[(base_cl + idx) * CL] = idx


@kernel(AIV)
def spmd_write_aiv_spin(out, base_cl, spin_us):
    idx, _, _ = _block()
    _spin(spin_us)
    out[(base_cl + idx) * CL] = idx


def _ctx_aic(out):
    idx, num, _ = _block()
    out[0:2] = (idx, num)


def _ctx_aiv(out):
    idx, num, sub = _block()
    out[(1 + sub) * CL:(1 + sub) * CL + 3] = (idx, num, sub)


spmd_context = kernel(Mixed(aic=_ctx_aic, aiv0=_ctx_aiv, aiv1=_ctx_aiv), name=f"{__name__}.spmd_context")


@kernel(AIV)
def noop(*args):
    """kernel_noop: touches nothing (its arguments only order it)."""
