"""The fence guard: one small process per state directory that kills the node's jobs when the
agent cannot, so that the fence (lease.py) holds while the agent is frozen (SIGSTOP), dead or
OOM-killed, and time limits hold while no agent runs.

Run as ``python -m mgpu_node.guard --state-dir DIR`` (in the bundle: ``mgpu mgpu_node_guard``).
The agent starts one when none runs for its directory; the running guard holds ``guard.pid``
locked, so there is at most one. It has a session of its own, so it outlives the agent. Twice
a second it reads the lease and the job records (spool.py) and acts, one log line per action in
``<state-dir>/guard.log``:

* the lease has run out: SIGTERM to each job's process group and strays, SIGKILL once the kill
  grace after the deadline is over too; the job is marked fenced (``jobs/<id>.guard``), so the
  agent that reports its exit says why;
* a job is past its time limit and nobody has sent it SIGTERM: SIGTERM, marked timed out; a job
  whose SIGTERM (the agent's or the guard's) is older than its kill grace: SIGKILL. Both wait a
  margin more, so that a live agent acts first.

A job's process is known by pid and start time: a recycled pid is never signalled. The guard
exits when the state directory is gone, or when no agent holds the directory's lock and no job
is left to watch; an agent started with --stop-jobs-on-exit stops it (SIGTERM).
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil

from mgpu_core.constants import AGENT_LOCK_FILE, GUARD_LOG_FILE, GUARD_PID_FILE, JOBS_DIR
from mgpu_node import procs
from mgpu_node.lease import Lease, boottime, read_lease
from mgpu_node.spool import GuardMark, JobRecord, JobRecords

log = logging.getLogger(__name__)

TICK_S = 0.5
LIMIT_MARGIN_S = 2.0  # a live agent ends a job at its limit; the guard only this much later
TOOL = "mgpu_node_guard"  # its name in the bundle (packaging/launcher.py)
STOP_SIGNALS = {signal.SIGTERM, signal.SIGINT, signal.SIGHUP}
PROC_LOCKS = Path("/proc/locks")


def command(state_dir: Path) -> list[str]:
    """The guard's command line: the bundle's when frozen (PyInstaller), else this Python's."""
    if getattr(sys, "frozen", False):
        return [sys.executable, TOOL, "--state-dir", str(state_dir)]
    return [sys.executable, "-m", __name__, "--state-dir", str(state_dir)]


def agent_running(state_dir: Path) -> bool:
    """Whether an agent holds the directory's lock (spool.lock_state_dir). Read in /proc/locks
    rather than by trying the lock, which would make an agent starting at that moment fail."""
    try:
        inode = (state_dir / AGENT_LOCK_FILE).stat().st_ino
    except FileNotFoundError:
        return False
    try:
        lines = PROC_LOCKS.read_text().splitlines()
    except OSError:
        return True  # cannot tell: stay
    for line in lines:
        fields = line.split()  # "1: FLOCK ADVISORY WRITE <pid> <maj:min:inode> 0 EOF"
        if len(fields) >= 6 and fields[1] == "FLOCK" and fields[5].endswith(f":{inode}"):
            return True
    return False


def running_guard(state_dir: Path) -> int | None:
    """The running guard's pid (0 while it starts); None if none runs."""
    try:
        fd = os.open(state_dir / GUARD_PID_FILE, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        text = os.read(fd, 32).strip()
        return int(text) if text.isdigit() else 0
    finally:
        os.close(fd)  # releases our lock, if we got it
    return None


def _take_pid_file(state_dir: Path) -> int | None:
    fd = os.open(state_dir / GUARD_PID_FILE, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    for _ in range(5):  # an agent's look at the lock (running_guard) holds it for an instant
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            time.sleep(0.02)
            continue
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        return fd
    os.close(fd)
    return None


class Guard:
    def __init__(self, state_dir: Path) -> None:
        self.state_dir = state_dir
        self.records = JobRecords(state_dir / JOBS_DIR)
        self.marks: dict[int, GuardMark | None] = {}  # by job id: ours, or read once
        self.done: set[tuple[int, str]] = set()  # (pid, action) logged once
        self.why = ""

    def tick(self, boot_now: float, wall_now: float) -> bool:
        """One look (``boot_now`` on CLOCK_BOOTTIME, ``wall_now`` Unix time): fence or end
        jobs as due. False once there is nothing left to guard."""
        if not self.state_dir.is_dir():
            self.why = "its state directory is gone"
            return False
        lease = read_lease(self.state_dir)
        fence = lease if lease is not None and lease.expired(boot_now) else None
        records = self.records.load(clean=False)
        present = 0
        for record in records:
            status = procs.status_of(record.pid, record.create_time)
            if status is None or status == psutil.STATUS_ZOMBIE:
                # Ended. What its group left behind dies at the fence: by the group id while
                # the unreaped wrapper holds it, else by the job id in the environment.
                if fence is not None and status is not None:
                    procs.signal_group(record.pid, signal.SIGKILL)
                elif fence is not None and self._once(record, "sweep"):
                    procs.kill_leftovers(record.pid, record.job_id)
                continue
            present += 1
            if fence is not None:
                self._fence(record, fence, boot_now, wall_now)
            else:
                self._limit(record, boot_now, wall_now)
        self.marks = {r.job_id: self.marks[r.job_id] for r in records if r.job_id in self.marks}
        if present or agent_running(self.state_dir) or (records and lease and not fence):
            return True  # (records of ended jobs wait for the fence to sweep their leftovers)
        self.why = "no agent and no job to watch"
        return False

    def _fence(self, record: JobRecord, lease: Lease, boot_now: float, wall_now: float) -> None:
        mark = self._mark(record)
        if not mark.fenced_s:
            mark.fenced_s = max(1.0, round(lease.silence_s(boot_now)))
            mark.terminate_wall = mark.terminate_wall or wall_now
            self._put(record, mark)
            log.warning(
                "job=%d pid=%d fenced: no word from the master for %.0f s: SIGTERM",
                record.job_id,
                record.pid,
                mark.fenced_s,
            )
            procs.signal_tree(record.pid, signal.SIGTERM)
        if boot_now >= lease.deadline + min(lease.kill_grace_s, record.kill_grace_s):
            self._kill(record, "fenced, kill grace over")

    def _limit(self, record: JobRecord, boot_now: float, wall_now: float) -> None:
        mark = self._mark(record)
        terminated = record.terminate_wall or mark.terminate_wall
        if terminated:
            if wall_now > terminated + record.kill_grace_s + LIMIT_MARGIN_S:
                self._kill(record, "kill grace over and no agent acted")
            return
        if record.start_boot:  # immune to wall-clock steps
            elapsed = boot_now - record.start_boot
        else:
            elapsed = wall_now - record.start_wall
        if record.time_limit_s and elapsed > record.time_limit_s + LIMIT_MARGIN_S:
            mark.timed_out, mark.terminate_wall = True, wall_now
            self._put(record, mark)
            log.warning(
                "job=%d pid=%d past its time limit (%d s) and no agent acted: SIGTERM",
                record.job_id,
                record.pid,
                record.time_limit_s,
            )
            procs.signal_tree(record.pid, signal.SIGTERM)

    def _kill(self, record: JobRecord, why: str) -> None:
        if self._once(record, "kill"):
            log.warning("job=%d pid=%d SIGKILL: %s", record.job_id, record.pid, why)
        procs.signal_tree(record.pid, signal.SIGKILL)

    def _once(self, record: JobRecord, action: str) -> bool:
        key = (record.pid, action)
        if key in self.done:
            return False
        self.done.add(key)
        return True

    def _mark(self, record: JobRecord) -> GuardMark:
        if record.job_id not in self.marks:
            self.marks[record.job_id] = self.records.read_mark(record)  # a guard before us
        mark = self.marks[record.job_id]
        if mark is None or not mark.applies_to(record):
            mark = GuardMark(pid=record.pid, create_time=record.create_time)
            self.marks[record.job_id] = mark
        return mark

    def _put(self, record: JobRecord, mark: GuardMark) -> None:
        try:
            self.records.put_mark(record.job_id, mark)
        except OSError as exc:
            log.error("job=%d mark not written (%s): its exit may not say why", record.job_id, exc)


class GuardHandle:
    """The agent's side: a guard runs for the state directory while the agent lives (started
    if none does, again if it died)."""

    def __init__(self, state_dir: Path) -> None:
        self.state_dir = state_dir.absolute()
        self.proc: subprocess.Popen[bytes] | None = None

    def ensure(self) -> None:
        if self.proc is not None:
            if self.proc.poll() is None:
                return
            log.info("fence guard pid=%d ended (status %s)", self.proc.pid, self.proc.returncode)
            self.proc = None
        if running_guard(self.state_dir) is not None:
            return
        try:
            with open(self.state_dir / GUARD_LOG_FILE, "ab") as out:
                self.proc = subprocess.Popen(
                    command(self.state_dir),
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=out,
                    cwd="/",
                    start_new_session=True,  # not ended with the agent's group or terminal
                )
        except OSError as exc:
            log.error("fence guard not started: %s", exc)
            return
        log.info("fence guard started: pid=%d", self.proc.pid)

    def stop(self, timeout_s: float = 5.0) -> None:
        pid = running_guard(self.state_dir)
        if pid:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
        if self.proc is not None:
            try:
                self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            self.proc = None


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog=TOOL, description="The mgpu node's fence guard.")
    parser.add_argument("--state-dir", type=Path, required=True, help="The agent's state dir.")
    state_dir = parser.parse_args(argv).state_dir.absolute()
    if not state_dir.is_dir():
        parser.error(f"no such directory: {state_dir}")
    logging.basicConfig(
        filename=state_dir / GUARD_LOG_FILE,
        level=logging.INFO,
        format="%(asctime)s %(levelname)s guard: %(message)s",
    )
    if _take_pid_file(state_dir) is None:
        log.info("pid=%d: another guard watches %s", os.getpid(), state_dir)
        return
    signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)  # taken by sigtimedwait below
    guard = Guard(state_dir)
    log.info("pid=%d watches %s", os.getpid(), state_dir)
    while True:
        try:
            if not guard.tick(boottime(), time.time()):
                break
        except Exception:  # a bug must not end the fence: log it and look again
            log.exception("tick failed")
        if signal.sigtimedwait(STOP_SIGNALS, TICK_S) is not None:
            guard.why = "asked to stop"
            break
    log.info("pid=%d exits: %s", os.getpid(), guard.why)


if __name__ == "__main__":
    main()
