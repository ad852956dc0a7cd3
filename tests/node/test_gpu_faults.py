"""Fake GPUs that fail on demand: the fault file read on every sample."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from mgpu_core.models import GpuSample
from mgpu_node.gpus import FakeGpuBackend, detect_gpus

HEALTHY = [GpuSample(index=i, utilization_pct=0, memory_used_bytes=0) for i in range(3)]


def test_no_fault_file_means_healthy(tmp_path: Path) -> None:
    backend = FakeGpuBackend(3, "n", fault_file=tmp_path / "fake-gpu-faults")
    assert backend.sample() == HEALTHY


def test_listed_gpu_is_unhealthy_until_its_line_goes(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    faults = tmp_path / "fake-gpu-faults"
    backend = FakeGpuBackend(3, "n", fault_file=faults)
    faults.write_text("# injected by the demo\n1   fell off the bus (Xid 79)  \n\n2\n")
    with caplog.at_level(logging.INFO, logger="mgpu_node.gpus"):
        samples = backend.sample()
        backend.sample()  # unchanged file: no second log line
    assert samples == [
        HEALTHY[0],
        GpuSample(index=1, healthy=False, error="fell off the bus (Xid 79)"),
        GpuSample(index=2, healthy=False, error="fault injected"),
    ]
    assert [r.getMessage() for r in caplog.records] == [
        "fake GPU 1 is unhealthy: fell off the bus (Xid 79)",
        "fake GPU 2 is unhealthy: fault injected",
    ]
    faults.write_text("2 still broken\n")
    assert [s.healthy for s in backend.sample()] == [True, True, False]
    assert backend.sample()[2].error == "still broken"
    faults.unlink()
    assert backend.sample() == HEALTHY


def test_lines_naming_no_gpu_are_ignored(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    faults = tmp_path / "fake-gpu-faults"
    faults.write_text("3 no such gpu\n-1 negative\nabc words\n0 real\n")
    backend = FakeGpuBackend(3, "n", fault_file=faults)
    with caplog.at_level(logging.WARNING, logger="mgpu_node.gpus"):
        assert [s.healthy for s in backend.sample()] == [False, True, True]
    assert sum("line ignored" in r.getMessage() for r in caplog.records) == 3


def test_detect_gpus_passes_the_fault_file(tmp_path: Path) -> None:
    faults = tmp_path / "fake-gpu-faults"
    faults.write_text("0 dead\n")
    backend = detect_gpus(fake_count=2, node_name="n1", fault_file=faults)
    assert [s.healthy for s in backend.sample()] == [False, True]
