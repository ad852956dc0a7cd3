"""``sacct``: finished and running jobs from mgpu's own records (no accounting daemon), in Slurm's
formats: ``-o/--format`` with Slurm's field names and widths, ``-p``/``-P``, ``-n``, ``-X``,
``-b``, ``-l``; one row per job, then its steps (``ID.batch``, ``ID.N``). Rendering is
:mod:`mgpu_core.slurm.sacct_fmt`'s.

Selection as Slurm's: without ``-j``, the caller's jobs (``-a``: everyone's, ``-u``: these users')
that were around in the window ``-S``..``-E`` (by default since midnight); with ``-j``, those
jobs whenever they ran.
"""

from __future__ import annotations

import sys
import time

from mgpu_client.cmdline import (
    CLUSTERS,
    FLAG,
    MASTER,
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
from mgpu_core.errors import UsageError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

# fmt: off
OPTIONS = (
    Opt("-a --allusers", "allusers", FLAG, "", USE, "Every user's jobs."),
    Opt("-A --accounts", "accounts", VALUE, "", USE, "Only these accounts.", metavar="LIST"),
    Opt("-b --brief", "brief", FLAG, "", USE, "JobID, State and ExitCode only."),
    Opt("-D --duplicates", "duplicates", FLAG, "", QUIET, "Accepted (one record per job)."),
    Opt("-E --endtime", "endtime", VALUE, "", USE, "Window end [default: now].", metavar="TIME"),
    Opt("-e --helpformat", "helpformat", FLAG, "", USE, "List the fields -o accepts."),
    Opt("-j --jobs", "jobs", VALUE, "", USE, "Only these jobs (ID, ID_TASK, ID.STEP).",
        metavar="LIST"),
    Opt("-l --long", "long", FLAG, "", USE, "Many fields."),
    Opt("-L --allclusters", "allclusters", FLAG, "", QUIET, "Accepted (one cluster)."),
    CLUSTERS,
    Opt("-N --nodelist", "nodelist", VALUE, "", USE, "Only jobs on these nodes.", metavar="NODES"),
    Opt("-n --noheader", "noheader", FLAG, "", USE, "No header."),
    Opt("--name", "name", VALUE, "", USE, "Only jobs with these names.", metavar="LIST"),
    Opt("-o --format", "format", VALUE, "", USE, "Fields, e.g. JobID,State,JobName%30.",
        metavar="FIELDS"),
    Opt("-p --parsable", "parsable", FLAG, "", USE, "'|'-separated, with a trailing '|'."),
    Opt("-P --parsable2", "parsable2", FLAG, "", USE, "'|'-separated."),
    Opt("--delimiter", "delimiter", VALUE, "", USE, "With -p/-P: this separator.", metavar="C"),
    Opt("-q --qos", "qos", VALUE, "", USE, "Only these QoS.", metavar="LIST"),
    Opt("-r --partition", "partition", VALUE, "", USE, "Only these partitions.", metavar="LIST"),
    Opt("-s --state", "state", VALUE, "", USE, "Only these states (CD,F,CA,TO,NF,OOM,PD,R).",
        metavar="LIST"),
    Opt("-S --starttime", "starttime", VALUE, "", USE, "Window start [default: midnight].",
        metavar="TIME"),
    Opt("-u --user", "user", VALUE, "", USE, "Only these users' jobs.", metavar="LIST"),
    Opt("-X --allocations", "allocations", FLAG, "", USE, "Jobs only, no steps."),
    Opt("-T --truncate", "truncate", FLAG, "", QUIET, "Accepted."),
    Opt("--units", "units", VALUE, "", QUIET, "Accepted."),
    Opt("--noconvert", "noconvert", FLAG, "", QUIET, "Accepted."),
    VERBOSE,
    VERSION,
    Opt("-h --help", "help", FLAG, "", USE, "Show this message and exit."),
    USAGE,
    MASTER,
)
# fmt: on
TABLE = index(OPTIONS)
_UNITS_S = {
    "": 1,
    "s": 1,
    "second": 1,
    "seconds": 1,
    "minute": 60,
    "minutes": 60,
    "hour": 3600,
    "hours": 3600,
    "day": 86400,
    "days": 86400,
    "week": 604800,
    "weeks": 604800,
}
_NAMED = {
    "midnight": (0, 0),
    "noon": (12, 0),
    "elevenses": (11, 0),
    "fika": (15, 0),
    "teatime": (16, 0),
}


def parse_time(text: str, now: float) -> float:
    """sacct's -S/-E forms: YYYY-MM-DD[THH:MM[:SS]], MM/DD[/YY], HH:MM[:SS], today, midnight,
    noon, now[{+|-}N[unit]], a Unix time."""
    raw = text.strip().lower()
    day = time.localtime(now)
    if raw in ("now", "") or raw.startswith(("now+", "now-")):
        if raw in ("now", ""):
            return now
        sign = 1 if raw[3] == "+" else -1
        body = raw[4:]
        digits = "".join(c for c in body if c.isdigit())
        unit = body[len(digits) :]
        if not digits or unit not in _UNITS_S:
            raise UsageError(f"invalid time '{text}'")
        return now + sign * int(digits) * _UNITS_S[unit]
    if raw == "today":
        raw = "midnight"
    if raw in _NAMED:
        hour, minute = _NAMED[raw]
        return time.mktime((day.tm_year, day.tm_mon, day.tm_mday, hour, minute, 0, 0, 0, -1))
    if raw.isdigit() and len(raw) > 8:
        return float(raw)
    date_part, _, clock = raw.partition("t") if "-" in raw[:10] else ("", "", raw)
    try:
        if "/" in raw:
            date_part, _, clock = raw.partition("-")
            month, mday, *year = (int(x) for x in date_part.split("/"))
            yr = (2000 + year[0] if year[0] < 100 else year[0]) if year else day.tm_year
        elif date_part:
            yr, month, mday = (int(x) for x in date_part.split("-"))
        else:
            yr, month, mday = day.tm_year, day.tm_mon, day.tm_mday
        parts = [int(x) for x in clock.split(":")] if clock else [0, 0]
        hour, minute, second = [*parts, 0, 0, 0][:3]
        return time.mktime((yr, month, mday, hour, minute, second, 0, 0, -1))
    except (ValueError, OverflowError):
        raise UsageError(f"invalid time '{text}'") from None


def _refs(value: object) -> list[int | str]:
    refs: list[int | str] = []
    for item in split_list(value):
        text = item.split(".")[0]
        job, _, task = text.partition("_")
        if not job.isdigit() or (task and not task.isdigit()):
            raise UsageError(f"invalid job id '{item}'")
        refs.append(f"{job}_{task}" if task else int(job))
    return refs


# The most rows one sacct asks for (the master's bound on one answer).
MAX_ROWS = 100_000


def fetch(
    client: Any, opts: dict[str, Any], me: str, meanwhile: Any = None
) -> list[dict[str, Any]]:
    """The jobs the options select; ``meanwhile()`` runs while the master answers."""
    now = time.time()
    refs = _refs(",".join(opts.get("jobs") or []))
    from mgpu_client.jobstates import STATES, parse_states

    states = parse_states(str(opts["state"])) if opts.get("state") else []
    users = [] if opts.get("allusers") else (split_list(opts.get("user")) or ([] if refs else [me]))
    start = end = None
    if opts.get("starttime"):
        start = parse_time(str(opts["starttime"]), now)
    elif not refs:
        start = now if states else parse_time("midnight", now)
    if opts.get("endtime"):
        end = parse_time(str(opts["endtime"]), now)
    # From the master's database: finished jobs stay there long after squeue forgets them.
    req_id = client.send(
        "history",
        users=users,
        states=[s for s in states if s in STATES.values() and s != "COMPLETING"],
        job_ids=refs,
        limit=MAX_ROWS,
        fields=[],
        names=split_list(opts.get("name")),
        window_start_s=start,
        window_end_s=end,
        steps=not opts.get("allocations"),
    )
    if meanwhile is not None:
        meanwhile()
    data = client.answer(req_id)
    wanted = {
        k: set(split_list(opts.get(o)))
        for k, o in (("partition", "partition"), ("qos", "qos"), ("account", "accounts"))
    }
    nodes = None
    if opts.get("nodelist"):
        from mgpu_client.jobspec import hosts

        nodes = set(hosts("-N/--nodelist", opts["nodelist"]))
    rows = []
    for row in reversed(data["jobs"]):  # newest first: sacct lists in id order
        if any(values and str(row.get(key, "")) not in values for key, values in wanted.items()):
            continue
        if nodes is not None and row.get("node") not in nodes:
            continue
        rows.append(row)
    return rows


def _load_formatter() -> None:
    """Import the formatter while the master answers (it is a good part of the start-up)."""
    from mgpu_core.slurm import sacct_fmt  # noqa: F401


def report(argv: list[str], prog: str) -> int:
    found, rest = parse(argv, TABLE, interspersed=True)
    opts = as_dict(found, collect=("jobs",))
    if answer_common(prog, found, rest, "Accounting data of jobs.", OPTIONS, stray=None):
        return 0
    if opts.get("helpformat"):
        from mgpu_core.slurm import sacct_fmt

        names = [name for name, _ in sacct_fmt.parse_fields("ALL")]
        rows_of = [names[i : i + 4] for i in range(0, len(names), 4)]
        sys.stdout.write("".join(" ".join(f"{n:<20}" for n in r).rstrip() + "\n" for r in rows_of))
        return 0
    if rest:
        raise UsageError(f"unrecognized argument '{rest[0]}'")
    from mgpu_client.client import connect, current_user

    with connect(opts.get("master")) as client:
        rows = fetch(client, opts, current_user(), meanwhile=_load_formatter)
    from mgpu_core.slurm import sacct_fmt

    delimiter = str(opts["delimiter"]) if opts.get("delimiter") else "|"
    if opts.get("format"):
        spec = ",".join(opts["format"]) if isinstance(opts["format"], list) else opts["format"]
    elif opts.get("brief"):
        spec = sacct_fmt.BRIEF_FIELDS
    else:
        spec = sacct_fmt.LONG_FIELDS if opts.get("long") else sacct_fmt.DEFAULT_FIELDS
    try:
        fields = sacct_fmt.parse_fields(str(spec))
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    parsable = 2 if opts.get("parsable2") else 1 if opts.get("parsable") else 0
    lines = sacct_fmt.format_jobs(
        rows,
        fields,
        now=time.time(),
        header=not opts.get("noheader"),
        steps=not opts.get("allocations"),
        parsable=parsable,
        delimiter=delimiter,
    )
    sys.stdout.write("".join(line + "\n" for line in lines))
    return 0


def main(prog: str = "sacct", *, slurm: bool = True) -> None:
    run_command(prog, lambda: report(sys.argv[1:], prog), slurm=slurm, exit_now=True)


def slurm_main() -> None:
    main("sacct", slurm=True)


if __name__ == "__main__":
    main()
