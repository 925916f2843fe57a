"""The all-core barrier of a start-together task (kernels/barrier.py, the chip's SyncAll): every
part of every block sees every other part's writes from before the barrier, on a process device
and in the sequential engine; misuse is an error, and a barrier some part never reaches is a stall
the stall detector names."""

from __future__ import annotations

import time

import numpy as np
import pytest

from host import DeadlockError, Device, InOut, KernelError, Platform
from kernels import AIV, Mixed, core_info, kernel, sync_all

ROUNDS = 3


def _phases(board, out):
    """Round r: this part writes its value to its cell of the board, barrier, then sums the whole
    board (everyone's round-r values) into its out cell; another barrier before the next round's
    writes (no part overwrites a cell someone may still be reading)."""
    ci = core_info()
    slot = 0 if ci.kind == "AIC" else 1 + ci.lane
    cell = ci.block_idx * 3 + slot
    for r in range(ROUNDS):
        time.sleep(0.002 * ((cell * 7 + r) % 3))        # arrive in a different order each round
        board[cell] = (r + 1) * 1000 + cell
        sync_all()
        out[r, cell] = board.sum()
        sync_all()


mixed_phases = kernel(Mixed(aic=_phases, aiv0=_phases, aiv1=_phases), name="test_barrier.mixed_phases")


@kernel(AIV)
def vector_phases(board, out):
    ci = core_info()
    cell = ci.block_idx
    for r in range(ROUNDS):
        board[cell] = (r + 1) * 1000 + cell
        sync_all()
        out[r, cell] = board.sum()
        sync_all()


def _skip_for_block_0(board, out):
    if core_info().block_idx != 0:
        sync_all()


skipping = kernel(Mixed(aic=_skip_for_block_0, aiv0=_skip_for_block_0), name="test_barrier.skipping")


def _once(board, out):
    sync_all()


once = kernel(Mixed(aic=_once, aiv0=_once), name="test_barrier.once")

KERNELS = [mixed_phases, vector_phases, skipping, once]


def _expected(cells: list[int]) -> np.ndarray:
    return np.array([[sum((r + 1) * 1000 + c for c in cells)] * len(cells) for r in range(ROUNDS)])


@pytest.fixture(params=["device", "inline"])
def dev(request):
    d = Device(Platform(blocks=4, stall_timeout=20), kernels=KERNELS, inline=request.param == "inline")
    yield d
    d.close()


def _run(dev, k, blocks, cells, sync_start=True, copies=1):
    boards = [dev.zeros((cells,), np.int64) for _ in range(copies)]
    outs = [dev.zeros((ROUNDS, cells), np.int64) for _ in range(copies)]

    def orch(rt):
        for b, o in zip(boards, outs):
            rt.submit(k, InOut(b), InOut(o), blocks=blocks, sync_start=sync_start)
    dev.run(orch)
    return [dev.to_host(o) for o in outs]


@pytest.mark.timeout(120)
def test_every_part_of_every_block_sees_the_others_phase_0_writes(dev):
    (out,) = _run(dev, mixed_phases, blocks=4, cells=12)
    assert np.array_equal(out, _expected(list(range(12))))


@pytest.mark.timeout(120)
def test_a_start_together_vector_task_synchronises_its_blocks(dev):
    (out,) = _run(dev, vector_phases, blocks=8, cells=8)          # 8 single-AIV blocks, 2 per cluster
    assert np.array_equal(out, _expected(list(range(8))))


@pytest.mark.timeout(180)
def test_start_together_tasks_with_barriers_one_after_another_and_side_by_side():
    # 2-block launches on a 6-block device: several run at once, and a core that finished one
    # goes on to the next while another task's parts may still be in their barriers.
    with Device(Platform(blocks=6, stall_timeout=30), kernels=KERNELS) as dev:
        outs = _run(dev, mixed_phases, blocks=2, cells=6, copies=12)
    for out in outs:
        assert np.array_equal(out, _expected(list(range(6))))


@pytest.mark.timeout(60)
def test_a_barrier_in_a_task_not_started_together_is_an_error(dev):
    with pytest.raises(KernelError, match="not started together"):
        _run(dev, vector_phases, blocks=4, cells=4, sync_start=False)


@pytest.mark.timeout(60)
def test_one_block_needs_no_start_together(dev):
    _run(dev, once, blocks=1, cells=1, sync_start=False)           # the block's two parts meet


@pytest.mark.timeout(120)
@pytest.mark.parametrize("inline", [False, True], ids=["device", "inline"])
def test_a_barrier_a_block_never_reaches_is_a_stall_naming_it(inline):
    with Device(Platform(blocks=4, stall_timeout=2), kernels=KERNELS, inline=inline) as d:
        with pytest.raises(DeadlockError) as e:
            _run(d, skipping, blocks=3, cells=9)
        msg = str(e.value)
        assert "SyncAll of task" in msg and "waits for" in msg and "sync_start=True" in msg
        (out,) = _run(d, mixed_phases, blocks=3, cells=9)          # the device is usable after
        assert np.array_equal(out, _expected([b * 3 + s for b in range(3) for s in range(3)]))


def test_sync_all_outside_a_device_says_so():
    with pytest.raises(RuntimeError, match="only works inside a kernel"):
        sync_all()
