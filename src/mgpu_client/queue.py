"""``mgpu_queue``: the job queue, squeue-style."""

from __future__ import annotations

import json
from typing import Any

import click

from mgpu_client._common import CONTEXT, connect, handles_errors, master_option
from mgpu_client.client import current_user
from mgpu_client.formatting import QUEUE_FIELDS, QUEUE_HEADERS, queue_row, table
from mgpu_core.arrays import parse_job_ref
from mgpu_core.cliutil import run_click
from mgpu_core.errors import ConfigError
from mgpu_core.states import JobState

PROG = "mgpu_queue"
_BY_SHORT = {s.short: s.value for s in JobState}


def _split(value: str | None) -> list[str]:
    return [v for v in (value or "").split(",") if v]


def parse_states(value: str | None) -> tuple[list[str], bool]:
    """``-t`` accepts names or squeue's short codes, and ``all``. Returns (states, all)."""
    states = []
    for item in _split(value):
        upper = item.upper()
        if upper == "ALL":
            return [], True
        name = _BY_SHORT.get(upper, upper)
        if name not in JobState.__members__:
            raise ConfigError(
                f"invalid job state '{item}': use one of {', '.join(JobState.__members__)}"
            )
        states.append(name)
    return states, False


def parse_job_ids(values: list[str]) -> list[int | str]:
    """Job references for the wire: ``12`` (a job, or a whole array) as an int, ``12_3`` (one
    array task) as a string."""
    refs: list[int | str] = []
    for item in values:
        try:
            job_id, task = parse_job_ref(item)
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
        refs.append(job_id if task is None else f"{job_id}_{task}")
    return refs


@click.command(context_settings=CONTEXT)
@click.option("-u", "--user", "users", default=None, help="Only these users' jobs (comma list).")
@click.option("--me", is_flag=True, help="Only my jobs.")
@click.option(
    "-t", "--states", default=None, help="Only these states (comma list: PD,R,CD,... or all)."
)
@click.option("-j", "--jobs", default=None, help="Only these job ids (comma list).")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.option("--noheader", is_flag=True, help="No header line.")
@master_option
@handles_errors(PROG)
def cli(
    *,
    users: str | None,
    me: bool,
    states: str | None,
    jobs: str | None,
    as_json: bool,
    noheader: bool,
    master: str | None,
) -> None:
    """Show pending and running jobs."""
    user_list = _split(users) + ([current_user()] if me else [])
    state_list, everything = parse_states(states)
    ids = parse_job_ids(_split(jobs))
    with connect(master) as client:
        data = client.queue(
            users=user_list,
            states=state_list,
            job_ids=ids,
            include_finished=everything,
            fields=None if as_json else QUEUE_FIELDS,
        )
    rows: list[dict[str, Any]] = data["jobs"]
    if as_json:
        click.echo(json.dumps({"jobs": rows}, indent=2))
        return
    click.echo(table(QUEUE_HEADERS, [queue_row(j) for j in rows], header=not noheader))


def main() -> None:
    run_click(cli, PROG)


if __name__ == "__main__":
    main()
