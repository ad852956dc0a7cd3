"""``scancel`` and ``mgpu_cancel``: cancel jobs, or send them a signal, as Slurm's scancel does.

Jobs are named by id (``12``, an array's task ``12_3``, a whole array ``12``) and/or chosen by
filters (``-u``, ``--me``, ``-n``, ``-p``, ``-t``, ``-q``, ``-A``, ``-w``); filters with ids narrow
the ids. Filters alone select the caller's own jobs (``-u`` names another user's: an admin's).
``-s SIG`` signals instead of cancelling (``-b``: the batch shell only).
"""

from __future__ import annotations

import sys

from mgpu_client.cmdline import (
    CLUSTERS,
    FLAG,
    MASTER,
    QUIET,
    USE,
    VALUE,
    VERBOSE,
    WARN,
    Opt,
    as_dict,
    index,
    parse,
    render_help,
    wants_help,
)
from mgpu_client.exits import run_command
from mgpu_core.errors import InvalidJobState, UsageError, error_from_wire
from mgpu_core.text import escape_controls

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

# fmt: off
OPTIONS = (
    Opt("-u --user", "user", VALUE, "", USE, "Only this user's jobs.", metavar="USER"),
    Opt("--me", "me", FLAG, "", USE, "Only my jobs."),
    Opt("-n --name --jobname", "name", VALUE, "", USE, "Only jobs with this name.", metavar="NAME"),
    Opt("-p --partition", "partition", VALUE, "", USE, "Only jobs in this partition."),
    Opt("-t --state", "state", VALUE, "", USE, "Only jobs in these states (PENDING, ...)."),
    Opt("-q --qos", "qos", VALUE, "", USE, "Only jobs of this QoS."),
    Opt("-A --account", "account", VALUE, "", USE, "Only jobs of this account."),
    Opt("-w --nodelist", "nodelist", VALUE, "", USE, "Only jobs on these nodes."),
    Opt("-s --signal", "signal", VALUE, "", USE, "Send this signal instead of cancelling.",
        metavar="SIG"),
    Opt("-b --batch", "batch", FLAG, "", USE, "With --signal: the batch shell only."),
    Opt("-f --full", "full", FLAG, "", USE, "With --signal: the batch shell and every task."),
    Opt("-i --interactive", "interactive", FLAG, "", WARN, "Ask for each job.",
        why="scancel does not ask"),
    Opt("-H --hurry", "hurry", FLAG, "", QUIET, "Accepted (no burst buffers)."),
    CLUSTERS,
    Opt("-R --reservation", "reservation", VALUE, "", USE, "Only jobs of this reservation (none)."),
    Opt("--wckey", "wckey", VALUE, "", QUIET, "Accepted (not tracked)."),
    Opt("--sibling", "sibling", VALUE, "", QUIET, "Accepted (one cluster)."),
    Opt("-Q --quiet", "quiet", FLAG, "", USE, "Say nothing about jobs that already ended."),
    VERBOSE,
    MASTER,
)
# fmt: on
TABLE = index(OPTIONS)
ACTIVE = ["PENDING", "RUNNING"]
MAX_ID = 2**53  # mgpu_core.limits.JOB_ID's bound


def _signal_number(text: str) -> int:
    if text.isdigit():
        number = int(text)
    else:
        import signal

        try:
            number = int(signal.Signals["SIG" + text.upper().removeprefix("SIG")])
        except KeyError:
            raise UsageError(f"Invalid job signal: {text}") from None
    if not 0 < number < 65:
        raise UsageError(f"Invalid job signal: {text}")
    return number


def _refs(args: list[str]) -> list[int | str]:
    """Job ids as the wire takes them: 12, "12_3"; "12_[1-3]" is its tasks; "12.0" (a step)
    is its job (steps end with their job)."""
    refs: list[int | str] = []
    for arg in args:
        for item in arg.split(","):
            text = item.strip().split(".")[0]
            job, _, task = text.partition("_")
            # ASCII digits within the wire's bounds: int() raises on 4,300 digits, and on "²".
            if not (job.isascii() and job.isdigit() and len(job) <= 16 and 0 < int(job) <= MAX_ID):
                raise UsageError(f"Invalid job id {item}")
            if task and not task.startswith("[") and not (task.isascii() and len(task) <= 7):
                raise UsageError(f"Invalid job id {item}")
            if not task:
                refs.append(int(job))
            elif task.startswith("[") and task.endswith("]"):
                from mgpu_core.arrays import parse_array

                try:
                    refs.extend(f"{job}_{t}" for t in parse_array(task[1:-1]).task_ids)
                except ValueError:
                    raise UsageError(f"Invalid job id {item}") from None
            elif task.isdigit():
                refs.append(f"{job}_{task}")
            else:
                raise UsageError(f"Invalid job id {item}")
    return refs


def cancel(argv: list[str], prog: str) -> int:
    if wants_help(argv, TABLE):
        sys.stdout.write(
            render_help(
                prog, "[OPTIONS] [JOB_ID[_TASK]...]", "Cancel jobs, or signal them.", OPTIONS
            )
        )
        return 0
    found, args = parse(argv, TABLE, interspersed=True)
    opts = as_dict(found)
    refs = _refs(args)
    filters = [
        k
        for k in (
            "user",
            "me",
            "name",
            "partition",
            "state",
            "qos",
            "account",
            "nodelist",
            "reservation",
        )
        if opts.get(k)
    ]
    if not refs and not filters:
        raise UsageError("No job identification provided")
    from mgpu_client.client import connect, current_user

    with connect(opts.get("master")) as client:
        if filters:
            refs = _select(client, opts, refs, current_user())
            if not refs:
                return 0
        request: dict[str, Any] = {"job_ids": refs}
        if opts.get("signal"):
            request["signal"] = _signal_number(str(opts["signal"]))
            request["scope"] = "batch" if opts.get("batch") else "all"
        results = client.request("cancel", **request)["results"]
    failed = False
    for result in results:
        # JobResult's wire form read as it is (mgpu_core.models would cost ~5 ms to import).
        if result.get("ok"):
            continue
        err = error_from_wire(result.get("code"), result.get("message"))
        if opts.get("quiet") and isinstance(err, InvalidJobState):
            continue
        failed = True
        what = "Signal" if opts.get("signal") else "Kill"
        line = f"{prog}: error: {what} job error on job id {result.get('job_id')}: {err}"
        sys.stderr.write(escape_controls(line) + "\n")
    return 1 if failed else 0


def _select(client: Any, opts: dict[str, Any], refs: list[int | str], me: str) -> list[int | str]:
    """The jobs the filters choose (among ``refs`` if any were given)."""
    from mgpu_client.jobstates import parse_states

    user = me if opts.get("me") or not opts.get("user") else str(opts["user"])
    states = parse_states(str(opts["state"])) if opts.get("state") else ACTIVE
    rows = client.request(
        "queue",
        users=[user],
        states=states,
        job_ids=refs,
        include_finished=False,
        fields=["job_id", "job_ref", "name", "partition", "qos", "account", "node"],
    )["jobs"]
    nodes = None
    if opts.get("nodelist"):
        from mgpu_client.jobspec import hosts

        nodes = set(hosts("-w/--nodelist", opts["nodelist"]))
    chosen: list[int | str] = []
    for row in rows:
        if opts.get("name") and row.get("name") != opts["name"]:
            continue
        if opts.get("partition") and row.get("partition") not in str(opts["partition"]).split(","):
            continue
        if opts.get("qos") and row.get("qos") != opts["qos"]:
            continue
        if opts.get("account") and row.get("account") != opts["account"]:
            continue
        if opts.get("reservation"):
            continue  # mgpu has no reservations: no job is in one
        if nodes is not None and row.get("node") not in nodes:
            continue
        chosen.append(row["job_id"])
    return chosen


def main(prog: str = "mgpu_cancel", *, slurm: bool = False) -> None:
    run_command(prog, lambda: cancel(sys.argv[1:], prog), slurm=slurm, exit_now=True)


def slurm_main() -> None:
    main("scancel", slurm=True)


if __name__ == "__main__":
    main()
