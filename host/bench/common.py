"""What every benchmark shares: timing, summaries, the JSON results file, tables, plots.

Results file (one per bench run, written with ``--json FILE``; schema 1):

    {"bench": "dispatch" | "granularity" | "paged-attention", "schema": 1,
     "created": ISO time, "machine": {"cpus", "python", "platform"},
     "config": {the command's options},
     "rows": [one flat dict per measured point -- see each bench module],
     "summary": {numbers derived from the rows: ratios, METG, savings, memory}}
"""

from __future__ import annotations

import datetime
import json
import os
import platform as _platform
import statistics
import sys
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

SCHEMA = 1


def timed(fn: Callable[[], object]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def cpu_ns(pids: list[int]) -> list[int]:
    """CPU time (ns) each process has used, from /proc/<pid>/task/*/schedstat: nanosecond
    precision (psutil's 10 ms ticks are too coarse for runs of a tenth of a second)."""
    out = []
    for pid in pids:
        total = 0
        try:
            for t in os.listdir(f"/proc/{pid}/task"):
                with open(f"/proc/{pid}/task/{t}/schedstat") as f:
                    total += int(f.read().split()[0])
        except OSError:
            pass
        out.append(total)
    return out


def rate_summary(times: list[float], n: int) -> dict:
    """min / median / max of tasks/s and us/task over rounds of ``n`` tasks each."""
    rates = sorted(n / t for t in times)
    med = statistics.median(rates)
    return {"tasks": n, "rounds": len(times),
            "tasks_per_s_min": rates[0], "tasks_per_s_median": med, "tasks_per_s_max": rates[-1],
            "us_per_task_min": 1e6 / rates[-1], "us_per_task_median": 1e6 / med,
            "us_per_task_max": 1e6 / rates[0]}


def results(bench: str, config: dict, rows: list[dict], summary: dict) -> dict:
    return {"bench": bench, "schema": SCHEMA,
            "created": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
            "machine": {"cpus": os.cpu_count(), "python": sys.version.split()[0],
                        "platform": _platform.platform()},
            "config": config, "rows": rows, "summary": summary}


def write_json(r: dict, path: str) -> None:
    with open(path, "w") as f:
        json.dump(r, f, indent=2)


def table(title: str, columns: list[tuple[str, str]], rows: Iterable[dict]) -> str:
    """A terminal table: ``columns`` are (key, format) pairs, e.g. ("wall_s", "{:.3f}")."""
    rows = list(rows)
    cells = [[fmt.format(r[k]) if r.get(k) is not None else "-" for k, fmt in columns] for r in rows]
    try:
        from rich.console import Console
        from rich.table import Table
        t = Table(title=title)
        for k, _ in columns:
            t.add_column(k, justify="right")
        for c in cells:
            t.add_row(*c)
        con = Console(width=200, record=True, file=open(os.devnull, "w"))
        con.print(t)
        return con.export_text()
    except ImportError:
        widths = [max(len(k), *(len(c[i]) for c in cells)) for i, (k, _) in enumerate(columns)]
        lines = [title, "  ".join(k.rjust(w) for (k, _), w in zip(columns, widths))]
        lines += ["  ".join(c.rjust(w) for c, w in zip(row, widths)) for row in cells]
        return "\n".join(lines)


class PssSampler:
    """Peak proportional set size (PSS) of this process and all its children, sampled in a
    background thread. PSS splits shared pages (GM) among the processes mapping them, so the sum
    counts the device's shared memory once."""

    def __init__(self, interval: float = 0.25) -> None:
        self.interval = interval
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def sample(self) -> int:
        import psutil
        me = psutil.Process()
        total = 0
        for p in [me, *me.children(recursive=True)]:
            try:
                total += p.memory_full_info().pss
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                pass
        self.peak = max(self.peak, total)
        return total

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.sample()

    def __enter__(self) -> PssSampler:
        self.sample()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.sample()


def plot(path: str, draw: Callable[[Any], None]) -> str | None:
    """Draw a PNG with matplotlib if it is installed (the ``plot`` extra); returns the path."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    fig, ax = plt.subplots(figsize=(8, 5))
    draw(ax)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
