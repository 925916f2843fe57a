"""The Qwen3-14B decode layer's dense kernels, on the tile layer, as the reference writes them.

Reference: hw-native-sys/simpler examples/a2a3/tensormap_and_ringbuffer/qwen3_14b_decode/kernels/
aic/*.cpp and aiv/*.cpp (ptoas-generated PTO). Widths below are at full size (unit U = 1024 =
hidden / 5); the CI cases divide every width by 4 and keep every count. All tiles are 16 rows: the
batch of decode lanes.

    AIC (cube), split-K GEMMs: x (16, K) bf16 @ W (K, N) bf16 -> fp32 partial, stored with an
    atomic add into a zero-seeded fp32 accumulator that other tasks add into at the same time
        q_proj  SPMD 50 blocks   block b: K block b % 5 (U rows), N range (b // 5) * U/2 as two
                                 U/4 sub-tiles; K in chunks of U/4, 4 matmul steps per chunk
        k_proj, v_proj  SPMD 10  the same, on the KV width
        out_proj                 one tile: attn_out[:, k0:+U] @ wo[k0:+U, n0:+U/2]; K chunks of
                                 U/16, 2 steps each
        out_proj_0  SPMD 24      tiles 26 + block_idx of the same 50 (5 K x 10 N)
        gate/up_proj[_0.._3]  SPMD 6   block b: N tile b (U columns) of K block k0;
                                 K chunks of U/16, 4 steps each
        gate/up_proj_4, down_proj      one (k0, n0) tile
    AIV (vector)
        copy_hidden / copy_out   bf16 <-> fp32 over 20 tiles of (16, U/4)
        x_gamma0 SPMD 5          normed = bf16(cur * input_rms_weight[0]) on U columns per block
                                 (RMSNorm is factored: (x * g) @ W, scaled by 1/rms(x) afterwards)
        rms_recip                inv_rms = 1 / sqrt(sum(cur^2) / hidden + eps), per row
        q_seed, kv_seed, mlp_out_seed   zero-fill the accumulators; attn_out_seed: empty body
        residual_rms_cast[_0.._3]  on U columns k_base..: h1 = attn_proj + cur (fp32), and
                                 mlp_in = bf16(h1 * post_rms_weight[layer])
        post_rms_reduce          post_inv = 1 / sqrt(sum((attn_proj + cur)^2) / hidden + eps)
        silu                     on U columns n0..: sg = gate * post_inv, su = up * post_inv,
                                 mlp = bf16(sg / (1 + exp(-sg)) * su)
        dcr_xgamma SPMD 5        next_hidden = down + h1 (fp32 carry), next_normed =
                                 bf16(next_hidden * input_rms_weight[gamma_idx]): the next layer's
                                 x_gamma fused into this layer's tail

Stacked weights: a kernel gets the whole stacked tensor and the reference's layer row offset
(i * hidden, i * intermediate); it reads rows (offset mod rows stored) -- model.py says why a
case may store fewer layers than it runs. The gate/up variants (_0 .. _4) and the
residual_rms_cast variants are the same code under the reference's names (each call site of the
generated orchestration is its own kernel there).
"""

from __future__ import annotations

import numpy as np

from kernels import AIC, AIV, a2a3, core_info, kernel, tile
from kernels.cost import Cost, TaskInfo
from kernels.tile import BF16, EACH, F32, L0A, L0B, L0C, L1, UB
from kernels.workloads.qwen3.model import EPS, K_SPLITS

__all__ = [
    "copy_hidden", "copy_out", "x_gamma0", "rms_recip", "attn_out_seed", "q_seed", "kv_seed", "mlp_out_seed",
    "q_proj", "k_proj", "v_proj", "out_proj", "out_proj_0", "residual_rms_cast", "residual_rms_casts",
    "post_rms_reduce", "gate_proj", "gate_projs", "up_proj", "up_projs", "gate_proj_4", "up_proj_4", "silu",
    "down_proj", "dcr_xgamma",
]

ROWS = 16                      # decode lanes: every tile's rows
VEC_TILES = 20                 # (16, hidden / 20) tiles of the whole-row vector kernels
_CUBE = "qwen3.aic"            # the GEMM kernels run one at a time on a cube core: shared scratch


def _block() -> int:
    info = core_info()
    return info.block_idx if info is not None else 0


def _rows_of(w: np.ndarray, base: int, k0: int, n: int) -> np.ndarray:
    """Rows [base + k0, base + k0 + n) of a stacked weight: its layer offset modulo the rows stored."""
    r = int(base) % w.shape[0] + int(k0)
    if r + n > w.shape[0]:
        raise ValueError(f"weight rows {r}..{r + n} past the {w.shape[0]} rows stored")
    return w[r:r + n]


def _gemm(name: str, x: np.ndarray, w: np.ndarray, acc: np.ndarray, chunk: int, step: int) -> None:
    """acc (16, N) fp32 += x (16, K) @ w (K, N), the reference's cube loop: K in chunks (x and W
    chunks TLOADed to L1, double-buffered), each chunk's steps TEXTRACTed to L0A / L0B and
    accumulated in L0C (TMATMUL, then TMATMUL_ACC), the sum stored with an atomic add."""
    m, k = x.shape
    n = w.shape[1]
    c = tile.Core(name, scratch=_CUBE)
    xl = c.tile(L1, (m, chunk), x.dtype, bufs=2, name="x")
    wl = c.tile(L1, (chunk, n), w.dtype, bufs=2, name="w")
    a = c.tile(L0A, (m, step), x.dtype, bufs=2, name="left")
    b = c.tile(L0B, (step, n), w.dtype, bufs=2, name="right")
    o = c.tile(L0C, (m, n), F32, name="acc")
    chunks = k // chunk
    xs, ws = tile.col_blocks(x, chunks), tile.row_blocks(w, chunks)
    for j in c.range(chunks):
        tile.load(xl, xs[j])
        tile.load(wl, ws[j])
        with c.loop(chunk // step):
            tile.extract(a, xl, col=EACH)
            tile.extract(b, wl, row=EACH)
            tile.matmul(o, a, b, acc=True)
    tile.store(acc, o, atomic="add")


# ── AIC: projections ─────────────────────────────────────────────────────────────────────────────


def _qkv_block(name: str, acc: np.ndarray, normed: np.ndarray, w: np.ndarray, layer_base: int) -> None:
    u = normed.shape[1] // K_SPLITS
    half, quarter = u // 2, u // 4
    b = _block()
    k0, n0 = (b % K_SPLITS) * u, (b // K_SPLITS) * half
    x = normed[:, k0:k0 + u]
    rows = _rows_of(w, layer_base, k0, u)
    for s in range(2):                                   # two N sub-tiles, one after the other
        cols = slice(n0 + s * quarter, n0 + (s + 1) * quarter)
        _gemm(name, x, rows[:, cols], acc[:, cols], chunk=quarter, step=quarter // 4)


@kernel(AIC)
def q_proj(q_acc: np.ndarray, normed: np.ndarray, wq: np.ndarray, layer_base: int) -> None:
    """SPMD 50: q_acc (16, hidden) += normed[:, K block] @ wq[K block, N range] (module docstring)."""
    _qkv_block("q_proj", q_acc, normed, wq, layer_base)


@kernel(AIC)
def k_proj(k_acc: np.ndarray, normed: np.ndarray, wk: np.ndarray, layer_base: int) -> None:
    """SPMD 10: k_acc (16, kv_hidden) += normed @ wk, one (K block, N range) per block."""
    _qkv_block("k_proj", k_acc, normed, wk, layer_base)


@kernel(AIC)
def v_proj(v_acc: np.ndarray, normed: np.ndarray, wv: np.ndarray, layer_base: int) -> None:
    """SPMD 10: v_acc (16, kv_hidden) += normed @ wv."""
    _qkv_block("v_proj", v_acc, normed, wv, layer_base)


def _out_tile(attn_out: np.ndarray, wo: np.ndarray, attn_proj: np.ndarray, k0: int, layer_base: int,
              n0: int) -> None:
    u = attn_out.shape[1] // K_SPLITS
    half = u // 2
    _gemm("out_proj", attn_out[:, k0:k0 + u], _rows_of(wo, layer_base, k0, u)[:, n0:n0 + half],
          attn_proj[:, n0:n0 + half], chunk=u // 16, step=u // 32)


@kernel(AIC)
def out_proj(attn_out: np.ndarray, wo: np.ndarray, attn_proj: np.ndarray, k0: int, layer_base: int,
             n0: int) -> None:
    """attn_proj[:, n0:+U/2] += attn_out[:, k0:+U] @ wo[k0:+U, n0:+U/2]."""
    _out_tile(attn_out, wo, attn_proj, k0, layer_base, n0)


@kernel(AIC)
def out_proj_0(attn_out: np.ndarray, wo: np.ndarray, attn_proj: np.ndarray, first: int, layer_base: int) -> None:
    """SPMD: out_proj tile ``first + block_idx`` (tile t: K block t % 5, N range t // 5)."""
    u = attn_out.shape[1] // K_SPLITS
    t = int(first) + _block()
    _out_tile(attn_out, wo, attn_proj, (t % K_SPLITS) * u, layer_base, (t // K_SPLITS) * (u // 2))


def _unit_of(mlp_in: np.ndarray) -> int:
    return mlp_in.shape[1] // K_SPLITS


def gate_up_tile(mlp_in: np.ndarray, w: np.ndarray, acc: np.ndarray, k0: int, layer_base: int, n0: int) -> None:
    """acc[:, n0:+U] += mlp_in[:, k0:+U] @ w[k0:+U, n0:+U]."""
    u = _unit_of(mlp_in)
    n0 = int(n0)
    _gemm("mlp_proj", mlp_in[:, k0:k0 + u], _rows_of(w, layer_base, k0, u)[:, n0:n0 + u], acc[:, n0:n0 + u],
          chunk=u // 16, step=u // 64)


def gate_up_block(mlp_in: np.ndarray, w: np.ndarray, acc: np.ndarray, k0: int, layer_base: int) -> None:
    """SPMD 6: acc[:, b*U:+U] += mlp_in[:, k0:+U] @ w[k0:+U, b*U:+U] (b = block_idx)."""
    gate_up_tile(mlp_in, w, acc, k0, layer_base, _block() * _unit_of(mlp_in))


_MOD = __name__
gate_proj = kernel(AIC, name=f"{_MOD}.gate_proj")(gate_up_block)
gate_projs = [gate_proj] + [kernel(AIC, name=f"{_MOD}.gate_proj_{c}")(gate_up_block) for c in range(4)]
up_proj = kernel(AIC, name=f"{_MOD}.up_proj")(gate_up_block)
up_projs = [up_proj] + [kernel(AIC, name=f"{_MOD}.up_proj_{c}")(gate_up_block) for c in range(4)]
gate_proj_4 = kernel(AIC, name=f"{_MOD}.gate_proj_4")(gate_up_tile)
up_proj_4 = kernel(AIC, name=f"{_MOD}.up_proj_4")(gate_up_tile)


@kernel(AIC)
def down_proj(mlp: np.ndarray, w_down: np.ndarray, down_acc: np.ndarray, k0: int, inter_base: int, n0: int) -> None:
    """down_acc[:, n0:+U] += mlp[:, k0:+U] @ w_down[k0:+U, n0:+U]."""
    u = down_acc.shape[1] // K_SPLITS
    _gemm("down_proj", mlp[:, k0:k0 + u], _rows_of(w_down, inter_base, k0, u)[:, n0:n0 + u],
          down_acc[:, n0:n0 + u], chunk=u // 16, step=u // 64)


# ── AIV: casts, norms, seeds, activation ─────────────────────────────────────────────────────────


def _convert(dst: np.ndarray, src: np.ndarray) -> None:
    """dst = src converted (bf16 <-> fp32), over VEC_TILES (16, width / 20) tiles."""
    c = tile.Core()
    a = c.tile(UB, (ROWS, src.shape[1] // VEC_TILES), src.dtype, bufs=2, name="src")
    b = c.tile(UB, (ROWS, src.shape[1] // VEC_TILES), dst.dtype, bufs=2, name="dst")
    with c.loop(VEC_TILES):
        tile.load(a, tile.col_blocks(src, VEC_TILES))
        tile.cast(b, a)
        tile.store(tile.col_blocks(dst, VEC_TILES), b)


@kernel(AIV)
def copy_hidden(cur: np.ndarray, hidden_states: np.ndarray, row0: int) -> None:
    """cur (16, hidden) fp32 = hidden_states[row0:+16] bf16 (the input embedding, widened)."""
    _convert(cur, hidden_states[int(row0):int(row0) + ROWS])


@kernel(AIV)
def copy_out(out: np.ndarray, cur: np.ndarray, row0: int) -> None:
    """out[row0:+16] bf16 = cur fp32 (the one rounding of the residual stream)."""
    _convert(out[int(row0):int(row0) + ROWS], cur)


def _x_gamma(dst: np.ndarray, x: np.ndarray, gamma: np.ndarray, cols: slice) -> None:
    """dst[:, cols] = bf16(x[:, cols] * gamma[cols]) in 4 tiles (gamma: a (1, width) row)."""
    w = (cols.stop - cols.start) // 4
    c = tile.Core("x_gamma")
    xt = c.tile(UB, (ROWS, w), F32, bufs=2, name="x")
    g = c.tile(UB, (1, w), F32, bufs=2, name="gamma")
    t = c.tile(UB, (ROWS, w), F32, name="xg")
    o = c.tile(UB, (ROWS, w), BF16, bufs=2, name="out")
    with c.loop(4):
        tile.load(xt, tile.col_blocks(x[:, cols], 4))
        tile.load(g, tile.col_blocks(gamma[:, cols], 4))
        tile.col_expand_mul(t, xt, g)
        tile.cast(o, t)
        tile.store(tile.col_blocks(dst[:, cols], 4), o)


@kernel(AIV)
def x_gamma0(normed: np.ndarray, cur: np.ndarray, input_rms_weight: np.ndarray) -> None:
    """SPMD 5: normed[:, b*U:+U] = bf16(cur * input_rms_weight[0]) on this block's columns."""
    u = cur.shape[1] // K_SPLITS
    b = _block()
    _x_gamma(normed, cur, input_rms_weight[0:1], slice(b * u, (b + 1) * u))


def _inv_rms(out: np.ndarray, a: np.ndarray, b: np.ndarray | None) -> None:
    """out (16, 1) = 1 / sqrt(sum(v^2) / width + eps), v = a (+ b), over VEC_TILES tiles."""
    width = a.shape[1]
    w = width // VEC_TILES
    c = tile.Core("inv_rms")
    x = c.tile(UB, (ROWS, w), F32, bufs=2, name="x")
    y = c.tile(UB, (ROWS, w), F32, bufs=2, name="y") if b is not None else None
    sq = c.tile(UB, (ROWS, w), F32, name="sq")
    part = c.tile(UB, (ROWS, 1), F32, name="part")
    acc = c.tile(UB, (ROWS, 1), F32, name="sum")
    tile.fill(acc, 0.0)
    with c.loop(VEC_TILES):
        tile.load(x, tile.col_blocks(a, VEC_TILES))
        if y is not None:
            tile.load(y, tile.col_blocks(b, VEC_TILES))
            tile.add(x, x, y)
        tile.mul(sq, x, x)
        tile.row_sum(part, sq)
        tile.add(acc, acc, part)
    tile.muls(acc, acc, 1.0 / width)
    tile.adds(acc, acc, EPS)
    tile.sqrt(acc, acc)
    tile.recip(acc, acc)
    tile.store(out, acc)


@kernel(AIV)
def rms_recip(cur: np.ndarray, inv_rms: np.ndarray) -> None:
    """inv_rms (16, 1) = 1 / rms(cur), per lane."""
    _inv_rms(inv_rms, cur, None)


@kernel(AIV)
def post_rms_reduce(attn_proj: np.ndarray, cur: np.ndarray, post_inv: np.ndarray) -> None:
    """post_inv (16, 1) = 1 / rms(attn_proj + cur) (recomputed from its inputs, not read from h1)."""
    _inv_rms(post_inv, attn_proj, cur)


def _zero(unit: int, *accs: np.ndarray) -> None:
    """Every acc (16, a multiple of unit / 4 columns) = 0, in (16, unit / 4) tiles."""
    w = unit // 4
    c = tile.Core("zero")
    for acc in accs:
        n = acc.shape[1] // w
        z = c.tile(UB, (ROWS, w), acc.dtype, name=f"zero{len(c.tiles)}")
        tile.fill(z, 0.0)
        with c.loop(n):
            tile.store(tile.col_blocks(acc, n), z)


def _empty_cost(task: TaskInfo) -> Cost:
    """An empty kernel costs its fixed part: what the tile layer charges every task it counts."""
    return Cost(a2a3.us(a2a3.PARAMS["task_overhead_cycles"].value), 0)


@kernel(AIV, cost=_empty_cost)
def attn_out_seed(attn_out: np.ndarray) -> None:
    """The reference's placeholder: reads nothing, writes nothing (a dependency anchor)."""


@kernel(AIV)
def q_seed(q_acc: np.ndarray) -> None:
    """q_acc = 0: the split-K q_proj blocks add into it."""
    _zero(q_acc.shape[1] // K_SPLITS, q_acc)


@kernel(AIV)
def kv_seed(k_acc: np.ndarray, v_acc: np.ndarray) -> None:
    """k_acc = v_acc = 0 (the KV width is one unit: 8 heads x head_dim = 40 x head_dim / 5)."""
    _zero(k_acc.shape[1], k_acc, v_acc)


@kernel(AIV)
def mlp_out_seed(down_acc: np.ndarray, gate_acc: np.ndarray, up_acc: np.ndarray, attn_proj: np.ndarray) -> None:
    """down_acc = gate_acc = up_acc = attn_proj = 0."""
    _zero(down_acc.shape[1] // K_SPLITS, down_acc, gate_acc, up_acc, attn_proj)


def residual_cast(mlp_in: np.ndarray, h1: np.ndarray, attn_proj: np.ndarray, cur: np.ndarray,
                  post_rms_weight: np.ndarray, k_base: int, layer: int) -> None:
    """On U columns from k_base, in 4 tiles: h1 = attn_proj + cur; mlp_in = bf16(h1 * post_rms_weight[layer])."""
    u = cur.shape[1] // K_SPLITS
    cols = slice(int(k_base), int(k_base) + u)
    w = u // 4
    c = tile.Core("residual_rms_cast")
    a = c.tile(UB, (ROWS, w), F32, bufs=2, name="attn_proj")
    x = c.tile(UB, (ROWS, w), F32, bufs=2, name="cur")
    g = c.tile(UB, (1, w), F32, bufs=2, name="gamma")
    h = c.tile(UB, (ROWS, w), F32, name="h1")
    t = c.tile(UB, (ROWS, w), F32, name="hg")
    o = c.tile(UB, (ROWS, w), BF16, bufs=2, name="mlp_in")
    row = int(layer)
    with c.loop(4):
        tile.load(a, tile.col_blocks(attn_proj[:, cols], 4))
        tile.load(x, tile.col_blocks(cur[:, cols], 4))
        tile.load(g, tile.col_blocks(post_rms_weight[row:row + 1, cols], 4))
        tile.add(h, a, x)
        tile.store(tile.col_blocks(h1[:, cols], 4), h)
        tile.col_expand_mul(t, h, g)
        tile.cast(o, t)
        tile.store(tile.col_blocks(mlp_in[:, cols], 4), o)


residual_rms_cast = kernel(AIV, name=f"{_MOD}.residual_rms_cast")(residual_cast)
residual_rms_casts = [residual_rms_cast] + [kernel(AIV, name=f"{_MOD}.residual_rms_cast_{c}")(residual_cast)
                                            for c in range(4)]


@kernel(AIV)
def silu(post_inv: np.ndarray, mlp: np.ndarray, gate_acc: np.ndarray, up_acc: np.ndarray, n0: int) -> None:
    """On U columns from n0, in 4 tiles: sg = gate * post_inv, su = up * post_inv (per row),
    mlp = bf16(sg / (1 + exp(-sg)) * su)."""
    u = mlp.shape[1] // 17
    cols = slice(int(n0), int(n0) + u)
    w = u // 4
    c = tile.Core()
    r = c.tile(UB, (ROWS, 1), F32, name="post_inv")
    gt = c.tile(UB, (ROWS, w), F32, bufs=2, name="gate")
    ut = c.tile(UB, (ROWS, w), F32, bufs=2, name="up")
    sg = c.tile(UB, (ROWS, w), F32, name="sg")
    su = c.tile(UB, (ROWS, w), F32, name="su")
    t = c.tile(UB, (ROWS, w), F32, name="t")
    o = c.tile(UB, (ROWS, w), BF16, bufs=2, name="mlp")
    tile.load(r, post_inv)
    with c.loop(4):
        tile.load(gt, tile.col_blocks(gate_acc[:, cols], 4))
        tile.load(ut, tile.col_blocks(up_acc[:, cols], 4))
        tile.row_expand_mul(sg, gt, r)
        tile.row_expand_mul(su, ut, r)
        tile.neg(t, sg)
        tile.exp(t, t)
        tile.adds(t, t, 1.0)
        tile.recip(t, t)
        tile.mul(t, sg, t)
        tile.mul(t, t, su)
        tile.cast(o, t)
        tile.store(tile.col_blocks(mlp[:, cols], 4), o)


@kernel(AIV)
def dcr_xgamma(down_acc: np.ndarray, h1: np.ndarray, next_hidden: np.ndarray, input_rms_weight: np.ndarray,
               next_normed: np.ndarray, gamma_idx: int) -> None:
    """SPMD 5, block b on U columns: next_hidden = down_acc + h1; next_normed = bf16(next_hidden *
    input_rms_weight[gamma_idx])."""
    u = h1.shape[1] // K_SPLITS
    b = _block()
    cols = slice(b * u, (b + 1) * u)
    row = int(gamma_idx)
    c = tile.Core()
    d = c.tile(UB, (ROWS, u), F32, name="down")
    h = c.tile(UB, (ROWS, u), F32, name="h1")
    g = c.tile(UB, (1, u), F32, name="gamma")
    o = c.tile(UB, (ROWS, u), BF16, name="normed")
    tile.load(d, down_acc[:, cols])
    tile.load(h, h1[:, cols])
    tile.add(d, d, h)
    tile.store(next_hidden[:, cols], d)
    tile.load(g, input_rms_weight[row:row + 1, cols])
    tile.col_expand_mul(h, d, g)
    tile.cast(o, h)
    tile.store(next_normed[:, cols], o)
