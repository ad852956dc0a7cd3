"""The master's rendered listings print exactly what the commands would print from the rows,
also when lines are reused from the last listing."""

from __future__ import annotations

from typing import Any

import pytest

from mgpu_core.errors import InvalidRequest
from mgpu_core.slurm import squeue_fmt
from mgpu_core.slurm.squeue_fields import COMMON, PROTOTYPES
from mgpu_core.tables import QUEUE_HEADERS, queue_row, table
from mgpu_server.api.listingtext import ListingText

pytestmark = pytest.mark.timeout(60)

NOW = 1.0e9 + 100.25
ROWS = [
    *PROTOTYPES,
    {**COMMON, "job_id": 12, "job_ref": "12", "name": "train", "user": "bob", "priority": 900.0},
    {**COMMON, "job_id": 13, "job_ref": "13", "state": "RUNNING", "reason": "", "node": "n2",
     "gpu_indices": [0, 1], "start_time": 1.0e9 + 40.5, "elapsed_s": 59.75},
]  # fmt: skip
FORMATS = [
    {},
    {"format": "%.18i %.9P %.8j %.8u %.8T %.10M %.9l %.6D %R"},
    {"format": "%i|%j|%L|%M|%p|%Q|%r|%b", "sort": "-i"},
    {"format_long": "JobID,Name:20,State:.10,TimeUsed,ReasonList,PendingTime", "sort": "u,-M"},
    {"header": False},
]


def request(**fields: Any) -> dict[str, Any]:
    return {"render": "squeue", "format": "", "format_long": "", "sort": "", "header": True,
            **fields}  # fmt: skip


def expected(msg: dict[str, Any], rows: list[dict[str, Any]], now: float) -> str:
    if msg["format_long"]:
        specs = squeue_fmt.parse_format_long(msg["format_long"])
    else:
        specs = squeue_fmt.parse_format(msg["format"] or squeue_fmt.DEFAULT_FORMAT)
    ordered = squeue_fmt.sort_jobs(rows, msg["sort"] or None, now=now)
    lines = squeue_fmt.format_jobs(ordered, specs, now=now, header=msg["header"])
    return "".join(line + "\n" for line in lines)


@pytest.mark.parametrize("fields", FORMATS)
def test_squeue_text_is_the_commands_and_stays_so_as_jobs_change(fields: dict[str, Any]) -> None:
    listings = ListingText()
    msg = request(**fields)
    rows = [{k: row[k] for k in listings.fields(msg)} for row in ROWS]
    assert listings.render(msg, rows, NOW) == expected(msg, rows, NOW)
    # Later: the clock moved (running times change), one job started, one changed its name.
    later = NOW + 61.5
    changed = [dict(row) for row in rows]
    changed[0].update(state="RUNNING", start_time=NOW + 1, node="n1")
    changed[-2]["name"] = "renamed"
    for now, current in ((NOW, rows), (later, changed), (later, rows), (later + 0.5, changed)):
        assert listings.render(msg, current, now) == expected(msg, current, now)


def test_the_table_is_mgpu_queues() -> None:
    listings = ListingText()
    msg = {"render": "table", "header": True}
    rows = [{k: row[k] for k in listings.fields(msg)} for row in ROWS]
    want = table(QUEUE_HEADERS, [queue_row(r) for r in rows]) + "\n"
    assert listings.render(msg, rows, NOW) == want
    rows[-1]["elapsed_s"] = 3600.0
    want = table(QUEUE_HEADERS, [queue_row(r) for r in rows], header=False) + "\n"
    assert listings.render({**msg, "header": False}, rows, NOW) == want


@pytest.mark.parametrize(
    "fields",
    [{"format": "%i %U"}, {"format": "%.19S"}, {"format_long": "JobID,SubmitTime"},
     {"sort": "U"}, {"format": "%i %!"}, {"sort": "i,Z"}],
)  # fmt: skip
def test_what_only_the_commands_host_can_render_is_refused(fields: dict[str, Any]) -> None:
    with pytest.raises(InvalidRequest):
        ListingText().fields(request(**fields))
