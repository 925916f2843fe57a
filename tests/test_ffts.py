"""Cross-core semaphores (kernels/ffts.py): set_cross_core / wait_flag_dev between the cube and
vector parts of a mixed task, as a2a3's mode-2 FFTS flags -- broadcast from the AIC, reduce into
it -- on a process device and in the sequential engine; and the spmd_paged_attention variant that
synchronises its GM ping-pong with them by hand."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from host import DeadlockError, Device, InOut, KernelError, Platform
from host.run import build_on, compare
from kernels import AIV, Mixed, core_info, kernel, set_cross_core, wait_flag_dev, waits
from kernels.ffts import LIMIT
from kernels.workloads import catalogue

READY, FREE = 0, 1


def value(i: int) -> np.ndarray:
    return i * 100 + np.arange(8, dtype=np.float32)


def _lane() -> int:
    return waits.current().slot - 1


# C2V: the AIC writes tile i into slot i % 2 and signals READY to both lanes (broadcast); each
# lane copies it out and signals FREE; the AIC reuses a slot only once both lanes freed it (reduce)
def _c2v_aic(ws, out, n):
    for i in range(n):
        if i >= 2:
            wait_flag_dev(FREE)
        ws[i % 2] = value(i)
        set_cross_core(READY)
    for _ in range(min(n, 2)):
        wait_flag_dev(FREE)


def _c2v_aiv(ws, out, n):
    for i in range(n):
        wait_flag_dev(READY)
        out[_lane(), i] = ws[i % 2]
        set_cross_core(FREE)


# V2C: each lane writes its half of tile i; the AIC reads it once BOTH signalled READY
def _v2c_aic(ws, out, n):
    for i in range(n):
        wait_flag_dev(READY)
        out[0, i] = ws[i % 2]
        set_cross_core(FREE)


def _v2c_aiv(ws, out, n):
    lane = _lane()
    for i in range(n):
        if i >= 2:
            wait_flag_dev(FREE)
        ws[i % 2, lane * 4:(lane + 1) * 4] = value(i)[lane * 4:(lane + 1) * 4]
        set_cross_core(READY)
    for _ in range(min(n, 2)):
        wait_flag_dev(FREE)


def _nothing(*args):
    pass


def _signal_n(ws, out, n):
    for _ in range(n):
        set_cross_core(3)


def _wait_n(ws, out, n):
    for _ in range(n):
        wait_flag_dev(3)


def _wait_forever(ws, out, n):
    wait_flag_dev(5)


def _raise(*args):
    raise ValueError("the cube part failed on purpose")


c2v = kernel(Mixed(aic=_c2v_aic, aiv0=_c2v_aiv, aiv1=_c2v_aiv), name="test_ffts.c2v")
v2c = kernel(Mixed(aic=_v2c_aic, aiv0=_v2c_aiv, aiv1=_v2c_aiv), name="test_ffts.v2c")
signal_only = kernel(Mixed(aic=_signal_n, aiv0=_nothing, aiv1=_nothing), name="test_ffts.signal_only")
take_only = kernel(Mixed(aic=_nothing, aiv0=_wait_n, aiv1=_wait_n), name="test_ffts.take_only")
stuck = kernel(Mixed(aic=_nothing, aiv0=_wait_forever, aiv1=_nothing), name="test_ffts.stuck")
failing = kernel(Mixed(aic=_raise, aiv0=_wait_forever, aiv1=_wait_forever), name="test_ffts.failing")
single = kernel(AIV, name="test_ffts.single")(_signal_n)
KERNELS = [c2v, v2c, signal_only, take_only, stuck, failing, single]


@pytest.fixture(scope="module", params=["device", "inline"])
def dev(request):
    d = Device(Platform(blocks=1, stall_timeout=30), kernels=KERNELS, inline=request.param == "inline")
    yield d
    d.close()


def _run(dev, k, n, **submit):
    ws = dev.zeros((2, 8), np.float32)
    out = dev.zeros((2, max(n, 1), 8), np.float32)
    dev.run(lambda rt: rt.submit(k, InOut(ws), InOut(out), n, **submit))
    return dev.to_host(out)


def test_the_cube_signals_both_lanes_at_once_and_waits_for_both_to_free_a_slot(dev):
    with warnings.catch_warnings():
        warnings.simplefilter("error")             # every signal taken: nothing left to report
        got = _run(dev, c2v, 100)
    for i in range(100):
        np.testing.assert_array_equal(got[0, i], value(i))
        np.testing.assert_array_equal(got[1, i], value(i))


def test_the_cube_waits_until_both_lanes_signalled(dev):
    got = _run(dev, v2c, 100)
    for i in range(100):
        np.testing.assert_array_equal(got[0, i], value(i))


def test_a_late_lane_holds_the_cube_back():
    """With one lane delayed at every flag operation, the cube still reads whole tiles."""
    with Device(Platform(blocks=1, stall_timeout=30), kernels=KERNELS, skew="aiv1", skew_us=300, seed=4) as d:
        got = _run(d, v2c, 20)
    for i in range(20):
        np.testing.assert_array_equal(got[0, i], value(i))


def test_signals_persist_across_the_tasks_of_a_run_and_leftovers_are_reported(dev):
    def two_tasks(rt):
        ws, out = rt_tensors
        rt.submit(signal_only, InOut(ws), InOut(out), 3)     # three signals nobody takes yet
        rt.submit(take_only, InOut(ws), InOut(out), 3)       # taken by the next mixed task there
    rt_tensors = (dev.zeros((2, 8), np.float32), dev.zeros((2, 1, 8), np.float32))
    with pytest.warns(RuntimeWarning, match=r"cross-core event 3 on cluster 0: the AIC signalled it 3 time"):
        dev.run(two_tasks)
    assert any("cross-core event 3" in t for t in dev.stats()["notices"])


def test_a_counter_past_fifteen_is_the_chips_overflow(dev):
    with pytest.raises(KernelError, match=f"would pass {LIMIT}.*overflows"):
        _run(dev, signal_only, LIMIT + 1)


def test_a_wait_nobody_will_answer_is_a_stall_naming_the_event():
    for inline in (False, True):
        with Device(Platform(blocks=1, stall_timeout=1), kernels=KERNELS, inline=inline) as d:
            with pytest.raises(DeadlockError) as e:
                _run(d, stuck, 1)
            for part in ("wait_flag_dev(5)", "cluster 0", "AIV lane 0", "from the AIC"):
                assert part in str(e.value), (part, str(e.value))
            got = _run(d, c2v, 3)                     # the device is usable after
            np.testing.assert_array_equal(got[1, 2], value(2))


def test_a_kernel_error_in_one_part_releases_the_parts_waiting_for_its_signal(dev):
    with pytest.raises(KernelError, match="failed on purpose"):
        _run(dev, failing, 1)
    got = _run(dev, c2v, 2)
    np.testing.assert_array_equal(got[0, 1], value(1))


@pytest.mark.parametrize("event", [16, -1, True, 2.0])
def test_events_are_the_clusters_sixteen_semaphores(event):
    def aic(ws, out, n):
        set_cross_core(event)
    k = kernel(Mixed(aic=aic, aiv0=_nothing, aiv1=_nothing), name=f"test_ffts.bad_{event!r}")
    with Device(Platform(blocks=1), kernels=[k], inline=True) as d:
        with pytest.raises(KernelError, match=r"event must be an int in 0\.\.15"):
            _run(d, k, 1)


def test_flags_join_the_parts_of_a_mixed_kernel_only(dev):
    with pytest.raises(KernelError, match="cross-core flags join the cube part and the vector parts"):
        _run(dev, single, 1)
    with pytest.raises(RuntimeError, match="only works inside a kernel a Device runs"):
        set_cross_core(0)
    assert core_info() is None


# ── spmd_paged_attention, "ffts" variant ───────────────────────────────────────────────────────

WL = catalogue.load("spmd_paged_attention")


@pytest.mark.parametrize("inline", [False, True])
def test_spmd_paged_attention_with_hand_written_flag_pipes_gives_the_same_bits(inline):
    params = WL.case("small")
    got = {}
    with Device(Platform(blocks=3, stall_timeout=60), kernels=list(WL.kernels), inline=inline) as d:
        arrays, tensors = build_on(d, WL, params, 0)
        before = {k: v.copy() for k, v in arrays.items()}
        for variant in ("default", "ffts"):
            with warnings.catch_warnings():
                warnings.simplefilter("error")     # FlagPipe.close() leaves no signal behind
                d.run(WL.orchestrate, tensors, params, variant)
            got[variant] = d.to_host(tensors["out"])
    np.testing.assert_array_equal(got["ffts"], got["default"])
    assert compare({"out": got["ffts"]}, WL.golden(before, params, "ffts"), WL.tolerance)["pass"]


def test_the_flag_variant_couples_as_the_pipes_it_spells_out():
    from host.bench import pipe
    a = pipe.predict_spmd("small", blocks=3, log=lambda s: None)
    b = pipe.predict_spmd("small", blocks=3, log=lambda s: None, variant="ffts")
    assert (b["us"], b["us_low"], b["us_high"]) == (a["us"], a["us_low"], a["us_high"])
