"""``--fake-gpus SPEC``: fake GPUs of given models (``h100*2,a100``), as jobs ask for types."""

from __future__ import annotations

import subprocess
import sys

import pytest

from mgpu_core.exitcodes import EXIT_USAGE
from mgpu_core.gputypes import normalise
from mgpu_node.gpus import FakeGpuBackend, detect_gpus, parse_fake_gpus


@pytest.mark.parametrize(
    ("spec", "models"),
    [
        ("h100*2", ["h100", "h100"]),
        ("a100*1,h100*1", ["a100", "h100"]),
        ("h100", ["h100"]),  # a bare model is one GPU
        (" A100 * 2 , l40s ", ["a100", "a100", "l40s"]),
        ("NVIDIA H100 80GB HBM3*1", ["h100"]),  # normalised as NVML's names are
        ("rtx4090", ["rtx4090"]),  # no NVML-like name: valid as typed, lowercase
        ("t4*64", ["t4"] * 64),
    ],
)
def test_specs_give_one_model_per_gpu(spec: str, models: list[str]) -> None:
    units = parse_fake_gpus(spec)
    assert [u.model for u in units] == models
    assert [u.gpu for u in units] == list(range(len(models)))  # each a GPU of its own
    assert not any(u.profile for u in units)


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("", "invalid GPU model ''"),
        ("*2", "invalid GPU model ''"),
        ("h100*0", "invalid GPU count in 'h100*0'"),
        ("h100*x", "invalid GPU count in 'h100*x'"),
        ("h100*" + "9" * 5000, "invalid GPU count"),  # no int() of thousands of digits
        ("h100*65", "invalid GPU count"),
        ("h100*40,a100*30", "too many fake GPUs"),
        ("no such!", "invalid GPU model 'no such!'"),
        ("h100/1g.10gb*8", "too many MIG slices on one GPU in 'h100/1g.10gb*8'"),
        ("h100/4g.40gb/4g.40gb", "too many MIG slices on one GPU"),
        ("h100/10gb", "invalid MIG profile '10gb' in 'h100/10gb'"),
        ("h100/1g.10gb*0", "invalid GPU count in 'h100/1g.10gb*0'"),
        ("1g.10gb*2", "invalid GPU model '1g.10gb'"),  # a slice needs its GPU's model
        ("/1g.10gb", "invalid GPU model ''"),
    ],
)
def test_bad_specs_are_refused_in_one_line(spec: str, message: str) -> None:
    with pytest.raises(ValueError) as raised:
        parse_fake_gpus(spec)
    assert str(raised.value).startswith(message) and "\n" not in str(raised.value)


def test_fake_gpus_of_models_carry_a_name_and_the_model() -> None:
    backend = FakeGpuBackend(3, "n1", models=["a100", "h100", "rtx4090"])
    devices = backend.devices()
    assert [d.name for d in devices] == [
        "NVIDIA A100 (fake)",
        "NVIDIA H100 (fake)",
        "NVIDIA RTX4090 (fake)",
    ]
    assert [d.model for d in devices] == ["a100", "h100", "rtx4090"]
    assert [d.index for d in devices] == [0, 1, 2] and all(d.fake for d in devices)
    # The name says the same model to a master that normalises names itself.
    assert [normalise(d.name) for d in devices[:2]] == ["a100", "h100"]
    generic = FakeGpuBackend(1, "n1").devices()[0]
    assert (generic.name, generic.model) == ("Fake GPU", "")


def test_models_must_match_the_count() -> None:
    with pytest.raises(ValueError, match="2 fake GPU models given for 3 GPUs"):
        FakeGpuBackend(3, "n1", models=["h100", "h100"])


def test_detect_gives_the_fake_models() -> None:
    backend = detect_gpus(fake_count=None, node_name="n1", fake_models=["h100", "h100"])
    try:
        assert backend.kind == "fake"
        assert [d.model for d in backend.devices()] == ["h100", "h100"]
        assert len(backend.sample()) == 2
    finally:
        backend.close()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--gpu-count", "1", "--fake-gpus", "h100"], "--gpu-count and --fake-gpus cannot be"),
        (["--fake-gpus", "h100/1g.10gb*8"], "too many MIG slices on one GPU"),
    ],
)
def test_the_node_refuses_bad_flags_in_one_line(args: list[str], message: str) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "mgpu_node", *args], capture_output=True, text=True, timeout=30
    )
    assert result.returncode == EXIT_USAGE
    assert result.stderr.count("\n") == 1 and message in result.stderr, result.stderr
