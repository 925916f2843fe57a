"""The all-core barrier of a task: the chip's ``AscendC::SyncAll<false>()``.

    kernel part:  ...phase 0...;  sync_all();  ...phase 1 reads what every part wrote in phase 0...

Every part (AIC and AIV alike) of every block of the task calls it; none returns before all have
called it, and everything a part wrote to GM before its call is visible to every part after
theirs. The blocks of a multi-block task must all be running at once for that to be possible:
the task is submitted with ``sync_start=True`` (calling it in a multi-block task that was not is
an error at once). A block that never arrives -- its part returned without calling it, or is stuck
elsewhere -- is a stall: the device's stall detector fails the run with a DeadlockError naming
the barrier, how many parts arrived and how many it waits for (the sequential engine as soon as
every part left is blocked).

Built on the device's waits (kernels/waits.py): each part publishes its arrival in a sync word of
its own core -- one writer per word, no atomics -- and blocks until the others' words show theirs:

    mark(task, n) = (task + 1) * 2**20 + n          n: the part's n-th arrival in this task
    first call    round A: mark(T, 0), wait until `need` cores hold a mark of task T -- these
                  are the task's parts (nobody else writes T's marks); round B: mark(T, 1), wait
                  until each of those cores holds >= mark(T, 1)
    later calls   mark(T, n + 1), wait until each of the task's cores holds >= it

A core's marks only grow during a run (task ids grow, and within a task n grows), so once a part
is known to be one of the task's, ">= mark" stays true even after it has gone on to later tasks.
Round A is what makes learning who the parts are safe: a part leaves round A only into round B,
where it waits for everyone, so while anyone is still in round A every part's word holds a mark of
this task. The words are zeroed at the start of each run.
"""

from __future__ import annotations

import threading

from kernels import waits
from kernels.registry import core_info

__all__ = ["sync_all"]

_WORD = waits.claim("barrier.sync_all", 1)
_SHIFT = 20                    # arrivals a task may make: 2**20


def _describe(task: int, d: tuple[int, ...]) -> str:
    barrier, arrived, need, block = (tuple(d) + (0, 0, 0, 0))[:4]
    return (f"SyncAll of task {task} (its barrier {barrier}): block {block} waits for {need - arrived} more of the "
            f"task's {need} parts ({arrived} arrived); every part of every block must call it, and all blocks "
            "must run at once (rt.submit(..., sync_start=True))")


KIND = waits.register_kind(21, "SyncAll", _describe)


class _State(threading.local):
    task = -1
    calls = 0                               # this part's sync_all calls in the task so far
    n = 0                                   # its last mark's arrival number
    cores: tuple[int, ...] = ()             # the task's parts' sync cores, once known


_st = _State()


def _mark(task: int, n: int) -> int:
    return ((task + 1) << _SHIFT) + n


def sync_all() -> None:
    """Wait until every part of every block of the running task has called ``sync_all`` as many
    times as this one (module docstring)."""
    w = waits.current("sync_all()")
    info = core_info()
    block, nblocks = (info.block_idx, info.block_num) if info is not None else (0, 1)
    if nblocks > 1 and not (info is not None and info.sync_start):
        raise RuntimeError(f"sync_all() in block {block} of a task of {nblocks} blocks that was not started together: "
                           "a barrier across blocks needs them all running at once -- submit it with "
                           "rt.submit(..., sync_start=True)")
    need = nblocks * sum(w.slots)
    st = _st
    task = w.task
    if st.task != task:
        st.task, st.calls, st.n, st.cores = task, 0, 0, ()
    barrier = st.calls
    st.calls += 1
    w.pause()
    me = waits.word(w.core, _WORD)
    if not st.cores:                                            # round A: who are the task's parts?
        lo, hi = _mark(task, 0), _mark(task + 1, 0)
        w.set(me, lo)
        w.wake(range(w.ncores // 3))

        def found() -> list[int]:
            return [c for c in range(w.ncores) if lo <= w.get(waits.word(c, _WORD)) < hi]

        w.wait(lambda: len(found()) >= need, KIND, task, (barrier, len(found()), need, block))
        st.cores = tuple(found())
    st.n += 1                                                   # round B of the first call, or a later call
    m = _mark(task, st.n)
    w.set(me, m)
    w.wake(sorted({c // 3 for c in st.cores}))
    words = [waits.word(c, _WORD) for c in st.cores]

    def arrived() -> int:
        return sum(w.get(x) >= m for x in words)

    w.wait(lambda: arrived() >= need, KIND, task, (barrier, arrived(), need, block))
