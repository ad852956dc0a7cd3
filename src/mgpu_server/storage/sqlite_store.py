"""The durable store: SQLite in WAL mode under the master's state directory.

One transaction per event-loop turn (group commit): the loop collects every changed job and
node during a turn, and :meth:`SqliteStore.commit` writes them in one ``BEGIN … COMMIT`` with
``synchronous=FULL``, so an acknowledged change survives a crash of the master or the machine,
and a thousand submits in one turn cost one fsync, not a thousand.

The schema carries a version; :data:`MIGRATIONS` upgrades older databases step by step at open.
A database that is not an mgpu database, is corrupt, or is newer than this code stops the
master at start with a message naming the file.

The history is never silently replaced (:func:`open_store`): a state directory where a master
has run before (its cluster key, audit log, socket, TLS files or the database's WAL are there)
but whose database is missing, empty, fails ``PRAGMA quick_check`` or holds a row that does not
decode is refused, rather than started empty with job ids from 1 again. Only an empty
directory starts a new history, or ``--reset-state``, which moves the unusable files aside.
"""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import time
from pathlib import Path
from typing import Any

from mgpu_core.constants import AUDIT_FILE, DB_FILE, KEY_FILE, SOCKET_FILE, TLS_DIR
from mgpu_core.errors import ConfigError, StorageError
from mgpu_core.states import JobState
from mgpu_server.records.jobs import Job
from mgpu_server.records.steps import Step
from mgpu_server.storage.history import KEEP_IN_MEMORY_S, SqliteHistory, spec_loader
from mgpu_server.storage.rows import (
    ROW_COLUMNS,
    ROW_PLACEHOLDERS,
    STEP_COLUMNS,
    STEP_PLACEHOLDERS,
    job_row,
    spec_text,
    step_from_row,
    step_row,
)
from mgpu_server.storage.schema import (
    BACKFILLS,
    JOB_ID_FLOOR_KEY,
    MIGRATIONS,
    SCHEMA_VERSION,
)

log = logging.getLogger(__name__)

# What a master that has run leaves in its state directory besides the database: any of these
# without a usable database means the history was lost, not that the cluster is new.
EARLIER_STATE = (KEY_FILE, AUDIT_FILE, SOCKET_FILE, TLS_DIR, DB_FILE + "-wal", DB_FILE + "-shm")
BROKEN_SUFFIX = ".broken-"  # mgpu.db.broken-<time>: where --reset-state moves an unusable database
_WHAT_TO_DO = (
    "restore the database from a backup, or start mgpu_master once with --reset-state to move "
    "what is left of it aside and start with no jobs"
)


class DatabaseUnusable(ConfigError):
    """The state database is missing, empty, corrupt or not mgpu's: what --reset-state moves
    aside (unlike a database newer than this code, or a directory we may not read)."""


def earlier_state(state_dir: Path) -> list[str]:
    """The names of :data:`EARLIER_STATE` in ``state_dir``: empty for a new cluster."""
    return [name for name in EARLIER_STATE if os.path.lexists(state_dir / name)]


def open_store(
    state_dir: Path, *, reset: bool = False, keep_finished_s: float = KEEP_IN_MEMORY_S
) -> SqliteStore:
    """The master's store: a new one in a directory where no master has run, else the
    existing database, which must be usable (:class:`DatabaseUnusable`, saying what to do).
    With ``reset``, an unusable database (and its -wal and -shm) is moved aside to
    ``mgpu.db.broken-<time>``, said in one log line, and a new one started; a usable one is
    kept."""
    earlier = earlier_state(state_dir)
    try:
        store = SqliteStore(state_dir, must_exist=bool(earlier), keep_finished_s=keep_finished_s)
    except DatabaseUnusable as exc:
        if not reset:
            raise DatabaseUnusable(f"{exc}: {_WHAT_TO_DO}") from None
        moved = _move_aside(state_dir / DB_FILE)
        log.warning(
            "--reset-state: %s; %s, starting with no jobs",
            exc,
            f"moved it aside to {moved}" if moved else "nothing to move aside",
        )
        return SqliteStore(state_dir, keep_finished_s=keep_finished_s)
    if reset:
        log.warning("--reset-state: state database %s is usable: kept", store.path)
    return store


def _move_aside(path: Path) -> Path | None:
    """Rename ``path`` and its -wal and -shm to ``<path>.broken-<time>[-wal|-shm]`` (names
    SQLite still opens together); the new name of ``path``, None if there was nothing."""
    stamp = time.strftime("%Y%m%dT%H%M%S")
    target = path.with_name(f"{path.name}{BROKEN_SUFFIX}{stamp}")
    n = 1
    while any(os.path.lexists(f"{target}{end}") for end in ("", "-wal", "-shm")):
        n += 1
        target = path.with_name(f"{path.name}{BROKEN_SUFFIX}{stamp}.{n}")
    found = None
    for end in ("", "-wal", "-shm"):
        try:
            os.rename(f"{path}{end}", f"{target}{end}")
        except FileNotFoundError:
            continue
        found = target
    return found


def _said(error: object) -> str:
    """An error's words as one short printable line: SQLite quotes the damaged text it could
    not decode, which may hold any bytes, newlines included."""
    text = str(error).split(" with text ", 1)[0].replace("*** in database main ***", "")
    return " ".join("".join(c if c.isprintable() else " " for c in text).split())[:200]


class SqliteStore:
    def __init__(
        self,
        state_dir: Path,
        *,
        must_exist: bool = False,
        keep_finished_s: float = KEEP_IN_MEMORY_S,
    ) -> None:
        """Open (or create) ``state_dir``/mgpu.db and check it through: ``PRAGMA quick_check``
        and every row decoded. ``must_exist``: a missing or empty database is
        :class:`DatabaseUnusable` rather than a new history (:func:`open_store`)."""
        self.path = state_dir / DB_FILE
        self._dirty_jobs: dict[int, Job] = {}
        self._dirty_nodes: dict[str, dict[str, Any] | None] = {}
        self._dirty_settings: dict[str, Any] = {}
        self._dirty_steps: dict[tuple[int, int], Step] = {}
        self._stored_arrays: set[int] = set()  # arrays whose spec is in array_specs
        # The jobs read (and so checked) at open, handed to the first load_jobs.
        self._loaded_jobs: list[Job] | None = None
        self.keep_finished_s = keep_finished_s
        # Which rows the master holds in memory from this open on (load_jobs, load_steps).
        live = ", ".join(f"'{s.value}'" for s in JobState if not s.terminal)  # constants
        self._in_memory = f"WHERE state IN ({live}) OR end_time >= ?"
        self._since = time.time() - keep_finished_s
        self.history: SqliteHistory  # set once the database is open
        try:
            state_dir.mkdir(parents=True, exist_ok=True)
            if must_exist:
                self._refuse_missing(state_dir)
            # The database holds user tokens' secrets: its owner only. SQLite gives the WAL
            # and shm files the database file's mode.
            os.close(os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600))
            self.path.chmod(0o600)
            # isolation_level=None: we issue BEGIN/COMMIT ourselves, one per turn.
            self._db = sqlite3.connect(self.path, isolation_level=None)
        except OSError as exc:
            raise ConfigError(f"cannot use state directory {state_dir}: {exc.strerror}") from None
        except sqlite3.DatabaseError as exc:
            raise DatabaseUnusable(f"cannot use state database {self.path}: {_said(exc)}") from None
        try:
            self._open(must_exist=must_exist)
        except BaseException:
            self._db.close()  # before the caller moves the files aside
            raise

    def _refuse_missing(self, state_dir: Path) -> None:
        try:
            size = self.path.stat().st_size
        except FileNotFoundError:
            raise DatabaseUnusable(
                f"state database {self.path} is missing, but {state_dir} holds "
                f"{', '.join(earlier_state(state_dir))} of a master that ran before"
            ) from None
        if size == 0:
            raise DatabaseUnusable(f"state database {self.path} is empty (0 bytes)")

    def _open(self, *, must_exist: bool) -> None:
        try:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.execute("PRAGMA busy_timeout=5000")
            problems = [row[0] for row in self._db.execute("PRAGMA quick_check").fetchall()]
            if problems != ["ok"]:
                raise DatabaseUnusable(
                    f"state database {self.path} is corrupt (PRAGMA quick_check: "
                    f"{_said(problems[0]) if problems else 'no answer'})"
                )
            if must_exist and self._version() == 0:
                raise DatabaseUnusable(f"state database {self.path} holds no tables")
            self._migrate()
            self.history = SqliteHistory(self._db, spec_loader(self._db))
            self._loaded_jobs = self._read_jobs()
            # Nodes and settings are decoded where they are used; decode them once here, so
            # that a damaged row stops the start with a message and no traceback.
            self.load_nodes()
            self.load_steps()
            for (value,) in self._db.execute("SELECT value FROM settings"):
                json.loads(value)
        except DatabaseUnusable:
            raise
        except sqlite3.DatabaseError as exc:
            raise DatabaseUnusable(f"cannot use state database {self.path}: {_said(exc)}") from None
        except (ValueError, TypeError, KeyError, IndexError) as exc:
            raise DatabaseUnusable(
                f"state database {self.path} holds a row that does not decode "
                f"({type(exc).__name__}: {_said(exc)})"
            ) from None

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
            # Not DatabaseUnusable: the database is fine, this code too old for it.
            raise ConfigError(
                f"cannot use state database {self.path}: schema version {version} is newer "
                f"than this mgpu_master's ({SCHEMA_VERSION}): run the newer mgpu_master"
            )
        while version < SCHEMA_VERSION:
            self._db.execute("BEGIN IMMEDIATE")
            for statement in MIGRATIONS[version]:
                self._db.execute(statement)
            version += 1
            if version in BACKFILLS:
                BACKFILLS[version](self._db)
            self._db.execute(
                "INSERT OR REPLACE INTO meta (key, value) VALUES ('schema_version', ?)",
                (str(version),),
            )
            self._db.execute("COMMIT")
            log.info("state database %s migrated to schema version %d", self.path, version)

    def load_jobs(self) -> list[Job]:
        jobs, self._loaded_jobs = self._loaded_jobs, None
        return self._read_jobs() if jobs is None else jobs

    def _read_jobs(self) -> list[Job]:
        """The jobs the master holds in memory: every unfinished one, and those finished
        within ``keep_finished_s`` (the rest are history: :attr:`history`)."""
        self._stored_arrays = {
            r[0] for r in self._db.execute("SELECT array_job_id FROM array_specs")
        }
        return self.history.select(f"{self._in_memory} ORDER BY job_id", (self._since,))

    def next_job_id(self) -> int:
        row = self._db.execute("SELECT max(job_id) FROM jobs").fetchone()
        floor = self.get_setting(JOB_ID_FLOOR_KEY) or 0
        return max(int(row[0] or 0) + 1, int(floor))

    def purge_finished(self, before_s: float) -> int:
        """Delete one batch of jobs that ended before ``before_s`` (their retention is over);
        returns how many (0: none left). Between turns: nothing else is being written."""
        floor = self.next_job_id()
        try:
            self._db.execute("BEGIN")
            purged = self.history.purge(before_s)
            if purged:
                self._db.execute(
                    "INSERT OR REPLACE INTO settings (key, value) VALUES (?, ?)",
                    (JOB_ID_FLOOR_KEY, json.dumps(floor)),
                )
            self._db.execute("COMMIT")
        except sqlite3.Error as exc:
            if self._db.in_transaction:
                self._db.execute("ROLLBACK")
            raise StorageError(f"cannot purge old jobs from {self.path}: {exc}") from None
        return purged

    def put_job(self, job: Job) -> None:
        self._dirty_jobs[job.job_id] = job

    def discard_job(self, job_id: int) -> None:
        self._dirty_jobs.pop(job_id, None)

    def load_steps(self) -> list[Step]:
        """The steps of the jobs :meth:`load_jobs` gives (the others' are history)."""
        query = (
            f"SELECT {STEP_COLUMNS} FROM steps WHERE job_id IN "
            f"(SELECT job_id FROM jobs {self._in_memory}) ORDER BY job_id, step_id"
        )
        return [step_from_row(row) for row in self._db.execute(query, (self._since,))]

    def put_step(self, step: Step) -> None:
        self._dirty_steps[step.job_id, step.step_id] = step

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
        if not any((self._dirty_jobs, self._dirty_nodes, self._dirty_settings, self._dirty_steps)):
            return
        steps = [step_row(s) for s in self._dirty_steps.values()]
        settings = [(k, json.dumps(v)) for k, v in self._dirty_settings.items()]
        jobs = [job_row(j) for j in self._dirty_jobs.values()]
        # A new array's spec, once per array (its tasks' rows name it by their array id).
        arrays: dict[int, str] = {}
        for job in self._dirty_jobs.values():
            array_id = job.array_job_id
            new = array_id not in arrays and array_id not in self._stored_arrays
            if job.spec_shared and array_id is not None and new:
                arrays[array_id] = spec_text(job.spec)
        nodes = [(k, json.dumps(v)) for k, v in self._dirty_nodes.items() if v is not None]
        gone = [(k,) for k, v in self._dirty_nodes.items() if v is None]
        try:
            self._db.execute("BEGIN")
            self._db.executemany(
                f"INSERT OR REPLACE INTO jobs ({ROW_COLUMNS}) VALUES ({ROW_PLACEHOLDERS})",
                jobs,
            )
            self._db.executemany(
                f"INSERT OR REPLACE INTO steps ({STEP_COLUMNS}) VALUES ({STEP_PLACEHOLDERS})",
                steps,
            )
            self._db.executemany(
                "INSERT OR REPLACE INTO nodes (node_id, info) VALUES (?, ?)", nodes
            )
            self._db.executemany("DELETE FROM nodes WHERE node_id = ?", gone)
            self._db.executemany(
                "INSERT OR REPLACE INTO settings (key, value) VALUES (?, ?)", settings
            )
            self._db.executemany(
                "INSERT OR REPLACE INTO array_specs (array_job_id, spec) VALUES (?, ?)",
                arrays.items(),
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
        self._dirty_steps.clear()
        self._stored_arrays.update(arrays)
        self._loaded_jobs = None  # no longer what is stored

    def close(self) -> None:
        self._dirty_jobs.clear()
        self._dirty_nodes.clear()
        self._dirty_steps.clear()
        self._db.close()
