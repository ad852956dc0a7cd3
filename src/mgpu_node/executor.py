"""Runs jobs as child processes and reports what happens to them.

Each job runs under the sh wrapper (wrapper.py) in its own session and process group, so a
cancel reaches the whole tree: SIGTERM to the group, SIGKILL after the grace period. When a
job's main process exits, whatever it left behind in its group is killed too (as Slurm does
when a step ends), so a stray background process can neither hold a GPU nor keep the output
pipe open.

Jobs outlive the agent. Each running job has a record on disk (spool.JobRecord); an agent
that starts finds the records its predecessor left and re-adopts the jobs still running: it
reports them, kills them on request, enforces what is left of their time limit, and reports
their exits, read from the wrapper's status file since they are no longer its children. The
new output of a re-adopted interactive job is not relayed: its pipes were the old agent's (what
it printed before stays in its output log, outlog.py, and can be replayed).

The agent is the source of truth for its processes; the master learns about them only through
the events passed to ``emit``: ``job_started``, ``job_output`` (interactive jobs, through their
output log: ``outputs``), and exactly one ``job_exited`` per launched job, saved to the exit
spool before it is emitted.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mgpu_core.constants import JOBS_DIR, OUTPUT_DIR, SCRIPTS_DIR
from mgpu_core.limits import MAX_REASON_LEN, shorten
from mgpu_core.models import GpuDevice, JobExited, JobSpec, Launch
from mgpu_node import procs
from mgpu_node.jobuser import JobUserPolicy, agent_account, choose_account, describe
from mgpu_node.lease import boottime
from mgpu_node.outlog import Outputs
from mgpu_node.spawn import Emit, Launcher, Relay, spawn_error
from mgpu_node.spool import ExitSpool, JobRecord, JobRecords
from mgpu_node.wrapper import read_outcome

log = logging.getLogger(__name__)

# After the main process ends, how long its pipes may stay open before we stop waiting.
DRAIN_TIMEOUT_S = 5.0
# A SIGTERM sent before the job's command runs can be lost in the wrapper's fork (wrapper.py):
# then it is sent again once the command runs, which is checked this often until then.
START_POLL_S = 0.02
LOST_WHILE_DOWN = "exit status lost: the job ended while the node agent was down"
LOST_ADOPTED = "exit status lost: the re-adopted job's wrapper was killed"
HELD_CANCELLED = "cancelled before it started (its previous run was still ending)"


@dataclass(slots=True, eq=False)
class RunningJob:
    record: JobRecord
    proc: subprocess.Popen[bytes] | None  # None: re-adopted, not our child
    pidfd: int | None = None  # until the waiter takes it
    kill_sent: bool = False  # SIGKILL sent: the wrapper had no chance to record a status
    kill_handle: asyncio.TimerHandle | None = None
    limit_handle: asyncio.TimerHandle | None = None
    warn_handle: asyncio.TimerHandle | None = None
    readers: list[Relay] = field(default_factory=list)
    waiter: asyncio.Task[None] | None = None
    term_again: asyncio.Task[None] | None = None  # see _term_when_started
    duplicate_logged: bool = False

    @property
    def job_id(self) -> int:
        return self.record.job_id

    @property
    def pid(self) -> int:
        return self.record.pid  # the wrapper: leader of the job's session and process group


class Executor:
    def __init__(
        self,
        *,
        node_name: str,
        devices: list[GpuDevice],
        state_dir: Path,
        exits: ExitSpool,
        emit: Emit,
        job_users: JobUserPolicy,
        outputs: Outputs | None = None,
    ) -> None:
        self.node_name = node_name
        self.job_users = job_users
        self.agent = agent_account()
        log.info("node=%s %s", node_name, describe(job_users, self.agent))
        # Absolute: jobs run in their own working directory and get these paths as arguments.
        state_dir = state_dir.absolute()
        self.launcher = Launcher(node_name, devices, state_dir / SCRIPTS_DIR)
        self.records = JobRecords(state_dir / JOBS_DIR)
        self.exits = exits
        self.emit = emit
        # The agent's (sent while its link is up); by default every chunk goes to ``emit``.
        self.outputs = outputs or Outputs(state_dir / OUTPUT_DIR, lambda m: _sent(emit, m))
        self.jobs: dict[int, RunningJob] = {}
        self._unsent: list[dict[str, Any]] = []  # exits put, not yet flushed and sent
        # Launches of another run of a job whose earlier run still ends here (_hold).
        self._held: dict[int, Launch] = {}
        self._held_cancelled: set[int] = set()
        self._stopping = False

    def running_ids(self) -> list[int]:
        return sorted(self.jobs)

    def job_sessions(self) -> set[int]:
        """Session ids of our jobs: a GPU process in one of them is ours, not a stranger's."""
        return {job.pid for job in self.jobs.values()}

    # ---- launch --------------------------------------------------------------------------

    def launch(self, launch: Launch) -> None:
        job_id, spec = launch.job_id, launch.spec
        if job_id in self.jobs:
            self._hold(self.jobs[job_id], launch)
            return
        if job_id in self.exits:
            # A requeued job launched again: the master no longer waits for the old run's exit.
            log.warning("job=%d launched again; its previous exit is dropped", job_id)
            self.exits.ack(job_id)
        if spec.interactive:
            self.outputs.start(job_id)  # a new run's output starts at offset 0
        try:
            account = choose_account(
                launch.user, self.job_users, agent=self.agent, node=self.node_name
            )
            status_file = self.records.status_file(job_id)
            proc = self.launcher.start(launch, status_file, account)
        except (OSError, ValueError) as exc:
            self._launch_failed(job_id, spec, exc, launch.restart_count)
            return
        record = JobRecord(
            job_id=job_id,
            pid=proc.pid,
            create_time=procs.create_time(proc.pid) or 0.0,
            start_wall=time.time(),
            start_boot=boottime(),
            time_limit_s=spec.time_limit_s,
            kill_grace_s=launch.kill_grace_s,
            interactive=spec.interactive,
            restart_count=launch.restart_count,
            warn_signal=spec.warn_signal,
            warn_before_s=spec.warn_before_s,
        )
        self._save(record)
        job = RunningJob(record, proc, pidfd=procs.open_pidfd(proc.pid))
        self.jobs[job_id] = job
        self.emit({"t": "job_started", "job_id": job_id, "pid": proc.pid})
        log.info(
            "job=%d node=%s state=RUNNING pid=%d gpus=%s",
            job_id,
            self.node_name,
            proc.pid,
            ",".join(str(i) for i in launch.gpu_indices) or "-",
        )
        if spec.interactive:
            assert proc.stdout is not None and proc.stderr is not None
            job.readers = [
                Relay(proc.stdout, job_id, 1, self.outputs.write),
                Relay(proc.stderr, job_id, 2, self.outputs.write),
            ]
        self._watch(job)

    def _hold(self, job: RunningJob, launch: Launch) -> None:
        """A launch for a job that runs here. The same run again is a duplicate: ignored.
        Another run -- the master relaunched the job after taking this run for dead (fenced)
        while it is still ending -- waits until this run has exited and its exit is sent, then
        starts (:meth:`_release`): never dropped, never beside the old one."""
        job_id, run = launch.job_id, launch.restart_count
        held = self._held.get(job_id)
        if run == job.record.restart_count or (held is not None and run == held.restart_count):
            if not job.duplicate_logged:
                job.duplicate_logged = True
                log.warning("job=%d run %d already here; duplicate launch ignored", job_id, run)
            return
        if held is not None:
            log.warning("job=%d run %d replaces held run %d", job_id, run, held.restart_count)
        self._held[job_id] = launch
        self._held_cancelled.discard(job_id)
        log.info(
            "job=%d run %d held until run %d has exited", job_id, run, job.record.restart_count
        )

    def _release(self, job_id: int) -> None:
        """The run a held launch waited for has exited and its exit is out: start the held one,
        or report that it never ran (cancelled meanwhile, or the agent is stopping)."""
        launch = self._held.get(job_id)
        if launch is None or job_id in self.jobs:
            return
        del self._held[job_id]
        if job_id in self._held_cancelled or self._stopping:
            self._held_cancelled.discard(job_id)
            log.info("job=%d run %d cancelled before it started", job_id, launch.restart_count)
            self._report_exit(
                job_id,
                None,
                None,
                timed_out=False,
                reason=HELD_CANCELLED,
                restart_count=launch.restart_count,
            )
        else:
            log.info("job=%d run %d released", job_id, launch.restart_count)
            self.launch(launch)

    def _launch_failed(
        self, job_id: int, spec: JobSpec, exc: OSError | ValueError, restart_count: int
    ) -> None:
        reason = spawn_error(exc, spec)
        log.warning("job=%d failed to start: %s", job_id, reason)
        reason = shorten(reason, MAX_REASON_LEN)  # it may quote a path or argument in full
        if spec.interactive:
            self.outputs.write(job_id, 2, f"mgpu: {reason}\n".encode())
        code = 127 if isinstance(exc, FileNotFoundError | PermissionError) else 1
        self._report_exit(
            job_id, code, None, timed_out=False, reason=reason, restart_count=restart_count
        )

    # ---- re-adoption ---------------------------------------------------------------------

    def adopt_all(self) -> None:
        """Take over the jobs a previous agent left running; report those that ended since."""
        for record in self.records.load():
            self.records.apply_mark(record)  # what the guard did while no agent watched
            if record.job_id in self.exits or record.job_id in self.jobs:
                self.records.remove(record.job_id)  # its exit was saved before a crash
            elif not self._adopt(record):
                self._report_gone(record)

    def _adopt(self, record: JobRecord) -> bool:
        pidfd = procs.open_pidfd(record.pid)
        # Checked after opening the pidfd, which pins the process: no pid reuse in between.
        if not procs.is_same_live_process(record.pid, record.create_time):
            if pidfd is not None:
                os.close(pidfd)
            return False
        job = RunningJob(record, None, pidfd=pidfd)
        self.jobs[record.job_id] = job
        log.info(
            "job=%d re-adopted pid=%d%s",
            record.job_id,
            record.pid,
            " (interactive: output no longer relayed)" if record.interactive else "",
        )
        self._watch(job)
        return True

    def _report_gone(self, record: JobRecord) -> None:
        procs.kill_leftovers(record.pid, record.job_id)
        status = read_outcome(self.records.status_file(record.job_id))
        exit_code, sig, failure = status if status is not None else (None, None, LOST_WHILE_DOWN)
        reason = record.exit_reason(sig, note=failure)
        log.info(
            "job=%d node=%s ended while no agent ran: code=%s signal=%s",
            record.job_id,
            self.node_name,
            exit_code,
            sig,
        )
        self._report_exit(
            record.job_id,
            exit_code,
            sig,
            timed_out=record.timed_out,
            reason=reason,
            restart_count=record.restart_count,
            fenced=bool(record.fenced_s),
        )

    # ---- running -------------------------------------------------------------------------

    def _watch(self, job: RunningJob) -> None:
        """Arm the job's timers and start waiting for its end."""
        loop = asyncio.get_running_loop()
        record = job.record
        deadline = record.deadline()
        if record.terminate_wall:  # re-adopted while being terminated: finish the job off
            delay = record.terminate_wall + record.kill_grace_s - time.time()
            job.kill_handle = loop.call_later(max(0.0, delay), self._kill_now, job)
        elif deadline is not None:
            delay = deadline - time.time()
            job.limit_handle = loop.call_later(max(0.0, delay), self._time_limit, job)
            if record.warn_signal:
                warn_in = max(0.0, delay - record.warn_before_s)
                job.warn_handle = loop.call_later(warn_in, self._warn, job)
        job.waiter = loop.create_task(self._wait(job))

    async def _ended(self, job: RunningJob) -> int | None:
        """Wait for the wrapper to end; its waitpid status if it is our child."""
        pidfd, job.pidfd = job.pidfd, None
        proc = job.proc
        if pidfd is not None:
            await procs.wait_pidfd(pidfd)
        elif proc is not None:
            await procs.wait_polling(lambda: proc.poll() is None)
        else:
            record = job.record
            await procs.wait_polling(
                lambda: procs.is_same_live_process(record.pid, record.create_time)
            )
        return proc.wait() if proc is not None else None

    async def _wait(self, job: RunningJob) -> None:
        rc = await self._ended(job)
        procs.signal_group(job.pid, signal.SIGKILL)  # leftovers of the job's group
        if job.readers:
            await asyncio.wait([r.done for r in job.readers], timeout=DRAIN_TIMEOUT_S)
            for reader in job.readers:
                reader.close()
        for handle in (job.kill_handle, job.limit_handle, job.warn_handle):
            if handle is not None:
                handle.cancel()
        del self.jobs[job.job_id]
        self.records.apply_mark(job.record)  # fenced or ended by the guard while we were frozen
        exit_code, sig, note = self._outcome(job, rc)
        log.info(
            "job=%d node=%s exited code=%s signal=%s", job.job_id, self.node_name, exit_code, sig
        )
        reason = job.record.exit_reason(sig, note=note)
        self._report_exit(
            job.job_id,
            exit_code,
            sig,
            timed_out=job.record.timed_out,
            reason=reason,
            restart_count=job.record.restart_count,
            fenced=bool(job.record.fenced_s),
        )

    def _outcome(self, job: RunningJob, rc: int | None) -> tuple[int | None, int | None, str]:
        """(exit code, signal, why it is unknown or why the job could not start): the
        wrapper's record is the best source; it also covers the case where re-raising the
        signal was impossible (ignored)."""
        status = read_outcome(self.records.status_file(job.job_id))
        if status is not None:
            return status
        if rc is not None:
            return (None, -rc, "") if rc < 0 else (rc, None, "")
        if job.kill_sent:
            return None, signal.SIGKILL, ""
        return None, None, LOST_ADOPTED

    def _report_exit(
        self,
        job_id: int,
        exit_code: int | None,
        sig: int | None,
        *,
        timed_out: bool,
        reason: str,
        restart_count: int,
        fenced: bool = False,
    ) -> None:
        exited = JobExited(
            job_id=job_id,
            exit_code=exit_code,
            signal=sig,
            timed_out=timed_out,
            # The wire's limit: the master refuses a longer reason (a spawn error may quote a
            # 4,096-character path), and the exit would be lost.
            reason=shorten(reason, MAX_REASON_LEN),
            # Which run of the job this was: a late exit of an earlier run of a requeued job
            # must not end the current one.
            restart_count=restart_count,
            fenced=fenced,
        )
        msg = {"t": "job_exited", **exited.to_wire()}
        self.exits.put(msg)  # on disk before it is sent, and until the master acks it
        self.records.remove(job_id)
        self._unsent.append(msg)
        if len(self._unsent) == 1:
            asyncio.get_running_loop().call_soon(self._send_exits)

    def _send_exits(self) -> None:
        """The exits of one loop turn: one flush to disk for all of them, then send."""
        self.exits.sync()
        unsent, self._unsent = self._unsent, []
        for msg in unsent:
            self.emit(msg)
        for msg in unsent:
            self._release(msg["job_id"])

    def _save(self, record: JobRecord) -> None:
        try:
            self.records.put(record)
        except OSError as exc:
            log.error("job=%d record not saved (%s): not re-adoptable", record.job_id, exc)

    # ---- stopping ------------------------------------------------------------------------

    def kill(self, job_id: int, reason: str) -> None:
        if job_id in self._held:  # the master's current run: it never starts
            self._held_cancelled.add(job_id)
        job = self.jobs.get(job_id)
        if job is None:
            return
        job.record.cancelled = True
        log.info("job=%d cancel requested (%s)", job_id, reason)
        self._terminate(job)

    def _warn(self, job: RunningJob) -> None:
        """--signal: tell the job its time is nearly up (a training script checkpoints)."""
        log.info("job=%d warned with signal %d", job.job_id, job.record.warn_signal)
        procs.signal_tree(job.pid, job.record.warn_signal)

    def _time_limit(self, job: RunningJob) -> None:
        job.record.timed_out = True
        log.info("job=%d reached its time limit", job.job_id)
        self._terminate(job)

    def _terminate(self, job: RunningJob) -> None:
        if job.kill_handle is None:
            started = procs.command_started(job.pid)  # before the signal: see below
            procs.signal_tree(job.pid, signal.SIGTERM)
            job.record.terminate_wall = time.time()
            loop = asyncio.get_running_loop()
            job.kill_handle = loop.call_later(job.record.kill_grace_s, self._kill_now, job)
            if not started:
                job.term_again = loop.create_task(self._term_when_started(job))
        self._save(job.record)  # a restarted agent keeps the flags and the pending SIGKILL

    async def _term_when_started(self, job: RunningJob) -> None:
        """The SIGTERM went out before the job's command ran. The wrapper keeps one that
        reaches it before it forks the command (the command then never starts), but one that
        lands during the fork is lost: the new child still has the shell's handler and drops
        it (wrapper.py). So once the command runs, it gets SIGTERM again -- unless the job
        ended first or got its SIGKILL. The command can get two SIGTERMs only if it started
        between our look and our signal."""

        def waiting() -> bool:
            running = self.jobs.get(job.job_id) is job and not job.kill_sent
            return running and not procs.command_started(job.pid)

        await procs.wait_polling(waiting, START_POLL_S)
        if self.jobs.get(job.job_id) is job and not job.kill_sent:
            log.info("job=%d SIGTERM again: its command started after the first", job.job_id)
            procs.signal_tree(job.pid, signal.SIGTERM)

    def _kill_now(self, job: RunningJob) -> None:
        job.kill_sent = True
        procs.signal_tree(job.pid, signal.SIGKILL)

    async def stop_all(self) -> None:
        """Kill every job and wait for their exits to be reported (held launches: as never
        started)."""
        self._stopping = True
        for job in list(self.jobs.values()):
            job.record.cancelled = True
            self._kill_now(job)
        waiters = [job.waiter for job in self.jobs.values() if job.waiter is not None]
        if waiters:
            await asyncio.wait(waiters, timeout=DRAIN_TIMEOUT_S + 1)
        while self._unsent:  # twice when a held launch's exit follows its old run's
            self._send_exits()

    def detach(self) -> None:
        """Stop watching the jobs and leave them running, for the next agent to re-adopt."""
        for job in self.jobs.values():
            for handle in (job.kill_handle, job.limit_handle, job.warn_handle):
                if handle is not None:
                    handle.cancel()
            for reader in job.readers:
                reader.close()
            if job.waiter is not None:
                job.waiter.cancel()
            if job.pidfd is not None:
                os.close(job.pidfd)
                job.pidfd = None
        if self.jobs:
            log.info("leaving %d job(s) running: %s", len(self.jobs), self.running_ids())
        for job_id, launch in self._held.items():
            # Only in memory: the master finds the job gone from the next agent's reports.
            log.warning(
                "job=%d run %d held launch dropped: the agent stops", job_id, launch.restart_count
            )
        self.jobs.clear()


def _sent(emit: Emit, msg: dict[str, Any]) -> bool:
    emit(msg)
    return True
