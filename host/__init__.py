"""Host side of ptoemu: the public API.

    from host import Device, Platform, In, Out, InOut, NoDep
"""

from host.device import Device
from host.errors import (
                         DeadlockError,
                         DeviceClosed,
                         DeviceError,
                         DeviceLost,
                         DeviceMemoryError,
                         DirectionViolation,
                         KernelError,
)
from host.platform import Platform
from host.tensor import In, InOut, NoDep, Out, Tensor

__all__ = ["Device", "Platform", "In", "Out", "InOut", "NoDep", "Tensor", "DeviceError", "KernelError",
           "DeviceLost", "DeadlockError", "DeviceClosed", "DeviceMemoryError", "DirectionViolation"]
