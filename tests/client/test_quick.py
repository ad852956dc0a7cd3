"""The commands that start without click: mgpu_srun (options from the one table,
mgpu_client.optable, parsed by mgpu_client.cmdline) builds a job the master's schema accepts,
whatever spelling asks for it; mgpu_queue's quick path reads its few options."""

from __future__ import annotations

import os
from typing import Any

import pytest

from mgpu_client import srun
from mgpu_core.errors import UsageError
from mgpu_core.models import JobSpec
from mgpu_core.protocol import as_sent

pytestmark = pytest.mark.timeout(30)

JOB_FIELDS = set(JobSpec.SCHEMA.fields)


def srun_job(argv: list[str], monkeypatch: pytest.MonkeyPatch) -> tuple[dict[str, Any], Any]:
    """The job and --master ``mgpu_srun ARGV`` submits outside a job (nothing is sent)."""
    seen: dict[str, Any] = {}
    for name in ("MGPU_JOB_ID", "MGPU_ALLOCATION"):
        monkeypatch.delenv(name, raising=False)  # inside a job srun runs a step instead
    monkeypatch.setattr("mgpu_client.client.connect", lambda master: seen.update(master=master))
    monkeypatch.setattr(
        "mgpu_client.follow.submit_and_follow",
        lambda client, job, prog: seen.update(job=job) or 0,
    )
    monkeypatch.setattr("mgpu_client.follow.install_signal_handlers", lambda: None)
    assert srun.run(argv, "mgpu_srun", slurm=False) == 0
    return seen["job"], seen["master"]


def accepted(job: dict[str, Any]) -> dict[str, Any]:
    """``job`` as the master's schema completes it; every key is one of JobSpec's (the schema
    would drop a misspelled one without a word)."""
    assert set(job) <= JOB_FIELDS, set(job) - JOB_FIELDS
    checked: dict[str, Any] = JobSpec.SCHEMA.check(as_sent(job), "job")
    JobSpec.from_wire(checked)
    return checked


@pytest.mark.parametrize(
    ("argv", "expected", "master"),
    [
        (["true"], {"argv": ["true"], "gpus": 0, "cpus": 1, "ntasks": 1}, None),
        (["--", "echo", "hi"], {"argv": ["echo", "hi"]}, None),
        (
            ["-G", "2", "python", "train.py", "--lr", "0.1"],  # the command's own options
            {"argv": ["python", "train.py", "--lr", "0.1"], "gpus": 2},
            None,
        ),
        (
            ["--gpus=1", "-J", "exp 1", "-c", "4", "sh", "-c", "exit 3"],
            {"argv": ["sh", "-c", "exit 3"], "name": "exp 1", "gpus": 1, "cpus": 4},
            None,
        ),
        (
            ["-G", "1", "-J", "x", "-c", "2", "--", "cmd"],
            {"argv": ["cmd"], "name": "x", "gpus": 1, "cpus": 2, "interactive": True},
            None,
        ),
        (["--master", "unix:/tmp/m.sock", "-G", "0", "true"], {"gpus": 0}, "unix:/tmp/m.sock"),
        (
            ["--cpus=2", "--master=10.0.0.1:6860", "true", "--gpus", "5"],
            {"argv": ["true", "--gpus", "5"], "cpus": 2, "gpus": 0},
            "10.0.0.1:6860",
        ),
        (["-G1", "-t", "5", "true"], {"gpus": 1, "time_limit_s": 300}, None),
        (["--gres", "gpu:a100:1", "true"], {"gpus": 1, "gpu_type": "a100"}, None),
        (["-n", "2", "-c", "3", "true"], {"ntasks": 2, "cpus": 6}, None),
        (["--", "printf", "%s", os.fsdecode(b"\xff\xfe")], {}, None),  # bytes passed as they are
    ],
)
def test_srun_builds_a_job_the_master_accepts(
    argv: list[str], expected: dict[str, Any], master: str | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    job, used_master = srun_job(argv, monkeypatch)
    checked = accepted(job)
    assert {k: checked[k] for k in expected} == expected
    assert used_master == master
    assert checked["interactive"] and not checked["requeue"] and checked["script"] is None
    if expected.get("ntasks", 1) == 1:
        assert checked["argv"] == job["argv"]
    if argv[-1] == os.fsdecode(b"\xff\xfe"):
        assert checked["argv"][-1] == argv[-1]  # the same str: the node gets the same bytes


@pytest.mark.parametrize(
    "argv",
    [
        ["--gpus=1", "--job-name", "x", "--cpus-per-task=2", "cmd"],
        ["-G1", "-Jx", "-c2", "cmd"],
        ["--gpus", "1", "--job-name=x", "--cpus-per-t", "2", "--", "cmd"],  # a unique prefix
        ["-J", "y", "-G", "3", "-J", "x", "-G", "1", "-c", "2", "cmd"],  # the last one wins
    ],
)
def test_every_spelling_builds_the_same_job(
    argv: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    reference, _ = srun_job(["-G", "1", "-J", "x", "-c", "2", "--", "cmd"], monkeypatch)
    job, _ = srun_job(argv, monkeypatch)
    assert job == reference


def test_several_tasks_run_the_command_once_per_task(monkeypatch: pytest.MonkeyPatch) -> None:
    job, _ = srun_job(["-n", "3", "echo", "hi"], monkeypatch)
    assert accepted(job)["argv"] == ["/bin/sh", "-c", srun.FAN_OUT, "srun", "3", "echo", "hi"]


@pytest.mark.parametrize(
    ("argv", "fragment"),
    [
        ([], "give a command"),
        (["--"], "give a command"),
        (["-G"], "requires an argument"),
        (["-G", "two", "true"], "-G/--gpus"),
        (["-G", "65", "true"], "-G/--gpus"),
        (["-c", "0", "true"], "-c/--cpus-per-task"),
        (["-c", "1" + "0" * 5000, "true"], "-c/--cpus-per-task"),  # more digits than int() takes
        (["-t", "xx", "true"], "invalid --time"),
        (["--gres", "fpga:1", "true"], "unsupported gres"),
        (["-J", os.fsdecode(b"n\xff"), "true"], "n\\xff is not UTF-8"),  # the queue shows names
        (["--bogus", "true"], "unrecognized option '--bogus'"),
        (["--wrap", "true"], "unrecognized option '--wrap'"),  # sbatch's, not srun's
        (["--reservation=r", "true"], "--reservation is not supported"),
        (["-N", "2", "true"], "multi-node jobs are not supported"),
        (["--pty", "bash"], "inside a job only"),
    ],
)
def test_srun_refuses_with_one_line(
    argv: list[str], fragment: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(UsageError) as refused:
        srun_job(argv, monkeypatch)
    assert fragment in str(refused.value) and "\n" not in str(refused.value)


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
