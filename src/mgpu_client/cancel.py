"""``mgpu_cancel``: cancel jobs, scancel-style."""

from __future__ import annotations

import sys

import click

from mgpu_client._common import CONTEXT, EXIT_ERROR, connect, handles_errors, master_option
from mgpu_client.client import current_user
from mgpu_client.queue import parse_job_ids, parse_states
from mgpu_core.cliutil import run_click
from mgpu_core.errors import InvalidJobState
from mgpu_core.text import escape_controls

PROG = "mgpu_cancel"


@click.command(context_settings=CONTEXT)
@click.option("-u", "--user", default=None, help="Cancel all of this user's jobs.")
@click.option("--me", is_flag=True, help="Cancel all of my jobs.")
@click.option(
    "-t", "--state", "states", default=None, help="With -u/--me: only jobs in these states."
)
@click.option("-q", "--quiet", is_flag=True, help="Do not report jobs that were already finished.")
@master_option
@click.argument("job_ids", nargs=-1)
@handles_errors(PROG)
def cli(
    *,
    user: str | None,
    me: bool,
    states: str | None,
    quiet: bool,
    master: str | None,
    job_ids: tuple[str, ...],
) -> None:
    """Cancel pending or running jobs: mgpu_cancel 12 13, or mgpu_cancel --me."""
    ids = parse_job_ids(list(job_ids))
    owner = current_user() if me else user
    if not ids and owner is None:
        raise click.UsageError("give job ids, or --user/--me")
    state_list, _ = parse_states(states)
    failed = False
    with connect(master) as client:
        if owner is not None:
            rows = client.queue(users=[owner], states=state_list or ["PENDING", "RUNNING"])["jobs"]
            ids += [r["job_id"] for r in rows if r["job_id"] not in ids]
        if not ids:
            return
        for result in client.cancel(ids):
            err = result.error()
            if err is None or (quiet and isinstance(err, InvalidJobState)):
                continue
            failed = True
            click.echo(f"{PROG}: error: {escape_controls(str(err))}", err=True)
    if failed:
        sys.exit(EXIT_ERROR)


def main() -> None:
    run_click(cli, PROG)


if __name__ == "__main__":
    main()
