"""``--fake-gpus`` with MIG layouts (``h100/1g.10gb*7``): slices that look to the scheduler and
to jobs as NVML's MIG instances do, so the whole path is tested without the hardware."""

from __future__ import annotations

import pytest

from mgpu_core.gputypes import is_mig_profile, mig_compute_slices, mig_profile
from mgpu_node.gpus import FakeGpuBackend, FakeUnit, parse_fake_gpus


def test_a_gpu_split_into_slices() -> None:
    units = parse_fake_gpus("h100*2,h100/1g.10gb*7")
    assert units[:2] == [FakeUnit("h100", "", 0), FakeUnit("h100", "", 1)]
    assert units[2:] == [FakeUnit("h100", "1g.10gb", 2)] * 7


def test_mixed_profiles_on_one_gpu_and_several_split_gpus() -> None:
    units = parse_fake_gpus("a100/3g.40gb/2g.20gb*2, h100/7g.80gb")
    assert [(u.profile, u.gpu) for u in units] == [
        ("3g.40gb", 0),
        ("2g.20gb", 0),
        ("2g.20gb", 0),
        ("7g.80gb", 1),
    ]


def test_slices_are_devices_like_nvml_mig_instances() -> None:
    units = parse_fake_gpus("h100,h100/1g.10gb*2")
    devices = FakeGpuBackend(len(units), "n1", models=units).devices()
    whole, first, second = devices
    assert (whole.model, whole.visible_id, whole.is_slice) == ("h100", "0", False)
    assert whole.parent_index == -1 and whole.parent_uuid == ""
    for index, dev in ((1, first), (2, second)):
        assert dev.index == index and dev.is_slice
        assert dev.model == "1g.10gb" == mig_profile(dev.name)  # as NVML's names read
        assert dev.visible_id == dev.uuid and dev.uuid.startswith("MIG-")  # CUDA takes it
        assert (dev.parent_index, dev.parent_uuid) == (1, "GPU-fake-n1-1")
        assert dev.memory_total_bytes == 10 << 30
    assert first.uuid != second.uuid


def test_a_slice_uses_its_gpus_device_node() -> None:
    units = parse_fake_gpus("a100,a100/3g.40gb*2")
    backend = FakeGpuBackend(len(units), "n1", models=units)
    assert backend.device_numbers() == [(195, 0), (195, 1), (195, 1)]  # /dev/nvidia0, 1, 1


@pytest.mark.parametrize(
    ("name", "profile"),
    [
        ("NVIDIA H100 80GB HBM3 MIG 1g.10gb", "1g.10gb"),
        ("NVIDIA A100-SXM4-40GB MIG 3g.20gb", "3g.20gb"),
        ("NVIDIA A100-SXM4-40GB MIG 1c.2g.10gb", "1c.2g.10gb"),
        ("NVIDIA H100 80GB HBM3 MIG 1g.10gb+me", "1g.10gb+me"),
        ("NVIDIA H100 80GB HBM3", ""),
    ],
)
def test_profiles_from_nvml_names(name: str, profile: str) -> None:
    assert mig_profile(name) == profile
    assert is_mig_profile(profile) == bool(profile)


def test_compute_slices_of_a_profile() -> None:
    assert [mig_compute_slices(p) for p in ("1g.10gb", "3g.40gb", "1c.2g.20gb")] == [1, 3, 2]
