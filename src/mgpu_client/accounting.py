"""``mgpu_client history`` (jobs from the master's database, long after squeue forgets them)
and ``mgpu_client report`` (GPU-hours, outcomes and waits per user, account or partition over
a window, like sreport: a table, a bar chart in the terminal, ``--png FILE``)."""

from __future__ import annotations

import json
import sys
import time
from typing import Any

import click

from mgpu_client._common import connect, handles_errors, master_option
from mgpu_client.client import current_user
from mgpu_client.queue import parse_job_ids, parse_states
from mgpu_client.sacct import parse_time
from mgpu_core.errors import UsageError
from mgpu_core.tables import TROUBLED, table
from mgpu_core.units import format_duration, format_size

PROG = "mgpu_client"
HISTORY_HEADERS = (
    "JOBID", "NAME", "USER", "STATE", "SUBMITTED", "WAITED", "ELAPSED", "GPUS", "GPU%",
    "GPUMEM", "EXIT", "NODE(REASON)",
)  # fmt: skip
REPORT_HEADERS = ("GPU-HOURS", "JOBS", "DONE", "FAILED", "CANCELLED", "FAIL%", "MEAN WAIT")
DEFAULT_REPORT_DAYS = 7


def _split(text: str | None) -> list[str]:
    return [p for p in (text or "").split(",") if p]


def _when(ts: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(ts)) if ts else "-"


def history_row(job: dict[str, Any]) -> list[str]:
    waited = (job["start_time"] - job["eligible_time"]) if job["start_time"] else 0.0
    exit_text = "-"
    if job["signal"]:
        exit_text = f"sig {job['signal']}"
    elif job["exit_code"] is not None:
        exit_text = str(job["exit_code"])
    where = job["node"] or "-"
    if job["state"] in TROUBLED or (job["state"] == "PENDING" and job["reason"]):
        where += f" ({job['reason']})" if job["reason"] else ""
    util = job.get("gpu_util_pct")
    mem = job.get("gpu_mem_peak_bytes")
    return [
        str(job.get("job_ref") or job["job_id"]),
        job["name"][:24],
        job["user"],
        job["state"],
        _when(job["submit_time"]),
        format_duration(max(0.0, waited)) if job["start_time"] else "-",
        format_duration(job["elapsed_s"]),
        str(job["gpus"]),
        f"{util:.0f}" if util is not None else "-",
        format_size(mem) if mem is not None else "-",
        exit_text,
        where,
    ]


HISTORY_FIELDS = [
    "job_id", "job_ref", "name", "user", "state", "reason", "node", "submit_time",
    "eligible_time", "start_time", "elapsed_s", "gpus", "gpu_util_pct", "gpu_mem_peak_bytes",
    "exit_code", "signal",
]  # fmt: skip


@click.command("history")
@master_option
@click.option("-u", "--user", "users", default=None, help="These users' jobs (comma list).")
@click.option("-a", "--all-users", is_flag=True, help="Everyone's jobs (default: yours).")
@click.option(
    "-t", "--states", default=None, help="Only these states (comma list: CD,F,CA,TO,...)."
)
@click.option("-n", "--name", "names", default=None, help="Only jobs with these names.")
@click.option("-j", "--jobs", default=None, help="Only these jobs or arrays (comma list).")
@click.option(
    "-S",
    "--start",
    default=None,
    help="Jobs not ended before this (sacct's forms: now-7days, 2026-11-01, midnight).",
)
@click.option("-E", "--end", default=None, help="Jobs submitted before this.")
@click.option(
    "--limit",
    type=click.IntRange(1, 100_000),
    default=100,
    show_default=True,
    help="The newest N jobs at most.",
)
@click.option("--json", "as_json", is_flag=True, help="The master's rows, as JSON.")
@handles_errors(f"{PROG} history")
def history(
    *,
    master: str | None,
    users: str | None,
    all_users: bool,
    states: str | None,
    names: str | None,
    jobs: str | None,
    start: str | None,
    end: str | None,
    limit: int,
    as_json: bool,
) -> None:
    """Jobs from the master's database, finished ones included (kept 90 days by default):
    submitted, waited, ran, their GPUs' mean utilisation and peak memory, how they ended.
    Newest first."""
    now = time.time()
    user_list = _split(users) or ([] if all_users or jobs else [current_user()])
    state_list, _ = parse_states(states)
    with connect(master) as client:
        reply = client.request(
            "history",
            users=user_list,
            states=state_list,
            names=_split(names),
            job_ids=parse_job_ids(_split(jobs)),
            window_start_s=parse_time(start, now) if start else None,
            window_end_s=parse_time(end, now) if end else None,
            limit=limit,
            fields=[] if as_json else HISTORY_FIELDS,
        )
    if as_json:
        click.echo(json.dumps({"jobs": reply["jobs"], "truncated": reply["truncated"]}, indent=2))
        return
    sys.stdout.write(table(HISTORY_HEADERS, [history_row(j) for j in reply["jobs"]]) + "\n")
    if reply["truncated"]:
        click.echo(f"{PROG} history: the newest {limit} shown; --limit for more", err=True)


def report_row(row: dict[str, Any]) -> list[str]:
    wait = row["mean_wait_s"]
    return [
        f"{row['gpu_hours']:.2f}",
        str(row["jobs_ended"]),
        str(row["completed"]),
        str(row["failed"]),
        str(row["cancelled"]),
        f"{100 * row['failure_rate']:.1f}",
        format_duration(wait) if wait is not None else "-",
    ]


@click.command("report")
@master_option
@click.option(
    "--by",
    "group",
    type=click.Choice(["user", "account", "partition"]),
    default="user",
    show_default=True,
    help="One row per what.",
)
@click.option(
    "-S",
    "--start",
    default=None,
    help=f"From (sacct's forms) [default: now-{DEFAULT_REPORT_DAYS}days].",
)
@click.option("-E", "--end", default=None, help="Until [default: now].")
@click.option(
    "--png",
    "png_file",
    type=click.Path(dir_okay=False, writable=True),
    default=None,
    help="Also draw the GPU-hours as a bar chart in this PNG file.",
)
@click.option("--json", "as_json", is_flag=True, help="The master's rows, as JSON.")
@handles_errors(f"{PROG} report")
def report(
    *,
    master: str | None,
    group: str,
    start: str | None,
    end: str | None,
    png_file: str | None,
    as_json: bool,
) -> None:
    """GPU-hours used, jobs ended (completed, failed, cancelled), failure rate and mean wait,
    per user, account or partition over a window: who used the cluster, and how it went."""
    now = time.time()
    start_s = parse_time(start, now) if start else now - DEFAULT_REPORT_DAYS * 86_400
    end_s = parse_time(end, now) if end else now
    if start_s >= end_s:
        raise UsageError("--start must be before --end")
    with connect(master) as client:
        reply = client.request("report", group=group, start_s=start_s, end_s=end_s)
    rows = reply["rows"]
    labels = [str(r["key"]) or "(none)" for r in rows]
    if png_file:
        from mgpu_client.charts import png_bars

        title = f"GPU-hours by {group}, {_when(start_s)} to {_when(end_s)}"
        with open(png_file, "wb") as f:
            f.write(png_bars(title, labels, [r["gpu_hours"] for r in rows], unit="GPU-h"))
    if as_json:
        click.echo(json.dumps(reply, indent=2))
        return
    click.echo(f"{group}s from {_when(start_s)} to {_when(end_s)}")
    body = [[label, *report_row(r)] for label, r in zip(labels, rows, strict=True)]
    sys.stdout.write(table((group.upper(), *REPORT_HEADERS), body) + "\n")
    if any(r["gpu_hours"] > 0 for r in rows):
        from mgpu_client.charts import text_bars

        sys.stdout.write("\n" + text_bars(labels, [r["gpu_hours"] for r in rows], unit="GPU-h"))
