"""Blocking inside a kernel (kernels/waits.py, device/waits.py): parts of a mixed task wait for
each other through sync words, on a process device and in the sequential engine's part threads.

The sync object here is the smallest there is: a counter per core (one writer) and waits for a
peer's counter to reach a value -- what pipes and barriers are built from."""

from __future__ import annotations

import time

import numpy as np
import psutil
import pytest

from device import waits as device_waits
from host import DeadlockError, Device, KernelError, Out, Platform
from kernels import AIV, Mixed, core_info, kernel
from kernels import waits as kw

COUNT = kw.claim("test_waits.count", 1)
KIND = kw.register_kind(90, "test count", lambda obj, d: f"test count: waits for core {obj} to reach {d[0]}")


def _count(w: kw.Waits, core: int) -> int:
    return w.get(kw.word(core, COUNT))


def _bump(w: kw.Waits, value: int) -> None:
    w.set(kw.word(w.core, COUNT), value)
    w.wake([w.cluster])


def _wait_for(w: kw.Waits, core: int, value: int) -> None:
    w.wait(lambda: _count(w, core) >= value, KIND, core, (value,))


def _ping(data, out, rounds):
    """AIC: round i writes data[i] then counts i; waits for the vector part to count i too."""
    w = kw.current()
    peer = w.core + 1
    for i in range(1, rounds + 1):
        data[i] = i * 7 + 1
        _bump(w, i)
        _wait_for(w, peer, i)
    out[0] = int(data[0])              # what the vector part summed, published before its last count


def _pong(data, out, rounds):
    w = kw.current()
    aic = 3 * w.cluster
    total = 0
    for i in range(1, rounds + 1):
        _wait_for(w, aic, i)
        total += int(data[i])
        if i == rounds:
            data[0] = total
        _bump(w, i)
    out[1] = total


pingpong = kernel(Mixed(aic=_ping, aiv0=_pong), name="test_waits.pingpong")


def _wait_forever(data, out):
    _wait_for(kw.current(), 3 * kw.current().cluster + 1, 1)


def _return_at_once(data, out):
    pass


def _fail(data, out):
    raise ValueError("vector part failed on purpose")


def _sleep_then_count(data, out):
    time.sleep(0.6)                    # a slow producer: the cube part must block, not spin
    _bump(kw.current(), 1)


stuck = kernel(Mixed(aic=_wait_forever, aiv0=_return_at_once), name="test_waits.stuck")
failing = kernel(Mixed(aic=_wait_forever, aiv0=_fail), name="test_waits.failing")
slow = kernel(Mixed(aic=_wait_forever, aiv0=_sleep_then_count), name="test_waits.slow")


def _where(data, out):
    ci = core_info()
    out[ci.lane + (ci.kind == "AIV")] = 10 * (ci.kind == "AIV") + ci.lane + 1


where = kernel(Mixed(aic=_where, aiv0=_where, aiv1=_where), name="test_waits.where")


@kernel(AIV)
def lonely(data, out):
    _wait_for(kw.current(), 0, 1)


@kernel(AIV)
def first_count(data, out):
    w = kw.current()
    out[core_info().block_idx] = _count(w, w.core)
    _bump(w, 7)


@kernel(AIV)
def barrier(data, out):
    """Every block marks its core with the task, then waits until all blocks did: only possible
    if they run at once. (Blocks do not know each other's cores: the waiter looks at all.)"""
    w = kw.current()
    ci = core_info()
    mark = w.task + 1

    def arrived() -> int:
        return sum(_count(w, c) == mark for c in range(w.ncores))
    w.set(kw.word(w.core, COUNT), mark)
    w.wake(range(w.ncores // 3))
    w.wait(lambda: arrived() >= ci.block_num, KIND, -1, (ci.block_num,))
    out[ci.block_idx] = arrived()


KERNELS = [pingpong, stuck, failing, slow, where, lonely, first_count, barrier]


@pytest.fixture(params=["device", "inline"])
def dev(request):
    d = Device(Platform(blocks=3, stall_timeout=20), kernels=KERNELS, inline=request.param == "inline")
    yield d
    d.close()


def _run(dev, k, rounds=None, blocks=1, sync_start=False, n_out=4):
    data = dev.zeros((256,), np.int64)
    out = dev.zeros((n_out,), np.int64)
    extra = () if rounds is None else (rounds,)

    def orch(rt):
        kw_ = {"blocks": blocks, "sync_start": sync_start} if blocks > 1 else {}
        rt.submit(k, Out(data) if rounds is None else Out(data), Out(out), *extra, **kw_)
    dev.run(orch)
    return dev.to_host(out)


def test_parts_pass_data_both_ways_through_waits(dev):
    out = _run(dev, pingpong, rounds=200)
    expected = sum(i * 7 + 1 for i in range(1, 201))
    assert out[0] == expected and out[1] == expected


def test_each_part_thread_has_its_own_core_info(dev):
    out = _run(dev, where)
    assert list(out[:3]) == [1, 11, 12]          # AIC lane 0; AIV lanes 0 and 1


def test_a_failing_part_releases_the_part_waiting_for_it(dev):
    with pytest.raises(KernelError) as e:
        _run(dev, failing)
    assert "vector part failed on purpose" in str(e.value)
    assert "released" not in e.value.error
    assert _run(dev, pingpong, rounds=3)[0] == sum(i * 7 + 1 for i in range(1, 4))   # usable after


def test_a_wait_nothing_can_end_is_a_stall_naming_the_wait():
    with Device(Platform(blocks=1, stall_timeout=1), kernels=KERNELS) as d:
        with pytest.raises(DeadlockError) as e:
            _run(d, stuck)
        msg = str(e.value)
        assert "test_waits.stuck" in msg and "is blocked: test count: waits for core 1 to reach 1" in msg
        assert "AIC of block 0" in msg
        assert _run(d, pingpong, rounds=3)[1] == sum(i * 7 + 1 for i in range(1, 4))


def test_the_sequential_engine_finds_parts_blocked_for_good_at_once():
    with Device(Platform(blocks=1, stall_timeout=60), kernels=KERNELS, inline=True) as d:
        t0 = time.monotonic()
        with pytest.raises(DeadlockError) as e:
            _run(d, stuck)
        assert time.monotonic() - t0 < 30              # not the stall timeout: nothing could wake it
        assert "nothing can end" in str(e.value) and "test count: waits for core 1 to reach 1" in str(e.value)
        assert _run(d, pingpong, rounds=2)[0] == 8 + 15


def test_a_single_part_that_waits_fails_at_once_inline():
    with Device(Platform(blocks=1), kernels=KERNELS, inline=True) as d:
        with pytest.raises(KernelError) as e:
            _run(d, lonely)
        assert "could never end" in str(e.value)


def test_a_blocked_part_uses_no_cpu():
    with Device(Platform(blocks=1), kernels=KERNELS) as d:
        aic = psutil.Process(d.pids[1])               # pids: the scheduler, then cores 0, 1, 2
        before = sum(aic.cpu_times()[:2])
        _run(d, slow)                                 # the cube part waits ~0.6 s for its peer
        used = sum(aic.cpu_times()[:2]) - before
        assert used < 0.3, f"the waiting core used {used:.2f} s of CPU in a 0.6 s wait"


def test_sync_words_start_at_zero_every_run(dev):
    for _ in range(2):
        assert _run(dev, first_count)[0] == 0


def test_start_together_blocks_can_wait_for_each_other(dev):
    out = _run(dev, barrier, blocks=4, sync_start=True)
    assert list(out[:4]) == [4, 4, 4, 4]          # (four single-vector blocks on a 3-block device)


class _Area:
    """A stand-in wait area for unit tests of a Waiter."""

    def __init__(self):
        self.q = memoryview(bytearray(device_waits.area_words(3) * 8)).cast("q")
        self.area = device_waits.WaitArea(self.q, 0, 3, device_waits.thread_semaphores(3))


@pytest.mark.parametrize("skew", ["aiv0", "random"])
def test_lane_skew_delays_are_drawn_from_the_seed(monkeypatch, skew):
    slept = []
    monkeypatch.setattr(device_waits.time, "sleep", slept.append)

    def delays(seed, slot, task=5):
        slept.clear()
        a = _Area().area
        w = device_waits.Waiter(a, slot, lambda: "", skew=skew, skew_us=100, seed=seed)
        w.begin(task, 0, slot, (True, True, True))
        for _ in range(5):
            w.pause()
        return list(slept)

    if skew == "aiv0":
        assert delays(1, 0) == [] and delays(1, 2) == []      # only the vector part slot 1 is late
        d = delays(1, 1)
        assert len(d) == 5 and all(0 <= x <= 100e-6 for x in d)
        assert delays(1, 1) == d and delays(2, 1) != d
    else:                                                      # one slot per task, from the seed
        late = [s for s in range(3) if delays(3, s)]
        assert len(late) == 1
        assert [s for s in range(3) if delays(3, s)] == late


def test_skew_is_checked():
    with pytest.raises(ValueError, match="skew"):
        Device(Platform(blocks=1), skew="aiv2", inline=True)


def test_kernels_outside_a_device_cannot_wait():
    with pytest.raises(RuntimeError, match="only works inside a kernel"):
        kw.current("TPipe.pop()")


def test_claims_and_kinds_are_checked():
    assert kw.claim("test_waits.count", 1) == COUNT
    with pytest.raises(ValueError, match="already claimed"):
        kw.claim("test_waits.count", 2)
    with pytest.raises(ValueError, match="sync words"):
        kw.claim("test_waits.too_many", kw.SYNC_WORDS + 1)
    with pytest.raises(ValueError, match="taken"):
        kw.register_kind(KIND, "another", lambda o, d: "")
    assert kw.describe(12345, 1, (2,)).startswith("wait of kind 12345")
