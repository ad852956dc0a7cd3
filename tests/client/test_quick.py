"""mgpu_srun's quick path (no click) submits exactly the job the click command would, and
leaves everything it does not know to the click command."""

from __future__ import annotations

import os
from typing import Any

import pytest

from mgpu_client import quick, srun
from mgpu_core.messages import JOB_SPEC

pytestmark = pytest.mark.timeout(30)


def click_job(argv: list[str], monkeypatch: pytest.MonkeyPatch) -> tuple[dict[str, Any], Any]:
    """The job and --master the full click command builds for ``argv`` (nothing is sent)."""
    seen: dict[str, Any] = {}
    monkeypatch.setattr("mgpu_client._common.connect", lambda master: master)
    monkeypatch.setattr(
        srun,
        "submit_and_follow",
        lambda master, job, prog: seen.update(job=job, master=master) or 0,
    )
    monkeypatch.setattr(srun, "install_signal_handlers", lambda: None)
    with pytest.raises(SystemExit):
        srun.build_cli().main(args=argv, prog_name="mgpu_srun", standalone_mode=False)
    return seen["job"], seen["master"]


@pytest.mark.parametrize(
    "argv",
    [
        ["true"],
        ["--", "echo", "hi"],
        ["-G", "2", "python", "train.py", "--lr", "0.1"],
        ["--gpus=1", "-J", "exp 1", "-c", "4", "sh", "-c", "exit 3"],
        ["--job-name=x", "--cpus-per-task", "3", "--", "ls", "-l"],
        ["--master", "unix:/tmp/m.sock", "-G", "0", "true"],
        ["--cpus=2", "--master=10.0.0.1:6860", "true", "--gpus", "5"],
        ["--", "printf", "%s", os.fsdecode(b"\xff\xfe")],  # passed to the job byte for byte
    ],
)
def test_quick_path_builds_the_click_path_job(
    argv: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    parsed = quick.parse(argv)
    assert parsed is not None
    job, master = parsed
    expected_job, expected_master = click_job(argv, monkeypatch)
    assert JOB_SPEC.check(job) == JOB_SPEC.check(expected_job)
    assert master == expected_master


@pytest.mark.parametrize(
    "argv",
    [
        [],  # click says a command is missing
        ["--help"],
        ["-G"],
        ["-G", "two", "true"],
        ["-G", "65", "true"],
        ["-c", "0", "true"],
        ["-G1", "true"],  # a spelling click knows: its parser handles it
        ["-t", "5", "true"],
        ["--gres", "gpu:1", "true"],
        ["-J=x", "true"],
        ["-J", os.fsdecode(b"n\xff"), "true"],  # the queue shows names: click says why not
        ["-c", "1" + "0" * 5000, "true"],  # more digits than int() takes
        [
            "--",
        ],
    ],
)
def test_anything_else_goes_to_click(argv: list[str]) -> None:
    assert quick.parse(argv) is None


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        ([], {}),
        (["--noheader"], {"noheader": True}),
        (["--me", "--master", "unix:/x"], {"me": True, "master": "unix:/x"}),
        (["--master=h:1"], {"master": "h:1"}),
        (["-u", "alice"], None),
        (["--json"], None),
        (["--help"], None),
        (["--master"], None),
    ],
)
def test_queue_quick_options(argv: list[str], expected: dict[str, Any] | None) -> None:
    from mgpu_client import queue

    assert queue.quick_options(argv) == expected
