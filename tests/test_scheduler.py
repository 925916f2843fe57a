"""The scheduler in-process (tests/schedharness.py): its decisions, step by step, without forking."""

from __future__ import annotations

import pytest
from schedharness import Bench

from device import codec as C
from device import layout as L
from host.tensor import In, InOut, Out

AIC, AIV, MIXED = 0, 1, 2             # the bench's kernels: shapes AIC, AIV, AIC+AIV x2


@pytest.mark.timeout(30)
def test_independent_tasks_go_to_free_cores_and_retire_in_order():
    b = Bench(blocks=2)
    tids = [b.submit(AIV) for _ in range(6)]
    b.step()
    posted = b.posted()
    assert sorted(t for t, _, _ in posted) == tids                  # 4 AIV cores x 2 slots
    assert all(not C.is_aic(c) for _, _, c in posted)
    for c in sorted({c for _, _, c in posted}, reverse=True):        # finish out of order
        b.finish(c)
    b.step()
    assert b.sched.tasks.completed == len({c for _, _, c in posted})
    b.run_to_end()
    assert b.q[b.lay.g(L.G_RETIRED)] == 6


@pytest.mark.timeout(30)
def test_a_chain_runs_one_at_a_time_in_submission_order():
    b = Bench(blocks=2)
    t = b.tensor((4,))
    tids = [b.submit(AIV, [InOut(t)]) for _ in range(5)]
    b.run_to_end()
    assert [tid for tid, _, _ in b.ran] == tids


@pytest.mark.timeout(30)
def test_a_chain_is_posted_early_behind_its_producer_on_one_core():
    b = Bench(blocks=2)
    t = b.tensor((4,))
    tids = [b.submit(AIV, [InOut(t)]) for _ in range(3)]
    b.step()
    posted = b.posted()
    assert [p[0] for p in posted] == tids[:2]                       # cap 2: one running, one staged
    assert len({c for _, _, c in posted}) == 1                      # behind its producer
    b.run_to_end()
    assert [tid for tid, _, _ in b.ran] == tids


@pytest.mark.timeout(30)
def test_a_gated_task_is_skipped_by_its_core_after_a_failure():
    b = Bench(blocks=1)
    t = b.tensor((4,))
    first, second = b.submit(AIV, [InOut(t)]), b.submit(AIV, [InOut(t)])
    b.step()
    (_, _, c), (_, _, c2) = b.posted()
    assert c == c2
    mb = b.lay.mailbox(c)
    assert b.q[mb + 2] & C.ENTRY_GATED and not b.q[mb + 1] & C.ENTRY_GATED
    b.finish(c, status=C.STATUS_ERROR)                              # the worker then skips the gated one
    b.finish(c, status=C.STATUS_SKIPPED)
    b.step()
    assert b.sched.dispatcher.discard and b.q[b.lay.g(L.G_ERROR)] == L.ERR_KERNEL
    assert b.host_sem.posts >= 1                                    # the host hears at once
    assert (first, second) == (b.ran[0][0], b.ran[1][0])


@pytest.mark.timeout(30)
def test_after_a_kernel_error_ready_tasks_are_skipped_and_nothing_new_runs():
    b = Bench(blocks=1)
    x, y = b.tensor((4,)), b.tensor((4,))
    bad = b.submit(AIV, [InOut(x)])
    b.step()
    b.finish(b.posted()[0][2], status=C.STATUS_ERROR)
    later = [b.submit(AIV, [InOut(y)]) for _ in range(3)]
    b.run_to_end()
    assert [tid for tid, _, _ in b.ran] == [bad]                    # none of the later ones ran
    assert all(b.q[b.lay.ts(t) + C.T_STATUS] == C.STATUS_SKIPPED for t in later)
    assert b.sched.tasks.retired == 4


@pytest.mark.timeout(30)
def test_abort_waits_for_what_runs_then_resets():
    b = Bench(blocks=1)
    x = b.tensor((4,))
    b.submit(AIV, [In(x)])
    b.submit(AIV, [In(x)])
    b.step()
    assert len(b.posted()) == 2
    b.q[b.lay.g(L.G_ABORT_REQ)] = 1
    assert not b.sched.link.service() and b.q[b.lay.g(L.G_ABORT_ACK)] == 0   # two still running
    b.finish_all()
    b.step()
    b.sched.link.service()
    assert b.q[b.lay.g(L.G_ABORT_ACK)] == 1 and not b.sched.dispatcher.discard
    b.submit(AIV, [In(x)])                                          # and the next run goes
    b.run_to_end()
    assert len(b.ran) == 3


@pytest.mark.timeout(30)
def test_a_mixed_task_waits_for_a_whole_idle_block_and_reserves_one():
    b = Bench(blocks=2)
    single = [b.submit(AIC) for _ in range(4)]      # fill both AIC cores (two entries each)
    b.step()
    assert sorted(t for t, _, _ in b.posted()) == single
    mixed = b.submit(MIXED)
    more = b.submit(AIC)
    b.step()
    assert mixed not in [t for t, _, _ in b.posted()]
    reserved = b.sched.cores.reserved
    assert reserved in (0, 1)
    # single-core work does not go to the reserved block while the mixed task waits
    assert all(C.block_of(c) != reserved for t, _, c in b.posted() if t == more)
    b.run_to_end()
    parts = sorted((p, c) for t, p, c in b.ran if t == mixed)
    assert [p for p, _ in parts] == [0, 1, 2] and len({C.block_of(c) for _, c in parts}) == 1


@pytest.mark.timeout(30)
def test_runtime_memory_is_freed_when_its_scope_ends_and_its_users_finish():
    b = Bench(blocks=1)
    from host.tensor import Buffer, Tensor

    class Frame:                                    # the scope a runtime tensor was made in
        depth = 1
    buf = Buffer(None, 4096, None, True, Frame())
    t = Tensor.whole(buf, (1024,), b.tensor((1,)).dtype)
    out = b.tensor((1024,))
    w = b.writer.write(C.KIND_TASK, AIV, 1, [Out(t)], (), 1, [buf], "test")
    r = b.submit(AIV, [In(t), Out(out)], depth=1)
    b.run_to_end()
    assert b.q[b.lay.g(L.G_FREED)] == 0             # both finished, but the scope is open
    b.scope_end(1)
    b.run_to_end()
    assert b.q[b.lay.g(L.G_FREED)] == 1 and b.q[b.lay.free_off] == w
    assert (w, r) == (b.ran[0][0], b.ran[1][0])


@pytest.mark.timeout(30)
def test_only_sleeping_workers_are_woken():
    b = Bench(blocks=1)
    b.q[b.lay.wline(1) + L.W_ASLEEP] = 1            # the first AIV core sleeps, the other is awake
    b.submit(AIV)
    b.submit(AIV)
    b.submit(AIV)
    b.step()
    cores = {c for _, _, c in b.posted()}
    posts = {c: b.worker_sems[c].posts for c in cores}
    assert all(posts[c] == (1 if c == 1 else 0) for c in cores)
