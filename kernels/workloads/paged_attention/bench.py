"""Per-kernel timings of the paged-attention kernels on a case's sizes (and, optionally, the golden).

    python -m kernels.workloads.paged_attention.bench [case] [--reps N] [--golden]

Each repetition runs one chunk (QK, SF, PV, UP) of a random group of the case, so K/V blocks come
from all over the cache as in a real run. Set OPENBLAS_NUM_THREADS=1 to match one worker per core.
"""

from __future__ import annotations

import argparse
import resource
import time

import numpy as np

from kernels.workloads.paged_attention.cases import generate_inputs
from kernels.workloads.paged_attention.golden import golden
from kernels.workloads.paged_attention.kernels import BF16, hub, pv, qk, sf, up
from kernels.workloads.paged_attention.tiling import chunks, head_tiles


def _peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def bench_kernels(inputs: dict, reps: int = 50, seed: int = 1) -> dict[str, float]:
    """Median µs per kernel call over ``reps`` random (sequence, head tile, first chunk) groups."""
    rng = np.random.default_rng(seed)
    q2 = inputs["query"].reshape(-1, inputs["head_dim"])
    heads, bs = inputs["num_heads"], inputs["block_size"]
    times: dict[str, list[float]] = {k: [] for k in ("qk", "sf", "pv", "up_first_last", "up_acc", "hub")}
    cache: dict[tuple[int, int], tuple] = {}

    def buffers(qt: int, t: int, d: int) -> tuple:
        # Allocated once per shape and reused, like the runtime's heap ring: first-touch page faults
        # (~7 us per 4 KiB page on this VM) would otherwise be charged to whichever kernel writes first.
        if (qt, t) not in cache:
            f32 = np.float32
            cache[qt, t] = (np.zeros((qt, t), f32), np.zeros((qt, t), BF16), np.zeros(qt, f32),
                            np.zeros(qt, f32), np.zeros((qt, d), f32),
                            (np.zeros(qt, f32), np.zeros(qt, f32), np.zeros((qt, d), f32)),
                            np.zeros((qt, d), f32))
        return cache[qt, t]

    for _ in range(reps + 1):
        b = int(rng.integers(inputs["batch"]))
        h0, qt = head_tiles(heads)[int(rng.integers(len(head_tiles(heads))))]
        ch = chunks(int(inputs["context_lens"][b]), bs, inputs["unroll"])[0]
        ids = inputs["block_table"][b, ch.first_block:ch.first_block + ch.n_blocks]
        qi = q2[b * heads + h0: b * heads + h0 + qt]
        sij, pij, mi, li, oi_new, acc, out = buffers(qt, ch.n_blocks * bs, inputs["head_dim"])
        calls = (
            ("qk", qk, (qi, inputs["key_cache"], sij, ids)),
            ("sf", sf, (sij, pij, mi, li, inputs["scale"], ch.valid_len_last, ch.n_blocks)),
            ("pv", pv, (pij, inputs["value_cache"], oi_new, ids)),
            ("hub", hub, acc),
            ("up_first_last", up, (mi, li, oi_new, *acc, out, 1, 1)),
            ("up_acc", up, (mi, li, oi_new, *acc, out, 0, 0)),
        )
        for name, fn, fn_args in calls:
            t0 = time.perf_counter()
            fn(*fn_args)
            times[name].append(time.perf_counter() - t0)
    return {k: float(np.median(v[1:])) * 1e6 for k, v in times.items()}   # first round warms up


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("case", nargs="?", default="Case1")
    ap.add_argument("--reps", type=int, default=50)
    ap.add_argument("--golden", action="store_true", help="also time golden() on the whole case")
    args = ap.parse_args()

    t0 = time.perf_counter()
    inputs = generate_inputs(args.case)
    kv = inputs["key_cache"].nbytes + inputs["value_cache"].nbytes
    print(f"{args.case}: generate_inputs {time.perf_counter() - t0:.2f} s, K+V {kv / 2**30:.2f} GiB, "
          f"peak RSS {_peak_rss_mib():.0f} MiB")
    for name, us in bench_kernels(inputs, args.reps).items():
        print(f"  {name:14s} {us:9.1f} us")
    if args.golden:
        rss0 = _peak_rss_mib()
        t0 = time.perf_counter()
        golden(inputs["query"], inputs["key_cache"], inputs["value_cache"], inputs["block_table"],
               inputs["context_lens"], inputs["scale"], inputs["unroll"])
        print(f"  golden {time.perf_counter() - t0:.2f} s, peak RSS {rss0:.0f} -> {_peak_rss_mib():.0f} MiB")


if __name__ == "__main__":
    main()
