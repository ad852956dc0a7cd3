"""``mgpu_client submit CMD`` submits exactly the job ``mgpu_sbatch --wrap CMD`` submits."""

from __future__ import annotations

import shlex
from collections.abc import Iterator
from contextlib import contextmanager

import click
import pytest

from mgpu_client import main, sbatch
from mgpu_client.jobopts import WRAP_JOB_NAME
from mgpu_core.models import JobSpec

pytestmark = pytest.mark.timeout(30)


class FakeClient:
    """Takes the submitted spec instead of sending it."""

    def __init__(self, seen: list[JobSpec]) -> None:
        self.seen = seen

    def submit(self, spec: JobSpec) -> int:
        self.seen.append(spec)
        return 1


def submitted(
    command: click.Command, argv: list[str], module: object, monkeypatch: pytest.MonkeyPatch
) -> JobSpec:
    """The JobSpec ``command`` submits for ``argv`` (nothing is sent)."""
    seen: list[JobSpec] = []

    @contextmanager
    def connect(master: str | None) -> Iterator[FakeClient]:
        yield FakeClient(seen)

    monkeypatch.setattr(module, "connect", connect)
    command.main(args=argv, prog_name="test", standalone_mode=False)
    (spec,) = seen
    return spec


@pytest.mark.parametrize(
    ("options", "command"),
    [
        ([], ["nvidia-smi"]),
        (["--gpus", "1", "-J", "train"], ["python train.py --lr 0.1"]),
        (["-o", "out-%x.txt", "-e", "err.txt", "--no-requeue"], ["echo hi"]),
        (["--array", "0-3%2", "-t", "10", "--mem", "4G"], ["echo $MGPU_ARRAY_TASK_ID"]),
        (["-H", "-d", "singleton", "--nice", "5"], ["sh", "-c", "exit 3"]),  # words joined
    ],
)
def test_submit_is_sbatch_wrap(
    options: list[str], command: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    line = command[0] if len(command) == 1 else shlex.join(command)
    wrapped = submitted(sbatch.cli, [*options, "--wrap", line], sbatch, monkeypatch)
    via_submit = submitted(main.cli, ["submit", *options, *command], main, monkeypatch)
    assert via_submit == wrapped
    assert wrapped.script == f"#!/bin/sh\n{line}\n" and wrapped.argv == []
    assert wrapped.name == ("train" if "-J" in options else WRAP_JOB_NAME)
