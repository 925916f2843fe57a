"""The reference's ``spmd_paged_attention``: decode paged attention as ONE mixed task over the
device's clusters, its cube and vector parts streaming tiles through three intra-cluster pipes
(kernels/pipe.py), one software-pipeline step apart.

    rt.submit(spmd_pa, In(query), In(key_cache), In(value_cache), In(block_table), In(context_lens),
              InOut(out), Out(sij_fifo), Out(pij_fifo), Out(oi_fifo), scale, ..., blocks=24)

    logical blocks = batch x q_loop (one (sequence, head tile of q_tile rows) each), strided over
    the launch's blocks: block h takes h, h + 24, h + 48, ...; each walks its sequence's KV blocks

    AIC   QK[0] push sij[0]; then QK[i] push sij[i] | pop pij[i-1] PV[i-1] push oi[i-1]; PV[n-1]
    AIVk  SF[0]; then SF[i] (pop sij[i], push pij[i]) | UP[i-1] (pop oi[i-1]); UP[n-1]; out rows
                                                        of lane k = out[tile rows k*q_tile/2 ..]
    pipes (depth 2, split up_down: AIV lane k takes rows k*q_tile/2 ..):
      sij  C2V  (q_tile, block_size) fp32     raw scores qi . K_jᵀ
      pij  V2C  (q_tile, block_size) bf16     p = bf16(exp(s . scale - running row max))
      oi   C2V  (q_tile, head_dim)   fp32     p . V_j

So QK[i] on the cube overlaps SF[i-1] on the vectors, PV[i-1] overlaps UP[i-2]: the pipeline
runs at the pace of its slowest stage (the cube, at these shapes). ``q_tile`` = 64 when there are
64 heads or more, else 16; the online softmax keeps a running max M_i, so UP needs no second
exponent: go = go . exp(M_{i-1} - M_i) + oi_i, gl = gl . exp(M_{i-1} - M_i) + rowsum(p_i), out =
go / gl. Kernels written as the reference's paged_attention_parallel.cpp, step for step (its
TMULS copies of the max and sum history, the double-buffered K/V loads with the next block's load
issued during this one's move), on the tile layer.

The FIFO tensors are the runtime tensors the reference allocates: for every cluster, 2 slots
sized for the largest q_tile and block (64 x max(block_size, 128) fp32 for sij, ...). A block uses
the slice of the cluster it runs on (on the chip the 24 blocks of the launch are the 24 clusters;
on a narrower device the launch is the device's width, ``blocks = min(24, clusters)``).

Variant "ffts": the same kernel with its three pipes written out by hand (``FlagPipe``): GM
ping-pong slots and a ready / free pair of the cluster's cross-core events each (kernels/ffts.py),
what TPUSH/TPOP lower to -- the reference's own A/B of the two (simpler PR #671). Same bits, the
same counted transfers and flags, so the same predicted time.

Golden: the same independent vectorised model as the other paged attentions (golden.py), one KV
block per chunk; tolerance 1e-2 as the reference's test (p's bf16 rounding is relative to the
running max here, to the block's own max there).

Predicted a2a3 time (``ptoemu predict``): ``spmd_cost``, the kernel's law, replays the busiest
hardware block's parts with counting pipes (kernels/pipe.py CountingPipe) and couples their
timelines through the pipe flags (kernels/a2a3.py couple_us); ``ptoemu bench pipe --predict``
does the same from a counted run of the real kernels.
"""

from __future__ import annotations

import functools
from typing import Any

import ml_dtypes
import numpy as np

from kernels import (
    C2V,
    V2C,
    InOut,
    Mixed,
    Out,
    TPipe,
    a2a3,
    core_info,
    kernel,
    set_cross_core,
    tile,
    wait_flag_dev,
    waits,
)
from kernels.args import In
from kernels.cost import Cost, TaskInfo
from kernels.pipe import CountingPipe, load_slot, slot_parts
from kernels.tile import CUBE, F32, L0A, L0B, L0C, L1, MTE1, MTE2, MTE3, UB, VECTOR
from kernels.workloads.paged_attention.cases import case_params
from kernels.workloads.paged_attention.golden import golden
from kernels.workloads.paged_attention.orchestration import INPUTS, scale_of
from kernels.workloads.paged_attention.unroll import build_case
from kernels.workloads.workload import Workload

__all__ = ["WORKLOAD", "orchestrate", "spmd_pa", "SPMD_BLOCK_NUM", "FIFO_DEPTH", "MAX_Q_TILE"]

BF16 = np.dtype(ml_dtypes.bfloat16)
SPMD_BLOCK_NUM = 24           # the reference's launch width (the a2a3's clusters)
FIFO_DEPTH = 2
MAX_Q_TILE = 64
_CUBE_SCRATCH = "spmd_pa.aic"


def q_tile_of(num_heads: int) -> int:
    return MAX_Q_TILE if num_heads >= MAX_Q_TILE else 16


def slot_bytes(block_size: int, head_dim: int) -> tuple[int, int, int]:
    """Bytes of one FIFO slot of sij, pij and oi: sized, as the reference's, for q_tile 64 and a
    block of at least 128 tokens, so one layout serves every case."""
    width = max(block_size, 128)
    return MAX_Q_TILE * width * 4, MAX_Q_TILE * width * 2, MAX_Q_TILE * max(head_dim, 128) * 4


def _ring(fifo: np.ndarray, slot: int) -> np.ndarray:
    """The FIFO_DEPTH slots of the cluster this part runs on, as bytes of ``fifo``."""
    stride = slot * FIFO_DEPTH
    cl = core_info().block
    return fifo.reshape(-1).view(np.uint8)[cl * stride:(cl + 1) * stride]


def _pipes(sij_fifo: np.ndarray, pij_fifo: np.ndarray, oi_fifo: np.ndarray, q_tile: int, block_size: int,
           head_dim: int, flags: bool = False) -> tuple[Any, ...]:
    """The three pipes on this cluster's slots of the FIFO tensors: TPipes, or (``flags``, the
    "ffts" variant) FlagPipes -- the same GM ping-pong synchronised by hand."""
    s, p, o = slot_bytes(block_size, head_dim)
    specs = ((sij_fifo, s, C2V, (q_tile, block_size), F32), (pij_fifo, p, V2C, (q_tile, block_size), BF16),
             (oi_fifo, o, C2V, (q_tile, head_dim), F32))
    return tuple(FlagPipe(_ring(fifo, nbytes), direction, shape, dt, 2 * i) if flags      # events 2i, 2i + 1
                 else TPipe(_ring(fifo, nbytes), direction, shape, dt, FIFO_DEPTH)
                 for i, (fifo, nbytes, direction, shape, dt) in enumerate(specs))


class FlagPipe:
    """A pipe written out by hand, as the reference's "-ffts" variant of this kernel does (simpler
    PR #671): a GM workspace of FIFO_DEPTH slots, a ready event (``event``) and a free event
    (``event + 1``) of the cluster's cross-core semaphores (kernels/ffts.py) -- what TPUSH/TPOP
    lower to. Splits rows between the two vector lanes (up_down). ``close()`` when done."""

    def __init__(self, ring: np.ndarray, direction: str, shape: tuple[int, int], dtype: Any, event: int) -> None:
        lane = waits.current("FlagPipe").slot - 1        # the part's lane, as a TPipe's (-1: the AIC)
        self.parts = slot_parts(ring, shape, dtype, FIFO_DEPTH, lane)
        self.lane = max(lane, 0)
        self.producing = (lane < 0) == (direction == C2V)
        self.ready, self.free, self.count = event, event + 1, 0

    def push(self, src: tile.Tile) -> None:
        n = self.count
        if n >= FIFO_DEPTH:
            wait_flag_dev(self.free)                     # slot n % depth was taken
        tile.store(self.parts[n % FIFO_DEPTH], src)
        set_cross_core(self.ready)
        self.count = n + 1

    def pop(self, dst: tile.Tile) -> tile.Tile:
        m = self.count
        wait_flag_dev(self.ready)
        load_slot(dst, self.parts[m % FIFO_DEPTH])
        set_cross_core(self.free, a2a3.MTE2)
        self.count = m + 1
        return dst

    def close(self) -> None:
        """The producer takes the free signals of its last slots: the semaphores persist, and a
        free signal left over would let the next task's producer overwrite a slot not yet popped
        (the end-of-task check reports such leftovers)."""
        if self.producing:
            for _ in range(min(self.count, FIFO_DEPTH)):
                wait_flag_dev(self.free)


def _closed(pipes: tuple[Any, Any, Any]) -> None:
    for p in pipes:
        if isinstance(p, FlagPipe):
            p.close()


def _scalar_waits_for(pipe: int) -> None:
    """set_flag(pipe, PIPE_S); wait_flag(pipe, PIPE_S): the scalar unit -- which issues every
    instruction -- waits until ``pipe`` is done, so nothing after starts before it (an ordering of
    the counted schedule: nothing to do unless counting)."""
    if tile.collecting():
        for dst in (MTE2, MTE1, MTE3, CUBE, VECTOR):
            tile.sync(pipe, dst)


def _n_blocks(context_len: int, block_size: int) -> int:
    return -(-int(context_len) // block_size) if context_len > 0 else 0


# ── AIC ─────────────────────────────────────────────────────────────────────────────────────────
#
# Each logical block allocates its tiles anew (a tile.Core per block), as the reference's
# aic_process_blocks / aiv_process_blocks TASSIGN theirs per call: the tile layer reuses the
# same buffers call after call, and a Core's scratch generations stay bounded.

def pa_aic(query, key_cache, value_cache, block_table, context_lens, out, sij_fifo, pij_fifo, oi_fifo,
           scale, num_heads, head_dim, block_size, max_blocks_per_req, q_loop, total_logical_blocks, q_tile, flags=0):
    """The cube part: QK-first software pipeline over every logical block of this hardware block."""
    ci = core_info()
    pipes = _pipes(sij_fifo, pij_fifo, oi_fifo, q_tile, block_size, head_dim, bool(flags))
    q_rows = query.reshape(-1, head_dim)
    keys_t = key_cache[:, :, 0, :].transpose(0, 2, 1)       # K blocks as (head_dim, block_size): DN
    values = value_cache[:, :, 0, :]
    for blk in range(ci.block_idx, total_logical_blocks, ci.block_num):
        b, qt = divmod(blk, q_loop)
        nb = _n_blocks(context_lens[b], block_size)
        if nb > 0:
            row0 = b * num_heads + qt * q_tile
            _aic_blocks(q_rows[row0:row0 + q_tile], keys_t, values, [int(x) for x in block_table[b, :nb]], pipes)
    _closed(pipes)


def _aic_blocks(qi: np.ndarray, keys_t: np.ndarray, values: np.ndarray, ids: list[int],
                pipes: tuple[TPipe, TPipe, TPipe]) -> None:
    """One logical block: QK[i] then PV[i-1] over its KV blocks ``ids`` (aic_process_blocks)."""
    sij_pipe, pij_pipe, oi_pipe = pipes
    (m, k), n = qi.shape, keys_t.shape[2]
    c = tile.Core("pa_aic", scratch=_CUBE_SCRATCH)
    q_l1 = c.tile(L1, (m, k), BF16, name="qi")
    k_l1 = (c.tile(L1, (k, n), BF16, name="kj_a"), c.tile(L1, (k, n), BF16, name="kj_b"))
    p_l1 = c.tile(L1, (m, n), BF16, name="pij")
    v_l1 = (c.tile(L1, (n, k), BF16, name="vj_a"), c.tile(L1, (n, k), BF16, name="vj_b"))
    a_qk, b_qk = c.tile(L0A, (m, k), BF16, name="left_qk"), c.tile(L0B, (k, n), BF16, name="right_qk")
    a_pv, b_pv = c.tile(L0A, (m, n), BF16, name="left_pv"), c.tile(L0B, (n, k), BF16, name="right_pv")
    s_acc, o_acc = c.tile(L0C, (m, n), F32, name="sij"), c.tile(L0C, (m, k), F32, name="oi")

    def step(i: int, block: int, loaded: bool, nxt: int, cache: np.ndarray, l1: tuple, left: tile.Tile,
             a: tile.Tile, b: tile.Tile, acc: tile.Tile, out: TPipe, into: TPipe | None = None) -> None:
        """aic_qk_step / aic_pv_step: [TLOAD KV block i], [TPOP the left operand], TMOV both to L0,
        TLOAD the next block meanwhile, TMATMUL, TPUSH the result; the FIX -> S flag after it."""
        if not loaded:
            tile.load(l1[i % 2], cache[block])
        if into is not None:
            into.pop(left)
        tile.move(a, left)
        tile.move(b, l1[i % 2])
        if nxt >= 0:
            tile.load(l1[(i + 1) % 2], cache[nxt])
        tile.matmul(acc, a, b)
        out.push(acc)
        _scalar_waits_for(MTE3)

    def qk(i: int, block: int, loaded: bool, nxt: int) -> None:
        step(i, block, loaded, nxt, keys_t, k_l1, q_l1, a_qk, b_qk, s_acc, sij_pipe)

    def pv(i: int, block: int, loaded: bool, nxt: int) -> None:
        step(i, block, loaded, nxt, values, v_l1, p_l1, a_pv, b_pv, o_acc, oi_pipe, pij_pipe)

    nb = len(ids)
    tile.load(q_l1, qi)
    if nb == 1:
        qk(0, ids[0], False, -1)
        pv(0, ids[0], False, -1)
        return
    qk(0, ids[0], False, ids[1])                             # prologue: sij[0] for SF[0]
    for i in range(1, nb):                                   # QK[i], then PV[i-1]
        qk(i, ids[i], True, ids[i + 1] if i + 1 < nb else -1)
        pv(i - 1, ids[i - 1], i > 1, ids[i])
    pv(nb - 1, ids[nb - 1], True, -1)                        # epilogue


# ── AIV ─────────────────────────────────────────────────────────────────────────────────────────

def pa_aiv(query, key_cache, value_cache, block_table, context_lens, out, sij_fifo, pij_fifo, oi_fifo,
           scale, num_heads, head_dim, block_size, max_blocks_per_req, q_loop, total_logical_blocks, q_tile, flags=0):
    """A vector part: SF-first software pipeline on its half of each head tile's rows."""
    ci = core_info()
    pipes = _pipes(sij_fifo, pij_fifo, oi_fifo, q_tile, block_size, head_dim, bool(flags))
    m = q_tile // 2
    for blk in range(ci.block_idx, total_logical_blocks, ci.block_num):
        b, qt = divmod(blk, q_loop)
        ctx = int(context_lens[b])
        row0 = b * num_heads + qt * q_tile + pipes[0].lane * m
        _aiv_blocks(out[row0:row0 + m], ctx, block_size, float(scale), pipes)
    _closed(pipes)


def _aiv_blocks(dst: np.ndarray, ctx: int, n: int, scale: float, pipes: tuple[TPipe, TPipe, TPipe]) -> None:
    """One logical block, this lane's rows ``dst``: SF[i] then UP[i-1] (aiv_process_blocks)."""
    sij_pipe, pij_pipe, oi_pipe = pipes
    m, d = dst.shape
    c = tile.Core("pa_aiv")
    go = c.tile(UB, (m, d), F32, name="go")
    nb = _n_blocks(ctx, n)
    if nb <= 0:
        tile.fill(go, 0.0)
        tile.store(dst, go)
        return
    s = c.tile(UB, (m, n), F32, name="sij")
    p = c.tile(UB, (m, n), F32, name="pij")
    c.tile(UB, (m, n), F32, name="tmp")                     # the row reductions' scratch on the chip
    p16 = c.tile(UB, (m, n), BF16, name="pij_bf16")
    local_max = c.tile(UB, (m, 1), F32, name="local_max")
    local_row = c.tile(UB, (1, m), F32, name="local_max_row")
    global_max = c.tile(UB, (1, m), F32, name="global_max")
    saved_max = c.tile(UB, (1, m), F32, name="saved_max")
    prev_max = c.tile(UB, (1, m), F32, name="prev_max")
    ll = c.tile(UB, (m, 1), F32, name="ll")
    saved_ll = c.tile(UB, (m, 1), F32, name="saved_ll")
    alpha = c.tile(UB, (1, m), F32, name="alpha")
    gl = c.tile(UB, (1, m), F32, name="gl")
    o_new = c.tile(UB, (m, d), F32, name="oi_new")

    def sf(i: int, valid: int) -> None:
        sij_pipe.pop(s)
        if valid < n:
            tile.fill_pad(s, valid, -np.inf)
        tile.row_max(local_max, s)
        row = tile.reshape(local_max, (1, m))
        if i == 0:
            tile.muls(global_max, row, scale)
        else:
            tile.muls(local_row, row, scale)
            tile.max(global_max, global_max, local_row)
        tile.muls(s, s, scale)
        tile.row_expand_sub(p, s, tile.reshape(global_max, (m, 1)))
        tile.exp(p, p)
        tile.cast(p16, p)
        tile.cast(p, p16)
        tile.row_sum(ll, p)
        pij_pipe.push(p16)

    def up(i: int, ll_i: tile.Tile, cur: tile.Tile, prev: tile.Tile) -> None:
        oi_pipe.pop(o_new)
        if i == 0:
            tile.muls(go, o_new, 1.0)
            tile.muls(gl, tile.reshape(ll_i, (1, m)), 1.0)
            return
        tile.sub(alpha, prev, cur)
        tile.exp(alpha, alpha)
        tile.row_expand_mul(go, go, tile.reshape(alpha, (m, 1)))
        tile.add(go, go, o_new)
        tile.mul(gl, gl, alpha)
        tile.add(gl, gl, tile.reshape(ll_i, (1, m)))

    valid_last = min(n, ctx - (nb - 1) * n)
    if nb == 1:
        sf(0, valid_last)
        up(0, ll, global_max, global_max)
    else:
        sf(0, n)
        for i in range(1, nb):                               # SF[i], then UP[i-1]
            if i > 1:                                        # (UP[0] needs no previous max)
                tile.muls(prev_max, saved_max, 1.0)
            tile.muls(saved_max, global_max, 1.0)
            tile.muls(saved_ll, ll, 1.0)
            sf(i, valid_last if i == nb - 1 else n)
            up(i - 1, saved_ll, saved_max, prev_max)
        up(nb - 1, ll, global_max, saved_max)               # epilogue
    tile.row_expand_div(go, go, tile.reshape(gl, (m, 1)))
    tile.store(dst, go)


# ── cost law (ptoemu predict) ───────────────────────────────────────────────────────────────────

@functools.lru_cache(maxsize=32)
def coupled_block_us(q_tile: int, head_dim: int, block_size: int, n_kv: int,
                     logical: int) -> tuple[float, float, float]:
    """(µs, low, high) of one hardware block that runs ``logical`` logical blocks of ``n_kv`` KV
    blocks: the parts' own instructions, replayed with counting pipes (kernels/pipe.py
    CountingPipe) on zeros of the right shapes, then coupled through their pipe flags
    (kernels/a2a3.py couple_us) -- the pipeline at its slowest stage's pace."""
    programs = {}
    for slot in (0, 1):                        # the two vector lanes run the same program
        pipes = (CountingPipe(slot, 1, C2V, (q_tile, block_size), F32, FIFO_DEPTH),
                 CountingPipe(slot, 2, V2C, (q_tile, block_size), BF16, FIFO_DEPTH),
                 CountingPipe(slot, 3, C2V, (q_tile, head_dim), F32, FIFO_DEPTH))
        tile.begin()
        try:
            for _ in range(logical):
                if slot == 0:
                    _aic_blocks(np.zeros((q_tile, head_dim), BF16), np.zeros((2, head_dim, block_size), BF16),
                                np.zeros((2, block_size, head_dim), BF16), [i % 2 for i in range(n_kv)], pipes)
                else:
                    _aiv_blocks(np.zeros((q_tile // 2, head_dim), np.float32), n_kv * block_size, block_size, 0.1,
                                pipes)
        finally:
            tile.end()
        programs[slot] = tile.program() or []
    return a2a3.couple_us([(0, programs[0]), (1, programs[1]), (2, programs[1])])


def spmd_cost(t: TaskInfo) -> Cost:
    """One block of the task: the busiest hardware block's logical blocks (``coupled_block_us``)
    and the K/V blocks, query tiles and out rows it moves. The recording holds shapes, not the
    context lengths: a sequence is taken to have key_cache blocks / batch KV blocks (the cache
    holds the batch's blocks evenly, as the reference's inputs and ptoemu's do)."""
    _, _, head_dim, block_size, _, q_loop, total, q_tile = (int(x) for x in t.scalars[:8])
    batch = max(1, total // max(q_loop, 1))
    n_kv = max(1, t.args[1].shape[0] // batch)
    logical = -(-total // max(t.blocks, 1))
    us, _, _ = coupled_block_us(q_tile, head_dim, block_size, n_kv, logical)
    kv = 2 * n_kv * block_size * head_dim * 2
    return Cost(float(us), logical * (kv + q_tile * head_dim * (2 + 4)))


spmd_pa = kernel(Mixed(aic=pa_aic, aiv0=pa_aiv, aiv1=pa_aiv), name="spmd_paged_attention.pa", cost=spmd_cost)


# ── orchestration and workload ──────────────────────────────────────────────────────────────────

def orchestrate(rt: Any, query: Any, key_cache: Any, value_cache: Any, block_table: Any, context_lens: Any,
                out: Any, *, scale: float, blocks: int | None = None, pa: Any = None,
                flags: bool = False) -> dict[str, int]:
    """One mixed task over ``blocks`` (default min(24, the device's clusters)) blocks (module
    docstring); ``pa`` may replace the kernel by another with its signature (e.g. one that
    counts its parts); ``flags``: the parts exchange tiles through FlagPipes (the "ffts"
    variant) instead of TPipes."""
    batch, heads, head_dim = query.shape
    block_size = key_cache.shape[1]
    q_tile = q_tile_of(heads)
    if heads % q_tile:
        raise ValueError(f"spmd_paged_attention: num_heads={heads} must be a multiple of q_tile={q_tile} "
                         "(16, or 64 from 64 heads on)")
    if out.shape != (batch * heads, head_dim):
        raise ValueError(f"spmd_paged_attention: out has shape {out.shape}, expected {(batch * heads, head_dim)}")
    q_loop = heads // q_tile
    total = batch * q_loop
    clusters = rt.available_clusters()
    blocks = blocks or min(SPMD_BLOCK_NUM, clusters)
    words = [clusters * FIFO_DEPTH * sb // 4 for sb in slot_bytes(block_size, head_dim)]
    with rt.scope():
        fifos = [rt.make_tensor((w,), np.int32) for w in words]
        rt.submit(pa or spmd_pa, In(query), In(key_cache), In(value_cache), In(block_table), In(context_lens),
                  InOut(out), *(Out(f) for f in fifos), float(scale), heads, head_dim, block_size,
                  block_table.shape[1], q_loop, total, q_tile, int(flags), blocks=blocks)
    return {"blocks": blocks, "logical_blocks": total, "q_tile": q_tile}


def _orchestrate(rt: Any, t: dict, params: dict[str, Any], variant: str) -> dict:
    return orchestrate(rt, *(t[n] for n in INPUTS), t["out"], scale=scale_of(params), flags=variant == "ffts")


def _golden(before: dict[str, np.ndarray], params: dict[str, Any], variant: str) -> dict[str, np.ndarray]:
    return {"out": golden(*(before[n] for n in INPUTS), scale_of(params), unroll=1)}


def _params(name: str, p: dict[str, Any]) -> dict[str, Any]:
    params = case_params(p) | {"name": name}
    params.pop("unroll")                     # (the unrolled workloads' chunking: not this one's)
    return params


_REF = {"kv_head_num": 1, "max_model_len": 32768, "dtype": "bfloat16"}
CASES = {
    # ptoemu's CI-sized shapes: partial last blocks, one-block sequences, q_tile 64
    "small": {"batch": 5, "num_heads": 16, "head_dim": 32, "block_size": 16, "context_len": [40, 16, 1, 77, 33],
              "max_model_len": 256},
    "heads64": {"batch": 3, "num_heads": 64, "head_dim": 32, "block_size": 16, "context_len": [50, 17, 8],
                "max_model_len": 256},
    # the reference's (test_spmd_paged_attention.py)
    "SmallCase1": {"batch": 24, "num_heads": 16, "head_dim": 128, "block_size": 128, "context_len": 8192, **_REF},
    "Case1": {"batch": 256, "num_heads": 16, "head_dim": 128, "block_size": 128, "context_len": 8192, **_REF},
    "Case2": {"batch": 64, "num_heads": 64, "head_dim": 128, "block_size": 64, "context_len": 8192, **_REF},
}

WORKLOAD = Workload(
    name="spmd_paged_attention",
    summary="decode paged attention as one mixed SPMD task: AIC and AIV parts stream tiles through "
            "intra-cluster pipes (TPUSH/TPOP), QK | SF | PV | UP one step apart",
    features=("mixed kernel", "SPMD blocks=24", "intra-cluster pipes (TPipe C2V/V2C, up_down)", "runtime FIFO tensors",
              "tile layer"),
    cases={name: _params(name, p) for name, p in CASES.items()},
    variants=("default", "ffts"),
    build=build_case, outputs=("out",), orchestrate=_orchestrate, golden=_golden, tolerance=(1e-2, 1e-2),
    kernels=("kernels.workloads.paged_attention.spmd",),
    hardware_only=frozenset({"SmallCase1", "Case1", "Case2"}), big=frozenset({"Case1", "Case2"}),
    reference="tests/st/a2a3/tensormap_and_ringbuffer/spmd_paged_attention",
    plan_inputs=("block_table", "context_lens"),
    notes=("the reference's CPU simulator no longer builds this MIX kernel; ptoemu runs it on both engines",))
