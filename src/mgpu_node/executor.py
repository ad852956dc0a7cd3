"""Runs jobs as child processes and reports what happens to them.

Each job runs under the sh wrapper (wrapper.py) in its own session and process group, so a
cancel reaches the whole tree (running.py: one job and the signals that end it). When a job's
main process exits, whatever it left behind in its group is killed too (as Slurm does when a
step ends), so a stray background process can neither hold a GPU nor keep the output pipe open;
where the node has cgroups (cgroups.py), so is everything left in the job's cgroup.
A launch of another run of a job whose earlier run still ends here waits for it (held.py).

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
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

from mgpu_core.constants import JOBS_DIR, OUTPUT_DIR, SCRIPTS_DIR
from mgpu_core.limits import MAX_REASON_LEN, shorten
from mgpu_core.models import GpuDevice, JobExited, JobSpec, Launch
from mgpu_node import procs
from mgpu_node.cgroups import ENTER_FAILED, NOT_ENTERED, JobCgroups, with_oom
from mgpu_node.containers import Runtime
from mgpu_node.held import HELD_CANCELLED, HeldLaunches
from mgpu_node.jobuser import (
    JobRefused,
    JobUserPolicy,
    agent_account,
    choose_account,
    describe,
)
from mgpu_node.lease import boottime
from mgpu_node.outlog import Outputs
from mgpu_node.running import RunningJob
from mgpu_node.spawn import Emit, Launcher, Relay, spawn_error
from mgpu_node.spool import ExitSpool, JobRecord, JobRecords
from mgpu_node.terminals import JobView
from mgpu_node.workspaces import Workspaces
from mgpu_node.wrapper import read_outcome

log = logging.getLogger(__name__)

# After the main process ends, how long its pipes may stay open before we stop waiting.
DRAIN_TIMEOUT_S = 5.0
LOST_WHILE_DOWN = "exit status lost: the job ended while the node agent was down"
LOST_ADOPTED = "exit status lost: the re-adopted job's wrapper was killed"


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
        cgroups: JobCgroups | None = None,
        workspaces: Workspaces | None = None,
        runtimes: tuple[Runtime, ...] = (),
    ) -> None:
        self.node_name = node_name
        self.workspaces = workspaces  # None: --workspace-root none
        self.job_users = job_users
        self.agent = agent_account()
        log.info("node=%s %s", node_name, describe(job_users, self.agent))
        # Absolute: jobs run in their own working directory and get these paths as arguments.
        state_dir = state_dir.absolute()
        self.cgroups = cgroups  # None: jobs are isolated by CUDA_VISIBLE_DEVICES only
        self.launcher = Launcher(node_name, devices, state_dir / SCRIPTS_DIR, cgroups, runtimes)
        self.records = JobRecords(state_dir / JOBS_DIR)
        self.exits = exits
        self.emit = emit
        # The agent's (sent while its link is up); by default every chunk goes to ``emit``.
        self.outputs = outputs or Outputs(state_dir / OUTPUT_DIR, lambda m: _sent(emit, m))
        self.jobs: dict[int, RunningJob] = {}
        # Told that a job's process has ended, before its leftovers and cgroup are cleared
        # (which would kill a terminal's shell in it unannounced): the agent's terminals.
        self.on_ending: Callable[[int, str], None] = lambda job_id, why: None
        self._unsent: list[dict[str, Any]] = []  # exits put, not yet flushed and sent
        # Launches of another run of a job whose earlier run still ends here.
        self.held = HeldLaunches()
        self._stopping = False

    def running_ids(self) -> list[int]:
        return sorted(self.jobs)

    def job_sessions(self) -> set[int]:
        """Session ids of our jobs: a GPU process in one of them is ours, not a stranger's."""
        return {job.pid for job in self.jobs.values()}

    # ---- launch --------------------------------------------------------------------------

    def account_uid(self, user: str) -> int | None:
        """The uid a job of ``user`` runs as on this node (None: it may not run here)."""
        try:
            account = choose_account(user, self.job_users, agent=self.agent, node=self.node_name)
        except JobRefused:
            return None
        return (account or self.agent).uid

    def launch(self, launch: Launch) -> None:
        job_id, spec = launch.job_id, launch.spec
        if job_id in self.jobs:
            self.held.hold(self.jobs[job_id], launch)
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
            workspace = None
            if self.workspaces is not None:  # made (or checked) before the job can look
                workspace = self.workspaces.prepare(launch.user, account or self.agent)
            proc = self.launcher.start(launch, status_file, account, workspace=workspace)
        except (OSError, ValueError) as exc:
            self._launch_failed(job_id, spec, exc, launch.restart_count)
            return
        created = procs.create_time(proc.pid) or 0.0
        record = JobRecord.started(launch, proc.pid, created, time.time(), boottime())
        self._save(record)
        job = RunningJob(record, proc, pidfd=procs.open_pidfd(proc.pid), launch=launch)
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

    def _release(self, job_id: int) -> None:
        """An exit is out: start the launch held for its job's next run, or report that it
        never ran."""
        if job_id in self.jobs:
            return
        released = self.held.release(job_id, stopping=self._stopping)
        if released is None:
            return
        launch, start = released
        if start:
            self.launch(launch)
        else:
            self._report_exit(
                job_id,
                None,
                None,
                timed_out=False,
                reason=HELD_CANCELLED,
                restart_count=launch.restart_count,
            )

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
            job_id,
            code,
            None,
            timed_out=False,
            reason=reason,
            restart_count=restart_count,
            output_bytes=self.outputs.end(job_id),
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
        if self.cgroups is not None:  # the groups of the jobs that ended meanwhile
            self.cgroups.prune(set(self.jobs))

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
        oom_kills = self._oom_kills(record.job_id)  # its groups are pruned after this
        reason = with_oom(record.exit_reason(sig, note=failure), oom_kills)
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
            output_bytes=self.outputs.end(record.job_id) if record.interactive else None,
            oom_killed=oom_kills > 0,
        )

    def _oom_kills(self, job_id: int) -> int:
        return self.cgroups.oom_kills(job_id) if self.cgroups is not None else 0

    # ---- running -------------------------------------------------------------------------

    def _watch(self, job: RunningJob) -> None:
        """Arm the job's timers and start waiting for its end."""
        job.start_timers(self._time_limit)
        job.waiter = asyncio.get_running_loop().create_task(self._wait(job))

    async def _wait(self, job: RunningJob) -> None:
        rc = await job.wait_end()
        record = job.record
        why = "time limit" if record.timed_out else "cancelled" if record.cancelled else "exited"
        job.ending = True  # no terminal opens in it any more
        self.on_ending(job.job_id, why)
        procs.signal_group(job.pid, signal.SIGKILL)  # leftovers of the job's group
        oom_kills = self._oom_kills(job.job_id)  # counted in its memory group: read it first
        if self.cgroups is not None:  # and of its cgroup: those that left the group too
            await self.cgroups.remove(job.job_id)
        if job.readers:
            await asyncio.wait([r.done for r in job.readers], timeout=DRAIN_TIMEOUT_S)
            for reader in job.readers:
                reader.close()
        job.stop_timers()
        job.ended = True
        del self.jobs[job.job_id]
        self.records.apply_mark(job.record)  # fenced or ended by the guard while we were frozen
        exit_code, sig, note = self._outcome(job, rc)
        log.info(
            "job=%d node=%s exited code=%s signal=%s", job.job_id, self.node_name, exit_code, sig
        )
        reason = with_oom(job.record.exit_reason(sig, note=note), oom_kills)
        self._report_exit(
            job.job_id,
            exit_code,
            sig,
            timed_out=job.record.timed_out,
            reason=reason,
            restart_count=job.record.restart_count,
            fenced=bool(job.record.fenced_s),
            output_bytes=self.outputs.end(job.job_id) if job.record.interactive else None,
            oom_killed=oom_kills > 0,
        )

    def _outcome(self, job: RunningJob, rc: int | None) -> tuple[int | None, int | None, str]:
        """(exit code, signal, why it is unknown or why the job could not start): the
        wrapper's record is the best source; it also covers the case where re-raising the
        signal was impossible (ignored)."""
        status = read_outcome(self.records.status_file(job.job_id))
        if status is not None:
            return status
        if rc == ENTER_FAILED and self.cgroups is not None:
            return rc, None, NOT_ENTERED  # its gate said so in its output too
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
        output_bytes: int | None = None,
        oom_killed: bool = False,
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
            output_bytes=output_bytes,
            oom_killed=oom_killed,
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
        self.held.cancel(job_id)
        job = self.jobs.get(job_id)
        if job is None:
            return
        job.record.cancelled = True
        log.info("job=%d cancel requested (%s)", job_id, reason)
        self._terminate(job)

    def send_signal(self, job_id: int, sig: int, scope: str) -> None:
        """scancel --signal: ``sig`` to the job's process group and strays ("all"), or to its
        batch shell only ("batch": the wrapper's child); the job goes on. The wrapper traps
        the usual ones (wrapper.py), so it outlives them to record the job's end."""
        job = self.jobs.get(job_id)
        if job is None:
            return  # not running here (a held launch has nothing to signal yet)
        log.info("job=%d signal %d to %s", job_id, sig, scope)
        if scope == "batch":
            procs.signal_children(job.pid, sig)
        else:
            procs.signal_tree(job.pid, sig)

    def job_view(self, job_id: int) -> JobView | None:
        """What a terminal into a running job needs of it (None: not running here)."""
        job = self.jobs.get(job_id)
        if job is None or job.ended or job.ending:
            return None
        record = job.record
        ttl_s = record.time_limit_s - record.grace_s if record.time_limit_s else 0
        contained = None
        if record.container_image and job.launch is not None:
            launch = job.launch
            contained = partial(self.launcher.terminal_command, launch)
        uid = self.account_uid(job.launch.user) if job.launch is not None else None
        return JobView(
            job.pid,
            record.start_wall,
            ttl_s,
            record.grace_s,
            uid=-1 if uid is None else uid,
            alive=partial(procs.is_same_live_process, record.pid, record.create_time),
            container_image=record.container_image,
            contained=contained,
        )

    def set_time_limit(self, job_id: int, time_limit_s: int) -> None:
        """A session's new TTL (session extend): its end and warnings move; its grace stays."""
        job = self.jobs.get(job_id)
        if job is None or job.record.terminate_wall:
            return  # not here, or already being ended
        record = job.record
        record.time_limit_s = time_limit_s + record.grace_s if time_limit_s else 0
        self._save(record)
        job.stop_timers()
        job.start_timers(self._time_limit)
        log.info("job=%d time limit now %d s", job_id, time_limit_s)

    def _time_limit(self, job: RunningJob) -> None:
        job.record.timed_out = True
        log.info("job=%d reached its time limit", job.job_id)
        self._terminate(job)

    def _terminate(self, job: RunningJob) -> None:
        job.terminate()
        self._save(job.record)  # a restarted agent keeps the flags and the pending SIGKILL

    async def stop_all(self) -> None:
        """Kill every job and wait for their exits to be reported (held launches: as never
        started)."""
        self._stopping = True
        for job in list(self.jobs.values()):
            job.record.cancelled = True
            job.kill_now()
        waiters = [job.waiter for job in self.jobs.values() if job.waiter is not None]
        if waiters:
            await asyncio.wait(waiters, timeout=DRAIN_TIMEOUT_S + 1)
        while self._unsent:  # twice when a held launch's exit follows its old run's
            self._send_exits()

    def detach(self) -> None:
        """Stop watching the jobs and leave them running, for the next agent to re-adopt."""
        for job in self.jobs.values():
            job.leave()
        if self.jobs:
            log.info("leaving %d job(s) running: %s", len(self.jobs), self.running_ids())
        self.held.log_dropped()
        self.jobs.clear()


def _sent(emit: Emit, msg: dict[str, Any]) -> bool:
    emit(msg)
    return True
