"""The measurement harness: ``ptoemu bench dispatch | granularity | paged-attention``.

    common.py           timing, results file (schema), tables, progress bars, PSS, plots
    dispatch.py         no-op tasks through the whole path vs ProcessPoolExecutor
    granularity.py      efficiency vs task size, METG(50 %)
    paged_attention.py  hub vs first_output vs alloc: tasks, wall, critical path, overheads
"""
