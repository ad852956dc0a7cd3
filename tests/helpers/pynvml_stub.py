"""The part of a stand-in ``pynvml`` module that every NVML test needs: its error classes and
MIG constants, named as pynvml names them, and init/shutdown. Tests add the device calls."""

from __future__ import annotations

import types
from typing import Any


class NVMLError(Exception):
    pass


class NotSupported(NVMLError):
    pass


class NotFound(NVMLError):
    pass


def pynvml_module() -> types.ModuleType:
    module = types.ModuleType("pynvml")
    nvml: Any = module
    nvml.NVMLError = NVMLError
    nvml.NVMLError_NotSupported = NotSupported
    nvml.NVMLError_NotFound = NotFound
    nvml.NVMLError_FunctionNotFound = type("FunctionNotFound", (NVMLError,), {})
    nvml.NVMLError_NoPermission = type("NoPermission", (NVMLError,), {})
    nvml.NVML_DEVICE_MIG_DISABLE, nvml.NVML_DEVICE_MIG_ENABLE = 0, 1
    nvml.nvmlInit = nvml.nvmlShutdown = lambda: None
    return module
