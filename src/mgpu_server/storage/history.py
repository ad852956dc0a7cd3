"""Job history: what the store keeps after the master lets a finished job go from memory.

The master holds finished jobs for ``keep_in_memory_s`` (squeue shows them as Slurm's
MinJobAge does), then only the database has them, for ``retention_s``; then they are purged.
Everything here reads committed rows (every change is committed at the end of its turn, so the
database is never more than one turn behind the master's memory).

Queries filter on indexed or plain columns (``name``, ``gpus``, ``account`` are written with
every row for this: no spec is decoded to select or to count), and decode only the rows they
return. :class:`SqliteHistory` serves the master; :class:`MemoryHistory` the unit tests.
"""

from __future__ import annotations

import json
import math
import sqlite3
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Protocol

from mgpu_core.constants import HISTORY_RETENTION_S, KEEP_FINISHED_S
from mgpu_core.messages import MAX_HISTORY_ROWS
from mgpu_core.models import JobSpec
from mgpu_core.states import FAILURE_STATES, JobState
from mgpu_server.records.jobs import Job
from mgpu_server.records.steps import Step
from mgpu_server.storage.rows import JOB_COLUMNS, STEP_COLUMNS, job_from_row, step_from_row

KEEP_IN_MEMORY_S = KEEP_FINISHED_S
RETENTION_S = HISTORY_RETENTION_S
PURGE_BATCH = 5_000  # rows per purge step: the master's loop is never held long
TERMINAL = tuple(s.value for s in JobState if s.terminal)
# A failed job, for reports' failure rates (CANCELLED is a user's choice, not a failure).
FAILED = tuple(sorted(s.value for s in FAILURE_STATES))
GROUPS = ("user", "account", "partition")


@dataclass(frozen=True, slots=True)
class HistoryConfig:
    keep_in_memory_s: float = KEEP_IN_MEMORY_S
    retention_s: float = RETENTION_S


@dataclass(frozen=True, slots=True)
class Query:
    """Which jobs: every filter that is set must hold. ``window``: jobs that were submitted
    before its end and had not ended by its start (sacct -S/-E). Newest first, at most
    ``limit``."""

    users: tuple[str, ...] = ()
    states: tuple[str, ...] = ()
    names: tuple[str, ...] = ()
    ids: tuple[int, ...] = ()  # these jobs, and every task of arrays with these ids
    window_start_s: float | None = None
    window_end_s: float | None = None
    limit: int = MAX_HISTORY_ROWS


class History(Protocol):
    def get(self, job_id: int) -> Job | None: ...
    def state_of(self, job_id: int) -> str | None: ...
    def find(self, query: Query) -> list[Job]: ...
    def steps_of(self, job_ids: Iterable[int]) -> dict[int, list[Step]]: ...
    def report(self, group: str, start_s: float, end_s: float) -> list[dict[str, Any]]: ...
    def usage(self, start_s: float, end_s: float, step_s: float) -> list[float]: ...
    def purge(self, before_s: float, limit: int = PURGE_BATCH) -> int: ...


def _where(query: Query) -> tuple[str, list[Any]]:
    clauses: list[str] = []
    args: list[Any] = []
    for column, values in (
        ("user", query.users),
        ("state", query.states),
        ("name", query.names),
    ):
        if values:
            clauses.append(f"{column} IN ({', '.join('?' * len(values))})")
            args.extend(values)
    if query.ids:
        marks = ", ".join("?" * len(query.ids))
        clauses.append(f"(job_id IN ({marks}) OR array_job_id IN ({marks}))")
        args.extend([*query.ids, *query.ids])
    if query.window_end_s is not None:
        clauses.append("submit_time < ?")
        args.append(query.window_end_s)
    if query.window_start_s is not None:
        clauses.append("(end_time = 0 OR end_time >= ?)")
        args.append(query.window_start_s)
    return (" WHERE " + " AND ".join(clauses)) if clauses else "", args


class SqliteHistory:
    def __init__(self, db: sqlite3.Connection, spec_of_array: Callable[[int], JobSpec]) -> None:
        """``spec_of_array``: an array's shared spec (its tasks' rows have none)."""
        self._db = db
        self._spec_of_array = spec_of_array

    def _jobs(self, sql: str, args: Iterable[Any]) -> list[Job]:
        rows = self._db.execute(sql, tuple(args)).fetchall()
        arrays = {r[17]: self._spec_of_array(r[17]) for r in rows if r[13] == ""}
        return [job_from_row(r, arrays) for r in rows]

    def select(self, where: str, args: Iterable[Any]) -> list[Job]:
        """The jobs of ``SELECT ... FROM jobs <where>`` (the store's own queries)."""
        return self._jobs(f"SELECT {JOB_COLUMNS} FROM jobs {where}", args)

    def get(self, job_id: int) -> Job | None:
        found = self.select("WHERE job_id = ?", (job_id,))
        return found[0] if found else None

    def state_of(self, job_id: int) -> str | None:
        row = self._db.execute("SELECT state FROM jobs WHERE job_id = ?", (job_id,)).fetchone()
        return None if row is None else str(row[0])

    def find(self, query: Query) -> list[Job]:
        where, args = _where(query)
        sql = f"SELECT {JOB_COLUMNS} FROM jobs{where} ORDER BY job_id DESC LIMIT ?"
        return self._jobs(sql, [*args, min(query.limit, MAX_HISTORY_ROWS)])

    def steps_of(self, job_ids: Iterable[int]) -> dict[int, list[Step]]:
        ids = sorted(set(job_ids))
        found: dict[int, list[Step]] = {}
        for i in range(0, len(ids), 500):  # SQLite's bound on host parameters
            chunk = ids[i : i + 500]
            sql = (
                f"SELECT {STEP_COLUMNS} FROM steps WHERE job_id IN "
                f"({', '.join('?' * len(chunk))}) ORDER BY job_id, step_id"
            )
            for row in self._db.execute(sql, chunk):
                found.setdefault(row[0], []).append(step_from_row(row))
        return found

    def report(self, group: str, start_s: float, end_s: float) -> list[dict[str, Any]]:
        """Per ``group`` (user, account or partition) over [start_s, end_s): see
        :func:`report_rows`; here one query, no spec decoded."""
        if group not in GROUPS:
            raise ValueError(f"cannot group by {group!r}: {', '.join(GROUPS)}")
        failed = ", ".join(f"'{state}'" for state in FAILED)  # constants, not input
        ended = "end_time >= :start AND end_time < :end"
        started = "start_time > 0 AND start_time >= :start AND start_time < :end"
        sql = f"""
            SELECT {group},
                sum(CASE WHEN start_time > 0 THEN gpus * max(0.0,
                    min(CASE WHEN end_time > 0 THEN end_time ELSE :now END, :end)
                    - max(start_time, :start)) ELSE 0 END),
                sum({ended}),
                sum({ended} AND state = 'COMPLETED'),
                sum({ended} AND state IN ({failed})),
                sum({ended} AND state = 'CANCELLED'),
                avg(CASE WHEN {started} THEN start_time - submit_time END),
                sum({started})
            FROM jobs
            WHERE submit_time < :end AND (end_time = 0 OR end_time >= :start)
            GROUP BY {group} ORDER BY {group}
        """
        args = {"start": start_s, "end": end_s, "now": min(end_s, time.time())}
        return [_report_row(*row) for row in self._db.execute(sql, args)]

    def usage(self, start_s: float, end_s: float, step_s: float) -> list[float]:
        """GPU-seconds used in each ``step_s`` of [start_s, end_s) (a running job up to now)."""
        runs = self._db.execute(
            "SELECT gpus, start_time, end_time FROM jobs WHERE gpus > 0 AND start_time > 0 "
            "AND start_time < ? AND (end_time = 0 OR end_time >= ?)",
            (end_s, start_s),
        ).fetchall()
        return bucket_usage(runs, start_s, end_s, step_s)

    def purge(self, before_s: float, limit: int = PURGE_BATCH) -> int:
        """Delete up to ``limit`` finished jobs that ended before ``before_s`` (and their
        steps, and the spec of an array with no task left); returns how many. The caller
        commits (the store's job-id floor is saved with it: ids are never reused)."""
        states = ", ".join("?" * len(TERMINAL))
        ids = [
            r[0]
            for r in self._db.execute(
                f"SELECT job_id FROM jobs WHERE end_time > 0 AND end_time < ? "
                f"AND state IN ({states}) ORDER BY end_time LIMIT ?",
                (before_s, *TERMINAL, limit),
            )
        ]
        for i in range(0, len(ids), 500):
            chunk = ids[i : i + 500]
            marks = ", ".join("?" * len(chunk))
            self._db.execute(f"DELETE FROM steps WHERE job_id IN ({marks})", chunk)
            self._db.execute(f"DELETE FROM jobs WHERE job_id IN ({marks})", chunk)
        if ids:
            self._db.execute(
                "DELETE FROM array_specs WHERE array_job_id NOT IN "
                "(SELECT array_job_id FROM jobs WHERE array_job_id IS NOT NULL)"
            )
        return len(ids)


def _report_row(
    key: str,
    gpu_s: float | None,
    ended: int | None,
    completed: int | None,
    failed: int | None,
    cancelled: int | None,
    mean_wait_s: float | None,
    started: int | None,
) -> dict[str, Any]:
    n_ended, n_failed = int(ended or 0), int(failed or 0)
    return {
        "key": key,
        "gpu_hours": round(float(gpu_s or 0.0) / 3600.0, 4),
        "jobs_ended": n_ended,
        "completed": int(completed or 0),
        "failed": n_failed,
        "cancelled": int(cancelled or 0),
        "failure_rate": round(n_failed / n_ended, 4) if n_ended else 0.0,
        "mean_wait_s": round(float(mean_wait_s), 1) if mean_wait_s is not None else None,
        "jobs_started": int(started or 0),
    }


def bucket_usage(
    runs: Iterable[tuple[int, float, float]], start_s: float, end_s: float, step_s: float
) -> list[float]:
    """GPU-seconds per bucket of ``step_s`` from ``start_s``: each run (gpus, start, end; end 0
    while running: up to now) adds its overlap with each bucket it touches."""
    if step_s <= 0 or end_s <= start_s:
        raise ValueError("a usage series needs start < end and a positive step")
    count = math.ceil((end_s - start_s) / step_s)
    buckets = [0.0] * count
    now = time.time()
    for gpus, begin, finish in runs:
        lo, hi = max(begin, start_s), min(finish or now, end_s)
        first = int((lo - start_s) // step_s)
        while lo < hi and first < count:
            bucket_end = start_s + (first + 1) * step_s
            buckets[first] += gpus * (min(hi, bucket_end) - lo)
            lo, first = bucket_end, first + 1
    return buckets


def report_rows(
    jobs: Iterable[Job], group: str, start_s: float, end_s: float
) -> list[dict[str, Any]]:
    """The report of ``jobs`` (those the window touches), computed job by job: GPU-hours used
    in [start_s, end_s) (each run clipped to it; a running job up to now), jobs that ended in
    it (completed, failed, cancelled), and the mean wait of those that started in it."""
    if group not in GROUPS:
        raise ValueError(f"cannot group by {group!r}: {', '.join(GROUPS)}")
    now = min(end_s, time.time())
    acc: dict[str, list[Any]] = {}
    for j in jobs:
        if j.submit_time >= end_s or (j.end_time and j.end_time < start_s):
            continue
        key = {"user": j.user, "account": j.spec.account, "partition": j.partition}[group]
        a = acc.setdefault(key, [0.0, 0, 0, 0, 0, [], 0])
        if j.start_time > 0:
            until = min(j.end_time or now, end_s)
            a[0] += j.spec.gpus * max(0.0, until - max(j.start_time, start_s))
            if start_s <= j.start_time < end_s:
                a[5].append(j.start_time - j.submit_time)
                a[6] += 1
        if start_s <= j.end_time < end_s:
            a[1] += 1
            a[2] += j.state is JobState.COMPLETED
            a[3] += j.state.value in FAILED
            a[4] += j.state is JobState.CANCELLED
    return [
        _report_row(k, a[0], a[1], a[2], a[3], a[4], sum(a[5]) / len(a[5]) if a[5] else None, a[6])
        for k, a in sorted(acc.items())
    ]


class MemoryHistory:
    """The same answers over a dict of committed jobs (MemoryStore's)."""

    def __init__(self, jobs: dict[int, Job], steps: dict[tuple[int, int], Step]) -> None:
        self._jobs, self._steps = jobs, steps

    def get(self, job_id: int) -> Job | None:
        return self._jobs.get(job_id)

    def state_of(self, job_id: int) -> str | None:
        job = self._jobs.get(job_id)
        return None if job is None else job.state.value

    def find(self, query: Query) -> list[Job]:
        def admits(j: Job) -> bool:
            end = j.end_time
            return (
                (not query.users or j.user in query.users)
                and (not query.states or j.state.value in query.states)
                and (not query.names or j.spec.display_name() in query.names)
                and (not query.ids or j.job_id in query.ids or j.array_job_id in query.ids)
                and (query.window_end_s is None or j.submit_time < query.window_end_s)
                and (query.window_start_s is None or not end or end >= query.window_start_s)
            )

        found = [j for _, j in sorted(self._jobs.items(), reverse=True) if admits(j)]
        return found[: min(query.limit, MAX_HISTORY_ROWS)]

    def steps_of(self, job_ids: Iterable[int]) -> dict[int, list[Step]]:
        wanted = set(job_ids)
        found: dict[int, list[Step]] = {}
        for (job_id, _), step in sorted(self._steps.items()):
            if job_id in wanted:
                found.setdefault(job_id, []).append(step)
        return found

    def report(self, group: str, start_s: float, end_s: float) -> list[dict[str, Any]]:
        return report_rows(self._jobs.values(), group, start_s, end_s)

    def usage(self, start_s: float, end_s: float, step_s: float) -> list[float]:
        runs = [
            (j.spec.gpus, j.start_time, j.end_time) for j in self._jobs.values() if j.start_time
        ]
        return bucket_usage(runs, start_s, end_s, step_s)

    def purge(self, before_s: float, limit: int = PURGE_BATCH) -> int:
        gone = [
            i
            for i, j in sorted(self._jobs.items(), key=lambda kv: kv[1].end_time)
            if j.state.terminal and 0 < j.end_time < before_s
        ][:limit]
        for job_id in gone:
            del self._jobs[job_id]
        for key in [k for k in self._steps if k[0] in set(gone)]:
            del self._steps[key]
        return len(gone)


def spec_loader(db: sqlite3.Connection) -> Callable[[int], JobSpec]:
    """An array's shared spec by its id (read when a query returns one of its tasks)."""

    def spec(array_id: int) -> JobSpec:
        row = db.execute(
            "SELECT spec FROM array_specs WHERE array_job_id = ?", (array_id,)
        ).fetchone()
        if row is None:
            raise KeyError(f"array {array_id} has no stored spec")
        return JobSpec.from_checked(json.loads(row[0]))

    return spec
