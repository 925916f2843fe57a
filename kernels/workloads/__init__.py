"""The applications: every runnable workload, written against the kernel API one level up.

    kernels/                   the API kernels are written against (registry, args, cost, tile
    │                          layer, pipes): what device/ and host/ stand on
    └── workloads/             what runs ON that API; imports only ``kernels`` (never host/device)
        workload.py            what a runnable workload is (one shape for every entry)
        fill.py                seeded random inputs, one stream per slice: the same bits on the
                               device's cores (one AIV task per slice) or in one process
        catalogue.py           every workload by the reference's name
        examples/              the reference's small examples (vector_chain, tiled_matmul, ...)
        paged_attention/       the decode pipeline in all its reference variants
        scenes/                the reference's scene tests for its newer orchestration API

host/run.py is what runs a workload on a device against its golden.
"""
