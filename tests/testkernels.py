"""Deterministic kernels for runtime tests (integer arithmetic, so results compare bit for bit)."""

from __future__ import annotations

import numpy as np

from kernels import AIC, AIV, Mixed, kernel, tile
from kernels.tile import F32, UB

MOD = 1_000_003


def _mix_body(args):
    *tensors, dirs, salt = args
    acc = int(salt)
    for i, (t, d) in enumerate(zip(tensors, dirs)):
        if d != 2:                                   # In or InOut: read
            acc = (acc * 31 + int(t.astype(np.int64).sum()) * (i + 1)) % MOD
    for i, (t, d) in enumerate(zip(tensors, dirs)):
        if d == 2:                                   # Out: write everything, read nothing
            t[...] = (acc + np.arange(t.size, dtype=np.int64).reshape(t.shape) * (i + 7)) % MOD
        elif d == 3:                                 # InOut: read then write
            t[...] = (t.astype(np.int64) * 3 + acc + i) % MOD


@kernel(AIV)
def mix(*args):
    """Tensors, then scalars: ``dirs`` (int array, 1 In / 2 Out / 3 InOut per tensor) and ``salt``."""
    _mix_body(args)


@kernel(AIC)
def mix_cube(*args):
    _mix_body(args)


mix_block = kernel(Mixed(aic=lambda *a: None, aiv0=lambda *a: _mix_body(a)), name="testkernels.mix_block")


@kernel(AIV)
def noop(*args):
    pass


@kernel(AIV)
def fail(x, msg):
    raise ValueError(f"kernel failed on purpose: {msg}")


@kernel(AIV)
def echo_scalars(out, *scalars):
    """Write repr of the scalars (types and values) into a uint8 tensor."""
    text = repr([(type(s).__name__, s.dtype.name if isinstance(s, np.ndarray) else None,
                  s.tolist() if isinstance(s, np.ndarray) else s) for s in scalars]).encode()
    out[:len(text)] = np.frombuffer(text, np.uint8)
    out[len(text):] = 0


@kernel(AIV)
def fill(out, value):
    out[...] = value


@kernel(AIV)
def copy(x, out):
    out[...] = x


@kernel(AIV)
def add_into(x, acc):
    np.add(acc, x, out=acc)


@kernel(AIV)
def up_reads_acc_when_first(mi, li, oi_new, mi_acc, li_acc, oi_acc, out, is_first, is_last):
    """A broken UP: it treats the first chunk like any other, i.e. it assumes a hub task has
    zero-filled the accumulators and reads them. Right with `hub`, wrong with `first_output`."""
    m = np.maximum(mi_acc, mi)
    alpha = np.exp(mi_acc - m)
    beta = np.exp(mi - m)
    li_acc[...] = alpha * li_acc + beta * li
    oi_acc[...] = alpha[:, None] * oi_acc + beta[:, None] * oi_new
    mi_acc[...] = m
    if is_last:
        np.divide(oi_acc, li_acc[:, None], out=out)


@kernel(AIV)
def writes_its_input(src, dst):
    np.copyto(dst, src)
    src += 1                       # declared In: a direction violation


@kernel(AIV)
def half_writer(out):
    out[: out.shape[0] // 2] = 1   # declared Out but leaves half unwritten


@kernel(AIV)
def spin_forever(x):
    import time
    while True:
        time.sleep(0.01)


@kernel(AIV)
def kill_self(x):
    import os
    import signal
    os.kill(os.getpid(), signal.SIGKILL)


@kernel(AIV)
def kill_pid(x, pid):
    import os
    import signal
    os.kill(int(pid), signal.SIGKILL)
    import time
    time.sleep(0.2)


@kernel(AIV)
def exit_process(x):
    """Kills its worker process (a stand-in for a crash or the OOM killer)."""
    import os
    os._exit(3)


dup = kernel(AIV, name="tk.dup")(lambda x: None)       # a name another module will try to take


def _spmd_body(out, salt):
    from kernels import core_info
    info = core_info()
    idx, num = (info.block_idx, info.block_num) if info else (0, 1)
    if out.ndim == 0:
        if idx == 0:
            out[...] = salt
        return
    out[idx::num] = (salt * 7 + idx) % MOD           # block i owns rows i, i + n, ...: any order agrees


@kernel(AIV)
def spmd_rows(out, salt):
    """SPMD: each logical block writes its own rows of ``out`` (Out or InOut)."""
    _spmd_body(out, salt)


spmd_rows_mixed = kernel(Mixed(aic=lambda *a: None, aiv0=lambda *a: _spmd_body(*a)),
                         name="testkernels.spmd_rows_mixed")


@kernel(AIV)
def wait_flag_then_write(flag, out):
    """Spin until flag[0] != 0 (at most 10 s: a test that never sets it fails, it does not hang),
    then write 1 into out: stands for a long task on unrelated data."""
    import time
    end = time.monotonic() + 10
    while flag[0] == 0 and time.monotonic() < end:
        time.sleep(0.0005)
    out[...] = 1


@kernel(AIV)
def tile_scale_rows(x, out, factor):
    """The README's tile-layer example: out = x * factor, 16 rows per tile, double-buffered."""
    c = tile.Core()
    t = c.tile(UB, (16, 128), F32, bufs=2)
    n = x.shape[0] // 16
    with c.loop(n):
        tile.load(t, tile.row_blocks(x, n))
        tile.muls(t, t, factor)
        tile.store(tile.row_blocks(out, n), t)


@kernel(AIV)
def tile_spmd_scale(x, out, factor):
    """SPMD on the tile layer: block b of n scales the 16-row tiles b, b + n, b + 2n, ... of x into
    out, so blocks get unequal shares when the tile count is not a multiple of n."""
    from kernels import core_info
    info = core_info()
    b, nb = (info.block_idx, info.block_num) if info else (0, 1)
    mine = list(range(b, x.shape[0] // 16, nb))
    if not mine:
        return
    c = tile.Core()
    t = c.tile(UB, (16, x.shape[1]), F32, bufs=2)
    xs, outs = x.reshape(-1, 16, x.shape[1]), out.reshape(-1, 16, x.shape[1])
    for i in c.range(len(mine)):
        tile.load(t, xs[mine[i]])
        tile.muls(t, t, factor)
        tile.store(outs[mine[i]], t)


tile_mixed_half = kernel(Mixed(aic=lambda x, out, factor: None, aiv0=tile_scale_rows.fn),
                         name="testkernels.tile_mixed_half")
