"""Where a record's predecessors come from: one gatherer, called by the scheduler's ingest and by
the sequential engine alike (so a recorded graph's edges are the scheduler's own).

    gather(tid, base, args, flags, ndeps, deps_at) ──▶ [producer tids] (repeats allowed)
      tensor map    every tensor argument, and a predicate's operand, under the device's rules:
                    the sequential ones (TensorMap.access) or the reference's (reference_access)
      creator       (reference rules) the task that allocated a runtime buffer
      explicit      rt.submit(deps=[...]): task ids in the dep pool (layout.deps)

``args`` are the argument heads ``(buffer, meta, lo, hi, owner)`` of the record's tensors, the
predicate's operand last; argument i's words start at ``base + i * ARG_WORDS`` (its footprint
box, read by the tensor map only when two views of one buffer might overlap).

The sequential rules (the default): every argument is tracked, whatever the hints (NoDep,
manual_dep views and manual scopes are ordered anyway); a run equals one-by-one execution in
submission order.

    argument              waits for                                   then it is
    In, an operand        earlier overlapping writers                 a reader
    Out, InOut            earlier overlapping writers and readers     the writer

The reference's rules (``Device(semantics="reference")``): what hw-native-sys/simpler does at
submit (src/a2a3/runtime/tensormap_and_ringbuffer/runtime/pto_dep_compute.h), and for
get/set_tensor_data what its wait_for_tensor_ready does (.../runtime/pto_runtime2.cpp). The table
REFERENCE says per kind of argument: (edge to the buffer's creator, look up earlier overlapping
writers, become a writer entry):

    In                          creator, look up                 (no write-after-read ordering)
    InOut                       creator, look up, entry          (replaces the entries it covers)
    Out on an existing buffer   creator, entry                   (does not wait for its previous
                                                                  writer; two such are unordered)
    Out that allocates it       nothing                          (its readers find it by the
                                                                  creator edge)
    untracked (NoDep, manual_dep view)   creator
    any argument in a manual scope       nothing
    a probe's element           as In / InOut, whatever the scope or the flags (the reference's
                                get/set_tensor_data wait for the creator and look up always)
    a predicate's operand       look up (ptoemu's rule in both semantics: a tracked read)
"""

from __future__ import annotations

from device import codec as C
from device.layout import Layout
from device.tensormap import TensorMap

# (creator edge, look up earlier overlapping writers, become a writer entry)
IN, INOUT, OUT, ALLOC_OUT, UNTRACKED, MANUAL, OPERAND = range(7)
REFERENCE = {
    IN: (True, True, False),
    INOUT: (True, True, True),
    OUT: (True, False, True),
    ALLOC_OUT: (False, False, False),
    UNTRACKED: (True, False, False),
    MANUAL: (False, False, False),
    OPERAND: (False, True, False),
}
BY_DIR = {C.DIR_IN: IN, C.DIR_INOUT: INOUT, C.DIR_OUT: OUT}
ARG_WORDS, META_CONTIG = C.ARG_WORDS, C.META_CONTIG      # bound once: gather runs for every record


def reference_kind(tid: int, meta: int, owner: int, flags: int, operand: bool) -> int:
    """Which row of REFERENCE an argument follows."""
    if operand:
        return OPERAND
    probe = flags & C.FLAG_PROBE
    if flags & C.FLAG_MANUAL and not probe:
        return MANUAL
    if meta & C.META_NOTRACK and not probe:
        return UNTRACKED
    d = meta & 3
    if d == C.DIR_OUT and owner == tid:
        return ALLOC_OUT
    return BY_DIR[d]


class Gatherer:
    """The predecessors of one record at a time, in submission order (module docstring)."""

    def __init__(self, tmap: TensorMap, q: memoryview, layout: Layout, reference: bool = False) -> None:
        self.tmap, self.q, self.lay, self.reference = tmap, q, layout, reference
        self.access = tmap.access

    def gather(self, tid: int, base: int, args: list[tuple], flags: int, ndeps: int, deps_at: int) -> list[int]:
        """Every task record ``tid`` waits for (module docstring); ``args`` includes the
        predicate's operand last when ``flags`` says FLAG_PRED."""
        preds: list[int] = []
        if self.reference:
            self.reference_access(tid, base, args, flags, preds)
        else:
            access = self.access
            a = base
            for buf, meta, lo, hi, _ in args:
                access(buf, tid, meta & 3, lo, hi, meta & META_CONTIG, a, preds)
                a += ARG_WORDS
        if ndeps:
            preds += self.lay.deps(self.q, deps_at, ndeps)
        return preds

    def reference_access(self, tid: int, base: int, args: list[tuple], flags: int, preds: list) -> None:
        """The reference's rules (the REFERENCE table), argument by argument."""
        access_ref, last = self.tmap.access_ref, len(args) - 1
        operand_at = last if flags & C.FLAG_PRED else -1
        for i, (buf, meta, lo, hi, owner) in enumerate(args):
            creator, look, enter = REFERENCE[reference_kind(tid, meta, owner, flags, i == operand_at)]
            if creator and owner >= 0 and owner != tid:
                preds.append(owner)
            if look or enter:
                access_ref(buf, tid, look, enter, lo, hi, meta & C.META_CONTIG, base + i * C.ARG_WORDS, preds)


__all__ = ["Gatherer", "REFERENCE", "reference_kind"]
