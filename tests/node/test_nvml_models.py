"""The NVML backend names each GPU's model as jobs ask for it (``h100``), checked against a
stand-in pynvml module: this host has no NVIDIA GPU (the real one is exercised on GPU hosts)."""

from __future__ import annotations

import sys
import types
from typing import Any

import pytest

from mgpu_node.nvml import NvmlBackend
from tests.helpers.pynvml_stub import NotSupported, pynvml_module

NAMES = ["NVIDIA H100 80GB HBM3", "NVIDIA A100-SXM4-40GB", "Some Future Board"]


def fake_pynvml() -> types.ModuleType:
    """Just what NvmlBackend's enumeration calls: three whole GPUs, no MIG."""
    module = pynvml_module()
    nvml: Any = module
    nvml.nvmlDeviceGetCount = lambda: len(NAMES)
    nvml.nvmlDeviceGetHandleByIndex = lambda i: i
    nvml.nvmlDeviceGetPciInfo = lambda h: types.SimpleNamespace(busId=f"0000:0{h}:00.0")

    def no_mig(handle: int) -> None:
        raise NotSupported()

    nvml.nvmlDeviceGetMigMode = no_mig
    nvml.nvmlDeviceGetMinorNumber = lambda h: h
    nvml.nvmlDeviceGetUUID = lambda h: f"GPU-{h}"
    nvml.nvmlDeviceGetName = lambda h: NAMES[h]
    nvml.nvmlDeviceGetMemoryInfo = lambda h: types.SimpleNamespace(total=80 << 30, used=0)
    return module


def test_each_gpu_gets_its_normalised_model(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pynvml", fake_pynvml())
    backend = NvmlBackend()
    try:
        devices = backend.devices()
        assert [d.name for d in devices] == NAMES
        assert [d.model for d in devices] == ["h100", "a100", ""]  # "": no type in its name
        assert not any(d.fake for d in devices)
    finally:
        backend.close()
