"""Numerics of the decode paged-attention pipeline, without the runtime.

``run_pipeline`` submits nothing: it calls the kernels directly, one at a time, in the order the
orchestration submits them — per sequence, per head tile (``tiling.head_tiles``), per chunk
(``tiling.chunks``): QK, SF, PV, UP — which is exactly the sequentially consistent result the
runtime must reproduce. Its output is compared with the independent ``golden``.

Accumulator initialisation styles (all must give the same result):
  hub           accumulators start as NaN, HUB zero-fills them, then the UPs run;
  first_output  accumulators are NaN when the first UP runs (it must initialise them unread);
  alloc         accumulators hold an arbitrary bit pattern (uninitialised memory).

The driver also checks each kernel keeps to its directions: inputs are passed read-only (a write
raises), outputs start as NaN (a partial write shows), and UP leaves ``out`` untouched before the
last chunk.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

import kernels.workloads.paged_attention as pa
from kernels.workloads.paged_attention.kernels import BF16

VARIANTS = ("hub", "first_output", "alloc")
NUMERIC_CASES = [name for name in pa.CASES if not name.startswith("Case")]
EDGE_CASES = [name for name in NUMERIC_CASES if name not in ("small", "case1_b2")]
GARBAGE = np.uint32(0x7F7F7F7F)          # "uninitialised" bit pattern: 3.39e38 as fp32


def _ro(a: np.ndarray) -> np.ndarray:
    v = a.view()
    v.flags.writeable = False
    return v


def _nan(shape: tuple[int, ...], dtype: np.dtype | type = np.float32) -> np.ndarray:
    return np.full(shape, np.nan, dtype)


def _accumulators(variant: str, q_tile: int, head_dim: int) -> tuple[np.ndarray, ...]:
    shapes = ((q_tile,), (q_tile,), (q_tile, head_dim))
    if variant == "alloc":
        return tuple(np.full(s, GARBAGE, np.uint32).view(np.float32) for s in shapes)
    acc = tuple(_nan(s) for s in shapes)
    if variant == "hub":
        pa.hub(*acc)
        assert all((a == 0).all() for a in acc)
    else:
        assert variant == "first_output", variant
    return acc


def _args(inp: dict) -> tuple:
    keys = ("query", "key_cache", "value_cache", "block_table", "context_lens", "scale")
    return tuple(inp[k] for k in keys)


def run_pipeline(inp: dict, variant: str, unroll: int | None = None) -> np.ndarray:
    """Run every task of the graph in submission order in this process; returns out (B*H, D) fp32."""
    query, key_cache, value_cache, block_table, context_lens, scale = _args(inp)
    batch, heads, head_dim = query.shape
    block_size = key_cache.shape[1]
    unroll = unroll or inp["unroll"]
    q2 = _ro(query.reshape(batch * heads, head_dim))
    kc, vc = _ro(key_cache), _ro(value_cache)
    out = _nan((batch * heads, head_dim))
    for b in range(batch):
        for h0, qt in pa.head_tiles(heads):
            rows = slice(b * heads + h0, b * heads + h0 + qt)
            mi_acc, li_acc, oi_acc = _accumulators(variant, qt, head_dim)
            for ch in pa.chunks(int(context_lens[b]), block_size, unroll):
                ids = _ro(block_table[b, ch.first_block:ch.first_block + ch.n_blocks])
                width = ch.n_blocks * block_size
                sij, pij = _nan((qt, width)), _nan((qt, width), BF16)
                mi, li, oi_new = _nan((qt,)), _nan((qt,)), _nan((qt, head_dim))
                pa.qk(q2[rows], kc, sij, ids)
                pa.sf(_ro(sij), pij, mi, li, scale, ch.valid_len_last, ch.n_blocks)
                pa.pv(_ro(pij), vc, oi_new, ids)
                pa.up(_ro(mi), _ro(li), _ro(oi_new), mi_acc, li_acc, oi_acc, out[rows],
                      ch.is_first, ch.is_last)
                if not ch.is_last:
                    assert np.isnan(out[rows]).all(), "UP wrote out before the last chunk"
    assert np.isfinite(out).all(), "some output rows were never written"
    return out


def reference_fp64(inp: dict) -> np.ndarray:
    """Plain full-softmax attention in fp64 (no chunks, no rounding of p), per sequence."""
    query, key_cache, value_cache, block_table, context_lens, scale = _args(inp)
    batch, heads, head_dim = query.shape
    block_size = key_cache.shape[1]
    out = np.empty((batch, heads, head_dim))
    for b in range(batch):
        n = int(context_lens[b])
        ids = block_table[b, :pa.num_blocks(n, block_size)]
        k = key_cache[ids, :, 0, :].astype(np.float64).reshape(-1, head_dim)[:n]
        v = value_cache[ids, :, 0, :].astype(np.float64).reshape(-1, head_dim)[:n]
        s = query[b].astype(np.float64) @ k.T * scale
        w = np.exp(s - s.max(axis=1, keepdims=True))
        out[b] = (w / w.sum(axis=1, keepdims=True)) @ v
    return out.reshape(batch * heads, head_dim)


_INPUTS: dict[str, dict] = {}


def inputs(case: str) -> dict:
    if case not in _INPUTS:
        _INPUTS[case] = pa.generate_inputs(case, seed=0)
    return _INPUTS[case]


# ---------------------------------------------------------------- pipeline vs golden

@pytest.mark.timeout(60)
@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("case", NUMERIC_CASES)
def test_pipeline_matches_golden(case: str, variant: str) -> None:
    inp = inputs(case)
    got = run_pipeline(inp, variant)
    want = pa.golden(*_args(inp), unroll=inp["unroll"])
    np.testing.assert_allclose(got, want, rtol=1e-3, atol=1e-3)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("case", ["small", "mixed_lens", "ref_scale"])
def test_pipeline_matches_golden_to_fp32_noise(case: str) -> None:
    """Stricter than the 1e-3 contract: both sides round p the same way, so they agree to fp32 noise.

    A rounding-convention mismatch would show here and not at 1e-3: e.g. li summing the unrounded p
    moves these cases by 3e-5 .. 3e-4. (Only summation order may differ; an S difference in the last
    fp32 bit that flips one p's bf16 rounding moves out by ~2^-8 / T, below 1e-5 here.)
    """
    inp = inputs(case)
    np.testing.assert_allclose(run_pipeline(inp, "alloc"), pa.golden(*_args(inp), unroll=inp["unroll"]),
                               rtol=1e-5, atol=1e-5)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("unroll", [1, 2, 5, 64])
def test_pipeline_matches_golden_any_unroll(unroll: int) -> None:
    """The pipeline and the golden agree for whatever chunking both use (mixed lengths)."""
    inp = inputs("mixed_lens")
    np.testing.assert_allclose(run_pipeline(inp, "first_output", unroll),
                               pa.golden(*_args(inp), unroll=unroll), rtol=1e-3, atol=1e-3)


@pytest.mark.timeout(60)
def test_variants_identical() -> None:
    """UP on the first chunk never reads the accumulators, so the three styles agree bit for bit."""
    inp = inputs("small")
    outs = [run_pipeline(inp, v) for v in VARIANTS]
    for o in outs[1:]:
        np.testing.assert_array_equal(o, outs[0])


# ---------------------------------------------------------------- golden properties

@pytest.mark.timeout(60)
def test_golden_unroll_dependence() -> None:
    """Chunking changes the result only through the per-chunk bf16 rounding of p (and fp32 order).

    * Same chunking -> same result: any unroll >= the longest sequence's block count is one chunk,
      bit for bit; a sequence with <= u blocks is chunked identically by every unroll >= u (fp32
      noise only, since the batched matmuls may pad it differently).
    * Different chunking -> not the same numbers, but within the bf16-of-p error bound (see
      test_golden_vs_fp64_softmax), far looser than fp32 noise.
    """
    inp = inputs("mixed_lens")
    args = _args(inp)
    blocks = np.array([pa.num_blocks(int(n), inp["block_size"]) for n in inp["context_lens"]])
    one_chunk = pa.golden(*args, unroll=int(blocks.max()))
    np.testing.assert_array_equal(one_chunk, pa.golden(*args, unroll=10_000))

    heads = inp["num_heads"]
    u4, u8 = pa.golden(*args, unroll=4), pa.golden(*args, unroll=8)
    short = np.repeat(blocks <= 4, heads)          # rows of sequences with <= 4 blocks
    assert short.any() and (~short).any()
    np.testing.assert_allclose(u4[short], u8[short], rtol=1e-6, atol=1e-7)

    u1 = pa.golden(*args, unroll=1)
    np.testing.assert_allclose(u1, one_chunk, rtol=0, atol=2.0**-8)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("case", ["small", "mixed_lens", "heads_192", "ref_scale", "case1_b2", "unroll_1"])
def test_golden_vs_fp64_softmax(case: str) -> None:
    """The golden is softmax attention up to the bf16 rounding of p.

    With weights w_j(1 + e_j), |e_j| <= 2^-9 (bf16 round to nearest), the output moves by
    sum_j w_j e_j (v_j - out) / sum_j w_j (1 + e_j), at most 2^-9 * max|v_j - out| / (1 - 2^-9)
    <= ~2^-8 for |v| <= 1. fp32 rounding is orders of magnitude below that.
    """
    inp = inputs(case)
    got = pa.golden(*_args(inp), unroll=inp["unroll"])
    want = reference_fp64(inp)
    np.testing.assert_allclose(got, want, rtol=0, atol=2.0**-8 * (1 + 2.0**-8) + 1e-5)
    # ... and the rounding is really there: fp32 noise alone would be ~1e-7.
    assert np.abs(got - want).max() > 1e-6


@pytest.mark.timeout(60)
def test_golden_ignores_unused_block_table_entries() -> None:
    inp = dict(inputs("mixed_lens"))
    want = pa.golden(*_args(inp), unroll=4)
    table = inp["block_table"].copy()
    for b, n in enumerate(inp["context_lens"]):
        table[b, pa.num_blocks(int(n), inp["block_size"]):] = -(2**30)   # garbage past the end
    inp["block_table"] = table
    np.testing.assert_array_equal(pa.golden(*_args(inp), unroll=4), want)


@pytest.mark.timeout(60)
def test_golden_bounded_slices_match_unbounded() -> None:
    """Slicing the batch to bound memory does not change the result beyond fp32 noise."""
    inp = inputs("mixed_lens")
    whole = pa.golden(*_args(inp), unroll=4)
    sliced = pa.golden(*_args(inp), unroll=4, max_slice_bytes=1)     # one sequence per slice
    np.testing.assert_allclose(sliced, whole, rtol=1e-6, atol=1e-7)


# ---------------------------------------------------------------- kernels in isolation

@pytest.mark.timeout(30)
def test_sf_masks_and_sums_rounded_p() -> None:
    rng = np.random.default_rng(3)
    q_tile, n_blocks, block_size, valid = 8, 3, 16, 5
    sij = rng.standard_normal((q_tile, n_blocks * block_size)).astype(np.float32) * 4
    pij, mi, li = _nan(sij.shape, BF16), _nan((q_tile,)), _nan((q_tile,))
    pa.sf(_ro(sij), pij, mi, li, 0.5, valid, n_blocks)
    cut = (n_blocks - 1) * block_size + valid
    p = pij.astype(np.float32)
    assert (p[:, cut:] == 0).all()
    assert (p[:, :cut] > 0).all()
    np.testing.assert_array_equal(mi, (sij[:, :cut] * np.float32(0.5)).max(axis=1))
    np.testing.assert_array_equal(p.max(axis=1), 1.0)                    # exp(0)
    # li is the sum of the bf16-rounded p (the reference's convention), not of the fp32 p.
    np.testing.assert_allclose(li, p.sum(axis=1, dtype=np.float64), rtol=1e-6)
    exact = np.exp(sij[:, :cut].astype(np.float64) * 0.5 - mi[:, None])
    np.testing.assert_allclose(p[:, :cut], exact, rtol=2.0**-8)


@pytest.mark.timeout(30)
def test_sf_full_last_block_and_bad_arguments() -> None:
    sij = np.zeros((4, 32), np.float32)
    pij, mi, li = _nan(sij.shape, BF16), _nan((4,)), _nan((4,))
    pa.sf(sij, pij, mi, li, 1.0, 16, 2)          # valid_len_last == block_size: nothing masked
    np.testing.assert_array_equal(li, 32.0)
    with pytest.raises(ValueError, match="n_blocks"):
        pa.sf(sij, pij, mi, li, 1.0, 16, 3)
    with pytest.raises(ValueError, match="valid_len_last"):
        pa.sf(sij, pij, mi, li, 1.0, 0, 2)


@pytest.mark.timeout(30)
def test_up_recurrence_and_out() -> None:
    rng = np.random.default_rng(4)
    q_tile, head_dim = 4, 8
    parts = [(rng.standard_normal(q_tile).astype(np.float32), rng.random(q_tile).astype(np.float32) + 1,
              rng.standard_normal((q_tile, head_dim)).astype(np.float32)) for _ in range(3)]
    acc = _accumulators("first_output", q_tile, head_dim)
    out = _nan((q_tile, head_dim))
    for i, (m, l_, o) in enumerate(parts):
        pa.up(m, l_, o, *acc, out, i == 0, i == len(parts) - 1)
    mx = np.max([m for m, _, _ in parts], axis=0)
    w = [np.exp(m.astype(np.float64) - mx) for m, _, _ in parts]
    l_tot = sum(wi * l_ for wi, (_, l_, _) in zip(w, parts))
    o_tot = sum(wi[:, None] * o for wi, (_, _, o) in zip(w, parts))
    np.testing.assert_allclose(acc[0], mx, rtol=0)
    np.testing.assert_allclose(acc[1], l_tot, rtol=1e-6)
    np.testing.assert_allclose(out, o_tot / l_tot[:, None], rtol=1e-5, atol=1e-6)


# ---------------------------------------------------------------- tiling

@pytest.mark.timeout(30)
@pytest.mark.parametrize("context_len,block_size,unroll", [
    (1, 16, 4), (16, 16, 4), (17, 16, 4), (300, 32, 4), (112, 16, 3), (8192, 128, 64), (8192, 64, 64),
    (150, 16, 64), (90, 16, 1),
])
def test_chunks_cover_sequence(context_len: int, block_size: int, unroll: int) -> None:
    chs = pa.chunks(context_len, block_size, unroll)
    blocks = pa.num_blocks(context_len, block_size)
    assert len(chs) == math.ceil(blocks / unroll)
    assert [c.index for c in chs] == list(range(len(chs)))
    assert [c.first_block for c in chs] == list(range(0, blocks, unroll))
    assert sum(c.n_blocks for c in chs) == blocks and all(1 <= c.n_blocks <= unroll for c in chs)
    assert [c.is_first for c in chs] == [True] + [False] * (len(chs) - 1)
    assert [c.is_last for c in chs] == [False] * (len(chs) - 1) + [True]
    assert all(c.valid_len_last == block_size for c in chs[:-1])
    assert chs[-1].valid_len_last == context_len - (blocks - 1) * block_size


@pytest.mark.timeout(30)
def test_head_tiles() -> None:
    assert pa.head_tiles(16) == [(0, 16)]
    assert pa.head_tiles(128) == [(0, 128)]
    assert pa.head_tiles(256) == [(0, 128), (128, 128)]
    assert pa.head_tiles(192) == [(0, 128), (128, 64)]


# ---------------------------------------------------------------- generate_inputs

@pytest.mark.timeout(60)
@pytest.mark.parametrize("case", NUMERIC_CASES)
def test_generate_inputs_shapes_and_values(case: str) -> None:
    inp = inputs(case)
    p = pa.case_params(case)
    batch, heads, dim, bs = p["batch"], p["num_heads"], p["head_dim"], p["block_size"]
    ctx = np.resize(np.asarray(p["context_len"]), batch)
    blocks_per_seq = math.ceil(ctx.max() / bs)
    total = batch * blocks_per_seq
    assert inp["query"].shape == (batch, heads, dim) and inp["query"].dtype == BF16
    for k in ("key_cache", "value_cache"):
        assert inp[k].shape == (total, bs, 1, dim) and inp[k].dtype == BF16
    assert inp["block_table"].shape == (batch, p["max_model_len"] // bs)
    assert inp["block_table"].dtype == np.int32 and inp["context_lens"].dtype == np.int32
    np.testing.assert_array_equal(inp["context_lens"], ctx)
    assert inp["scale"] == p.get("scale", 1 / math.sqrt(dim))
    assert {k: inp[k] for k in p} == p and inp["unroll"] >= 1
    # value ranges: U(-0.5, 0.5) for q and K, U(-1, 1) for V (bf16 rounding can reach the bound)
    for k, bound in (("query", 0.5), ("key_cache", 0.5), ("value_cache", 1.0)):
        a = inp[k].astype(np.float32)
        assert np.abs(a).max() <= bound and a.std() > bound / 4
    # block table: every entry a valid block; the used ones a permutation of all blocks
    table = inp["block_table"]
    assert table.min() >= 0 and table.max() < total
    np.testing.assert_array_equal(np.sort(table[:, :blocks_per_seq].reshape(-1)), np.arange(total))


@pytest.mark.timeout(30)
def test_generate_inputs_seed_and_alloc() -> None:
    a, b, c = (pa.generate_inputs("small", seed=s) for s in (0, 0, 1))
    for k in ("query", "key_cache", "value_cache", "block_table"):
        np.testing.assert_array_equal(a[k], b[k])
        assert not np.array_equal(a[k], c[k])
    handed: list[np.ndarray] = []

    def alloc(shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
        arr = np.empty(shape, dtype)
        arr.reshape(-1).view(np.uint8)[:] = 0x55          # stale contents: must all be overwritten
        handed.append(arr)
        return arr

    d = pa.generate_inputs("small", seed=0, alloc=alloc)
    assert len(handed) == 5
    for k in ("query", "key_cache", "value_cache", "block_table", "context_lens"):
        assert any(d[k] is h for h in handed)
        np.testing.assert_array_equal(d[k], a[k])


@pytest.mark.timeout(30)
def test_input_specs_production_sizes() -> None:
    """Case sizes without generating them: Case1's K+V is exactly 1 GiB."""
    specs = pa.input_specs("Case1")
    assert specs["key_cache"] == ((256 * 64, 128, 1, 128), BF16)
    kv = sum(math.prod(specs[k][0]) * specs[k][1].itemsize for k in ("key_cache", "value_cache"))
    assert kv == 2**30
    assert specs["block_table"][0] == (256, 32768 // 128)
    assert pa.input_specs("Case2")["key_cache"][0] == (64 * 128, 64, 1, 128)    # the reference's batch 64
    assert pa.input_specs("Case3")["key_cache"][0] == (64 * 128, 64, 1, 256)
    for name in ("Case1", "Case2", "Case3"):
        assert pa.case_params(name)["max_model_len"] == 32768 and pa.case_params(name)["dtype"] == "bfloat16"


@pytest.mark.timeout(30)
def test_generate_inputs_rejects_bad_cases() -> None:
    with pytest.raises(KeyError, match="unknown"):
        pa.generate_inputs("nope")
    with pytest.raises(ValueError, match="max_model_len"):
        pa.generate_inputs({"batch": 1, "num_heads": 1, "head_dim": 8, "block_size": 16,
                            "context_len": 100, "max_model_len": 64})
    with pytest.raises(ValueError, match="kv_head_num"):
        pa.case_params({"batch": 1, "num_heads": 1, "head_dim": 8, "block_size": 16,
                        "context_len": 10, "kv_head_num": 2})
