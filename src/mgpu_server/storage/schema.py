"""The state database's schema: its version, the migrations that take an older database to it
step by step (at open, each in its own transaction), and the settings key the purge keeps the
job-id floor under. :mod:`mgpu_server.storage.sqlite_store` applies them."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable

from mgpu_core.models import JobSpec
from mgpu_server.storage.history import spec_loader

SCHEMA_VERSION = 11

# MIGRATIONS[n] takes a database from version n to n + 1 (0 = empty file).
MIGRATIONS: dict[int, tuple[str, ...]] = {
    0: (
        "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
        """CREATE TABLE jobs (
            job_id INTEGER PRIMARY KEY,
            user TEXT NOT NULL,
            state TEXT NOT NULL,
            reason TEXT NOT NULL,
            node_id TEXT NOT NULL,
            gpu_indices TEXT NOT NULL,
            submit_time REAL NOT NULL,
            start_time REAL NOT NULL,
            end_time REAL NOT NULL,
            exit_code INTEGER,
            signal INTEGER,
            cancel_requested INTEGER NOT NULL,
            pid INTEGER NOT NULL,
            spec TEXT NOT NULL
        )""",
        "CREATE INDEX jobs_by_state ON jobs (state)",
        "CREATE TABLE nodes (node_id TEXT PRIMARY KEY, info TEXT NOT NULL)",
    ),
    1: ("ALTER TABLE jobs ADD COLUMN restart_count INTEGER NOT NULL DEFAULT 0",),
    2: (
        "ALTER TABLE jobs ADD COLUMN hold TEXT NOT NULL DEFAULT ''",
        "ALTER TABLE jobs ADD COLUMN priority_override INTEGER",
    ),
    3: (
        "ALTER TABLE jobs ADD COLUMN array_job_id INTEGER",
        "ALTER TABLE jobs ADD COLUMN array_task_id INTEGER",
        "ALTER TABLE jobs ADD COLUMN array_throttle INTEGER NOT NULL DEFAULT 0",
    ),
    4: ("CREATE TABLE settings (key TEXT PRIMARY KEY, value TEXT NOT NULL)",),
    5: ("ALTER TABLE jobs ADD COLUMN output_bytes INTEGER",),
    # The spec of a job array, once: its tasks' rows have spec '' (Job.spec_shared). A task
    # that got a spec of its own (an update) has it in its row, as any job.
    6: ("CREATE TABLE array_specs (array_job_id INTEGER PRIMARY KEY, spec TEXT NOT NULL)",),
    # Who cancelled a job (sacct's "CANCELLED by"), and job steps (srun inside a job).
    7: (
        "ALTER TABLE jobs ADD COLUMN cancelled_by TEXT NOT NULL DEFAULT ''",
        """CREATE TABLE steps (
            job_id INTEGER NOT NULL,
            step_id INTEGER NOT NULL,
            name TEXT NOT NULL,
            ntasks INTEGER NOT NULL,
            state TEXT NOT NULL,
            start_time REAL NOT NULL,
            end_time REAL NOT NULL,
            exit_code INTEGER,
            signal INTEGER,
            PRIMARY KEY (job_id, step_id)
        )""",
    ),
    # The partition a job runs or ran in (issue 13: partitions).
    8: ("ALTER TABLE jobs ADD COLUMN partition TEXT NOT NULL DEFAULT ''",),
    # History (issue 14): what a job's GPUs measured; the columns history queries and reports
    # select and group by without decoding specs (filled in for older rows by _backfill);
    # indexes for time windows and the purge.
    9: (
        "ALTER TABLE jobs ADD COLUMN gpu_util_pct REAL",
        "ALTER TABLE jobs ADD COLUMN gpu_samples INTEGER NOT NULL DEFAULT 0",
        "ALTER TABLE jobs ADD COLUMN gpu_mem_peak_bytes INTEGER",
        "ALTER TABLE jobs ADD COLUMN name TEXT NOT NULL DEFAULT ''",
        "ALTER TABLE jobs ADD COLUMN gpus INTEGER NOT NULL DEFAULT 0",
        "ALTER TABLE jobs ADD COLUMN account TEXT NOT NULL DEFAULT ''",
        "CREATE INDEX jobs_by_end ON jobs (end_time)",
        "CREATE INDEX jobs_by_submit ON jobs (submit_time)",
        "CREATE INDEX jobs_by_array ON jobs (array_job_id)",
    ),
    # The TCP ports a job was given (issue 15: --ports), a JSON list.
    10: ("ALTER TABLE jobs ADD COLUMN ports TEXT NOT NULL DEFAULT '[]'",),
}


def _backfill_derived(db: sqlite3.Connection) -> None:
    """Schema 10's name, gpus and account of the rows an older master wrote."""
    rows = db.execute("SELECT job_id, spec, array_job_id FROM jobs").fetchall()
    specs = spec_loader(db)
    for job_id, text, array_id in rows:
        spec = specs(array_id) if text == "" else JobSpec.from_checked(json.loads(text))
        db.execute(
            "UPDATE jobs SET name = ?, gpus = ?, account = ? WHERE job_id = ?",
            (spec.display_name(), spec.gpus, spec.account, job_id),
        )


# Where a schema's new columns must be computed from each row's spec (in Python), run in the
# migration's transaction.
BACKFILLS: dict[int, Callable[[sqlite3.Connection], None]] = {10: _backfill_derived}
# The first job id never used, even by a job since purged (ids are never given twice).
JOB_ID_FLOOR_KEY = "job_id_floor"
