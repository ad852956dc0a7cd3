"""Terminals inside running jobs: a shell on a pseudo-terminal, as the job's user, with the
job's environment (its GPUs, MGPU_* and SLURM_* variables), in the job's cgroups, for
``mgpu_client session enter`` and ``srun --jobid ID --pty`` (the master relays it; termmsgs.py
has the messages).

The shell gets the pty as its controlling terminal (util-linux ``setsid --ctty``), so Ctrl-C,
Ctrl-Z and job control behave as in an ssh session; a resize reaches its programs as SIGWINCH.
It starts stopped behind a gate, is put in the job's cgroups (as the job was), then runs: it
can use the job's GPUs and no other. It ends when the client closes it (SIGHUP to its
process group, as a terminal that hangs up), when the job ends, or when the agent stops.

A session is warned on its terminals before its TTL (its time limit) runs out, and again
when the TTL is reached and its grace begins.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import pwd
import shutil
import signal
import struct
import subprocess
import termios
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mgpu_core.termmsgs import MAX_PTY_CHUNK
from mgpu_node.cgroups import given_back, hold_loader_vars, wait_stopped

log = logging.getLogger(__name__)

SHELL = "/bin/sh"
SETSID = shutil.which("setsid", path="/usr/bin:/bin") or "/usr/bin/setsid"  # not the job's PATH
# The gate, as the job's user: stop until the agent has put us in the job's cgroups; then go to
# the terminal's directory (as the user: its permissions apply), give back the dynamic
# loader's variables held aside (a job's LD_PRELOAD must not run in the gate, before the stop,
# outside the job's cgroups), become a session leader whose controlling terminal is our stdin
# (the pty), and run the shell.
GATE = 'kill -STOP $$; cd -- "$MGPU_TERMINAL_DIR" 2>/dev/null || cd; unset MGPU_TERMINAL_DIR\n'
WARN_BEFORE_S = (600, 60)  # a session's terminals are told this long before its TTL ends
MAX_PENDING_INPUT = 256 * 1024  # keystrokes the shell has not read: past this, hung up
MAX_TERMINALS = 256  # on this node at once (each is a pty, two fds and a process)
MAX_TERMINALS_PER_JOB = 16
MAX_LINK_BACKLOG = 1024 * 1024  # output waiting for the master link: reading pauses past it

Send = Callable[[dict[str, Any]], bool]
Contain = Callable[[list[str], dict[str, str], int, int], tuple[list[str], dict[str, str]]]


@dataclass(frozen=True, slots=True)
class JobView:
    """What the agent knows of a running job that a terminal needs."""

    pid: int  # its wrapper: its environment, directory, user
    start_wall: float
    ttl_s: int  # its time limit (a session's TTL); 0 = none
    grace_s: int  # a session's grace after the TTL
    uid: int = -1  # the account the job runs as here (-1: any, for tests)
    # Whether ``pid`` is still the job's wrapper (not a process that reused the pid).
    alive: Callable[[], bool] = lambda: True
    # --container-image: the shell runs in a container of it, made by ``contained(argv, env,
    # uid, gid)`` (None: the agent restarted since the job started, and cannot make it).
    container_image: str = ""
    contained: Contain | None = None


@dataclass(slots=True)
class _Term:
    term_id: int
    job_id: int
    proc: subprocess.Popen[bytes]
    fd: int  # the pty's master side
    pending: bytearray = field(default_factory=bytearray)  # input the pty has not taken yet


class Terminals:
    def __init__(
        self,
        *,
        send: Send,
        job: Callable[[int], JobView | None],
        enter_cgroups: Callable[[int, int], None] | None = None,
        backlog: Callable[[], int] = lambda: 0,
    ) -> None:
        """``job``: a running job's view (None: not running here); ``enter_cgroups(job_id,
        pid)``: put a process in the job's cgroups (OSError if it cannot), None without them."""
        self.send = send
        self.backlog = backlog  # bytes waiting to go out on the master link
        self.job = job
        self.enter_cgroups = enter_cgroups
        self._terms: dict[int, _Term] = {}
        self._warnings: dict[int, list[asyncio.TimerHandle]] = {}
        self._reaping: set[asyncio.Task[None]] = set()  # shells hung up, being collected

    # ---- orders from the master ------------------------------------------------------------

    def on_order(self, msg: dict[str, Any]) -> None:
        kind = msg["t"]
        if kind == "pty_open":
            self._open(msg)
            return
        term = self._terms.get(msg["term_id"])
        if term is None:
            return
        if kind == "pty_input":
            term.pending += msg["data"]
            if len(term.pending) > MAX_PENDING_INPUT:  # the shell does not read it
                self._notice(term, "input not read by the shell: this terminal closes")
                self._hang_up(term)
                self._exit(term.term_id, error="the shell did not read its input; enter again")
                return
            self._write(term)
        elif kind == "pty_resize":
            _set_size(term.fd, msg["rows"], msg["cols"])
        elif kind == "pty_close":
            self._hang_up(term)

    def _open(self, msg: dict[str, Any]) -> None:
        term_id, job_id = msg["term_id"], msg["job_id"]
        view = self.job(job_id)
        if view is None:
            self._exit(term_id, error=f"job {job_id} does not run on this node")
            return
        here = sum(1 for t in self._terms.values() if t.job_id == job_id)
        if len(self._terms) >= MAX_TERMINALS or here >= MAX_TERMINALS_PER_JOB:
            self._exit(term_id, error=f"too many terminals open (job {job_id}: {here})")
            return
        try:
            proc, fd = self._spawn(view, job_id, msg)
        except Exception as exc:  # whatever it is, this order fails, not the agent's link
            log.warning("terminal %d into job %d: %s", term_id, job_id, exc)
            self._exit(term_id, error=f"cannot start a shell in job {job_id}: {exc}")
            return
        term = _Term(term_id, job_id, proc, fd)
        self._terms[term_id] = term
        asyncio.get_running_loop().add_reader(fd, self._read, term)
        log.info("terminal %d into job %d: pid %d", term_id, job_id, proc.pid)
        if job_id not in self._warnings:
            self.schedule_warnings(job_id)

    def _spawn(
        self, view: JobView, job_id: int, msg: dict[str, Any]
    ) -> tuple[subprocess.Popen[bytes], int]:
        status = _proc_status(view.pid)
        env = given_back(_job_environment(view.pid))  # as the job has it past its gate
        cwd = env.get("MGPU_WORKSPACE") or os.readlink(f"/proc/{view.pid}/cwd")
        if not view.alive():  # read from the job's wrapper, not a process that reused its pid
            raise OSError(f"job {job_id} has ended")
        uid, gid = status["Uid"], status["Gid"]
        if view.uid >= 0 and uid != view.uid:
            raise OSError(f"job {job_id}'s process is not its owner's")
        if uid != os.geteuid() and os.geteuid() != 0:
            raise OSError("the agent may not start processes as the job's user")
        account = pwd.getpwuid(uid)
        env.update(TERM=msg["term"], MGPU_TERMINAL="1", HOME=account.pw_dir, USER=account.pw_name)
        command = list(msg["command"]) or [account.pw_shell or SHELL, "-l"]
        if view.container_image:  # the shell in the job's image, mounts and GPUs
            if view.contained is None:
                raise OSError(
                    f"job {job_id} runs in a container and this agent restarted since it "
                    "started: its terminal cannot be made again here"
                )
            command, env = view.contained(list(msg["command"]) or [SHELL], env, uid, gid)
            env.update(TERM=msg["term"])
        env["MGPU_TERMINAL_DIR"] = cwd  # entered by the gate, as the user
        env, restore = hold_loader_vars(env)
        master, slave = os.openpty()
        try:
            _set_size(master, msg["rows"], msg["cols"])
            same = uid == os.geteuid()
            proc = subprocess.Popen(
                [
                    SHELL,
                    "-c",
                    f'{GATE}{restore}exec {SETSID} --ctty "$@"',
                    "mgpu-terminal",
                    *command,
                ],
                stdin=slave,
                stdout=slave,
                stderr=slave,
                env=env,
                cwd="/",  # not the job's directory as root: the gate goes there as the user
                close_fds=True,
                user=None if same else uid,
                group=None if same else gid,
                extra_groups=None if same else os.getgrouplist(account.pw_name, gid),
            )
        except BaseException:
            os.close(master)
            raise
        finally:
            os.close(slave)
        try:
            wait_stopped(proc.pid)
            if self.enter_cgroups is not None:
                self.enter_cgroups(job_id, proc.pid)
        except OSError:
            proc.kill()
            proc.wait()
            os.close(master)
            raise
        os.kill(proc.pid, signal.SIGCONT)
        os.set_blocking(master, False)
        return proc, master

    # ---- the pty ---------------------------------------------------------------------------

    def _read(self, term: _Term) -> None:
        try:
            data = os.read(term.fd, MAX_PTY_CHUNK)
        except BlockingIOError:
            return
        except OSError:  # EIO: every process on the terminal has closed it
            data = b""
        if not data:
            self._finish(term)
            return
        self.send({"t": "pty_output", "term_id": term.term_id, "data": data})
        if self.backlog() > MAX_LINK_BACKLOG:  # the link is behind: the program waits
            loop = asyncio.get_running_loop()
            loop.remove_reader(term.fd)
            loop.call_later(0.05, self._resume, term)

    def _resume(self, term: _Term) -> None:
        if self._terms.get(term.term_id) is not term:
            return
        loop = asyncio.get_running_loop()
        if self.backlog() > MAX_LINK_BACKLOG // 2:
            loop.call_later(0.05, self._resume, term)
        else:
            loop.add_reader(term.fd, self._read, term)

    def _write(self, term: _Term) -> None:
        loop = asyncio.get_running_loop()
        try:
            written = os.write(term.fd, term.pending) if term.pending else 0
        except BlockingIOError:
            written = 0
        except OSError:
            term.pending.clear()
            return
        del term.pending[:written]
        loop.remove_writer(term.fd)
        if term.pending:  # the line discipline is full: the rest when it takes more
            loop.add_writer(term.fd, self._write, term)

    def _hang_up(self, term: _Term) -> None:
        """The client left: SIGHUP to the shell's group, as a terminal that hangs up."""
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(term.proc.pid, signal.SIGHUP)
        self._finish(term, told=False)

    def _finish(self, term: _Term, *, told: bool = True) -> None:
        if self._terms.pop(term.term_id, None) is None:
            return
        loop = asyncio.get_running_loop()
        loop.remove_reader(term.fd)
        loop.remove_writer(term.fd)
        os.close(term.fd)
        task = loop.create_task(self._reap(term, told))
        self._reaping.add(task)
        task.add_done_callback(self._reaping.discard)

    async def _reap(self, term: _Term, told: bool) -> None:
        """Collect the shell (in a thread: it may take a moment to go after a hang-up)."""
        try:
            rc = await asyncio.wait_for(asyncio.to_thread(term.proc.wait), 10.0)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(term.proc.pid, signal.SIGKILL)
            rc = await asyncio.to_thread(term.proc.wait)
        if told:
            code, sig = (None, -rc) if rc < 0 else (rc, None)
            self._exit(term.term_id, exit_code=code, signal=sig)

    def _exit(
        self,
        term_id: int,
        *,
        exit_code: int | None = None,
        signal: int | None = None,
        error: str = "",
    ) -> None:
        msg = {"t": "pty_exit", "term_id": term_id, "exit_code": exit_code, "signal": signal}
        self.send({**msg, "error": error})

    # ---- the job -------------------------------------------------------------------------

    def job_ended(self, job_id: int, why: str) -> None:
        """The job is over: its terminals are told, then hung up."""
        for handle in self._warnings.pop(job_id, ()):
            handle.cancel()
        for term in [t for t in self._terms.values() if t.job_id == job_id]:
            self._notice(term, f"job {job_id} ended ({why}): this terminal closes")
            self._hang_up(term)
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(term.proc.pid, signal.SIGKILL)  # nothing of it outlives the job
            self._exit(term.term_id, error=f"job {job_id} ended ({why})")

    def schedule_warnings(self, job_id: int) -> None:
        """(Again, after a new time limit:) tell the job's terminals ahead of its TTL's end,
        and when its grace begins."""
        for handle in self._warnings.pop(job_id, ()):
            handle.cancel()
        view = self.job(job_id)
        if view is None or not view.ttl_s:
            return
        loop = asyncio.get_running_loop()
        end = view.start_wall + view.ttl_s
        handles = []
        for before_s in WARN_BEFORE_S:
            delay = end - before_s - time.time()
            if delay > 0:
                text = f"job {job_id} ends in {_minutes(before_s)} (its time limit)"
                if view.grace_s:
                    text += f", then a grace of {_minutes(view.grace_s)}"
                text += f"; extend it: mgpu_client session extend {job_id} 1h"
                handles.append(loop.call_later(delay, self.notify, job_id, text))
        if view.grace_s:
            delay = end - time.time()
            text = (
                f"job {job_id} reached its time limit: it ends in {_minutes(view.grace_s)} "
                f"(grace); save your work, or: mgpu_client session extend {job_id} 1h"
            )
            handles.append(loop.call_later(max(0.0, delay), self.notify, job_id, text))
        self._warnings[job_id] = handles

    def notify(self, job_id: int, text: str) -> None:
        for term in self._terms.values():
            if term.job_id == job_id:
                self._notice(term, text)

    def _notice(self, term: _Term, text: str) -> None:
        """A line of mgpu's on the user's terminal (sent as output, not typed into the shell)."""
        data = f"\r\n[mgpu] {text}\r\n".encode()
        self.send({"t": "pty_output", "term_id": term.term_id, "data": data})

    def close(self) -> None:
        """The agent stops: every terminal hangs up."""
        for term in list(self._terms.values()):
            self._hang_up(term)
        for handles in self._warnings.values():
            for handle in handles:
                handle.cancel()
        self._warnings.clear()


def _set_size(fd: int, rows: int, cols: int) -> None:
    """The window size; the kernel sends SIGWINCH to the terminal's foreground group."""
    with contextlib.suppress(OSError):
        fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))


def _proc_status(pid: int) -> dict[str, int]:
    """The real uid and gid of ``pid`` (OSError if it is gone)."""
    found: dict[str, int] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("Uid", "Gid"):
            found[key] = int(value.split()[0])
    return found


def _job_environment(pid: int) -> dict[str, str]:
    """The environment the job was started with (its wrapper's)."""
    raw = Path(f"/proc/{pid}/environ").read_bytes()
    env = {}
    for item in raw.split(b"\0"):
        name, eq, value = item.partition(b"=")
        if eq and name:
            env[os.fsdecode(name)] = os.fsdecode(value)
    return env


def _minutes(seconds: int) -> str:
    return f"{seconds // 60} min" if seconds >= 120 else f"{seconds} s"
