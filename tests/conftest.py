"""Shared fixtures. Every test ends with no new child process alive and no new ptoemu segment of
this process in /dev/shm (module-scoped devices are checked when their module ends), and the
session ends with none at all (checked after each test, not assumed)."""

from __future__ import annotations

import os

import psutil
import pytest

from host import Device, Platform


def our_segments() -> list[str]:
    prefix = f"ptoemu-{os.getpid()}-"
    return sorted(n for n in os.listdir("/dev/shm") if n.startswith(prefix))


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
