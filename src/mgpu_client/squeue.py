"""``squeue``: the job queue in Slurm's formats (``-o``/``-O``, ``-l``, ``--start``, ``-h``), with
Slurm's filters and exit codes. Rendering is :mod:`mgpu_core.slurm.squeue_fmt`'s.

Finished jobs are shown as Slurm shows them: for MinJobAge (300 s) after their end, when asked
for by id or by state.
"""

from __future__ import annotations

import sys
import time

from mgpu_client.cmdline import (
    CLUSTERS,
    FLAG,
    LONG_HELP,
    MASTER,
    OPTIONAL,
    QUIET,
    USAGE,
    USE,
    VALUE,
    VERBOSE,
    VERSION,
    Opt,
    answer_common,
    as_dict,
    index,
    parse,
    split_list,
)
from mgpu_client.exits import run_command
from mgpu_client.jobstates import parse_states
from mgpu_core.errors import UsageError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

# Slurm keeps a finished job in squeue's view this long (MinJobAge's default).
MIN_JOB_AGE_S = 300

# fmt: off
OPTIONS = (
    Opt("-A --account", "account", VALUE, "", USE, "Only these accounts' jobs.", metavar="LIST"),
    Opt("-a --all", "all", FLAG, "", QUIET, "All partitions (always)."),
    Opt("-r --array", "array", FLAG, "", QUIET, "One line per array task (always)."),
    Opt("-h --noheader", "noheader", FLAG, "", USE, "No header line."),
    Opt("-i --iterate", "iterate", VALUE, "", USE, "Print again every SECONDS.",
        metavar="SECONDS"),
    Opt("-j --jobs", "jobs", VALUE, "", USE, "Only these jobs (comma list).", metavar="LIST"),
    Opt("-l --long", "long", FLAG, "", USE, "Slurm's long format."),
    Opt("-L --licenses", "licenses", VALUE, "", USE, "Only jobs using these licenses (none do)."),
    CLUSTERS,
    Opt("--me", "me", FLAG, "", USE, "Only my jobs."),
    Opt("-n --name", "name", VALUE, "", USE, "Only jobs with these names.", metavar="LIST"),
    Opt("--noconvert", "noconvert", FLAG, "", QUIET, "Accepted."),
    Opt("-o --format", "format", VALUE, "", USE, "Output format (%i %j %u %t ...).",
        metavar="FORMAT"),
    Opt("-O --Format", "Format", VALUE, "", USE, "Output fields (JobID,Name:20,...).",
        metavar="FIELDS"),
    Opt("-p --partition", "partition", VALUE, "", USE, "Only these partitions.", metavar="LIST"),
    Opt("-P --priority", "priority", FLAG, "", QUIET, "Accepted (one row per job)."),
    Opt("-q --qos", "qos", VALUE, "", USE, "Only these QoS.", metavar="LIST"),
    Opt("-R --reservation", "reservation", VALUE, "", USE, "Only this reservation (none)."),
    Opt("-s --steps", "steps", OPTIONAL, "", USE, "Show steps instead of jobs."),
    Opt("-S --sort", "sort", VALUE, "", USE, "Sort keys, e.g. -t,i.", metavar="KEYS"),
    Opt("--start", "start", FLAG, "", USE, "Pending jobs' expected start times."),
    Opt("-t --states", "states", VALUE, "", USE, "Only these states (PD,R,... or all).",
        metavar="LIST"),
    Opt("-u --user", "user", VALUE, "", USE, "Only these users' jobs.", metavar="LIST"),
    Opt("-w --nodelist", "nodelist", VALUE, "", USE, "Only jobs on these nodes.", metavar="NODES"),
    VERBOSE,
    VERSION,
    USAGE,
    LONG_HELP,
    MASTER,
)
# fmt: on
TABLE = index(OPTIONS)


def _job_ids(value: object) -> list[int | str]:
    refs: list[int | str] = []
    for item in split_list(value):
        job, _, task = item.partition("_")
        if not job.isdigit() or (task and not task.isdigit()):
            raise UsageError(f"Invalid job id: {item}")
        refs.append(f"{job}_{task}" if task else int(job))
    return refs


# What the filters and MinJobAge read, whatever the format shows.
FILTER_FIELDS = ("job_id", "state", "end_time", "name", "partition", "qos", "account", "node")


def needed_fields(specs: Any, sort: str | None) -> list[str]:
    """The row fields a format and an order read, and the filters'."""
    from mgpu_core.slurm.squeue_fields import fields_read

    try:
        return sorted(fields_read(specs, sort) | set(FILTER_FIELDS))
    except ValueError as exc:  # -S with a letter squeue does not sort by
        raise UsageError(str(exc)) from None


def ask(client: Any, opts: dict[str, Any], me: str, fields: list[str] | None = None) -> Any:
    """Send the listing request the options make (``fields`` of each row: None for all); what
    :func:`collect` needs to read its answer."""
    users = split_list(opts.get("user")) + ([me] if opts.get("me") else [])
    states = parse_states(str(opts["states"])) if opts.get("states") else []
    refs = _job_ids(opts.get("jobs"))
    finished = bool(refs) or any(s not in ("PENDING", "RUNNING", "COMPLETING") for s in states)
    req_id = client.send(
        "queue",
        users=users,
        states=[s for s in states if s != "COMPLETING"],
        job_ids=refs,
        include_finished=finished,
        fields=fields or [],
    )
    return req_id, refs, states


# Options whose filtering or output only the command does (MinJobAge, -n -p -q -A -w, the
# states a listing adds finished jobs for, --start's pending-only view and time zone).
_CLIENT_SIDE = (
    "jobs", "states", "name", "partition", "qos", "account", "nodelist", "reservation",
    "licenses", "start", "steps",
)  # fmt: skip


def rendered_by_master(opts: dict[str, Any]) -> bool:
    """Whether the master can print this listing (a queue request's ``render``): no filter
    of the command's own, and no field only this host can render (``mgpu_core.slurm``'s
    LOCAL_*), which is decided without importing the formatter."""
    from mgpu_core.slurm import LOCAL_KEYS, LOCAL_NAMES, LOCAL_SORT

    if any(opts.get(key) for key in _CLIENT_SIDE):
        return False
    if set(str(opts.get("sort") or "")) & LOCAL_SORT:
        return False
    names = str(opts.get("Format") or "").lower().split(",")
    if any(name.partition(":")[0].strip() in LOCAL_NAMES for name in names):
        return False
    return not _percent_keys(str(opts.get("format") or "")) & LOCAL_KEYS


def _percent_keys(fmt: str) -> set[str]:
    """The field letters of an -o format (``%.18i %-9P``: i and P)."""
    keys, i = set(), 0
    while i < len(fmt):
        if fmt[i] == "%":
            i += 1
            while i < len(fmt) and (fmt[i] in "-." or fmt[i].isdigit()):
                i += 1
            if i < len(fmt):
                keys.add(fmt[i])
        i += 1
    return keys


def ask_text(client: Any, opts: dict[str, Any]) -> str:
    """The listing as the master prints it (with -l, after squeue's date line)."""
    from mgpu_client.client import current_user

    users = split_list(opts.get("user")) + ([current_user()] if opts.get("me") else [])
    fmt = str(opts.get("format") or "")
    if opts.get("long") and not fmt and not opts.get("Format"):
        from mgpu_core.slurm.squeue_fmt import LONG_FORMAT

        fmt = LONG_FORMAT
    data = client.request(
        "queue",
        users=users,
        render="squeue",
        format=fmt,
        format_long=str(opts.get("Format") or ""),
        sort=str(opts.get("sort") or ""),
        header=not opts.get("noheader"),
    )
    text = str(data["text"])
    if opts.get("long"):
        from mgpu_core.slurm import timefmt

        text = timefmt.date_line(float(data["now"])) + "\n" + text
    return text


def fetch(
    client: Any, opts: dict[str, Any], me: str, fields: list[str] | None = None
) -> list[dict[str, Any]]:
    """The rows the options select (``fields`` of each: None for all), filtered as squeue
    filters them."""
    return collect(client, opts, ask(client, opts, me, fields))


def collect(client: Any, opts: dict[str, Any], asked: Any) -> list[dict[str, Any]]:
    """The answer to :func:`ask`'s request, filtered as squeue filters it."""
    req_id, refs, states = asked
    data = client.answer(req_id)
    now = float(data.get("now") or time.time())
    if refs and not data["jobs"]:
        raise UsageError("slurm_load_jobs error: Invalid job id specified")
    rows = []
    wanted = {k: set(split_list(opts.get(k))) for k in ("name", "partition", "qos", "account")}
    nodes = None
    if opts.get("nodelist"):
        from mgpu_client.jobspec import hosts

        nodes = set(hosts("-w/--nodelist", opts["nodelist"]))
    for row in data["jobs"]:
        end = row.get("end_time") or 0
        if end and now - end > MIN_JOB_AGE_S:
            continue
        if states and row.get("state") not in states:
            continue
        if any(values and str(row.get(key, "")) not in values for key, values in wanted.items()):
            continue
        if nodes is not None and row.get("node") not in nodes:
            continue
        if opts.get("reservation") or opts.get("licenses"):
            continue  # no job has a reservation or licenses
        rows.append({**row, "now": now})
    return rows


def show(argv: list[str], prog: str) -> int:
    found, rest = parse(argv, TABLE, interspersed=True)
    opts = as_dict(found)
    summary = "View the job queue."
    if answer_common(prog, found, rest, summary, OPTIONS, stray="Unrecognized option: {}"):
        return 0
    from mgpu_client.client import connect, current_user

    interval = None
    if opts.get("iterate") is not None:
        from mgpu_client.cmdline import number

        interval = number("-i/--iterate", opts["iterate"], 1, 86_400)
    by_master = rendered_by_master(opts)
    if not by_master:
        builtin = _builtin_layout(opts)
        fields = BUILTIN_FIELDS[builtin] if builtin else needed_fields(*layout(opts))
    with connect(opts.get("master")) as client:
        while True:
            if by_master:
                text = ask_text(client, opts)
            else:
                asked = ask(client, opts, current_user(), fields)
                specs, sort = layout(opts)  # the formatter's import, while the master answers
                rows = collect(client, opts, asked)
                text = render(rows, opts, specs, sort)
            if interval is not None and not opts.get("long"):
                sys.stdout.write(time.strftime("%a %b %d %H:%M:%S %Y") + "\n")
            sys.stdout.write(text)
            sys.stdout.flush()
            if interval is None:
                return 0
            time.sleep(interval)  # the user asked to be shown the queue every N seconds


# The fields of squeue's built-in layouts (needed_fields of each; tests/client/
# test_squeue_fields.py checks them): the request goes out before the formatter is imported.
_BASE = [
    "account", "array_job_id", "array_task_id", "end_time", "expected_start", "job_id", "name",
    "node", "partition", "qos", "reason", "start_time", "state", "user",
]  # fmt: skip
BUILTIN_FIELDS = {
    "default": sorted([*_BASE, "priority"]),
    "long": sorted([*_BASE, "priority", "time_limit_s"]),
    "start": _BASE,
}


def _builtin_layout(opts: dict[str, Any]) -> str:
    """Which built-in layout the options ask for ("" for -o, -O or -S)."""
    if opts.get("format") or opts.get("Format") or opts.get("sort"):
        return ""
    return "start" if opts.get("start") else "long" if opts.get("long") else "default"


def layout(opts: dict[str, Any]) -> tuple[Any, str | None]:
    """(the parsed format, the sort keys): -O fields, else -o format, else --start's, -l's or
    the default one."""
    from mgpu_core.slurm import squeue_fmt

    start = bool(opts.get("start"))
    try:
        if opts.get("Format"):
            specs = squeue_fmt.parse_format_long(str(opts["Format"]))
        else:
            default = (
                squeue_fmt.START_FORMAT
                if start
                else (squeue_fmt.LONG_FORMAT if opts.get("long") else squeue_fmt.DEFAULT_FORMAT)
            )
            specs = squeue_fmt.parse_format(str(opts.get("format") or default))
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    sort = opts.get("sort") or (squeue_fmt.START_SORT if start else None)
    return specs, (str(sort) if sort else None)


def render(rows: list[dict[str, Any]], opts: dict[str, Any], specs: Any, sort: str | None) -> str:
    """The listing of ``rows`` in the layout's format and order."""
    from mgpu_core.slurm import squeue_fmt, timefmt

    now = rows[0]["now"] if rows else time.time()
    if opts.get("start"):
        rows = [r for r in rows if r.get("state") == "PENDING"]
    try:
        ordered = squeue_fmt.sort_jobs(rows, sort, now=now)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    lines = squeue_fmt.format_jobs(ordered, specs, now=now, header=not opts.get("noheader"))
    if opts.get("long"):
        lines.insert(0, timefmt.date_line(now))
    return "".join(line + "\n" for line in lines)


def main(prog: str = "squeue", *, slurm: bool = True) -> None:
    run_command(prog, lambda: show(sys.argv[1:], prog), slurm=slurm, exit_now=True)


def slurm_main() -> None:
    main("squeue", slurm=True)


if __name__ == "__main__":
    main()
