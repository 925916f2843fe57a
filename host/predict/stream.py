"""Reading a big recording in a second process while the model runs in this one.

    this process (predict)                            reader process (forked: fork pinned, it
    ──────────────────────                            inherits the law table and parameters)
    Reader(path, picked, ...) ──────fork──────▶       Recording(path); per picked run:
      for each run: ri = reader.run(n)                  Flattener(...).more() ─▶ new rows
        simulate(ri, p, feed=reader.more) ◀─ pipe ──    ("rows", run, the new bytes of every column)
                                                        ("end", run, end record)
      reader.finish() -> kernels some task ran          ... ("done", kernels used)
                                                        a bad recording: ("error", message)

Parsing JSON and flattening records takes about as long as simulating them; in two processes the
two halves overlap (``ptoemu predict`` on a million-task recording: wall time about halved with
two CPUs). The pipe's buffer holds the reader back when it runs ahead: memory stays one chunk.
Used by ``predict()`` for files of READER_MIN_BYTES or more; a smaller file is read in-process.

The reader ignores Ctrl-C (this process decides), and exits when the pipe breaks (this process
gone); ``close()`` ends it on every path: joined after "done", terminated otherwise.

``in_children(fn, args)`` runs fn(*a) for each a in a forked process of its own and returns the
results in order: a big run's band (the model at the fast and at the slow end of every range,
predict's ``with_band``) is two more simulations, side by side on two CPUs. Same rules: the
children ignore Ctrl-C and are ended on every path.
"""

from __future__ import annotations

import signal
from array import array
from collections.abc import Callable, Sequence
from typing import Any

import multiprocess

from host.graph import Recording
from host.predict.laws import LawTable, TaskCosts
from host.predict.model import Flattener, RunInput
from host.predict.params import Params

READER_MIN_BYTES = 32 << 20
MP = multiprocess.get_context("fork")     # pinned: the reader inherits the laws (functions) as they are


def _columns(ri: RunInput) -> list[array]:
    """Every column of a RunInput, in a fixed order (what a "rows" message carries)."""
    return [ri.tid, ri.kind, ri.kernel, ri.depth, ri.shape, ri.blocks, ri.sync, ri.heap, ri.ocost, ri.onargs,
            ri.onpred, ri.us, ri.us_lo, ri.us_hi, ri.hbm, ri.hbm_host, ri.hbm_rt, ri.preds.start, ri.preds.idx,
            ri.owners.start, ri.owners.idx]


def _read(conn: Any, path: str, picked: list, kernels: list[dict], table: LawTable, p: Params) -> None:
    """The reader process: flatten the picked runs and send their rows."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        costs = TaskCosts(kernels, table, p)
        with Recording(path) as rec:
            for n, (first, end) in picked:
                f = Flattener(n, first, end, rec.take(first, end), kernels, costs, p)
                cols = _columns(f.ri)
                sent = [len(c) for c in cols]
                while f.more():
                    conn.send(("rows", n, [c[s:].tobytes() for c, s in zip(cols, sent)]))
                    sent = [len(c) for c in cols]
                conn.send(("end", n, f.ri.end))
            rec.finish()
        conn.send(("done", costs.used, costs.sources))
    except ValueError as e:
        conn.send(("error", str(e)))
    except (BrokenPipeError, EOFError):
        pass                                        # this side is gone: nothing to tell
    except BaseException as e:  # noqa: BLE001 - reported to the predicting process, which raises
        conn.send(("error", f"reading {path} failed: {type(e).__name__}: {e}"))
    finally:
        conn.close()


class Reader:
    """The predicting process's end of a reader process (see the module docstring)."""

    def __init__(self, path: str, picked: list, kernels: list[dict], table: LawTable, p: Params) -> None:
        self.kernels = kernels
        self._conn, child = MP.Pipe(duplex=False)
        self._proc = MP.Process(target=_read, args=(child, path, picked, kernels, table, p), daemon=True,
                                name="ptoemu-predict-reader")
        self._proc.start()
        child.close()
        self._ri: RunInput | None = None

    def run(self, n: int, first: int) -> RunInput:
        """An empty RunInput for run n, filled by ``more()``."""
        self._ri = RunInput.empty(n, first, self.kernels)
        return self._ri

    def _get(self) -> tuple:
        try:
            msg = self._conn.recv()
        except EOFError:
            raise ValueError("the recording's reader process ended without a word (killed?)") from None
        if msg[0] == "error":
            raise ValueError(msg[1])
        return msg

    def more(self) -> bool:
        """The model's feed: the next rows of the current run into its RunInput (False at its end)."""
        ri = self._ri
        msg = self._get()
        if msg[0] == "end":
            ri.end = msg[2]
            return False
        for col, b in zip(_columns(ri), msg[2]):
            col.frombytes(b)
        return True

    def finish(self) -> tuple[set[int], dict[int, list[int]]]:
        """After the last run: the kernel indices some task ran with, and how many tasks of each were
        priced from counts, a law or the roofline (laws.TaskCosts.sources); the reader then exits."""
        msg = self._get()
        self._proc.join(5)
        return msg[1], msg[2]

    def close(self) -> None:
        """End the reader, whatever happened (idempotent)."""
        if self._proc.is_alive():
            self._proc.terminate()
            self._proc.join(5)
            if self._proc.is_alive():
                self._proc.kill()
        self._proc.join()
        self._conn.close()


def _child(conn: Any, fn: Callable, args: tuple) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        conn.send(("ok", fn(*args)))
    except (BrokenPipeError, EOFError):
        pass
    except BaseException as e:  # noqa: BLE001 - reported to the parent, which raises
        conn.send(("error", f"{type(e).__name__}: {e}"))
    finally:
        conn.close()


def in_children(fn: Callable, calls: Sequence[tuple]) -> list[Any]:
    """[fn(*a) for a in calls], each call in a forked process of its own, all at once."""
    procs, conns = [], []
    try:
        for a in calls:
            parent, child = MP.Pipe(duplex=False)
            pr = MP.Process(target=_child, args=(child, fn, a), daemon=True, name="ptoemu-predict-band")
            pr.start()
            child.close()
            procs.append(pr)
            conns.append(parent)
        out = []
        for c in conns:
            try:
                kind, value = c.recv()
            except EOFError:
                raise RuntimeError("a band simulation's process ended without a word (killed?)") from None
            if kind == "error":
                raise RuntimeError(f"band simulation failed: {value}")
            out.append(value)
        return out
    finally:
        for pr in procs:
            if pr.is_alive():
                pr.join(5)
            if pr.is_alive():
                pr.terminate()
                pr.join(5)
                if pr.is_alive():
                    pr.kill()
            pr.join()
        for c in conns:
            c.close()
