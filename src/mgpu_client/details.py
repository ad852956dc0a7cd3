"""``mgpu_client show JOB``: one job in full, as ``scontrol show job`` shows it but in mgpu's
words: state and why, how it ended, when it was submitted, eligible, started and ended and how
long it waited, where it runs (node, GPU indices and UUIDs), its output files, directory,
command or batch script, restarts, priority factors and dependency. ``render`` is pure."""

from __future__ import annotations

import datetime
import json
import sys
from typing import Any

import click

from mgpu_client._common import connect, handles_errors, master_option
from mgpu_core.text import escape_controls
from mgpu_core.units import format_duration, format_size

PROG = "mgpu_client"


def _when(ts: float | None) -> str:
    if not ts:
        return "-"
    return datetime.datetime.fromtimestamp(ts).isoformat(sep=" ", timespec="seconds")


def _exit(job: dict[str, Any]) -> str:
    if job.get("signal"):
        return f"killed by signal {job['signal']}"
    if job.get("exit_code") is None:
        return "-"
    return str(job["exit_code"])


def _factors(f: dict[str, Any] | None) -> str:
    if not f:
        return "-"
    if f.get("admin") is not None:
        return f"{f['priority']:g} (set by an admin)"
    w = f["weights"]
    return (
        f"{f['priority']:g} = age {f['age']:g}x{w['age']:g} + fairshare "
        f"{f['fairshare']:g}x{w['fairshare']:g} + qos {f['qos']:g}x{w['qos']:g} - nice {f['nice']}"
    )


def _ports(job: dict[str, Any]) -> str:
    """The TCP ports given (--ports), where they can be reached: node:port."""
    ports = job.get("ports") or []
    if not ports:
        return f"{job['spec_ports']} asked" if job.get("spec_ports") else "-"
    host = job.get("node") or "?"
    return ", ".join(f"{host}:{p}" for p in ports)


def render(job: dict[str, Any], now: float) -> str:
    """``job`` (the master's ``job`` reply row) as aligned "Key: value" lines."""
    state = job["state"]
    where = job.get("node") or "-"
    if job.get("gpu_indices"):
        where += " gpu " + ",".join(str(i) for i in job["gpu_indices"])
    uuids = ", ".join(u for u in job.get("gpu_uuids") or () if u) or "-"
    dep = job.get("dependency") or ""
    if dep:
        dep += f" ({job.get('dependency_status') or 'unknown'})"
    limit = job.get("time_limit_s") or 0
    pairs: list[tuple[str, str]] = [
        ("Job", str(job.get("job_ref") or job["job_id"])),
        ("Name", job.get("name", "")),
        ("User", job["user"] + (f" (account {job['account']})" if job.get("account") else "")),
        ("State", state + (f" ({job['reason']})" if job.get("reason") else "")),
        ("Exit", _exit(job)),
        ("Partition", job.get("partition") or "-"),
        ("QoS", job.get("qos") or "-"),
        ("Resources", f"{job['gpus']} GPU(s), {job['cpus']} CPU(s), "
         f"{format_size(job['mem_bytes']) if job.get('mem_bytes') else 'no memory limit'}"),
        ("Time limit", format_duration(limit) if limit else "none"),
        ("Submitted", _when(job.get("submit_time"))),
        ("Eligible", _when(job.get("eligible_time"))),
        ("Started", _when(job.get("start_time"))),
        ("Ended", _when(job.get("end_time"))),
        ("Waited", format_duration(job.get("wait_s") or 0)),
        ("Elapsed", format_duration(job.get("elapsed_s") or 0)),
        ("Node", where),
        ("GPU UUIDs", uuids),
        ("Ports", _ports(job)),
        ("Idle", format_duration(job["idle_s"]) + " (GPUs unused)" if job.get("idle_s") else "-"),
        ("GPU usage", _gpu_usage(job)),
        ("Expected start", _when(job.get("expected_start")) if state == "PENDING" else "-"),
        ("Stdout", job.get("stdout_path") or "-"),
        ("Stderr", job.get("stderr_path") or "-"),
        ("Directory", job.get("cwd") or "-"),
        ("Command", job.get("command") or "-"),
        ("Restarts", str(job.get("restart_count", 0))),
        ("Priority", _factors(job.get("priority_factors"))),
        ("Dependency", dep or "-"),
        ("Hold", job.get("hold") or "-"),
        ("Attached", str(job.get("attached", 0))),
        ("Notice error", job.get("notice_error") or "-"),
    ]  # fmt: skip
    for step in job.get("steps") or ():
        pairs.append((f"Step {step.get('step_id')}", _step(step)))
    width = max(len(k) for k, _ in pairs)
    lines = [f"{k + ':':<{width + 1}} {escape_controls(str(v))}" for k, v in pairs]
    script = job.get("script")
    if script:
        lines.append("Batch script:")
        lines.extend("  " + escape_controls(line) for line in script.splitlines())
    return "\n".join(lines) + "\n"


def _gpu_usage(job: dict[str, Any]) -> str:
    """Its GPUs' mean utilisation and peak memory, from its node's samples."""
    util, mem = job.get("gpu_util_pct"), job.get("gpu_mem_peak_bytes")
    if util is None and mem is None:
        return "-"
    parts = [f"{util:.0f}% mean utilisation" if util is not None else "",
             f"{format_size(mem)} peak memory" if mem is not None else ""]  # fmt: skip
    return ", ".join(p for p in parts if p)


def _step(step: dict[str, Any]) -> str:
    text = f"{step.get('name') or '-'} ntasks={step.get('ntasks', 1)} {step.get('state', '')}"
    if step.get("exit_code") is not None:
        text += f" exit {step['exit_code']}"
    return text


@click.command("show")
@master_option
@click.option("--json", "as_json", is_flag=True, help="The master's answer, as JSON.")
@click.argument("job_ids", nargs=-1, required=True)
@handles_errors(f"{PROG} show")
def show(*, master: str | None, as_json: bool, job_ids: tuple[str, ...]) -> None:
    """Everything about jobs: state and reason, exit, times and wait, node and GPUs, output
    files, command or script (yours; admins see all), priority factors, dependency.
    An array's id shows every task; ID_TASK one."""
    from mgpu_client.queue import parse_job_ids

    refs = parse_job_ids(list(job_ids))
    with connect(master) as client:
        reply = client.request("job", job_ids=refs)
    if as_json:
        click.echo(json.dumps(reply["jobs"], indent=2, sort_keys=True))
        return
    sys.stdout.write("\n".join(render(job, reply["now"]) for job in reply["jobs"]))
