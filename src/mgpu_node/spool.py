"""What the node agent keeps on disk so that neither a lost link nor an agent restart loses work.

Layout under the agent's ``--state-dir``::

    exits/<job_id>.json   a job_exited event, exactly as sent, kept until the master's exit_ack
    jobs/<job_id>.json    a running job: pid, start time, limits (see JobRecord)
    jobs/<job_id>.status  how the job's command ended, written by the wrapper (wrapper.py)
    spool/job-<id>.sh     batch scripts (spawn.py)

A job that runs as another user owns its status file and script (mode 0600/0700) and gets them
as open descriptors (jobuser.py): nobody but the agent needs a path into this directory.

Every file is written whole to ``.<name>.tmp`` and renamed over the final name, so a reader
sees the old content or the new, never part of it. Exits are also fsynced (file and directory)
before they are sent: the master may ack and forget them, so they must not be undone by a
power loss. Job records are not fsynced, as the jobs they describe die with the machine
anyway; skipping it keeps the fsync off the launch path.
"""

from __future__ import annotations

import dataclasses
import fcntl
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mgpu_core.messages import MAX_IDS_PER_REQUEST

log = logging.getLogger(__name__)

# Unacknowledged exits kept; their ids ride in the next hello, which takes at most
# MAX_IDS_PER_REQUEST (with the running jobs). Beyond this the oldest are logged and lost.
MAX_UNACKED_EXITS = MAX_IDS_PER_REQUEST // 2


def lock_state_dir(state_dir: Path) -> int:
    """Take ``<state_dir>/agent.lock`` for this process (released when it ends), or raise
    OSError: two agents re-adopting and reporting the same jobs would be chaos."""
    state_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(state_dir / "agent.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise OSError(f"another mgpu_node agent is using the state directory {state_dir}") from None
    return fd


def write_atomic(path: Path, data: bytes, *, durable: bool) -> None:
    """Replace ``path`` with ``data`` in one step; with ``durable``, fsync file and directory."""
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        if durable:
            os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    if durable:
        dir_fd = os.open(path.parent, os.O_RDONLY | os.O_CLOEXEC)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


def _json_files(directory: Path) -> list[tuple[int, Path]]:
    """(job id, path) of ``<id>.json`` files; removes leftovers of interrupted writes."""
    found = []
    for path in directory.iterdir():
        if path.name.startswith(".") and path.name.endswith(".tmp"):
            path.unlink(missing_ok=True)
        elif path.suffix == ".json" and path.stem.isdigit():
            found.append((int(path.stem), path))
    return found


def _discard(path: Path, exc: Exception) -> None:
    log.error("unreadable %s removed: %s", path, exc)
    path.unlink(missing_ok=True)


class ExitSpool:
    """Exits not yet acknowledged by the master, oldest first, on disk and mirrored in memory."""

    def __init__(self, directory: Path, *, limit: int = MAX_UNACKED_EXITS) -> None:
        self.directory = directory
        self.limit = limit
        directory.mkdir(parents=True, exist_ok=True)
        self._exits: dict[int, dict[str, Any]] = {}
        loaded = []
        for job_id, path in _json_files(directory):
            try:
                msg = json.loads(path.read_bytes())
                if msg.get("t") != "job_exited" or msg.get("job_id") != job_id:
                    raise ValueError("not a job_exited event for this job")
                loaded.append((path.stat().st_mtime_ns, job_id, msg))
            except (OSError, ValueError, AttributeError) as exc:
                _discard(path, exc)
        for _, job_id, msg in sorted(loaded, key=lambda e: (e[0], e[1])):
            self._exits[job_id] = msg

    def _path(self, job_id: int) -> Path:
        return self.directory / f"{job_id}.json"

    def put(self, msg: dict[str, Any]) -> None:
        """Keep ``msg`` (a job_exited event) until :meth:`ack`; durable when this returns."""
        job_id: int = msg["job_id"]
        self._exits.pop(job_id, None)
        while len(self._exits) >= self.limit:
            old_id = next(iter(self._exits))
            log.error("dropping unacknowledged exit: %s", self._exits[old_id])
            self.ack(old_id)
        try:
            write_atomic(self._path(job_id), json.dumps(msg).encode(), durable=True)
        except OSError as exc:
            log.error("job=%d exit not saved to disk (%s): kept in memory only", job_id, exc)
        self._exits[job_id] = msg

    def ack(self, job_id: int) -> None:
        """The master has stored this exit: forget it."""
        self._exits.pop(job_id, None)
        try:
            self._path(job_id).unlink(missing_ok=True)
        except OSError as exc:
            log.error("job=%d acknowledged exit not removed: %s", job_id, exc)

    def pending(self) -> list[dict[str, Any]]:
        """The unacknowledged exits, oldest first (after a restart: by file time, which may be
        coarse, then job id; the order only decides which exits a full spool drops first)."""
        return list(self._exits.values())

    def ids(self) -> list[int]:
        return list(self._exits)

    def __contains__(self, job_id: object) -> bool:
        return job_id in self._exits

    def __len__(self) -> int:
        return len(self._exits)


@dataclass(slots=True)
class JobRecord:
    """What a restarted agent needs to re-adopt a running job."""

    job_id: int
    pid: int  # the wrapper's pid: the leader of the job's session and process group
    create_time: float  # psutil's create_time() of pid: tells the job from a reused pid
    start_wall: float  # time.time() at launch
    time_limit_s: int  # 0 = none
    kill_grace_s: float
    interactive: bool
    restart_count: int = 0
    cancelled: bool = False
    timed_out: bool = False
    terminate_wall: float = 0.0  # when SIGTERM was sent (SIGKILL follows after the grace)
    warn_signal: int = 0  # --signal: sent warn_before_s before the time limit
    warn_before_s: int = 0

    def deadline(self) -> float | None:
        return self.start_wall + self.time_limit_s if self.time_limit_s > 0 else None


class JobRecords:
    """``jobs/``: one record per running job, plus the wrapper's status files."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)

    def put(self, record: JobRecord) -> None:
        data = json.dumps(dataclasses.asdict(record)).encode()
        write_atomic(self.directory / f"{record.job_id}.json", data, durable=False)

    def status_file(self, job_id: int) -> Path:
        return self.directory / f"{job_id}.status"

    def remove(self, job_id: int) -> None:
        for path in (self.directory / f"{job_id}.json", self.status_file(job_id)):
            try:
                path.unlink(missing_ok=True)
            except OSError as exc:
                log.error("job=%d: cannot remove %s: %s", job_id, path, exc)

    def load(self) -> list[JobRecord]:
        """Every readable record, by job id; unreadable ones are logged and removed."""
        records = []
        for job_id, path in sorted(_json_files(self.directory)):
            try:
                record = JobRecord(**json.loads(path.read_bytes()))
                if record.job_id != job_id:
                    raise ValueError(f"record of job {record.job_id}")
                records.append(record)
            except (OSError, ValueError, TypeError) as exc:
                _discard(path, exc)
        known = {r.job_id for r in records}
        for path in self.directory.glob("*.status"):
            if not path.stem.isdigit() or int(path.stem) not in known:
                path.unlink(missing_ok=True)  # its job's exit was handled before a crash
        return records
