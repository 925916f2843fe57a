"""A device process's link to its host: signals it leaves to the host, and noticing the host is gone.

    host ──fork──▶ scheduler, workers: child_signals()   SIGINT/SIGHUP/SIGQUIT ignored (the host's)
                   scheduler: orphaned() every ~0.5 s  host gone ──▶ stop the workers, exit
                   worker:    orphaned() every 1 s     host gone ──▶ exit

Nothing else is needed to clean up after a host that died: the device's memory is anonymous and
goes with the last process that maps it (device/shm.py).
"""

from __future__ import annotations

import os
import signal


def child_signals() -> None:
    """In a device process: interrupts from a terminal (Ctrl-C, Ctrl-\\, hang-up) are the host's
    business; the host decides, and its children follow it out if it dies."""
    for sig in (signal.SIGINT, signal.SIGHUP, signal.SIGQUIT):
        signal.signal(sig, signal.SIG_IGN)
    signal.pthread_sigmask(signal.SIG_SETMASK, set())      # forked while the host held SIGINT back


def orphaned(host_pid: int) -> bool:
    """Has the host (our parent) gone away?"""
    return os.getppid() != host_pid


def alive(pid: int) -> bool:
    """Is this (non-child) process still running? Zombies count as gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False
