"""What a user gets instead of a hang: the exceptions a device raises in the host."""

from __future__ import annotations

from typing import Any


class DeviceError(RuntimeError):
    """Base class of ptoemu device errors."""


class KernelError(DeviceError):
    """A kernel raised. Carries the task id, kernel name, core, argument descriptions
    (``.arguments``) and the kernel's own traceback text (``.remote_traceback``)."""

    def __init__(self, report: dict | Any, others: int = 0) -> None:
        # A device's codec.TaskFailure, or the dict it turns into (what .report keeps).
        report = report.to_dict() if hasattr(report, "to_dict") else dict(report)
        self.report = report
        self.task_id = report.get("tid")
        self.kernel = report.get("kernel")
        self.core = report.get("core")
        self.arguments = tuple(report.get("args", ()))
        self.error = report.get("error", "")
        self.remote_traceback = report.get("traceback", "")
        self.others = others
        super().__init__(self._message())

    def _message(self) -> str:
        more = f" ({self.others} more task(s) failed too)" if self.others else ""
        tb = (f"\n  kernel traceback (from the worker):\n{_indent(self.remote_traceback)}"
              if self.remote_traceback else "")
        return (f"kernel {self.kernel} failed in task {self.task_id} on {self.core}: {self.error}{more}\n"
                f"  arguments: {', '.join(self.arguments) or '(none)'}{tb}\n"
                "  The run was aborted: tasks not yet started were skipped; the device stays usable.")

    def __reduce__(self):  # picklable (for Ray and process pools)
        return (type(self), (self.report, self.others))

    @staticmethod
    def from_report(report: dict | Any, others: int = 0) -> KernelError:
        violation = report.get("violation") if isinstance(report, dict) else report.violation
        return (DirectionViolation if violation else KernelError)(report, others)


class DirectionViolation(KernelError):
    """The sanitizer caught a kernel breaking its declared directions (``.violation`` says how)."""

    def _message(self) -> str:
        self.violation = self.report.get("violation", "")
        return (f"direction violation in task {self.task_id} (kernel {self.kernel}, {self.core}): "
                f"{self.violation}\n" + super()._message())


class DeviceLost(DeviceError):
    """A worker or the scheduler died (killed, out of memory, crashed); the device is shut down."""


class DeadlockError(DeviceError):
    """The run cannot make progress (a scope larger than the task ring, a heap too small, ...)
    or made none for ``Platform.stall_timeout`` seconds. The message names the cause and the fix."""


class DeviceClosed(DeviceError):
    """The device was closed (or lost) and can no longer be used."""


def _indent(text: str, pad: str = "    ") -> str:
    return "\n".join(pad + line for line in text.rstrip().splitlines())


class DeviceMemoryError(DeviceError, MemoryError):
    """GM or the heap ring cannot hold an allocation; the message names the sizes and the fix."""


def fmt_bytes(n: int) -> str:
    """A size for a message: '512 B', '1.5 KiB', '64.0 MiB', '2.0 GiB'."""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)
