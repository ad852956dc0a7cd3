"""``mgpu_queue``: the job queue, squeue-style.

``mgpu_queue`` is often run in a loop (``watch``): the bare command (and ``--noheader``,
``--me``, ``--master ADDR``) runs without importing click, which alone costs ~30 ms; other
options build the click command.
"""

from __future__ import annotations

import sys

from mgpu_client.client import connect, current_user
from mgpu_client.exits import handles_errors, run_command
from mgpu_client.jobstates import STATES
from mgpu_core.errors import UsageError

TYPE_CHECKING = False  # not typing's: importing typing costs a client command ~3 ms
if TYPE_CHECKING:
    from typing import Any

    import click

PROG = "mgpu_queue"
# Slurm's codes and names (squeue's table; mgpu_core.states' enum would cost start-up time).
_BY_SHORT = STATES
_NAMES = list(STATES.values())


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
        if name not in _NAMES:
            raise UsageError(f"invalid job state '{item}': use one of {', '.join(_NAMES)}")
        states.append(name)
    return states, False


def parse_job_ids(values: list[str]) -> list[int | str]:
    """Job references for the wire: ``12`` (a job, or a whole array) as an int, ``12_3`` (one
    array task) as a string."""
    refs: list[int | str] = []
    for item in values:
        from mgpu_core.arrays import parse_job_ref  # only with -j: it costs start-up time

        try:
            job_id, task = parse_job_ref(item)
        except ValueError as exc:
            raise UsageError(str(exc)) from None
        refs.append(job_id if task is None else f"{job_id}_{task}")
    return refs


def show(
    *,
    users: str | None = None,
    me: bool = False,
    states: str | None = None,
    jobs: str | None = None,
    as_json: bool = False,
    noheader: bool = False,
    master: str | None = None,
) -> None:
    """Print the queue as the options select it."""
    user_list = _split(users) + ([current_user()] if me else [])
    state_list, everything = parse_states(states)
    ids = parse_job_ids(_split(jobs))
    with connect(master) as client:
        if not as_json:  # the master prints the table (mgpu_server/api/listingtext.py)
            data = client.request(
                "queue",
                users=user_list,
                states=state_list,
                job_ids=ids,
                include_finished=everything,
                render="table",
                header=not noheader,
            )
            sys.stdout.write(data["text"])
            return
        data = client.queue(
            users=user_list, states=state_list, job_ids=ids, include_finished=everything
        )
    import json

    sys.stdout.write(json.dumps({"jobs": data["jobs"]}, indent=2) + "\n")


def build_cli() -> click.Command:
    """The full mgpu_queue command (click), also ``mgpu_client queue``."""
    import click

    from mgpu_client._common import CONTEXT, master_option

    @click.command(context_settings=CONTEXT)
    @click.option(
        "-u", "--user", "users", default=None, help="Only these users' jobs (comma list)."
    )
    @click.option("--me", is_flag=True, help="Only my jobs.")
    @click.option(
        "-t", "--states", default=None, help="Only these states (comma list: PD,R,CD,... or all)."
    )
    @click.option("-j", "--jobs", default=None, help="Only these job ids (comma list).")
    @click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
    @click.option("--noheader", is_flag=True, help="No header line.")
    @master_option
    @handles_errors(PROG)
    def cli(**opts: Any) -> None:
        """Show pending and running jobs."""
        show(**opts)

    return cli


def quick_options(argv: list[str]) -> dict[str, Any] | None:
    """The options of a bare-ish command line (--noheader, --me, --master ADDR), else None."""
    opts: dict[str, Any] = {}
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg in ("--noheader", "--me"):
            opts[arg[2:]] = True
        elif arg == "--master" and i + 1 < len(argv):
            i += 1
            opts["master"] = argv[i]
        elif arg.startswith("--master="):
            opts["master"] = arg.partition("=")[2]
        else:
            return None
        i += 1
    return opts


def main() -> None:
    opts = quick_options(sys.argv[1:])
    if opts is not None:
        run_command(PROG, lambda: show(**opts), exit_now=True)
    from mgpu_core.cliutil import run_click

    run_click(build_cli(), PROG)


if __name__ == "__main__":
    main()
