"""``mgpu_client session start|list|show|extend|stop|enter``: interactive GPU sessions.

A session is a job that holds its allocation (GPUs, CPUs, memory, ports) until its TTL (its
time limit) and a grace period, ``session stop``, or its idle policy; ``enter`` opens a shell
inside it on its node, from any host that reaches the master (terminal.py). What a session is
on the master and the node: docs/sessions.md.
"""

from __future__ import annotations

import json
import sys
import time
from typing import Any

import click

from mgpu_client._common import connect, handles_errors, master_option
from mgpu_core.errors import UsageError
from mgpu_core.tables import table
from mgpu_core.text import escape_controls
from mgpu_core.units import format_duration, parse_duration_s, parse_size, parse_time_limit

PROG = "mgpu_client session"
# (A number, not "infinity": busybox's sleep, in a session's container image, takes only those.)
HOLDER = "#!/bin/sh\n# an mgpu session: hold the allocation until it ends\nexec sleep 2147483647\n"
DEFAULT_TTL = "8h"
HEADERS = ("ID", "NAME", "USER", "STATE", "NODE", "GPUS", "LEFT", "PORTS", "IDLE")
FIELDS = [
    "job_id", "name", "user", "state", "reason", "node", "gpus", "gpu_type", "gpu_indices",
    "start_time", "time_limit_s", "ports", "session", "idle_s", "qos",
]  # fmt: skip


def parse_ttl(text: str) -> int:
    """A TTL in Slurm's time formats (``8:00:00``, ``1-0``, a bare number of minutes) or with
    a unit (``90s``, ``30m``, ``8h``, ``2d``); UsageError for anything else, or none."""
    body = text.strip().lower()
    try:
        seconds = parse_duration_s(body) if body[-1:] in ("s", "m", "h", "d") else 0
        seconds = seconds or parse_time_limit(body)
    except ValueError:
        raise UsageError(
            f"invalid TTL '{text}': use e.g. 90s, 30m, 8h, 2d or Slurm's 8:00:00, 1-0"
        ) from None
    if seconds <= 0:
        raise UsageError(f"invalid TTL '{text}': a session needs a time to end")
    return seconds


@click.group("session")
def session() -> None:
    """Interactive GPU sessions: start one, enter it, extend it, stop it."""


@session.command("start")
@click.option("-G", "--gpus", "gpus", default="0", metavar="[TYPE:]N", help="GPUs [0].")
@click.option("-c", "--cpus", type=click.IntRange(1, 4096), default=1, show_default=True)
@click.option("--mem", default=None, metavar="SIZE", help="Memory, e.g. 32G.")
@click.option(
    "--ttl",
    default=DEFAULT_TTL,
    show_default=True,
    metavar="TIME",
    help="How long it holds its allocation: 90s, 30m, 8h, 2d or Slurm's forms.",
)
@click.option("--name", default="session", show_default=True)
@click.option("--ports", type=click.IntRange(0, 16), default=0, help="TCP ports (MGPU_PORTS).")
@click.option("-q", "--qos", default="", help="QoS (its session limits apply).")
@click.option("-p", "--partition", default="", help="Partition(s), a,b.")
@click.option(
    "--container-image",
    default=None,
    metavar="IMAGE",
    help="Hold it in a container of IMAGE; `enter` opens shells in that image.",
)
@click.option("--container-mounts", default=None, metavar="SRC:DST[:ro],...")
@click.option("--container-workdir", default=None, metavar="DIR")
@click.option("--no-wait", is_flag=True, help="Print its id and return; do not wait for it.")
@master_option
@handles_errors(f"{PROG} start")
def start(
    *,
    gpus: str,
    cpus: int,
    mem: str | None,
    ttl: str,
    name: str,
    ports: int,
    qos: str,
    partition: str,
    container_image: str | None,
    container_mounts: str | None,
    container_workdir: str | None,
    no_wait: bool,
    master: str | None,
) -> None:
    """Allocate resources and hold them as a session (enter it with `session enter ID`)."""
    import os

    from mgpu_client.resources import gpu_count

    gpu_type, count = gpu_count("-G/--gpus", gpus)  # N or TYPE:N (a model, a MIG profile)
    try:
        mem_bytes = parse_size(mem) if mem else 0
    except ValueError as exc:
        raise UsageError(f"invalid --mem: {exc}") from None
    job = {
        "name": name,
        "script": HOLDER,
        "session": True,
        "time_limit_s": parse_ttl(ttl),
        "gpus": count,
        "gpu_type": gpu_type,
        "cpus": cpus,
        "mem_bytes": mem_bytes,
        "ports": ports,
        "qos": qos,
        "partition": partition,
        "cwd": os.getcwd(),
        "stdout_path": "/dev/null",
        "env": dict(os.environ),
        "mail_types": ["TIME_LIMIT_90"],  # a warning before the TTL, where notices are set up
    }
    from mgpu_client.jobspec import container_options

    container_options(
        {
            "container_image": container_image,
            "container_mounts": container_mounts,
            "container_workdir": container_workdir,
        },
        job,
    )
    with connect(master) as client:
        job_id = int(client.submit_job(job)["job_id"])
        if no_wait:
            click.echo(job_id)
            return
        click.echo(f"session {job_id} pending...", err=True)
        row = _started(client, job_id)
    if row["state"] != "RUNNING":
        raise UsageError(f"session {job_id} ended before it started: {row['state']}")
    click.echo(_lines(_describe(row, time.time())))


def _started(client: Any, job_id: int) -> dict[str, Any]:
    """Wait for the session to start (or end), as salloc waits; its row."""
    from mgpu_client.salloc import granted

    granted(client, job_id)
    return _row(client, job_id)


def _row(client: Any, job_id: int) -> dict[str, Any]:
    rows = client.queue(job_ids=[job_id], include_finished=True, fields=FIELDS)["jobs"]
    if not rows or not rows[0].get("session"):
        raise UsageError(f"job {job_id} is not a session")
    return dict(rows[0])


def _left(row: dict[str, Any], now: float) -> str:
    if row["state"] != "RUNNING" or not row.get("time_limit_s"):
        return "-"
    left = row["start_time"] + row["time_limit_s"] - now
    return format_duration(left) if left > 0 else "grace"


def _describe(row: dict[str, Any], now: float) -> str:
    job_id, node = row["job_id"], row.get("node") or "-"
    gpus = f"{row['gpus']} {row.get('gpu_type') or ''} GPU(s)".replace("  ", " ")
    lines = [
        f"session {job_id} ({row['name']}) {row['state'].lower()} on {node}: {gpus}",
        f"  time left   {_left(row, now)} of {format_duration(row.get('time_limit_s') or 0)}",
    ]
    if row.get("ports"):
        lines.append("  ports       " + ", ".join(f"{node}:{p}" for p in row["ports"]))
    if row.get("idle_s"):
        lines.append(f"  idle        {format_duration(row['idle_s'])} (GPUs unused)")
    lines += [
        f"  enter       mgpu_client session enter {job_id}",
        f"  extend      mgpu_client session extend {job_id} 1h",
        f"  stop        mgpu_client session stop {job_id}",
    ]
    return "\n".join(lines)


@session.command("list")
@click.option("-a", "--all", "everyone", is_flag=True, help="Everyone's (else yours).")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@master_option
@handles_errors(f"{PROG} list")
def list_command(*, everyone: bool, as_json: bool, master: str | None) -> None:
    """Your sessions (pending and running)."""
    with connect(master) as client:
        users = [] if everyone else [client.user]
        rows = [r for r in client.queue(users=users, fields=FIELDS)["jobs"] if r.get("session")]
    if as_json:
        click.echo(json.dumps({"sessions": rows}, indent=2))
        return
    now = time.time()
    cells = [
        [
            str(r["job_id"]), r["name"], r["user"], r["state"], r.get("node") or "-",
            str(r["gpus"]), _left(r, now), ",".join(map(str, r.get("ports") or [])) or "-",
            format_duration(r["idle_s"]) if r.get("idle_s") else "-",
        ]
        for r in rows
    ]  # fmt: skip
    click.echo(_lines(table(HEADERS, cells)))


@session.command("show")
@master_option
@click.argument("job_id")
@handles_errors(f"{PROG} show")
def show(*, job_id: str, master: str | None) -> None:
    """One session: where it runs, its time left, ports, how to enter it."""
    with connect(master) as client:
        row = _row(client, _job_id(job_id))
    click.echo(_lines(_describe(row, time.time())))


@session.command("extend")
@master_option
@click.argument("job_id")
@click.argument("duration")
@handles_errors(f"{PROG} extend")
def extend(*, job_id: str, duration: str, master: str | None) -> None:
    """Give session JOB_ID more time: DURATION more (30m, 2h, ...), within its QoS's MaxWall."""
    add_s = parse_ttl(duration)
    with connect(master) as client:
        data = client.request("session_extend", job_id=_job_id(job_id), add_s=add_s)
    limit = format_duration(int(data["time_limit_s"]))
    click.echo(f"session {data['job_id']}: time limit now {limit}")


@session.command("stop")
@master_option
@click.argument("job_id")
@handles_errors(f"{PROG} stop")
def stop(*, job_id: str, master: str | None) -> None:
    """End session JOB_ID now: its terminals close and its allocation is released."""
    with connect(master) as client:
        _row(client, _job_id(job_id))  # a session, not any job
        [result] = client.cancel([_job_id(job_id)])
    if not result.ok:
        raise UsageError(f"session {job_id}: {result.message}")
    click.echo(f"session {job_id} stopped")


@session.command("enter", context_settings={"ignore_unknown_options": True})
@master_option
@click.argument("job_id")
@click.argument("command", nargs=-1, type=click.UNPROCESSED)
@handles_errors(f"{PROG} enter")
def enter(*, job_id: str, command: tuple[str, ...], master: str | None) -> None:
    """A shell inside session (or job) JOB_ID on its node, as you; or COMMAND there."""
    from mgpu_client.terminal import enter as open_terminal

    with connect(master) as client:
        status = open_terminal(client, job_id, list(command), prog=f"{PROG} enter")
    sys.exit(status)


def _lines(text: str) -> str:
    """Names and nodes come from users and hosts: their control characters are escaped, the
    lines kept."""
    return "\n".join(escape_controls(line) for line in text.split("\n"))


def _job_id(text: str) -> int:
    if not text.isdigit() or not 0 < int(text) < 2**53:
        raise UsageError(f"invalid session id '{text}': a job id such as 42")
    return int(text)
