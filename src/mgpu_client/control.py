"""Job control verbs (Slurm's scontrol hold/release/requeue/update, and sprio): registered on
``mgpu_client`` by main.py."""

from __future__ import annotations

import json
import sys
from typing import Any

import click

from mgpu_client._common import EXIT_ERROR, connect, handles_errors, master_option
from mgpu_client.queue import parse_job_ids
from mgpu_core.cliutil import parsed_by
from mgpu_core.tables import table
from mgpu_core.text import escape_controls

PROG = "mgpu_client"


def _time_limit_s(text: str) -> int:
    """--time for update: sbatch's forms and bound (its UsageError as click's ValueError)."""
    from mgpu_client.jobspec import time_limit_s
    from mgpu_core.errors import UsageError

    try:
        return time_limit_s(text)
    except UsageError as exc:
        raise ValueError(str(exc).removeprefix("invalid --time: ")) from None


def _per_job(verb: str, master: str | None, job_ids: tuple[str, ...]) -> None:
    ids = parse_job_ids(list(job_ids))
    if not ids:
        raise click.UsageError("give one or more job ids")
    with connect(master) as client:
        results = client.per_job(verb, ids)
    failed = [r for r in results if not r.ok]
    for r in failed:
        click.echo(f"{PROG} {verb}: error: {escape_controls(r.message)}", err=True)
    if failed:
        sys.exit(EXIT_ERROR)


def _job_verb(verb: str, doc: str) -> click.Command:
    @click.command(verb, help=doc)
    @master_option
    @click.argument("job_ids", nargs=-1)
    @handles_errors(f"{PROG} {verb}")
    def command(*, master: str | None, job_ids: tuple[str, ...]) -> None:
        _per_job(verb, master, job_ids)

    return command


hold = _job_verb("hold", "Keep pending jobs from starting (JobHeldUser; JobHeldAdmin by an admin).")
release = _job_verb("release", "Let held jobs start again.")
requeue = _job_verb("requeue", "Stop running jobs and put them back in the queue (same id).")


@click.command("update")
@click.option(
    "-t",
    "--time",
    "time_limit_s",
    callback=parsed_by(_time_limit_s),
    default=None,
    metavar="LIMIT",
    help="New time limit.",
)
@click.option("-q", "--qos", default=None, help="New QoS.")
@click.option("-G", "--gpus", type=click.IntRange(0, 64), default=None, help="New GPU count.")
@click.option("--nice", type=click.IntRange(-10_000, 10_000), default=None, help="New nice.")
@click.option(
    "--priority", type=click.IntRange(0, 2**31), default=None, help="Fixed priority (admins only)."
)
@master_option
@click.argument("job_id")
@handles_errors(f"{PROG} update")
def update(*, job_id: str, master: str | None, **changes: Any) -> None:
    """Change a pending job: mgpu_client update 12 --time 2:00:00 --gpus 2."""
    (jid,) = parse_job_ids([job_id])
    if isinstance(jid, str):
        raise click.UsageError("update takes a plain job id (each array task has its own)")
    wanted = {k: v for k, v in changes.items() if v is not None}
    if not wanted:
        raise click.UsageError(
            "nothing to change: give --time, --qos, --gpus, --nice or --priority"
        )
    with connect(master) as client:
        client.request("update", job_id=jid, changes=wanted)
    click.echo(f"job {jid} updated: " + ", ".join(f"{k}={v}" for k, v in sorted(wanted.items())))


@click.command("priority")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@master_option
@click.argument("job_ids", nargs=-1)
@handles_errors(f"{PROG} priority")
def priority(*, as_json: bool, master: str | None, job_ids: tuple[str, ...]) -> None:
    """Pending jobs' priority and its factors (sprio): all, or the given ids."""
    with connect(master) as client:
        data = client.request("priority", job_ids=parse_job_ids(list(job_ids)))
    if as_json:
        click.echo(json.dumps(data, indent=2))
        return
    w = data["weights"]
    rows = [
        [
            str(j["job_id"]),
            j["user"],
            f"{j['priority']:.0f}",
            f"{w['age'] * j['age']:.0f}",
            f"{w['fairshare'] * j['fairshare']:.0f}",
            f"{w['qos'] * j['qos']:.0f}",
            str(j["nice"]),
            "" if j["admin"] is None else str(j["admin"]),
        ]
        for j in data["jobs"]
    ]
    headers = ("JOBID", "USER", "PRIORITY", "AGE", "FAIRSHARE", "QOS", "NICE", "ADMIN")
    click.echo(table(headers, rows))


COMMANDS = (hold, release, requeue, update, priority)
