"""What runs "on the device": shared-memory layout, the scheduler process, the tensor map, workers.

Never imports ``host``.
"""
