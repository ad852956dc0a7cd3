"""The durable store: SQLite in WAL mode under the master's state directory.

One transaction per event-loop turn (group commit): the loop collects every changed job and
node during a turn, and :meth:`SqliteStore.commit` writes them in one ``BEGIN … COMMIT`` with
``synchronous=FULL``, so an acknowledged change survives a crash of the master or the machine,
and a thousand submits in one turn cost one fsync, not a thousand.

The schema carries a version; :data:`MIGRATIONS` upgrades older databases step by step at open.
A database that is not an mgpu database, is corrupt, or is newer than this code stops the
master at start with a message naming the file.
"""

from __future__ import annotations

import json
import logging
import os
import sqlite3
from pathlib import Path
from typing import Any

from mgpu_core.constants import DB_FILE
from mgpu_core.errors import ConfigError, StorageError
from mgpu_core.models import JobSpec
from mgpu_core.states import Hold, JobState
from mgpu_server.records.jobs import Job

log = logging.getLogger(__name__)

SCHEMA_VERSION = 5

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
}

_JOB_COLUMNS = (
    "job_id, user, state, reason, node_id, gpu_indices, submit_time, start_time, end_time, "
    "exit_code, signal, cancel_requested, pid, spec, restart_count, hold, priority_override, "
    "array_job_id, array_task_id, array_throttle"
)


def _job_row(job: Job) -> tuple[Any, ...]:
    return (
        job.job_id,
        job.user,
        job.state.value,
        job.reason,
        job.node_id,
        json.dumps(list(job.gpu_indices)),
        job.submit_time,
        job.start_time,
        job.end_time,
        job.exit_code,
        job.signal,
        int(job.cancel_requested),
        job.pid,
        json.dumps(job.spec.to_wire(), separators=(",", ":")),
        job.restart_count,
        job.hold.value,
        job.priority_override,
        job.array_job_id,
        job.array_task_id,
        job.array_throttle,
    )


def _job_from_row(row: tuple[Any, ...]) -> Job:
    return Job(
        job_id=row[0],
        user=row[1],
        state=JobState(row[2]),
        reason=row[3],
        node_id=row[4],
        gpu_indices=tuple(json.loads(row[5])),
        submit_time=row[6],
        start_time=row[7],
        end_time=row[8],
        exit_code=row[9],
        signal=row[10],
        cancel_requested=bool(row[11]),
        pid=row[12],
        spec=JobSpec.from_checked(json.loads(row[13])),  # checked when it was submitted
        restart_count=row[14],
        hold=Hold(row[15]),
        priority_override=row[16],
        array_job_id=row[17],
        array_task_id=row[18],
        array_throttle=row[19],
    )


class SqliteStore:
    def __init__(self, state_dir: Path) -> None:
        self.path = state_dir / DB_FILE
        self._dirty_jobs: dict[int, Job] = {}
        self._dirty_nodes: dict[str, dict[str, Any] | None] = {}
        self._dirty_settings: dict[str, Any] = {}
        try:
            state_dir.mkdir(parents=True, exist_ok=True)
            # The database holds user tokens' secrets: its owner only. SQLite gives the WAL
            # and shm files the database file's mode.
            os.close(os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600))
            self.path.chmod(0o600)
            # isolation_level=None: we issue BEGIN/COMMIT ourselves, one per turn.
            self._db = sqlite3.connect(self.path, isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.execute("PRAGMA busy_timeout=5000")
            self._migrate()
            self._db.execute("PRAGMA quick_check").fetchone()
        except sqlite3.DatabaseError as exc:
            raise ConfigError(f"cannot use state database {self.path}: {exc}") from None
        except OSError as exc:
            raise ConfigError(f"cannot use state directory {state_dir}: {exc.strerror}") from None

    def _version(self) -> int:
        has_meta = self._db.execute(
            "SELECT 1 FROM sqlite_master WHERE type='table' AND name='meta'"
        ).fetchone()
        if not has_meta:
            tables = self._db.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]
            if tables:
                raise sqlite3.DatabaseError("not an mgpu database (tables but no meta table)")
            return 0
        row = self._db.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
        return int(row[0]) if row else 0

    def _migrate(self) -> None:
        version = self._version()
        if version > SCHEMA_VERSION:
            raise sqlite3.DatabaseError(
                f"schema version {version} is newer than this mgpu_master ({SCHEMA_VERSION})"
            )
        while version < SCHEMA_VERSION:
            self._db.execute("BEGIN IMMEDIATE")
            for statement in MIGRATIONS[version]:
                self._db.execute(statement)
            version += 1
            self._db.execute(
                "INSERT OR REPLACE INTO meta (key, value) VALUES ('schema_version', ?)",
                (str(version),),
            )
            self._db.execute("COMMIT")
            log.info("state database %s migrated to schema version %d", self.path, version)

    def load_jobs(self) -> list[Job]:
        rows = self._db.execute(f"SELECT {_JOB_COLUMNS} FROM jobs ORDER BY job_id").fetchall()
        return [_job_from_row(r) for r in rows]

    def next_job_id(self) -> int:
        row = self._db.execute("SELECT max(job_id) FROM jobs").fetchone()
        return int(row[0] or 0) + 1

    def put_job(self, job: Job) -> None:
        self._dirty_jobs[job.job_id] = job

    def discard_job(self, job_id: int) -> None:
        self._dirty_jobs.pop(job_id, None)

    def load_nodes(self) -> list[dict[str, Any]]:
        rows = self._db.execute("SELECT info FROM nodes ORDER BY node_id").fetchall()
        return [json.loads(r[0]) for r in rows]

    def put_node(self, info: dict[str, Any]) -> None:
        self._dirty_nodes[info["node_id"]] = info

    def delete_node(self, node_id: str) -> None:
        self._dirty_nodes[node_id] = None

    def get_setting(self, key: str) -> Any:
        row = self._db.execute("SELECT value FROM settings WHERE key = ?", (key,)).fetchone()
        return json.loads(row[0]) if row else None

    def put_setting(self, key: str, value: Any) -> None:
        self._dirty_settings[key] = value

    def commit(self) -> None:
        if not self._dirty_jobs and not self._dirty_nodes and not self._dirty_settings:
            return
        settings = [(k, json.dumps(v)) for k, v in self._dirty_settings.items()]
        jobs = [_job_row(j) for j in self._dirty_jobs.values()]
        nodes = [(k, json.dumps(v)) for k, v in self._dirty_nodes.items() if v is not None]
        gone = [(k,) for k, v in self._dirty_nodes.items() if v is None]
        try:
            self._db.execute("BEGIN")
            self._db.executemany(
                f"INSERT OR REPLACE INTO jobs ({_JOB_COLUMNS}) VALUES ({', '.join('?' * 20)})",
                jobs,
            )
            self._db.executemany(
                "INSERT OR REPLACE INTO nodes (node_id, info) VALUES (?, ?)", nodes
            )
            self._db.executemany("DELETE FROM nodes WHERE node_id = ?", gone)
            self._db.executemany(
                "INSERT OR REPLACE INTO settings (key, value) VALUES (?, ?)", settings
            )
            self._db.execute("COMMIT")
        except sqlite3.Error as exc:
            if self._db.in_transaction:
                self._db.execute("ROLLBACK")
            # The writes stay dirty: they are retried with the next turn's commit.
            raise StorageError(f"cannot write state database {self.path}: {exc}") from None
        self._dirty_jobs.clear()
        self._dirty_nodes.clear()
        self._dirty_settings.clear()

    def close(self) -> None:
        self._dirty_jobs.clear()
        self._dirty_nodes.clear()
        self._db.close()
