"""History and accounting verbs: ``history`` (jobs from the database, finished ones included
long after the master let them go: ``mgpu_client history``, sacct) and ``report`` (GPU-hours,
outcomes and waits per user, account or partition over a window: ``mgpu_client report``).

Both read the store's history, which is the master's state as of the last commit. Rows are
the queue's (``Job.to_wire``), with the same rule on who sees another user's command.
"""

from __future__ import annotations

import time
from typing import Any

from mgpu_core.arrays import parse_job_ref
from mgpu_core.errors import InvalidRequest, JobNotFound
from mgpu_server.api import permissions as perm
from mgpu_server.api.permissions import RequestContext
from mgpu_server.records.jobs import ROW_FIELDS, row_builder
from mgpu_server.state.cluster import ClusterState
from mgpu_server.storage.history import Query

# What a row hides from those who may not see others' commands (queue's rule).
HIDDEN = {"command": "", "cwd": "", "stdout_path": None, "stderr_path": None}
# The longest window a report covers (its query scans the jobs that touch it).
MAX_REPORT_WINDOW_S = 400 * 86_400.0


def hide_commands(
    ctx: RequestContext, rows: list[dict[str, Any]], *, private_commands: bool
) -> None:
    """Blank the command, directory and output paths of others' rows where the site keeps
    them private (only the fields the rows have)."""
    if not private_commands or ctx.admin or not rows or not HIDDEN.keys() & rows[0].keys():
        return  # nothing to hide: the listing's rows pass untouched
    for row in rows:
        if not perm.sees_command(ctx, row["user"], private_commands=private_commands):
            row.update({k: v for k, v in HIDDEN.items() if k in row})


def history(
    state: ClusterState, ctx: RequestContext, msg: dict[str, Any], *, private_commands: bool
) -> dict[str, Any]:
    """The ``history`` verb's reply: the jobs the filters select, newest first."""
    fields = msg["fields"] or None
    if fields is not None:
        unknown = sorted(set(fields) - set(ROW_FIELDS) - {"steps"})
        if unknown:
            raise InvalidRequest(f"unknown history field {unknown[0]!r}")
    refs = [_ref(r) for r in msg["job_ids"]]
    query = Query(
        users=tuple(msg["users"]),
        states=tuple(msg["states"]),
        names=tuple(msg["names"]),
        ids=tuple(job_id for job_id, _ in refs),
        window_start_s=msg["window_start_s"],
        window_end_s=msg["window_end_s"],
        limit=msg["limit"] + 1,  # one more: whether there were more than the limit
    )
    jobs = state.store.history.find(query)
    if refs:
        jobs = [j for j in jobs if any(j.named_by(job_id, task) for job_id, task in refs)]
    truncated = len(jobs) > msg["limit"]
    jobs = jobs[: msg["limit"]]
    now = time.time()
    wanted = [f for f in fields or () if f != "steps"]
    extra = [k for k in ("job_id", "user") if fields is not None and k not in wanted]
    build = row_builder(tuple(ROW_FIELDS) if fields is None else (*wanted, *extra))
    rows = [build(job, now) for job in jobs]
    hide_commands(ctx, rows, private_commands=private_commands)
    if msg["steps"] or (fields is not None and "steps" in fields):
        steps = state.store.history.steps_of(j.job_id for j in jobs)
        for row in rows:
            row["steps"] = [s.to_wire() for s in steps.get(row["job_id"], ())]
    for row in rows:
        for key in extra:
            del row[key]
    return {"jobs": rows, "now": now, "truncated": truncated}


def report(state: ClusterState, msg: dict[str, Any]) -> dict[str, Any]:
    """The ``report`` verb's reply: per user, account or partition over [start_s, end_s)."""
    start_s, end_s = msg["start_s"], msg["end_s"]
    if not start_s < end_s:
        raise InvalidRequest("the report's start must be before its end")
    if end_s - start_s > MAX_REPORT_WINDOW_S:
        raise InvalidRequest(f"a report covers at most {MAX_REPORT_WINDOW_S / 86_400:.0f} days")
    rows = state.store.history.report(msg["group"], start_s, end_s)
    return {"group": msg["group"], "start_s": start_s, "end_s": end_s, "rows": rows}


def _ref(ref: int | str) -> tuple[int, int | None]:
    try:
        return parse_job_ref(str(ref))
    except ValueError as exc:
        raise JobNotFound(str(exc)) from None


MAX_USAGE_BUCKETS = 2_000


def usage(state: ClusterState, msg: dict[str, Any]) -> dict[str, Any]:
    """The ``usage`` verb: GPU-seconds used per step of a window and the cluster's GPUs now
    (the dashboard's utilisation plot: used / (gpus x step))."""
    start_s, end_s, step_s = msg["start_s"], msg["end_s"], msg["step_s"]
    if not start_s < end_s or step_s <= 0:
        raise InvalidRequest("usage needs start before end and a positive step")
    if (end_s - start_s) / step_s > MAX_USAGE_BUCKETS:
        raise InvalidRequest(f"at most {MAX_USAGE_BUCKETS} steps: use a longer step")
    used = state.store.history.usage(start_s, end_s, step_s)
    gpus = sum(len(node.gpus) for node in state.nodes.values())
    return {"start_s": start_s, "step_s": step_s, "gpu_seconds": used, "gpus": gpus}
