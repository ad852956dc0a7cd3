"""Tests for mgpu_node.gpus: the fake backend and NVML detection on this machine.

The NVML backend itself is exercised on real GPU hardware, not here.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import shutil
import stat
from pathlib import Path

import pytest

from mgpu_core.models import GpuDevice, GpuSample
from mgpu_node.gpus import FAKE_GPU_MEMORY_BYTES, FakeGpuBackend, detect_gpus

NO_NVIDIA_DRIVER = shutil.which("nvidia-smi") is None and not Path("/dev/nvidiactl").exists()


def test_fake_devices_describe_each_gpu() -> None:
    backend = FakeGpuBackend(3, "node-1")
    assert backend.kind == "fake"
    assert backend.devices() == [
        GpuDevice(
            index=i,
            uuid=f"GPU-fake-node-1-{i}",
            name="Fake GPU",
            memory_total_bytes=80 * 1024**3,
            visible_id=str(i),
            fake=True,
        )
        for i in range(3)
    ]
    assert FAKE_GPU_MEMORY_BYTES == 80 * 1024**3


def test_fake_uuids_sanitize_node_name_and_differ_between_nodes() -> None:
    odd = FakeGpuBackend(2, "gpu box/1:ä")
    assert [d.uuid for d in odd.devices()] == ["GPU-fake-gpu_box_1__-0", "GPU-fake-gpu_box_1__-1"]
    kept = FakeGpuBackend(1, "Node_7.lab-a")
    assert kept.devices()[0].uuid == "GPU-fake-Node_7.lab-a-0"
    other = FakeGpuBackend(2, "other")
    assert not {d.uuid for d in odd.devices()} & {d.uuid for d in other.devices()}


def test_fake_sample_reports_every_device_idle_and_healthy() -> None:
    backend = FakeGpuBackend(4, "n")
    samples = backend.sample()
    assert samples == [GpuSample(index=i, utilization_pct=0, memory_used_bytes=0) for i in range(4)]
    assert [s.index for s in samples] == [d.index for d in backend.devices()]


def test_fake_devices_returns_a_copy() -> None:
    backend = FakeGpuBackend(2, "n")
    backend.devices().clear()
    assert len(backend.devices()) == 2


def test_devices_are_immutable() -> None:
    device = FakeGpuBackend(1, "n").devices()[0]
    with pytest.raises(dataclasses.FrozenInstanceError):
        device.index = 5  # type: ignore[misc]


@pytest.mark.parametrize("count", [0, 1, 64])
def test_fake_count_limits_accepted(count: int) -> None:
    backend = FakeGpuBackend(count, "n")
    assert len(backend.devices()) == count
    assert len(backend.sample()) == count
    backend.close()
    backend.close()


@pytest.mark.parametrize("count", [-1, 65, 1000, True])
def test_fake_count_out_of_range_rejected(count: int) -> None:
    with pytest.raises(ValueError, match=r"0\.\.64"):
        FakeGpuBackend(count, "n")


def test_detect_with_fake_count_gives_fake_gpus(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="mgpu_node.gpus")
    backend = detect_gpus(fake_count=3, node_name="n1")
    try:
        assert backend.kind == "fake"
        assert [d.uuid for d in backend.devices()] == [f"GPU-fake-n1-{i}" for i in range(3)]
        assert len(backend.sample()) == 3
    finally:
        backend.close()
    assert any(r.levelno == logging.INFO and "fake" in r.getMessage() for r in caplog.records)


def test_detect_with_bad_fake_count_raises() -> None:
    with pytest.raises(ValueError):
        detect_gpus(fake_count=65, node_name="n1")


def test_detect_without_fake_count_is_consistent_anywhere() -> None:
    backend = detect_gpus(fake_count=None, node_name="n1")
    try:
        assert backend.kind in {"nvml", "none"}
        devices = backend.devices()
        assert [d.index for d in devices] == list(range(len(devices)))
        assert [s.index for s in backend.sample()] == [d.index for d in devices]
        assert not any(d.fake for d in devices)
    finally:
        backend.close()


@pytest.mark.skipif(not NO_NVIDIA_DRIVER, reason="this machine has an NVIDIA driver")
def test_detect_without_gpus_gives_empty_backend(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="mgpu_node.gpus")
    backend = detect_gpus(fake_count=None, node_name="n1")
    assert backend.kind == "none"
    assert backend.devices() == []
    assert backend.sample() == []
    backend.close()
    messages = [r.getMessage() for r in caplog.records if r.levelno == logging.INFO]
    assert any(m.startswith("NVML unavailable (") and "no GPUs" in m for m in messages)


@pytest.mark.skipif(not NO_NVIDIA_DRIVER, reason="this machine has an NVIDIA driver")
def test_detect_fake_without_gpus_does_not_warn(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="mgpu_node.gpus")
    detect_gpus(fake_count=2, node_name="n1").close()
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


@pytest.mark.skipif(os.geteuid() != 0, reason="mknod needs root")
def test_fake_gpus_get_device_nodes_with_a_real_gpus_numbers(tmp_path: Path) -> None:
    backend = FakeGpuBackend(2, "n")
    assert backend.device_numbers() == [(195, 0), (195, 1)]
    (tmp_path / "dev").mkdir()
    (tmp_path / "dev" / "nvidia1").write_text("stale")  # a previous agent's: made afresh
    backend.make_device_nodes(tmp_path / "dev")
    for i in (0, 1):
        info = (tmp_path / "dev" / f"nvidia{i}").stat()
        assert stat.S_ISCHR(info.st_mode) and stat.S_IMODE(info.st_mode) == 0o666
        assert (os.major(info.st_rdev), os.minor(info.st_rdev)) == (195, i)
    FakeGpuBackend(0, "n").make_device_nodes(tmp_path / "none")
    assert not (tmp_path / "none").exists()
