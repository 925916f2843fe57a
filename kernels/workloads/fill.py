"""Seeded random inputs, filled slice by slice: the same bits whoever fills them, however many cores.

    a workload's build(params, seed, alloc)
      └─ fill(array, uniform(lo, hi) | normal(mean, std), seed, "name", alloc)
           table = dist_table(dist, array.dtype)     65,536 values in the array's dtype
           │
           ├─ alloc has a ``fill`` method (host/run.py build_on, on a device that loaded this module):
           │     orchestrate(rt, tensor, table, seed, stream) ──▶ one AIV task per slice ──▶ fill_slice
           │     on the device's cores, side by side
           └─ otherwise: fill_here(array, table, seed, stream) ──▶ fill_slice on each slice, in turn

    fill_slice(out, table, seed, stream, index)      the ONE function computing a slice's values
        bits   = SFC64(SeedSequence((seed, stream, index)))        a stream of its own per slice
        out[j] = table[16-bit word j of bits.random_raw(...)]      one gather per element

Slice ``index`` of an array is elements [index * SLICE, (index + 1) * SLICE) of its flat (C-order)
view. Its values depend on (seed, stream, index, table) alone -- not on which process fills it,
how many cores there are or in which order the slices are done -- so a device of any size, the
inline (sequential) engine and plain numpy produce the same bits. ``stream`` names the array
(crc32 of a name), so the arrays of one build draw from independent streams.

Why a table. Per element, on one core of the 2-CPU box this was measured on (numpy 2.4): numpy's
default generator drawing fp32, scaled and rounded to bf16, costs 2.45 ns; 16 raw bits of SFC64
plus one gather from a 128 KiB table (cache resident) cost 0.83-0.94 ns (0.36 the bits, the rest
the gather), and no temporary larger than a 64 Ki-element chunk exists. Measured and not taken:
fp32 draws truncated to bf16 in place (1.55 ns), Philox bits (+0.3 ns), a SplitMix64 counter hash
in numpy ufuncs instead of SFC64 (the same within noise), a 4-byte index array for the gather (the
same). On a device the rest of the cost is memory, not values: first touches of fresh GM pages
(0.3-0.4 s per GiB of CPU, spread over the workers) and the host's reservation of them.

The distribution: the 65,536 bins of the distribution's quantile range are equally likely, and a
bin's value is the quantile at its centre in the array's dtype -- for ``uniform`` rounded toward
zero on the dtype's grid (the top 16 bits of an fp32, for bf16), so a range symmetric about 0 keeps
mean 0 and every value lies in [lo, hi) (a range on one side of 0 is clamped into it), and each
bf16 value whose cell is at least a bin wide (all but those within (hi - lo) / 2**8 of zero) comes
out as often as truncating a continuous uniform makes it; for ``normal`` rounded to nearest (its
tails end at the outermost bins' centres, +-4.3 std). In fp32 the values take 65,536 levels:
plenty for test inputs, and said here so nobody is surprised. The 16-bit words are read
little-endian (x86-64, aarch64).
"""

from __future__ import annotations

import functools
import statistics
import zlib
from dataclasses import dataclass
from typing import Any

import ml_dtypes
import numpy as np
import numpy.random  # noqa: F401 - imported before a device forks its workers, not in each of them

from kernels import AIV, In, Out, kernel

__all__ = ["SLICE", "Dist", "uniform", "normal", "dist_table", "stream_id", "fill_slice", "fill_here",
           "orchestrate", "fill"]

SLICE = 1 << 20                 # elements per slice (2 MiB of bf16): one task's worth, about 1 ms
_CHUNK = 1 << 16                # elements drawn at a time inside a slice (a multiple of 4: whole words)
_LEVELS = 1 << 16               # table entries: one per value of a 16-bit word
_DTYPES = tuple(np.dtype(d) for d in (ml_dtypes.bfloat16, np.float16, np.float32, np.float64))


@dataclass(frozen=True)
class Dist:
    """A distribution to fill with: ``uniform(lo, hi)`` or ``normal(mean, std)``."""

    kind: str
    a: float        # uniform: lo; normal: mean
    b: float        # uniform: hi; normal: std


def uniform(lo: float, hi: float) -> Dist:
    """Values in [lo, hi), each bin of (hi - lo) / 65,536 equally likely."""
    if not (np.isfinite(lo) and np.isfinite(hi) and lo < hi):
        raise ValueError(f"uniform(lo={lo!r}, hi={hi!r}): expected finite bounds with lo < hi")
    return Dist("uniform", float(lo), float(hi))


def normal(mean: float, std: float) -> Dist:
    """Normal values: the 65,536 quantiles at the bins' centres, equally likely."""
    if not (np.isfinite(mean) and np.isfinite(std) and std > 0):
        raise ValueError(f"normal(mean={mean!r}, std={std!r}): expected a finite mean and std > 0")
    return Dist("normal", float(mean), float(std))


@functools.lru_cache(maxsize=32)
def dist_table(dist: Dist, dtype: Any) -> np.ndarray:
    """The 65,536 values a 16-bit word maps to: ``dist``'s quantile at each bin's centre, in
    ``dtype`` (bfloat16, float16, float32 or float64). Read-only: it is cached."""
    dt = np.dtype(dtype)
    if dt not in _DTYPES:
        raise ValueError(f"fill: dtype {dt} is not one fill makes; expected one of "
                         f"{', '.join(map(str, _DTYPES))}")
    p = (np.arange(_LEVELS, dtype=np.float64) + 0.5) / _LEVELS
    if dist.kind == "uniform":
        centres = dist.a + p * (dist.b - dist.a)
        t = centres.astype(dt)                         # to nearest; then toward zero:
        away = np.abs(t.astype(np.float64)) > np.abs(centres)
        t[away] = np.nextafter(t[away], np.zeros((), dt))
        for bad, toward in ((t.astype(np.float64) >= dist.b, -np.inf), (t.astype(np.float64) < dist.a, np.inf)):
            t[bad] = np.nextafter(t[bad], np.array(toward, dt))     # only for a range on one side of 0
    elif dist.kind == "normal":
        nd = statistics.NormalDist(dist.a, dist.b)
        t = np.array([nd.inv_cdf(q) for q in p.tolist()], np.float64).astype(dt)
    else:
        raise ValueError(f"fill: unknown distribution kind {dist.kind!r}; expected 'uniform' or 'normal'")
    t.setflags(write=False)
    return t


def stream_id(name: str) -> int:
    """The stream number of an array called ``name`` (crc32: the same in every process)."""
    return zlib.crc32(name.encode())


@kernel(AIV)
def fill_slice(out: np.ndarray, table: np.ndarray, seed: int, stream: int, index: int) -> None:
    """Slice ``index`` of array ``stream``: every element of ``out`` (C-contiguous) from ``table``,
    picked by the 16-bit words of the slice's own SFC64 stream. A device task or a plain call."""
    if not out.flags.c_contiguous or table.shape != (_LEVELS,) or table.dtype != out.dtype:
        raise ValueError(f"fill_slice: expected a C-contiguous out and a table of {_LEVELS} values of its "
                         f"dtype, got out {out.shape} {out.dtype} (contiguous: {out.flags.c_contiguous}), "
                         f"table {table.shape} {table.dtype}")
    word = np.dtype(f"u{out.dtype.itemsize}")           # gather raw bit patterns: any dtype, one path
    dst, tab = out.reshape(-1).view(word), table.view(word)
    bits = np.random.SFC64(np.random.SeedSequence((int(seed), int(stream), int(index))))
    for s in range(0, dst.size, _CHUNK):
        n = min(_CHUNK, dst.size - s)
        # a 16-bit index is always in range; mode="wrap" measured faster than the checking default
        np.take(tab, bits.random_raw(-(-n // 4)).view(np.uint16)[:n], out=dst[s:s + n], mode="wrap")


def fill_here(array: np.ndarray, table: np.ndarray, seed: int, stream: int) -> None:
    """Every slice of ``array`` filled in this process, one after the other."""
    flat = array.reshape(-1)
    for i, s in enumerate(range(0, flat.size, SLICE)):
        fill_slice(flat[s:s + SLICE], table, seed, stream, i)


def orchestrate(rt: Any, out: Any, table: Any, seed: int, stream: int) -> dict[str, int]:
    """One AIV task per slice of device tensor ``out`` (contiguous), all reading ``table``: the
    slices are disjoint, so every task is ready at once."""
    flat = out.reshape(-1)
    n = flat.size
    for i, s in enumerate(range(0, n, SLICE)):
        m = min(SLICE, n - s)
        rt.submit(fill_slice, Out(flat.view((m,), (s,))), In(table), seed, stream, i)
    return {"slices": -(-n // SLICE)}


def fill(array: np.ndarray, dist: Dist, seed: int, stream: str, alloc: Any = None) -> None:
    """Fill ``array`` (C-contiguous) with ``dist``'s values from the streams of (``seed``, ``stream``)
    -- the array's name --, slice by slice. ``alloc`` is the build's: when it has a ``fill``
    method (host/run.py build_on's) that method does the filling, on the device's cores; otherwise
    it is done here. The values are the same either way."""
    if not isinstance(array, np.ndarray) or not array.flags.c_contiguous:
        raise ValueError(f"fill({stream!r}): expected a C-contiguous numpy array, got "
                         f"{type(array).__name__}" + (f" with strides {array.strides}" if isinstance(array, np.ndarray)
                                                      else ""))
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or not 0 <= seed < 2**63:
        raise ValueError(f"fill({stream!r}, seed={seed!r}): expected an int in [0, 2**63)")
    if not isinstance(dist, Dist):
        raise TypeError(f"fill({stream!r}): expected a distribution from uniform() or normal(), got "
                        f"{type(dist).__name__}")
    table = dist_table(dist, array.dtype)
    how = getattr(alloc, "fill", None) or fill_here
    how(array, table, int(seed), stream_id(stream))
