"""The paged-attention orchestration, in its variants, and what every runner of it shares.

    for each sequence b, head tile (h0, qt):              one scope per group (as the reference);
                                                          chunk_scope=True: one per chunk too
        accumulators mi_acc (qt,), li_acc (qt,), oi_acc (qt, D) fp32
            hub:           HUB task writes them (Out); every UP takes them InOut
            first_output:  no extra task: the first UP takes them Out, later UPs InOut
            alloc:         rt.alloc_tensors -- a runtime task that completes without a worker
            manual:        as alloc, inside rt.scope(manual=True): every edge is an explicit
                           dep (the reference's paged_attention_unroll_manual_scope): SF after
                           QK, PV after SF, UP after PV, the previous UP, and (last) the alloc
        for each chunk of up to ``unroll`` KV blocks (block ids travel as a scalar array):
            QK  In(q tile), In(key_cache)        -> Out(sij)
            SF  In(sij)                          -> Out(pij), Out(mi), Out(li)
            PV  In(pij), In(value_cache)         -> Out(oi_new)
            UP  In(mi, li, oi_new), accumulators, InOut(out tile); writes out on the last chunk

Groups are independent; chunks of a group chain through the accumulators. ``first_output``,
``alloc`` and ``manual`` submit exactly one worker task fewer per group than ``hub``.
``out_manual_dep=True`` takes the out tile as a ``manual_dep`` view (the reference's
``out.view(..., true)``; always so in ``manual``): creator-only tracking under reference semantics.

Shared by the workloads built on it (unroll.py, baseline.py) and their runners: ``INPUTS``, the
input tensors in the order ``orchestrate`` takes them, and ``scale_of(params)``. A case's arrays
are built by the workload (``unroll.WORKLOAD.build``; on a device, ``host.run.build_on``).
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from typing import Any

import numpy as np

from kernels.args import In, InOut, Out
from kernels.workloads.paged_attention.kernels import hub, pv, qk, sf, up
from kernels.workloads.paged_attention.tiling import chunks, head_tiles

VARIANTS = ("hub", "first_output", "alloc", "manual")
INPUTS = ("query", "key_cache", "value_cache", "block_table", "context_lens")    # orchestrate's, in order
F32 = np.dtype(np.float32)


def _values(rt: Any, x: Any) -> np.ndarray:
    """Host values of a small index tensor (block table, context lengths): a numpy array as is,
    a device tensor read back (the orchestration runs on the host, like the AICPU reads GM)."""
    if isinstance(x, np.ndarray):
        return x
    return rt.read(x)


def orchestrate(rt: Any, query: Any, key_cache: Any, value_cache: Any, block_table: Any,
                context_lens: Any, out: Any, *, scale: float, variant: str = "first_output",
                unroll: int = 64, kernels: Mapping[str, Any] | None = None,
                chunk_scope: bool = False, out_manual_dep: bool = False) -> dict[str, int]:
    """Submit the decode paged-attention pipeline. Returns the number of groups and chunks.

    ``kernels`` may replace any of "qk", "sf", "pv", "up", "hub" by another kernel with the same
    signature (e.g. to check a modified UP with the sanitizer). ``chunk_scope`` puts every chunk
    in its own ``rt.scope()`` (as the reference's non-unrolled version does per block): a chunk's
    scratch tensors then die at its end, so a small heap holds one group's chunks one at a time."""
    k = {"qk": qk, "sf": sf, "pv": pv, "up": up, "hub": hub, **(kernels or {})}
    if variant not in VARIANTS:
        raise ValueError(f"orchestrate(variant={variant!r}): expected one of {', '.join(VARIANTS)}")
    if not isinstance(unroll, int) or unroll < 1:
        raise ValueError(f"orchestrate(unroll={unroll!r}): expected an int >= 1")
    batch, heads, head_dim = query.shape
    block_size = key_cache.shape[1]
    if out.shape != (batch * heads, head_dim):
        raise ValueError(f"orchestrate: out has shape {out.shape}, expected {(batch * heads, head_dim)}")
    bt = _values(rt, block_table)
    ctx = _values(rt, context_lens)
    pdt = query.dtype
    groups = nchunks = 0
    for b in range(batch):
        seq_chunks = chunks(int(ctx[b]), block_size, unroll)
        for h0, qt in head_tiles(heads):
            groups += 1
            manual = variant == "manual"
            with rt.scope(manual=manual):
                qi = query[b, h0:h0 + qt]
                out_t = out.view((qt, head_dim), (b * heads + h0, 0), manual_dep=manual or out_manual_dep)
                specs = (((qt,), F32), ((qt,), F32), ((qt, head_dim), F32))
                deps: dict[str, int] = {}
                if variant in ("alloc", "manual"):
                    accs = rt.alloc_tensors(*specs)
                    mi_acc, li_acc, oi_acc = accs
                    deps["alloc"] = accs.task_id
                else:
                    mi_acc, li_acc, oi_acc = (rt.make_tensor(*s) for s in specs)
                if variant == "hub":
                    rt.submit(k["hub"], Out(mi_acc), Out(li_acc), Out(oi_acc))
                for ch in seq_chunks:
                    nchunks += 1
                    with rt.scope(manual=manual) if chunk_scope else contextlib.nullcontext():
                        _chunk(rt, k, ch, qi, key_cache, value_cache, bt[b], block_size, qt, head_dim, pdt,
                               float(scale), variant, (mi_acc, li_acc, oi_acc), out_t, deps if manual else None)
    return {"groups": groups, "chunks": nchunks}


def _chunk(rt: Any, k: Mapping[str, Any], ch: Any, qi: Any, key_cache: Any, value_cache: Any,
           bt_row: np.ndarray, block_size: int, qt: int, head_dim: int, pdt: np.dtype, scale: float,
           variant: str, accs: tuple, out_t: Any, deps: dict[str, int] | None) -> None:
    """QK -> SF -> PV -> UP over one chunk of KV blocks of one group. ``deps`` (manual): the
    explicit edges, and where the previous UP and the accumulators' alloc are kept."""
    mi_acc, li_acc, oi_acc = accs
    width = ch.n_blocks * block_size
    ids = bt_row[ch.first_block:ch.first_block + ch.n_blocks]
    sij = rt.make_tensor((qt, width), F32)
    t_qk = rt.submit(k["qk"], In(qi), In(key_cache), Out(sij), ids)
    pij = rt.make_tensor((qt, width), pdt)
    mi = rt.make_tensor((qt,), F32)
    li = rt.make_tensor((qt,), F32)
    t_sf = rt.submit(k["sf"], In(sij), Out(pij), Out(mi), Out(li), scale, ch.valid_len_last, ch.n_blocks,
                     deps=[t_qk] if deps is not None else None)
    oi_new = rt.make_tensor((qt, head_dim), F32)
    t_pv = rt.submit(k["pv"], In(pij), In(value_cache), Out(oi_new), ids, deps=[t_sf] if deps is not None else None)
    acc = Out if (variant == "first_output" and ch.is_first) else InOut
    up_deps = None
    if deps is not None:
        up_deps = [t_pv] + ([deps["up"]] if "up" in deps else []) + ([deps["alloc"]] if ch.is_last else [])
    t_up = rt.submit(k["up"], In(mi), In(li), In(oi_new), acc(mi_acc), acc(li_acc), acc(oi_acc),
                     InOut(out_t), ch.is_first, ch.is_last, deps=up_deps)
    if deps is not None:
        deps["up"] = t_up


def scale_of(params: Mapping[str, Any]) -> float:
    """The softmax scale of a case: its own, else 1/sqrt(head_dim)."""
    return float(params.get("scale", 1.0 / np.sqrt(params["head_dim"])))


def expected_tasks(groups: int, chunks_: int, variant: str) -> dict[str, int]:
    """Worker and runtime task counts of one orchestration."""
    worker = 4 * chunks_ + (groups if variant == "hub" else 0)
    return {"worker": worker, "runtime": groups if variant in ("alloc", "manual") else 0}
