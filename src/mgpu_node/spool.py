"""What the node agent keeps on disk so that neither a lost link nor an agent restart loses work.

Layout under the agent's ``--state-dir``::

    exits/journal         job_exited events and exit_acks, one JSON line each, appended
    jobs/<job_id>.json    a running job: pid, start time, limits (see JobRecord)
    jobs/<job_id>.status  how the job's command ended, written by the wrapper (wrapper.py)
    jobs/<job_id>.guard   what the fence guard did to the job (guard.py, GuardMark)
    lease                 until when the jobs may run without word from the master (lease.py)
    spool/job-<id>.sh     batch scripts (spawn.py)

A job that runs as another user owns its status file and script (mode 0600/0700) and gets them
as open descriptors (jobuser.py): nobody but the agent needs a path into this directory.

Exits must survive a power loss once sent (the master may ack and forget them), so they are
appended to a journal that is fdatasync'ed before they are sent — once per event-loop turn for
all the exits of that turn (group commit, as the master's store does): one flush per exit cost
the agent half its time at a few hundred jobs a second. Acks are appended without a flush (a
lost ack only means the exit is sent once more, and the master ignores a repeat); the journal
is emptied when nothing is pending and compacted at start. Exits an older agent left as
``exits/<job_id>.json`` are still read and removed on ack. Other files are written whole to
``.<name>.tmp`` and renamed over the final name, so a reader sees the old content or the new,
never part of it. Job records are not fsynced, as the jobs they describe die with the machine
anyway; skipping it keeps the fsync off the launch path.
"""

from __future__ import annotations

import dataclasses
import fcntl
import json
import logging
import os
import signal
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mgpu_core.constants import AGENT_LOCK_FILE, EXIT_JOURNAL_FILE
from mgpu_core.limits import MAX_IDS_PER_REQUEST
from mgpu_core.models import Launch

log = logging.getLogger(__name__)

# Unacknowledged exits kept; their ids ride in the next hello, which takes at most
# MAX_IDS_PER_REQUEST (with the running jobs). Beyond this the oldest are logged and lost.
MAX_UNACKED_EXITS = MAX_IDS_PER_REQUEST // 2


def lock_state_dir(state_dir: Path) -> int:
    """Take ``<state_dir>/agent.lock`` for this process (released when it ends), or raise
    OSError: two agents re-adopting and reporting the same jobs would be chaos."""
    state_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(state_dir / AGENT_LOCK_FILE, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
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


def _json_files(directory: Path, *, clean: bool = True) -> list[tuple[int, Path]]:
    """(job id, path) of ``<id>.json`` files; removes leftovers of interrupted writes."""
    found = []
    for path in directory.iterdir():
        if path.name.startswith(".") and path.name.endswith(".tmp"):
            if clean:
                path.unlink(missing_ok=True)
        elif path.suffix == ".json" and path.stem.isdigit():
            found.append((int(path.stem), path))
    return found


ACKED: dict[str, Any] = {}  # read_journal's mark for an exit the master acknowledged


def read_journal(journal: Path) -> dict[int, dict[str, Any]]:
    """The journal's last word on each job, in order: its exit, or ACKED. Read-only (tests
    and tools may call it while the agent runs)."""
    state: dict[int, dict[str, Any]] = {}
    try:
        data = journal.read_bytes()
    except FileNotFoundError:
        return state
    for number, raw in enumerate(data.splitlines(), 1):
        try:
            entry = json.loads(raw)
            if "exit" in entry:
                msg = entry["exit"]
                if msg.get("t") != "job_exited" or not isinstance(msg.get("job_id"), int):
                    raise ValueError("not a job_exited event")
                state.pop(msg["job_id"], None)
                state[msg["job_id"]] = msg
            else:
                state[int(entry["ack"])] = ACKED
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            # A write torn by a crash can only be the last line, and was never sent.
            log.error("exit journal %s line %d unreadable (%s): ignored", journal, number, exc)
    return state


def pending_exit_ids(directory: Path) -> list[int]:
    """Job ids whose exits wait in ``directory`` for the master's ack (read-only)."""
    legacy = {job_id for job_id, _ in _json_files(directory, clean=False)}
    journal = read_journal(directory / ExitSpool.JOURNAL)
    legacy -= {j for j, m in journal.items() if m is ACKED}
    return sorted(legacy | {j for j, m in journal.items() if m is not ACKED})


def _line(entry: dict[str, Any]) -> bytes:
    return json.dumps(entry, separators=(",", ":")).encode() + b"\n"


def _discard(path: Path, exc: Exception) -> None:
    log.error("unreadable %s removed: %s", path, exc)
    path.unlink(missing_ok=True)


class ExitSpool:
    """Exits not yet acknowledged by the master, oldest first, on disk and mirrored in memory.

    :meth:`put` appends; :meth:`sync` makes everything put so far durable, and must run
    before those exits are sent.
    """

    JOURNAL = EXIT_JOURNAL_FILE
    # Past this size with nothing pending, the journal is emptied.
    TRUNCATE_BYTES = 1 << 20

    def __init__(self, directory: Path, *, limit: int = MAX_UNACKED_EXITS) -> None:
        self.directory = directory
        self.limit = limit
        directory.mkdir(parents=True, exist_ok=True)
        self._exits: dict[int, dict[str, Any]] = {}
        self._legacy: set[int] = set()  # exits an older agent left as <job_id>.json
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
            self._legacy.add(job_id)
        self._replay(directory / self.JOURNAL)
        # Start from a journal holding just what is pending, durably.
        lines = b"".join(_line({"exit": m}) for m in self._exits.values() if m)
        write_atomic(directory / self.JOURNAL, lines, durable=True)
        self._fd = os.open(
            directory / self.JOURNAL, os.O_WRONLY | os.O_APPEND | os.O_CLOEXEC, 0o600
        )
        self._dirty = False

    def _replay(self, journal: Path) -> None:
        for job_id, msg in read_journal(journal).items():
            self._exits.pop(job_id, None)
            self._exits[job_id] = msg
        for job_id in [j for j, m in self._exits.items() if m is ACKED]:
            del self._exits[job_id]
            if job_id in self._legacy:  # acked before an upgrade's restart: gone for good
                self._legacy.discard(job_id)
                self._path(job_id).unlink(missing_ok=True)

    def put(self, msg: dict[str, Any]) -> None:
        """Keep ``msg`` (a job_exited event) until :meth:`ack`; durable after :meth:`sync`."""
        job_id: int = msg["job_id"]
        self._exits.pop(job_id, None)
        while len(self._exits) >= self.limit:
            old_id = next(iter(self._exits))
            log.error("dropping unacknowledged exit: %s", self._exits[old_id])
            self.ack(old_id)
        self._exits[job_id] = msg
        self._dirty |= self._append({"exit": msg}, job_id)

    def sync(self) -> None:
        """Make every exit put so far durable (one fdatasync for all of them)."""
        if self._dirty:
            self._dirty = False
            try:
                os.fdatasync(self._fd)
            except OSError as exc:
                log.error("exit journal not flushed (%s): exits kept in memory", exc)

    def ack(self, job_id: int) -> None:
        """The master has stored this exit: forget it."""
        if self._exits.pop(job_id, None) is None:
            return
        self._append({"ack": job_id}, job_id)
        if job_id in self._legacy:
            self._legacy.discard(job_id)
            try:
                self._path(job_id).unlink(missing_ok=True)
            except OSError as exc:
                log.error("job=%d acknowledged exit not removed: %s", job_id, exc)
        if not self._exits:
            try:
                if os.fstat(self._fd).st_size > self.TRUNCATE_BYTES:
                    os.ftruncate(self._fd, 0)  # nothing pending: nothing to keep
            except OSError as exc:
                log.error("exit journal not truncated: %s", exc)

    def _append(self, entry: dict[str, Any], job_id: int) -> bool:
        try:
            os.write(self._fd, _line(entry))
        except OSError as exc:
            log.error("job=%d exit journal not written (%s): kept in memory only", job_id, exc)
            return False
        return True

    def close(self) -> None:
        self.sync()
        os.close(self._fd)

    def _path(self, job_id: int) -> Path:
        return self.directory / f"{job_id}.json"

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
    start_boot: float = 0.0  # CLOCK_BOOTTIME at launch (the guard's clock; 0: not known)
    # Set from the guard's mark (GuardMark): killed by the fence after this much silence.
    fenced_s: float = 0.0
    # A session's grace after its TTL (time_limit_s counts it: the TTL is the difference).
    grace_s: int = 0
    # --container-image: a terminal in the job runs in a container of it ("": none).
    container_image: str = ""

    @classmethod
    def started(
        cls, launch: Launch, pid: int, create_time: float, wall: float, boot: float
    ) -> JobRecord:
        """The record of a job just started by ``launch`` as ``pid`` (its wrapper)."""
        spec = launch.spec
        return cls(
            job_id=launch.job_id,
            pid=pid,
            create_time=create_time,
            start_wall=wall,
            start_boot=boot,
            # A session ends after its TTL (its time limit) and its grace (Launch.grace_s).
            time_limit_s=spec.time_limit_s + launch.grace_s if spec.time_limit_s else 0,
            grace_s=launch.grace_s if spec.time_limit_s else 0,
            container_image=spec.container_image,
            kill_grace_s=launch.kill_grace_s,
            interactive=spec.interactive,
            restart_count=launch.restart_count,
            warn_signal=spec.warn_signal,
            warn_before_s=spec.warn_before_s,
        )

    def deadline(self) -> float | None:
        return self.start_wall + self.time_limit_s if self.time_limit_s > 0 else None

    def exit_reason(self, sig: int | None, *, note: str) -> str:
        """Why the job ended, for its job_exited. ``note``: why the status is lost, or why the
        job could not start (the as-user wrapper's report)."""
        if self.timed_out:
            return "time limit reached"
        if self.cancelled:
            return "cancelled"
        if self.fenced_s:
            return f"fenced: no word from the master for {self.fenced_s:.0f} s"
        if note:
            return note
        if sig is not None:
            try:
                return f"killed by signal {signal.Signals(sig).name}"
            except ValueError:
                return f"killed by signal {sig}"
        return ""


@dataclass(slots=True)
class GuardMark:
    """What the fence guard (guard.py) did to a job, beside its record (``jobs/<id>.guard``)
    for the agent that reports the job's exit. Only the guard writes it, so it never races
    with the agent's writes of the record; it names the process, so a mark left over from an
    earlier run of the job id is ignored."""

    pid: int
    create_time: float
    fenced_s: float = 0.0  # killed by the fence after this much silence (0: not fenced)
    timed_out: bool = False  # killed at the time limit while no agent acted
    terminate_wall: float = 0.0  # when the guard sent SIGTERM

    def applies_to(self, record: JobRecord) -> bool:
        return self.pid == record.pid and self.create_time == record.create_time


class JobRecords:
    """``jobs/``: one record per running job, plus the wrapper's status files and the guard's
    marks."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)

    def put(self, record: JobRecord) -> None:
        data = json.dumps(dataclasses.asdict(record)).encode()
        write_atomic(self.directory / f"{record.job_id}.json", data, durable=False)

    def status_file(self, job_id: int) -> Path:
        return self.directory / f"{job_id}.status"

    def mark_file(self, job_id: int) -> Path:
        return self.directory / f"{job_id}.guard"

    def put_mark(self, job_id: int, mark: GuardMark) -> None:
        data = json.dumps(dataclasses.asdict(mark)).encode()
        write_atomic(self.mark_file(job_id), data, durable=False)

    def read_mark(self, record: JobRecord) -> GuardMark | None:
        """The guard's mark on this very process, if any."""
        try:
            mark = GuardMark(**json.loads(self.mark_file(record.job_id).read_bytes()))
        except FileNotFoundError:
            return None
        except (OSError, ValueError, TypeError) as exc:
            log.error("job=%d unreadable guard mark ignored: %s", record.job_id, exc)
            return None
        return mark if mark.applies_to(record) else None

    def apply_mark(self, record: JobRecord) -> None:
        """Take over what the guard did to the job (fenced, timed out, being terminated), so
        that its exit is reported for what it was."""
        mark = self.read_mark(record)
        if mark is not None:
            record.fenced_s = record.fenced_s or mark.fenced_s
            record.timed_out = record.timed_out or mark.timed_out
            record.terminate_wall = record.terminate_wall or mark.terminate_wall

    def remove(self, job_id: int) -> None:
        paths = (self.directory / f"{job_id}.json", self.status_file(job_id))
        for path in (*paths, self.mark_file(job_id)):
            try:
                path.unlink(missing_ok=True)
            except OSError as exc:
                log.error("job=%d: cannot remove %s: %s", job_id, path, exc)

    def load(self, *, clean: bool = True) -> list[JobRecord]:
        """Every readable record, by job id; with ``clean`` (the agent at start) unreadable
        ones are logged and removed, and so are status files and marks of no record. Without
        it (the guard, while an agent may be writing) nothing is touched."""
        records = []
        for job_id, path in sorted(_json_files(self.directory, clean=clean)):
            try:
                record = JobRecord(**json.loads(path.read_bytes()))
                if record.job_id != job_id:
                    raise ValueError(f"record of job {record.job_id}")
                records.append(record)
            except FileNotFoundError:
                continue  # ended since the directory was listed
            except (OSError, ValueError, TypeError) as exc:
                if clean:
                    _discard(path, exc)
        if clean:
            known = {r.job_id for r in records}
            for pattern in ("*.status", "*.guard"):
                for path in self.directory.glob(pattern):
                    if not path.stem.isdigit() or int(path.stem) not in known:
                        path.unlink(missing_ok=True)  # its job's exit was handled before a crash
        return records
