"""The NVML backend on a MIG-enabled GPU, against a stand-in pynvml that answers as the driver
does for an H100 with MIG on (names, UUIDs and the calls' errors as NVML gives them; this host
has no NVIDIA GPU): each MIG instance is one device, typed by its profile, addressed by its
UUID, with its GPU as parent; a GPU with MIG off is one whole device."""

from __future__ import annotations

import sys
import types
from typing import Any

import pytest

from mgpu_node.nvml import NVIDIA_MAJOR, NvmlBackend
from tests.helpers.pynvml_stub import NotFound, NotSupported, pynvml_module

# (bus id, name, uuid, MIG on?, minor); GPU 1 has MIG on with instances at MIG indices 0 and 2.
GPUS = [
    ("00000000:1B:00.0", "NVIDIA H100 80GB HBM3", "GPU-5b1a-0", False, 0),
    ("00000000:2C:00.0", "NVIDIA H100 80GB HBM3", "GPU-5b1a-1", True, 1),
]
MIG = {
    (1, 0): ("NVIDIA H100 80GB HBM3 MIG 3g.40gb", "MIG-7c7e-a", 40 << 30),
    (1, 2): ("NVIDIA H100 80GB HBM3 MIG 1g.10gb", "MIG-7c7e-b", 10 << 30),
}


def recorded_pynvml() -> types.ModuleType:
    module = pynvml_module()
    nvml: Any = module
    nvml.nvmlDeviceGetCount = lambda: len(GPUS)
    # Handles: ("gpu", i) for a GPU, ("mig", i, j) for MIG instance j of GPU i.
    nvml.nvmlDeviceGetHandleByIndex = lambda i: ("gpu", i)
    nvml.nvmlDeviceGetPciInfo = lambda h: types.SimpleNamespace(busId=GPUS[h[1]][0].encode())
    nvml.nvmlDeviceGetMigMode = lambda h: [int(GPUS[h[1]][3])] * 2  # [current, pending]
    nvml.nvmlDeviceGetMaxMigDeviceCount = lambda h: 7
    nvml.nvmlDeviceGetMinorNumber = lambda h: GPUS[h[1]][4]

    def mig_handle(handle: Any, j: int) -> Any:
        if (handle[1], j) not in MIG:
            raise NotFound("Not Found")
        return ("mig", handle[1], j)

    nvml.nvmlDeviceGetMigDeviceHandleByIndex = mig_handle

    def field(h: Any, k: int) -> Any:
        return MIG[h[1], h[2]][k] if h[0] == "mig" else (GPUS[h[1]][1], GPUS[h[1]][2])[k]

    nvml.nvmlDeviceGetName = lambda h: field(h, 0)
    nvml.nvmlDeviceGetUUID = lambda h: field(h, 1)
    nvml.nvmlDeviceGetMemoryInfo = lambda h: types.SimpleNamespace(
        total=MIG[h[1], h[2]][2] if h[0] == "mig" else 80 << 30, used=1 << 20
    )

    def utilization(h: Any) -> Any:
        if h[0] == "mig":
            raise NotSupported("Not Supported")  # NVML has no utilisation for MIG instances
        return types.SimpleNamespace(gpu=37)

    nvml.nvmlDeviceGetUtilizationRates = utilization
    nvml.nvmlDeviceGetComputeRunningProcesses = lambda h: []
    nvml.nvmlDeviceGetGraphicsRunningProcesses = lambda h: []
    return module


@pytest.fixture
def backend(monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.setitem(sys.modules, "pynvml", recorded_pynvml())
    backend = NvmlBackend()
    yield backend
    backend.close()


def test_mig_instances_are_devices_typed_by_profile(backend: NvmlBackend) -> None:
    whole, big, small = backend.devices()
    assert (whole.model, whole.visible_id, whole.is_slice) == ("h100", "0", False)
    assert [d.index for d in (whole, big, small)] == [0, 1, 2]
    assert (big.model, small.model) == ("3g.40gb", "1g.10gb")
    for dev in (big, small):
        assert dev.visible_id == dev.uuid and dev.uuid.startswith("MIG-")
        assert (dev.parent_uuid, dev.parent_index) == ("GPU-5b1a-1", 1)
    assert big.memory_total_bytes == 40 << 30


def test_a_mig_instance_uses_its_gpus_device_node(backend: NvmlBackend) -> None:
    assert backend.device_numbers() == [(NVIDIA_MAJOR, 0), (NVIDIA_MAJOR, 1), (NVIDIA_MAJOR, 1)]


def test_samples_of_mig_instances_have_no_utilisation(backend: NvmlBackend) -> None:
    samples = backend.sample()
    assert [s.utilization_pct for s in samples] == [37, -1, -1]
    assert all(s.healthy and s.memory_used_bytes == 1 << 20 for s in samples)
