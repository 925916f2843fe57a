"""The scheduler in-process: a plain control buffer, counting semaphores, and workers played by
the test, so the scheduler's logic is tested (and timed) without forking anything.

    bench = Bench(blocks=1, window=16)
    t = bench.tensor((4,))                         # a host tensor in the bench's GM
    tid = bench.submit(kernel=0, args=[InOut(t)])  # a record, written by the real TaskWriter
    bench.step()                                   # one scheduler pass
    bench.finish_all()                             # the "workers" finish what was posted to them
"""

from __future__ import annotations

import os

import numpy as np

from device import codec as C
from device import layout as L
from device.codec import DeviceContext
from device.scheduler import Scheduler
from host.submit import TaskWriter
from host.tensor import Buffer, Tensor
from kernels.registry import SHAPE_AIC, SHAPE_AIC_AIV_X2, SHAPE_AIV


class Sem:
    """A semaphore that only counts: tests look at how often the scheduler woke whom."""

    def __init__(self) -> None:
        self.n = 0
        self.posts = 0

    def release(self) -> None:
        self.n += 1
        self.posts += 1

    def acquire(self, block: bool = True, timeout: float | None = None) -> bool:
        if self.n:
            self.n -= 1
            return True
        return False


class Bench:
    def __init__(self, blocks: int = 1, window: int = 64, heap: int = 1 << 16, gm: int = 1 << 20,
                 kernels: tuple = ("k_aic", "k_aiv", "k_mixed"),
                 shapes: tuple = (SHAPE_AIC, SHAPE_AIV, SHAPE_AIC_AIV_X2), timestamps: bool = True) -> None:
        lay = self.lay = L.Layout(3 * blocks, window, 2, heap)
        self.ctrl = memoryview(bytearray(lay.nbytes))
        self.q, self.f = self.ctrl.cast("q"), self.ctrl.cast("d")
        self.gm = memoryview(bytearray(gm + heap))
        self.sched_sem, self.host_sem = Sem(), Sem()
        self.worker_sems = [Sem() for _ in range(lay.ncores)]
        self.shapes = shapes
        ctx = DeviceContext(layout=lay, q=self.q, f=self.f, ctrl_buf=self.ctrl, gm_buf=self.gm,
                            sched_sem=self.sched_sem, host_sem=self.host_sem, worker_sems=self.worker_sems,
                            kernel_parts=[(None, None, None)] * len(kernels), kernel_names=list(kernels),
                            spin_ns=0, host_pid=os.getppid(), timestamps=timestamps)
        self.sched = Scheduler(ctx)
        self.writer = TaskWriter(lay, self.ctrl, self.q, self.f, gm, heap, None, self.sched_sem)
        self.next_gm = 0
        self.tails = [0] * lay.ncores
        self.ran: list[tuple[int, int, int]] = []          # (tid, part, core) in the order run

    # -- the host's side ---------------------------------------------------------------------------
    def tensor(self, shape: tuple, dtype=np.float32) -> Tensor:
        dt = np.dtype(dtype)
        n = int(np.prod(shape)) * dt.itemsize
        b = Buffer(None, n, self.next_gm, False)
        self.next_gm += -(-n // 512) * 512
        return Tensor.whole(b, tuple(shape), dt)

    def submit(self, kernel: int = 1, args: list = (), depth: int = 0) -> int:
        return self.writer.write(C.KIND_TASK, kernel, self.shapes[kernel], list(args), (), depth, None, "test")

    def scope_end(self, depth: int) -> int:
        return self.writer.write(C.KIND_SCOPE_END, 0, 0, [], (), depth, None, "test", aux=depth)

    # -- the scheduler and the "workers" -----------------------------------------------------------
    def step(self, n: int = 1) -> bool:
        moved = False
        for _ in range(n):
            moved |= self.sched.step()
        return moved

    def posted(self) -> list[tuple[int, int, int]]:
        """(tid, part, core) of every mailbox entry not yet finished, oldest first per core."""
        out = []
        for c in range(self.lay.ncores):
            mb = self.lay.mailbox(c)
            for i in range(self.tails[c], self.q[mb]):
                e = self.q[mb + 1 + i % self.lay.depth]
                out.append((C.entry_tid(e), C.entry_part(e), c))
        return out

    def finish(self, core: int, status: int = C.STATUS_OK) -> int:
        """Core ``core`` finishes its oldest entry; returns the task id."""
        mb = self.lay.mailbox(core)
        assert self.q[mb] > self.tails[core], f"nothing posted to core {core}"
        e = self.q[mb + 1 + self.tails[core] % self.lay.depth]
        tid, part = C.entry_tid(e), C.entry_part(e)
        t = self.lay.ts(tid)
        self.q[t + C.T_START0 + 2 * part] = self.q[t + C.T_DISPATCH] + 1
        self.q[t + C.T_END0 + 2 * part] = self.q[t + C.T_DISPATCH] + 2
        self.q[t + C.T_CORE0 + part] = core
        if status != C.STATUS_OK:
            self.q[t + C.T_STATUS] = status
        self.tails[core] += 1
        self.q[self.lay.wline(core) + L.W_DONE] = self.tails[core]
        self.ran.append((tid, part, core))
        return tid

    def finish_all(self) -> list[int]:
        """Every core finishes everything posted to it."""
        done = []
        for _, _, c in self.posted():
            done.append(self.finish(c))
        return done

    def run_to_end(self, limit: int = 100_000) -> None:
        """Step and finish until the scheduler has retired every record written."""
        for _ in range(limit):
            self.step()
            self.finish_all()
            if self.sched.tasks.retired == self.writer.next_tid and not self.posted():
                self.sched.flush_retired()
                return
        raise AssertionError("the scheduler did not get through the records")
