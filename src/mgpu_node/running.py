"""One job the executor watches (its child, or re-adopted): its process, its timers, and the
signals that end it.

The job runs under the sh wrapper (wrapper.py) in its own session and process group, so a
cancel reaches the whole tree: SIGTERM to the group (and to descendants that left it), SIGKILL
after the grace period. Saving the job's record is the executor's: it does so after each of
these steps that a restarted agent must know about.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from mgpu_core.models import Launch
from mgpu_node import procs
from mgpu_node.spawn import Relay
from mgpu_node.spool import JobRecord

log = logging.getLogger(__name__)

# A SIGTERM sent before the job's command runs can be lost in the wrapper's fork (wrapper.py):
# then it is sent again once the command runs, which is checked this often until then.
START_POLL_S = 0.02


@dataclass(slots=True, eq=False)
class RunningJob:
    record: JobRecord
    proc: subprocess.Popen[bytes] | None  # None: re-adopted, not our child
    launch: Launch | None = None  # None: re-adopted (a terminal in its container needs it)
    pidfd: int | None = None  # until the waiter takes it
    kill_sent: bool = False  # SIGKILL sent: the wrapper had no chance to record a status
    kill_handle: asyncio.TimerHandle | None = None
    limit_handle: asyncio.TimerHandle | None = None
    warn_handle: asyncio.TimerHandle | None = None
    readers: list[Relay] = field(default_factory=list)
    waiter: asyncio.Task[None] | None = None
    term_again: asyncio.Task[None] | None = None  # see _term_when_started
    duplicate_logged: bool = False
    ended: bool = False  # no longer the executor's: it exited, or was left to the next agent
    ending: bool = False  # its wrapper has exited (and been reaped): its pid is not its own

    @property
    def job_id(self) -> int:
        return self.record.job_id

    @property
    def pid(self) -> int:
        return self.record.pid  # the wrapper: leader of the job's session and process group

    def start_timers(self, on_time_limit: Callable[[RunningJob], None]) -> None:
        """Arm the kill, time limit and warning timers that the record calls for."""
        loop = asyncio.get_running_loop()
        record = self.record
        deadline = record.deadline()
        if record.terminate_wall:  # re-adopted while being terminated: finish the job off
            delay = record.terminate_wall + record.kill_grace_s - time.time()
            self.kill_handle = loop.call_later(max(0.0, delay), self.kill_now)
        elif deadline is not None:
            delay = deadline - time.time()
            self.limit_handle = loop.call_later(max(0.0, delay), on_time_limit, self)
            if record.warn_signal:
                warn_in = max(0.0, delay - record.warn_before_s)
                self.warn_handle = loop.call_later(warn_in, self._warn)

    def stop_timers(self) -> None:
        for handle in (self.kill_handle, self.limit_handle, self.warn_handle):
            if handle is not None:
                handle.cancel()

    async def wait_end(self) -> int | None:
        """Wait for the wrapper to end; its waitpid status if it is our child."""
        pidfd, self.pidfd = self.pidfd, None
        proc = self.proc
        if pidfd is not None:
            await procs.wait_pidfd(pidfd)
        elif proc is not None:
            await procs.wait_polling(lambda: proc.poll() is None)
        else:
            record = self.record
            await procs.wait_polling(
                lambda: procs.is_same_live_process(record.pid, record.create_time)
            )
        return proc.wait() if proc is not None else None

    def leave(self) -> None:
        """Stop watching the job and leave it running, for the next agent to re-adopt."""
        self.ended = True
        self.stop_timers()
        for reader in self.readers:
            reader.close()
        if self.waiter is not None:
            self.waiter.cancel()
        if self.pidfd is not None:
            os.close(self.pidfd)
            self.pidfd = None

    def _warn(self) -> None:
        """--signal: tell the job its time is nearly up (a training script checkpoints)."""
        log.info("job=%d warned with signal %d", self.job_id, self.record.warn_signal)
        procs.signal_tree(self.pid, self.record.warn_signal)

    def terminate(self) -> None:
        """SIGTERM, then SIGKILL after the grace period (once, however often asked)."""
        if self.kill_handle is None:
            started = procs.command_started(self.pid)  # before the signal: see below
            procs.signal_tree(self.pid, signal.SIGTERM)
            self.record.terminate_wall = time.time()
            loop = asyncio.get_running_loop()
            self.kill_handle = loop.call_later(self.record.kill_grace_s, self.kill_now)
            if not started:
                self.term_again = loop.create_task(self._term_when_started())

    async def _term_when_started(self) -> None:
        """The SIGTERM went out before the job's command ran. The wrapper keeps one that
        reaches it before it forks the command (the command then never starts), but one that
        lands during the fork is lost: the new child still has the shell's handler and drops
        it (wrapper.py). So once the command runs, it gets SIGTERM again -- unless the job
        ended first or got its SIGKILL. The command can get two SIGTERMs only if it started
        between our look and our signal."""

        def waiting() -> bool:
            running = not self.ended and not self.kill_sent
            return running and not procs.command_started(self.pid)

        await procs.wait_polling(waiting, START_POLL_S)
        if not self.ended and not self.kill_sent:
            log.info("job=%d SIGTERM again: its command started after the first", self.job_id)
            procs.signal_tree(self.pid, signal.SIGTERM)

    def kill_now(self) -> None:
        self.kill_sent = True
        procs.signal_tree(self.pid, signal.SIGKILL)
