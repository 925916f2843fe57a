"""Intra-cluster pipes (kernels/pipe.py): TPUSH / TPOP between the cube and vector parts of a
mixed task, on a process device and in the sequential engine; their counting (tile layer) and the
coupled schedule of a mixed task's parts (kernels/a2a3.py couple)."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from host import DeadlockError, Device, InOut, KernelError, Out, Platform
from kernels import C2V, V2C, Mixed, TPipe, a2a3, core_info, kernel, tile
from kernels.pipe import SPLITS
from kernels.tile import F32, L0A, L0B, L0C, L1, UB


def value(i: int, rows: int, cols: int) -> np.ndarray:
    """Tile i of a stream: every element distinct, every tile different."""
    return (i * 1000 + np.arange(rows * cols, dtype=np.float32)).reshape(rows, cols)


def lane_part(a: np.ndarray, split: str, lane: int) -> np.ndarray:
    rows, cols = a.shape
    if split == "up_down":
        return a[lane * rows // 2:(lane + 1) * rows // 2]
    if split == "left_right":
        return a[:, lane * cols // 2:(lane + 1) * cols // 2]
    return a


# ── kernels: a stream of n tiles one way, each side recording what it got ──────────────────────

def _pipe(ring, direction, rows, cols, split, depth):
    return TPipe(ring, direction, (rows, cols), F32, depth=depth, split=SPLITS[split])


def _c2v_aic(ring, out, n, rows, cols, split, depth, skip=0):
    p = _pipe(ring, C2V, rows, cols, split, depth)
    for i in range(skip, n):
        p.push(value(i, rows, cols))


def _c2v_aiv(ring, out, n, rows, cols, split, depth, skip=0):
    p = _pipe(ring, C2V, rows, cols, split, depth)
    lane = p.lane
    for i in range(skip, n):
        got = p.pop()
        out[lane, i, :got.shape[0], :got.shape[1]] = got


def _v2c_aic(ring, out, n, rows, cols, split, depth, skip=0):
    p = _pipe(ring, V2C, rows, cols, split, depth)
    for i in range(skip, n):
        out[0, i] = p.pop()


def _v2c_aiv(ring, out, n, rows, cols, split, depth, skip=0):
    p = _pipe(ring, V2C, rows, cols, split, depth)
    s = SPLITS[split]
    for i in range(skip, n):
        p.push(None if (s == "none" and p.lane == 1) else lane_part(value(i, rows, cols), s, p.lane))


c2v = kernel(Mixed(aic=_c2v_aic, aiv0=_c2v_aiv, aiv1=_c2v_aiv), name="test_pipe.c2v")
v2c = kernel(Mixed(aic=_v2c_aic, aiv0=_v2c_aiv, aiv1=_v2c_aiv), name="test_pipe.v2c")
c2v_one = kernel(Mixed(aic=_c2v_aic, aiv=_c2v_aiv), name="test_pipe.c2v_one")
v2c_one = kernel(Mixed(aic=_v2c_aic, aiv=_v2c_aiv), name="test_pipe.v2c_one")


def _push_only(ring, out, n, rows, cols, split, depth, skip=0):
    p = _pipe(ring, C2V, rows, cols, split, depth)
    for i in range(n):
        p.push(value(i, rows, cols))


def _pop_some(ring, out, n, rows, cols, split, depth, skip=0):
    p = _pipe(ring, C2V, rows, cols, split, depth)
    for i in range(skip):
        got = p.pop()
        out[p.lane, i, :got.shape[0], :got.shape[1]] = got


def _nothing(*args):
    pass


def _raise(*args):
    raise ValueError("the cube part failed on purpose")


def _pop_forever(ring, out, n, rows, cols, split, depth, skip=0):
    _pipe(ring, C2V, rows, cols, split, depth).pop()


producer_ahead = kernel(Mixed(aic=_push_only, aiv0=_pop_some, aiv1=_pop_some), name="test_pipe.ahead")
no_consumer = kernel(Mixed(aic=_push_only, aiv0=_nothing, aiv1=_nothing), name="test_pipe.no_consumer")
consumer_behind = kernel(Mixed(aic=_nothing, aiv0=_c2v_aiv, aiv1=_c2v_aiv), name="test_pipe.behind")
no_producer = kernel(Mixed(aic=_nothing, aiv0=_pop_forever, aiv1=_nothing), name="test_pipe.no_producer")
failing_producer = kernel(Mixed(aic=_raise, aiv0=_pop_forever, aiv1=_pop_forever), name="test_pipe.failing")


# tile-layer sides: the cube pushes a matmul's L0C tile, the vector lanes pop into UB and store
def _tiles_aic(ring, a, b, out, n):
    m, k = a.shape
    nn = b.shape[1]
    p = TPipe(ring, C2V, (m, nn), F32)
    c = tile.Core()
    a1, b1 = c.tile(L1, (m, k), F32), c.tile(L1, (k, nn), F32)
    a0, b0, acc = c.tile(L0A, (m, k), F32), c.tile(L0B, (k, nn), F32), c.tile(L0C, (m, nn), F32)
    tile.load(a1, a)
    tile.move(a0, a1)
    for i in c.range(n):
        tile.load(b1, b[i * k:(i + 1) * k] if b.shape[0] > k else b)
        tile.move(b0, b1)
        tile.matmul(acc, a0, b0)
        p.push(acc)


def _tiles_aiv(ring, a, b, out, n):
    m, nn = a.shape[0], b.shape[1]
    p = TPipe(ring, C2V, (m, nn), F32)
    c = tile.Core()
    t = c.tile(UB, (m // 2, nn), F32)
    for i in c.range(n):
        p.pop(t)
        tile.muls(t, t, 2.0)
        tile.store(out[i, p.lane * m // 2:(p.lane + 1) * m // 2], t)


tiles = kernel(Mixed(aic=_tiles_aic, aiv0=_tiles_aiv, aiv1=_tiles_aiv), name="test_pipe.tiles")

KERNELS = [c2v, v2c, c2v_one, v2c_one, producer_ahead, consumer_behind, no_producer, no_consumer, failing_producer,
           tiles]


@pytest.fixture(scope="module", params=["device", "inline"])
def dev(request):
    d = Device(Platform(blocks=2, stall_timeout=30), kernels=KERNELS, inline=request.param == "inline")
    yield d
    d.close()


def _stream(dev, k, n, rows, cols, split, depth=2, ring=None, out=None, skip=0, **submit):
    ring = ring if ring is not None else dev.zeros((depth * rows * cols,), np.float32)
    out = out if out is not None else dev.zeros((2, n, rows, cols), np.float32)
    dev.run(lambda rt: rt.submit(k, InOut(ring), InOut(out), n, rows, cols, SPLITS.index(split), depth, skip,
                                 **submit))
    return dev.to_host(out), ring, out


@pytest.mark.parametrize("split", SPLITS)
def test_c2v_each_lane_pops_its_part_of_every_tile_in_order(dev, split):
    got, _, _ = _stream(dev, c2v, 6, 4, 8, split)
    for i in range(6):
        for lane in (0, 1):
            part = lane_part(value(i, 4, 8), split, lane)
            np.testing.assert_array_equal(got[lane, i, :part.shape[0], :part.shape[1]], part)


@pytest.mark.parametrize("split", SPLITS)
def test_v2c_the_cube_pops_whole_tiles_once_both_lanes_pushed(dev, split):
    got, _, _ = _stream(dev, v2c, 6, 4, 8, split)
    for i in range(6):
        np.testing.assert_array_equal(got[0, i], value(i, 4, 8))


@pytest.mark.parametrize("k", [c2v_one, v2c_one])
def test_one_vector_part_uses_split_none(dev, k):
    got, _, _ = _stream(dev, k, 5, 4, 8, "none")
    for i in range(5):
        np.testing.assert_array_equal(got[0, i], value(i, 4, 8))


def test_two_hundred_tiles_through_a_depth_two_ring(dev):
    got, _, _ = _stream(dev, c2v, 200, 2, 4, "up_down", depth=2)
    want = np.stack([value(i, 2, 4) for i in range(200)])
    np.testing.assert_array_equal(got[0, :, :1], want[:, :1])
    np.testing.assert_array_equal(got[1, :, :1], want[:, 1:])


def test_channels_of_different_clusters_are_independent(dev):
    """Two blocks at once, each on its own cluster with its own slice of one FIFO tensor."""
    n, rows, cols = 40, 2, 4
    ring = dev.zeros((2, 2 * rows * cols), np.float32)
    outs = [dev.zeros((2, n, rows, cols), np.float32) for _ in range(2)]

    def per_block(ring_, out0, out1, *scalars):
        b = core_info().block_idx
        (_c2v_aic if core_info().kind == "AIC" else _c2v_aiv)(ring_[b], (out0, out1)[b], *scalars)

    k = kernel(Mixed(aic=per_block, aiv0=per_block, aiv1=per_block), name="test_pipe.per_block")
    with Device(Platform(blocks=2, stall_timeout=30), kernels=[k], inline=dev.pids == []) as d:
        ring = d.zeros((2, 2 * rows * cols), np.float32)
        outs = [d.zeros((2, n, rows, cols), np.float32) for _ in range(2)]
        d.run(lambda rt: rt.submit(k, InOut(ring), InOut(outs[0]), InOut(outs[1]), n, rows, cols, 0, 2,
                                   blocks=2, sync_start=True))
        for b in range(2):
            got = d.to_host(outs[b])
            for i in range(n):
                np.testing.assert_array_equal(got[0, i, :1], value(i, rows, cols)[:1])


@pytest.mark.parametrize("inline", [False, True])
def test_a_pipe_keeps_its_tiles_across_tasks_and_a_task_leaving_tiles_is_reported(inline):
    n, rows, cols = 2, 2, 4
    with Device(Platform(blocks=1, stall_timeout=30), kernels=KERNELS, inline=inline) as dev:   # one cluster
        ring = dev.zeros((2 * rows * cols,), np.float32)
        out = dev.zeros((2, n, rows, cols), np.float32)

        def two_tasks(rt):
            rt.submit(producer_ahead, InOut(ring), InOut(out), n, rows, cols, 0, 2, 1)     # pops 1 of 2
            rt.submit(consumer_behind, InOut(ring), InOut(out), n, rows, cols, 0, 2, 1)    # pops the other
        with pytest.warns(RuntimeWarning, match=r"pipe C2V on cluster 0 .* holds 1 tile\(s\) not popped"):
            dev.run(two_tasks)
        got = dev.to_host(out)
        for i in range(n):
            np.testing.assert_array_equal(got[0, i, :1], value(i, rows, cols)[:1])
        assert any("not popped" in t for t in dev.stats()["notices"])
        with warnings.catch_warnings():
            warnings.simplefilter("error")             # a stream popped to the end leaves nothing
            _stream(dev, c2v, 3, rows, cols, "up_down")


def test_pipes_start_empty_every_run(dev):
    for _ in range(2):
        got, _, _ = _stream(dev, c2v, 3, 2, 4, "up_down")
        np.testing.assert_array_equal(got[1, 2, :1], value(2, 2, 4)[1:])


@pytest.mark.parametrize("k,n,parts", [
    (no_producer, 1, ("test_pipe.no_producer", "AIV lane 0", "a tile to pop", "tiles pushed so far 0, popped 0")),
    (no_consumer, 3, ("test_pipe.no_consumer", "AIC", "a free slot to push into", "tiles pushed so far 2, popped 0")),
])
def test_a_pipe_wait_nothing_will_answer_is_a_stall_naming_the_pipe(dev, k, n, parts):
    inline = dev.pids == []
    platform = Platform(blocks=1, stall_timeout=1)
    with Device(platform, kernels=KERNELS, inline=inline) as d:
        with pytest.raises(DeadlockError) as e:
            _stream(d, k, n, 2, 4, "up_down")
        msg = str(e.value)
        for part in ("pipe C2V", "cluster 0") + parts:
            assert part in msg, (part, msg)
        got, _, _ = _stream(d, c2v, 3, 2, 4, "up_down")           # the device is usable after
        np.testing.assert_array_equal(got[0, 2, :1], value(2, 2, 4)[:1])


def test_a_kernel_error_in_one_part_releases_the_parts_waiting_on_its_pipe(dev):
    with pytest.raises(KernelError) as e:
        _stream(dev, failing_producer, 2, 2, 4, "up_down")
    assert "failed on purpose" in str(e.value)
    got, _, _ = _stream(dev, c2v, 2, 2, 4, "up_down")
    np.testing.assert_array_equal(got[1, 1, :1], value(1, 2, 4)[1:])


def test_tile_layer_sides_compute_and_agree(dev):
    rng = np.random.default_rng(0)
    n, m, k, nn = 4, 8, 16, 8
    a = dev.to_device(rng.standard_normal((m, k)).astype(np.float32))
    b = dev.to_device(rng.standard_normal((n * k, nn)).astype(np.float32))
    ring = dev.zeros((2 * m * nn,), np.float32)
    out = dev.zeros((n, m, nn), np.float32)
    dev.run(lambda rt: rt.submit(tiles, InOut(ring), InOut(a), InOut(b), Out(out), n))
    A, B = dev.to_host(a), dev.to_host(b)
    want = np.stack([2 * A @ B[i * k:(i + 1) * k] for i in range(n)])
    np.testing.assert_allclose(dev.to_host(out), want, rtol=1e-5, atol=1e-5)


# ── bad use ─────────────────────────────────────────────────────────────────────────────────────

def _small_ring(ring, out, *s):
    TPipe(ring[:3], C2V, (2, 4), F32)


def _wrong_side(ring, out, *s):
    TPipe(ring, C2V, (2, 4), F32).pop()


def _odd_rows(ring, out, *s):
    TPipe(ring, C2V, (3, 4), F32)


def _split_one(ring, out, *s):
    TPipe(ring, C2V, (2, 4), F32, split="up_down")


small_ring = kernel(Mixed(aic=_small_ring, aiv0=_nothing, aiv1=_nothing), name="test_pipe.small_ring")
wrong_side = kernel(Mixed(aic=_wrong_side, aiv0=_nothing, aiv1=_nothing), name="test_pipe.wrong_side")
odd_rows = kernel(Mixed(aic=_odd_rows, aiv0=_nothing, aiv1=_nothing), name="test_pipe.odd_rows")
split_one = kernel(Mixed(aic=_split_one, aiv=_nothing), name="test_pipe.split_one")


@pytest.mark.parametrize("k,text", [
    (small_ring, "ring of 12 bytes is too small for depth 2 x slot 2x4 float32 (32 bytes): it needs 64 bytes"),
    (wrong_side, "pop on the AIC side of a C2V pipe"),
    (odd_rows, "split='up_down' needs an even number of rows, got 3"),
    (split_one, "this task has one (Mixed(aic=, aiv=)): use split='none'"),
])
def test_bad_pipes_are_clear_errors(k, text):
    with Device(Platform(blocks=1), kernels=[k], inline=True) as d:
        with pytest.raises(KernelError) as e:
            _stream(d, k, 1, 2, 4, "up_down")
        assert text in str(e.value)


def test_a_pipe_outside_a_device_is_refused():
    with pytest.raises(RuntimeError, match="TPipe waits for another part"):
        TPipe(np.zeros(64, np.float32), C2V, (2, 4), F32)


# ── counting and the coupled schedule ───────────────────────────────────────────────────────────

def _stage(cost_pipe, cycles, n, key, role, depth=2, consumer=False, peers=(1,)):
    """A synthetic part: per tile, its work (``cycles`` on ``cost_pipe``) and the pipe's flags."""
    prog = []
    for i in range(n):
        if consumer:
            prog.append((a2a3.FLAG, a2a3.WAIT, key, a2a3.DATA, i + 1, peers, a2a3.MTE2))
            prog.append((a2a3.OP, a2a3.MTE2, a2a3.C_LOCAL, 100.0, (), ((9, 1),), i, None, 0))
            prog.append((a2a3.FLAG, a2a3.SET, key, a2a3.FREE, i + 1, (role,), a2a3.MTE2))
            prog.append((a2a3.OP, cost_pipe, a2a3.C_LOCAL, cycles, ((9, 1),), ((10, 1),), i, None, 0))
        else:
            prog.append((a2a3.OP, cost_pipe, a2a3.C_LOCAL, cycles, (), ((11, 1),), i, None, 0))
            if i >= depth:
                prog.append((a2a3.FLAG, a2a3.WAIT, key, a2a3.FREE, i - depth + 1, peers, a2a3.MTE3))
            prog.append((a2a3.OP, a2a3.MTE3, a2a3.C_LOCAL, 100.0, ((11, 1),), (), i, None, 0))
            prog.append((a2a3.FLAG, a2a3.SET, key, a2a3.DATA, i + 1, (role,), a2a3.MTE3))
    return prog


def test_a_pipeline_runs_at_the_pace_of_its_slowest_stage():
    n = 40
    over = a2a3.PARAMS["task_overhead_cycles"].value
    fast, slow = 1000.0, 4000.0

    def coupled(prod, cons):
        return a2a3.couple([(0, _stage(a2a3.CUBE, prod, n, 7, 0, peers=(1,))),
                            (1, _stage(a2a3.VECTOR, cons, n, 7, 1, consumer=True, peers=(0,)))])

    alone = a2a3.schedule(_stage(a2a3.CUBE, fast, n, 7, 0)) - over    # the producer with no one to wait for
    consumer_bound = coupled(fast, slow) - over
    producer_bound = coupled(slow, fast) - over
    assert consumer_bound > 3 * alone                                   # it waits for the slow consumer
    assert abs(consumer_bound - n * slow) < 0.1 * n * slow              # ... about one slow stage per tile
    assert abs(producer_bound - n * slow) < 0.1 * n * slow
    assert coupled(fast, fast) - over < consumer_bound / 2


def test_a_wait_for_a_flag_set_by_an_earlier_task_holds_at_once():
    prog = [(a2a3.FLAG, a2a3.WAIT, 7, a2a3.DATA, 3, (0,), a2a3.MTE2),
            (a2a3.OP, a2a3.VECTOR, a2a3.C_VEC, 500.0, (), ((1, 1),), 0, None, 0)]
    assert a2a3.couple([(1, prog)]) == a2a3.schedule(prog)


def test_parts_that_wait_for_each_other_in_a_cycle_are_refused():
    a = [(a2a3.FLAG, a2a3.WAIT, 7, a2a3.DATA, 1, (1,), a2a3.MTE2), (a2a3.FLAG, a2a3.SET, 7, a2a3.DATA, 1, (0,), 0)]
    b = [(a2a3.FLAG, a2a3.WAIT, 7, a2a3.DATA, 1, (0,), a2a3.MTE2), (a2a3.FLAG, a2a3.SET, 7, a2a3.DATA, 1, (1,), 0)]
    with pytest.raises(ValueError, match="cycle"):
        a2a3.couple([(0, a), (1, b)])


def test_pipe_operations_are_counted_as_transfers_with_their_flags():
    """The parts of a mixed task under collectors (the sequential engine runs them as threads):
    a push of an L0C tile is a store on MTE3, a pop a load on MTE2, each with its flags."""
    programs: dict[int, list] = {}
    counts: dict[int, tile.Counts] = {}

    def collect(fn):
        def part(*args):
            tile.begin()
            try:
                fn(*args)
            finally:
                counts[core_info().lane + (core_info().kind == "AIV")] = tile.end()
                programs[core_info().lane + (core_info().kind == "AIV")] = tile.program()
        return part

    k = kernel(Mixed(aic=collect(_tiles_aic), aiv0=collect(_tiles_aiv), aiv1=collect(_tiles_aiv)),
               name="test_pipe.counted")
    n, m, kk, nn = 6, 16, 32, 16
    with Device(Platform(blocks=1), kernels=[k], inline=True) as d:
        a = d.zeros((m, kk), np.float32)
        b = d.zeros((kk, nn), np.float32)
        ring = d.zeros((2 * m * nn,), np.float32)
        out = d.zeros((n, m, nn), np.float32)
        d.run(lambda rt: rt.submit(k, InOut(ring), InOut(a), InOut(b), Out(out), n))
    flags = {s: [it for it in p if it[0] == a2a3.FLAG] for s, p in programs.items()}
    assert sum(1 for it in flags[0] if it[1] == a2a3.SET and it[3] == a2a3.DATA) == n
    assert sum(1 for it in flags[1] if it[1] == a2a3.SET and it[3] == a2a3.FREE) == n
    assert counts[0].gm_write == n * m * nn * 4                     # each push stores one whole tile
    assert counts[1].gm_read == n * m // 2 * nn * 4                 # each lane loads its half
    us, lo, hi = a2a3.couple_us([(s, programs[s]) for s in (0, 1, 2)])
    assert lo <= us <= hi
    assert us >= max(c.us for c in counts.values()) * 0.99          # coupling never makes a part faster


def test_pipes_stream_correctly_with_fenced_memory_order():
    """The waits and pipe counters publish through device/ordering.py: the fenced (aarch64) way
    passes the same stream, here on x86 (PTOEMU_MEMORY_ORDER=fenced picks it at import)."""
    import os
    import subprocess
    import sys
    import textwrap
    from pathlib import Path
    tests = Path(__file__).resolve().parent
    code = textwrap.dedent(f"""
        import sys; sys.path[:0] = [{str(tests.parent)!r}, {str(tests)!r}]
        import numpy as np
        from device.ordering import MODE
        import test_pipe as t
        assert MODE == "fenced", MODE
        with t.Device(t.Platform(blocks=1, stall_timeout=30), kernels=t.KERNELS) as dev:
            for k, split in ((t.c2v, "up_down"), (t.v2c, "left_right")):
                got, _, _ = t._stream(dev, k, 100, 2, 4, split)
                want = np.stack([t.value(i, 2, 4) for i in range(100)])
                if k is t.v2c:
                    assert np.array_equal(got[0], want)
                else:
                    assert np.array_equal(got[1, :, :1], want[:, 1:])
        print("OK")
    """)
    env = {**os.environ, "PTOEMU_MEMORY_ORDER": "fenced"}
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=100, env=env)
    assert p.returncode == 0 and p.stdout.strip() == "OK", p.stderr[-3000:]
