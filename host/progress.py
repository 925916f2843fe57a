"""One progress bar for every long command (runs, benches): rich on a terminal, nothing otherwise.

    with progress("dispatch", total) as step:      step() advances by one;
        ...                                         step(done=d, total=t) sets both
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any


@contextmanager
def progress(label: str, total: int) -> Iterator[Any]:
    """A progress bar on stderr (rich, when a terminal is attached). Yields ``step``:
    ``step()`` advances by one, ``step(done=d, total=t)`` sets both."""
    def nothing(n: int = 1, *, done: int | None = None, total: int | None = None) -> None:
        pass
    if not sys.stderr.isatty():
        yield nothing
        return
    try:
        from rich.progress import Progress
    except ImportError:
        yield nothing
        return
    with Progress(transient=True) as p:
        task = p.add_task(label, total=total)

        def step(n: int = 1, *, done: int | None = None, total: int | None = None) -> None:
            if done is None:
                p.advance(task, n)
            else:
                p.update(task, completed=done, total=total)
        yield step
