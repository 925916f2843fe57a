"""Kernels: the registry (``kernel``, ``AIC``, ``AIV``, ``Mixed``) and kernel packages.

Kernel packages live beside this file (``kernels.examples``, ``kernels.paged_attention``); they
import only this package (the registry and the In/Out/InOut markers), never ``host`` or
``device``.
"""

from kernels.args import In, InOut, NoDep, Out
from kernels.registry import AIC, AIV, CoreInfo, Kernel, Mixed, core_info, kernel, registered, resolve

__all__ = ["AIC", "AIV", "Mixed", "Kernel", "CoreInfo", "kernel", "core_info", "registered", "resolve",
           "In", "Out", "InOut", "NoDep"]
