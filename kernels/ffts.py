"""Cross-core semaphores of an a2a3 cluster: pto-isa's ``set_cross_core`` / ``wait_flag_dev``
(``ffts_cross_core_sync`` in mode 2), what TPUSH/TPOP lower to and what hand-synchronised mixed
kernels (the reference's spmd_paged_attention "-ffts" variant, simpler PR #671) use directly.

    AIC   set_cross_core(e)    the counter of event e of BOTH vector parts + 1   (broadcast)
    AIVk  set_cross_core(e)    its half of the AIC's event e + 1
    AIVk  wait_flag_dev(e)     block until its counter of e > 0, then - 1
    AIC   wait_flag_dev(e)     block until EVERY vector part of the task signalled e, then take
                               one signal of each                                     (reduce)

(pto-isa docs/isa/scalar/ops/pipeline-sync/set-cross-core.md and wait-flag-dev.md.) 16 events
per cluster, each a 4-bit counter: a signal that would take a counter past 15 is an overflow on
the chip, an error here. ``wait_flag_dev`` stalls the whole scalar unit: nothing after it starts
before the signal.

State. Two counts per (cluster, part slot, event) in sync words (kernels/waits.py), each written
by its part only: ``sent`` (signals this part sent on e) and ``taken`` (signals it consumed). A
vector part's counter is the AIC's sent minus its taken; the AIC's is the fewest sent by a
vector part minus its taken. The counts persist across the tasks of a run on a cluster (a
signal may be meant for the next mixed task there, as on the chip) and start at 0 every run; a
task that ends with a signal nobody took is reported (a notice), as a pipe left holding tiles.
An AIC signal and a vector signal on the same event are two counters here (the chip has one
semaphore per event: use an event in one direction).

A wait that can never end (nobody left to signal) is a stall that names the event, the cluster,
the part and the counts; an abort releases it (WaitAborted). The lane-skew fuzzer delays the
chosen part at every set and wait. Counting: each set and wait is a flag of the coupled schedule
(tile.handshake: key ``-1 - e``, side a2a3.DATA when the AIC signals, a2a3.FREE when the vector
parts do), so ``a2a3.couple`` times hand-synchronised parts as it times pipes.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from kernels import a2a3, tile
from kernels import waits as kw

__all__ = ["EVENTS", "LIMIT", "set_cross_core", "wait_flag_dev"]

EVENTS = 16                  # semaphore ids per cluster
LIMIT = 15                   # a 4-bit counter
_SENT = kw.claim("ffts", 2 * EVENTS)            # per sync core: sent[e] | taken[e]
_TAKEN = _SENT + EVENTS
_PARTS = ("AIC", "AIV lane 0", "AIV lane 1")


def _describe(obj: int, d: tuple[int, ...]) -> str:
    event = -1 - obj
    cluster, slot, counter_in, taken = (tuple(d) + (0, 0, 0, 0))[:4]
    source = "every vector part of the task" if slot == 0 else "the AIC"
    return (f"wait_flag_dev({event}) on cluster {cluster}, {_PARTS[slot]}: waits for a signal from {source} "
            f"(signals in so far {counter_in}, taken {taken})")


KIND = kw.register_kind(2, "cross-core flag", _describe)


_VECTOR_SLOTS: dict[tuple[bool, bool, bool], tuple[int, ...]] = {}


def _check(w: kw.Waits, event: int, what: str) -> tuple[int, ...]:
    """The vector slots of the task; errors for a bad event or a task that is not mixed."""
    if type(event) is not int or not 0 <= event < EVENTS:          # (a bool is not an event)
        raise ValueError(f"{what}: event must be an int in 0..{EVENTS - 1} (the cluster's {EVENTS} "
                         f"semaphores), got {event!r}")
    slots = w.slots
    vec = _VECTOR_SLOTS.get(slots)
    if vec is None:
        vec = _VECTOR_SLOTS[slots] = tuple(s for s in (1, 2) if slots[s])
    if not (slots[0] and vec):
        raise ValueError(f"{what}: cross-core flags join the cube part and the vector parts of a mixed kernel "
                         "(kernel(Mixed(aic=..., aiv0=..., aiv1=...))); this task has one kind of part")
    return vec


def set_cross_core(event: int, pipe: int = a2a3.MTE3) -> None:
    """Signal ``event`` to the other side of this cluster (module docstring), once this part's
    last instruction on ``pipe`` ends (the chip's ffts_cross_core_sync(pipe, ...))."""
    w = kw.current("set_cross_core()")
    vec = _check(w, event, "set_cross_core()")
    slot = w.slot
    base = 3 * w.cluster * kw.SYNC_WORDS + event           # kw.word(3 * cluster + s, offset + event)
    get = w.get
    w.pause()
    mine = base + slot * kw.SYNC_WORDS + _SENT
    n = get(mine) + 1
    for r in (vec if slot == 0 else (0,)):
        taken = get(base + r * kw.SYNC_WORDS + _TAKEN)
        if n - taken > LIMIT:
            raise RuntimeError(f"set_cross_core({event}) on cluster {w.cluster}, {_PARTS[slot]}: the counter of "
                               f"{_PARTS[r]} would pass {LIMIT} ({n - taken} signals not taken): the chip's "
                               "4-bit semaphore overflows")
    if tile.collecting():
        tile.handshake(a2a3.SET, -1 - event, a2a3.DATA if slot == 0 else a2a3.FREE, n, (slot,), pipe)
    w.set(mine, n)
    w.wake((w.cluster,), -1 - event)


def wait_flag_dev(event: int) -> None:
    """Block until this part's counter of ``event`` is above 0 (the AIC: until every vector part
    signalled), then take one signal (module docstring). Nothing after it starts before."""
    w = kw.current("wait_flag_dev()")
    vec = _check(w, event, "wait_flag_dev()")
    slot = w.slot
    base = 3 * w.cluster * kw.SYNC_WORDS + event
    get = w.get
    senders = vec if slot == 0 else (0,)
    first = base + senders[0] * kw.SYNC_WORDS + _SENT
    second = base + senders[-1] * kw.SYNC_WORDS + _SENT     # (the same word with one sender)
    mine = base + slot * kw.SYNC_WORDS + _TAKEN
    taken = get(mine)

    def signals() -> int:
        a, b = get(first), get(second)
        return a if a < b else b

    w.pause()
    if signals() <= taken:
        w.wait(lambda: signals() > taken, KIND, -1 - event, (w.cluster, slot, signals(), taken))
    if tile.collecting():
        tile.handshake(a2a3.WAIT, -1 - event, a2a3.FREE if slot == 0 else a2a3.DATA, taken + 1, senders, a2a3.MTE2)
    w.set(mine, taken + 1)                  # (nobody waits for a signal to be taken)


@kw.task_end_check
def leftovers(get: Callable[[int], int], clusters: Iterable[int]) -> list[str]:
    """Events of ``clusters`` with signals sent that a part taking that event has not taken (a
    part that never took one is taken not to be a receiver: a task with one vector part)."""
    out = []
    for b in clusters:
        base = 3 * b
        for e in range(EVENTS):
            sent = [get(kw.word(base + s, _SENT + e)) for s in range(3)]
            if not any(sent):
                continue
            taken = [get(kw.word(base + s, _TAKEN + e)) for s in range(3)]
            lanes = [t for t in taken[1:] if t]
            if sent[0] > (min(lanes) if lanes else 0):
                out.append(f"cross-core event {e} on cluster {b}: the AIC signalled it {sent[0]} time(s), a vector "
                           f"part took {min(lanes) if lanes else 0} when the task ended: the next mixed task there "
                           "sees the rest")
            if max(sent[1:]) > taken[0]:
                out.append(f"cross-core event {e} on cluster {b}: a vector part signalled it {max(sent[1:])} time(s), "
                           f"the AIC took {taken[0]} when the task ended: the next mixed task there sees the rest")
    return out
