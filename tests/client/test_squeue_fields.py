"""squeue asks the master only for the fields its format and order read: the listing of those
rows must be exactly the listing of the full rows, for every field squeue can show."""

from __future__ import annotations

from typing import Any

import pytest

from mgpu_client import squeue
from mgpu_core.slurm import squeue_fields, squeue_fmt
from mgpu_server.records.jobs import ROW_FIELDS

NOW = 1.0e9 + 10
# Rows unlike the prototypes squeue learns from: absolute paths, other states and reasons.
OTHERS = [
    {**squeue_fields.COMMON, "state": "TIMEOUT", "cwd": "/x", "stdout_path": "/abs/o", "node": "n2",
     "start_time": 1.0e9 + 1, "end_time": 1.0e9 + 2, "exit_code": 0, "signal": 15},
    {**squeue_fields.COMMON, "state": "PENDING", "reason": "Dependency", "dependency": "",
     "array_job_id": 4, "array_task_id": 7, "job_ref": "4_7", "interactive": True},
    {**squeue_fields.COMMON, "state": "RUNNING", "node": "n3", "start_time": 1.0e9 + 2,
     "gpu_indices": [0, 1], "gpus": 2, "gpu_type": "", "exclusive": True, "hold": "admin"},
]  # fmt: skip
ROWS = [*squeue_fields.PROTOTYPES, *OTHERS]
LETTERS = sorted(k for k in squeue_fmt.FIELDS if len(k) == 1)
NAMES = sorted(k for k in squeue_fmt.NAMES if len(k) > 1)


def test_the_prototypes_hold_every_row_field() -> None:
    assert sorted(squeue_fields.COMMON) == sorted(ROW_FIELDS)


def listing(rows: list[dict[str, Any]], specs: Any, sort: str | None) -> list[str]:
    return squeue_fmt.format_jobs(squeue_fmt.sort_jobs(rows, sort, now=NOW), specs, now=NOW)


@pytest.mark.parametrize(
    "opts",
    [
        {},
        {"long": True},
        {"start": True},
        {"sort": "-t,i"},
        {"sort": "M,e,u"},
        *({"format": f"%{letter}"} for letter in LETTERS),
        *({"Format": name} for name in NAMES),
    ],
    ids=repr,
)
def test_the_rows_asked_for_format_as_the_full_rows_do(opts: dict[str, Any]) -> None:
    try:
        specs, sort = squeue.layout(opts)
    except Exception as exc:  # a letter squeue refuses in -o (its message is its own test)
        pytest.skip(f"not a -o field: {exc}")
    fields = set(squeue.needed_fields(specs, sort))
    assert set(squeue.FILTER_FIELDS) <= fields
    cut = [{k: v for k, v in row.items() if k in fields} for row in ROWS]
    assert listing(cut, specs, sort) == listing([dict(r) for r in ROWS], specs, sort)


def test_the_default_listing_asks_for_few_fields() -> None:
    specs, sort = squeue.layout({})
    fields = squeue.needed_fields(specs, sort)
    assert len(fields) <= 16 and "command" not in fields and "cwd" not in fields


@pytest.mark.parametrize(
    ("key", "opts"), [("default", {}), ("long", {"long": True}), ("start", {"start": True})]
)
def test_the_built_in_layouts_fields_are_what_they_read(key: str, opts: dict[str, Any]) -> None:
    """squeue sends its request before importing the formatter: with the built-in layouts'
    field lists, which must be what needed_fields finds."""
    assert squeue._builtin_layout(opts) == key
    assert squeue.BUILTIN_FIELDS[key] == squeue.needed_fields(*squeue.layout(opts))


def test_a_format_or_order_of_ones_own_is_not_built_in() -> None:
    for opts in ({"format": "%i"}, {"Format": "JobID"}, {"sort": "i"}, {"long": True, "sort": "i"}):
        assert squeue._builtin_layout(opts) == ""


@pytest.mark.parametrize(
    "opts",
    [{"format": "%.999999999i"}, {"format": "%99999999999999999999i"}, {"Format": "JobID:5000"}],
)
def test_a_column_wider_than_4096_is_refused_in_one_line(opts: dict[str, Any]) -> None:
    from mgpu_core.errors import UsageError

    with pytest.raises(UsageError, match=r"width \d+ \(at most 4096\)"):
        squeue.layout(opts)
