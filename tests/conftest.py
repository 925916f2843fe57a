"""Shared fixtures. Every test ends with no new child process alive and no new ptoemu segment of
this process -- none in /dev/shm, none mapped or open here (device memory is anonymous memfd, see
device/shm.py) -- (module-scoped devices are checked when their module ends), and the session
ends with none at all (checked after each test, not assumed)."""

from __future__ import annotations

import os

import psutil
import pytest

from host import Device, Platform


def segments_of(pid: int, prefix: str = "ptoemu-") -> set[str]:
    """ptoemu memfd segments process ``pid`` maps or holds open."""
    out = set()
    try:
        with open(f"/proc/{pid}/maps") as f:
            for line in f:
                i = line.find("/memfd:" + prefix)
                if i >= 0:
                    out.add(line[i + 7:].split()[0])
        for fd in os.listdir(f"/proc/{pid}/fd"):
            try:
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
            except OSError:
                continue
            if target.startswith("/memfd:" + prefix):
                out.add(target[7:].split()[0])
    except OSError:
        pass
    return out


def mapped_anywhere(names: list[str] | set[str]) -> list[int]:
    """Processes that still map or hold any of these segments."""
    names = set(names)
    return [int(p) for p in os.listdir("/proc") if p.isdigit() and segments_of(int(p)) & names]


def our_segments() -> list[str]:
    prefix = f"ptoemu-{os.getpid()}-"
    shm = {n for n in os.listdir("/dev/shm") if n.startswith(prefix)}
    return sorted(shm | segments_of(os.getpid(), prefix))


def live_children() -> list[psutil.Process]:
    """Child processes, except the multiprocessing resource tracker (one per test session)."""
    out = []
    for c in psutil.Process().children(recursive=True):
        try:
            if c.status() == psutil.STATUS_ZOMBIE:
                out.append(c)
                continue
            if any("resource_tracker" in part for part in c.cmdline()):
                continue
        except psutil.NoSuchProcess:
            continue
        out.append(c)
    return out


def _check_leaks(before_pids: set[int], before_segs: set[str], what: str) -> None:
    left = [c for c in live_children() if c.pid not in before_pids]
    segs = [s for s in our_segments() if s not in before_segs]
    for c in left:
        c.kill()
    assert not left, f"{what} left child processes behind: {[c.pid for c in left]}"
    assert not segs, f"{what} left shared-memory segments behind: {segs}"


@pytest.fixture(autouse=True, scope="module")
def no_leaks_per_module():
    before = ({c.pid for c in live_children()}, set(our_segments()))
    yield
    _check_leaks(*before, "test module")


@pytest.fixture(autouse=True)
def no_leaks(no_leaks_per_module):
    before = ({c.pid for c in live_children()}, set(our_segments()))
    yield
    _check_leaks(*before, "test")


@pytest.fixture
def make_device():
    """Factory: make_device(platform=None, kernels=..., **kw) -> Device, closed at teardown."""
    made: list[Device] = []

    def make(platform: Platform | None = None, kernels=(), **kw) -> Device:
        dev = Device(platform or Platform(blocks=1), kernels=kernels, **kw)
        made.append(dev)
        return dev

    yield make
    for d in made:
        d.close()
