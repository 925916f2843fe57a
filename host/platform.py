"""What kind of device to emulate: number of blocks and the sizes of the runtime's rings."""

from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import dataclass

from device.codec import LANES

MiB = 1 << 20
GiB = 1 << 30
A2A3_BLOCKS = 24                # clusters of the a2a3 chip
MAX_BLOCKS = 256                # 768 worker processes: far beyond any chip, still a sane bound
MAX_TASK_WINDOW = 1 << 16       # the control segment holds ~4.5 KiB per slot
MAX_HEAP = 1 << 40
MAX_GM = 1 << 44


@dataclass(frozen=True)
class Platform:
    """An emulated chip.

    blocks          clusters of 1 AIC + 2 AIV cores (a2a3: up to 24, so 72 worker processes)
    task_window     task ring slots (power of two); the host blocks when it is full
    heap_bytes      heap ring for runtime tensors (rt.make_tensor)
    gm_bytes        room for host tensors (dev.empty / dev.to_device); None: most of /dev/shm.
                    Pages are only used once written, so a large value costs nothing up front.
    mailbox_depth   tasks one core holds at once, running and waiting (2, as the reference's
                    running + staged slots, lets a worker find its next task without a wake-up);
                    while tasks are shorter than a wake-up (~50 us) the scheduler queues up to 7
    spin_us         how long an idle process yield-spins before it blocks on its semaphore
    stall_timeout   seconds without any progress before a run fails with DeadlockError (0: never)
    max_blocks      the chip's limit on ``blocks``
    """

    blocks: int = 24
    task_window: int = 4096
    heap_bytes: int = 64 * MiB
    gm_bytes: int | None = None
    mailbox_depth: int = 2
    spin_us: float = 30.0
    stall_timeout: float = 60.0
    max_blocks: int = A2A3_BLOCKS
    name: str = "a2a3"

    def __post_init__(self) -> None:
        # Everything is checked here, before a Device creates anything, so a bad field is a
        # ValueError/TypeError naming it and never a half-made device.
        def need_int(field: str, lo: int, hi: int) -> None:
            v = getattr(self, field)
            if not isinstance(v, int) or isinstance(v, bool):
                raise TypeError(f"Platform({field}=...) must be an int, got {type(v).__name__} {v!r}")
            if not lo <= v <= hi:
                raise ValueError(f"Platform({field}={v}): expected {lo}..{hi}"
                                 + (f" for the {self.name} preset" if field == "blocks" else ""))

        def need_number(field: str, lo: float, hi: float, why: str = "") -> None:
            v = getattr(self, field)
            if not isinstance(v, (int, float)) or isinstance(v, bool):
                raise TypeError(f"Platform({field}=...) must be a number, got {type(v).__name__} {v!r}")
            if not (math.isfinite(v) and lo <= v <= hi):
                raise ValueError(f"Platform({field}={v!r}): expected a finite number in {lo:g}..{hi:g}{why}")

        if not isinstance(self.name, str) or not self.name:
            raise TypeError(f"Platform(name=...) must be a non-empty string, got {self.name!r}")
        need_int("max_blocks", 1, MAX_BLOCKS)
        need_int("blocks", 1, self.max_blocks)
        need_int("task_window", 2, MAX_TASK_WINDOW)
        if self.task_window & (self.task_window - 1):
            p = 1 << (self.task_window - 1).bit_length()
            raise ValueError(f"Platform(task_window={self.task_window}): must be a power of two "
                             f"(e.g. {p})")
        need_int("heap_bytes", 4096, MAX_HEAP)
        if self.gm_bytes is not None:
            need_int("gm_bytes", 4096, MAX_GM)
        need_int("mailbox_depth", 1, 7)
        need_number("spin_us", 0, 1e6)
        need_number("stall_timeout", 0, 1e7, " (0 turns the stall check off)")

    @property
    def cores(self) -> int:
        return LANES * self.blocks

    def replace(self, **changes: object) -> Platform:
        return dataclasses.replace(self, **changes)

    @classmethod
    def a2a3(cls, blocks: int = 24, **kw: object) -> Platform:
        """The a2a3 chip: 24 blocks (72 cores), task window 4096, 64 MiB heap."""
        return cls(blocks=blocks, **kw)  # type: ignore[arg-type]

    @classmethod
    def tiny(cls, blocks: int = 1, **kw: object) -> Platform:
        """A small device for tests and debugging: tiny rings so back-pressure happens early."""
        kw = {"task_window": 64, "heap_bytes": 1 * MiB, **kw}
        return cls(blocks=blocks, name="tiny", **kw)  # type: ignore[arg-type]

    def host_bytes(self) -> int:
        if self.gm_bytes is not None:
            return self.gm_bytes
        try:
            st = os.statvfs("/dev/shm")
            free = st.f_bavail * st.f_frsize
        except OSError:
            free = 4 * GiB
        return max(64 * MiB, int(free * 0.75) - self.heap_bytes) // 4096 * 4096


PRESETS = {"a2a3": Platform.a2a3, "tiny": Platform.tiny}
