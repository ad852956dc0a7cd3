"""squeue asks the master for the fields its format reads: the short ones always, the long ones
(command, paths, dependency) only when shown."""

from __future__ import annotations

import pytest

from mgpu_client import squeue
from mgpu_server.records.jobs import ROW_FIELDS


def test_the_field_lists_are_the_masters_row_fields() -> None:
    assert sorted((*squeue.SHORT_FIELDS, *squeue.LONG_FIELDS)) == sorted(ROW_FIELDS)


@pytest.mark.parametrize(
    ("opts", "long_ones"),
    [
        ({}, []),
        ({"long": True}, []),
        ({"start": True}, []),
        ({"format": "%i %o %Z"}, ["command", "cwd"]),
        ({"format": "%E"}, ["dependency"]),
        (
            {"Format": "JobID,STDOUT,STDERR"},
            ["cwd", "stdout_path", "stderr_path"],
        ),  # relative to it
    ],
)
def test_long_fields_only_when_the_format_shows_them(
    opts: dict[str, object], long_ones: list[str]
) -> None:
    specs, _ = squeue.layout(opts)
    fields = squeue.needed_fields(specs)
    assert fields[: len(squeue.SHORT_FIELDS)] == list(squeue.SHORT_FIELDS)
    assert fields[len(squeue.SHORT_FIELDS) :] == long_ones
