"""Runs jobs as child processes and reports what happens to them.

Each job gets its own session and process group (``start_new_session``), so a cancel reaches
the whole tree: SIGTERM to the group, SIGKILL after the grace period. When a job's main
process exits, whatever it left behind in its group is killed too (as Slurm does when a step
ends), so a stray background process can neither hold a GPU nor keep the output pipe open.

The agent is the source of truth for its processes; the master learns about them only through
the events passed to ``emit``: ``job_started``, ``job_output`` (interactive jobs), and exactly
one ``job_exited`` per launched job.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import psutil

from mgpu_core.models import JobSpec, expand_path_template
from mgpu_node.gpus import GpuDevice

log = logging.getLogger(__name__)

OUTPUT_CHUNK_BYTES = 64 * 1024
# After the main process ends, how long its pipes may stay open before we stop waiting.
DRAIN_TIMEOUT_S = 5.0

Emit = Callable[[dict[str, Any]], None]


@dataclass(slots=True)
class RunningJob:
    job_id: int
    proc: asyncio.subprocess.Process
    kill_grace_s: float
    cancelled: bool = False
    timed_out: bool = False
    kill_handle: asyncio.TimerHandle | None = None
    limit_handle: asyncio.TimerHandle | None = None
    readers: list[asyncio.Task[None]] = field(default_factory=list)

    @property
    def pgid(self) -> int:
        return self.proc.pid  # start_new_session makes the child its group's leader


class Executor:
    def __init__(
        self, *, node_name: str, devices: list[GpuDevice], spool_dir: Path, emit: Emit
    ) -> None:
        self.node_name = node_name
        self.devices = devices
        self.spool_dir = spool_dir
        self.emit = emit
        self.jobs: dict[int, RunningJob] = {}
        self._waiters: set[asyncio.Task[None]] = set()

    def running_ids(self) -> list[int]:
        return sorted(self.jobs)

    def job_sessions(self) -> set[int]:
        """Session ids of our jobs: a GPU process in one of them is ours, not a stranger's."""
        return {job.pgid for job in self.jobs.values()}

    # ---- launch --------------------------------------------------------------------------

    async def launch(self, launch: dict[str, Any]) -> None:
        job_id: int = launch["job_id"]
        if job_id in self.jobs:
            log.warning("job=%d already running here; duplicate launch ignored", job_id)
            return
        spec = JobSpec.from_wire(launch["spec"])
        try:
            env = self._environment(job_id, spec, launch["gpu_indices"])
            argv = self._argv(job_id, spec)
            proc = await self._spawn(job_id, spec, argv, env, launch["user"])
        except (OSError, ValueError) as exc:
            reason = _spawn_error(exc, spec)
            log.warning("job=%d failed to start: %s", job_id, reason)
            if spec.interactive:
                self.emit(
                    {
                        "t": "job_output",
                        "job_id": job_id,
                        "stream": 2,
                        "data": f"mgpu: {reason}\n".encode(),
                    }
                )
            code = 127 if isinstance(exc, FileNotFoundError | PermissionError) else 1
            self.emit(
                {
                    "t": "job_exited",
                    "job_id": job_id,
                    "exit_code": code,
                    "signal": None,
                    "timed_out": False,
                    "reason": reason,
                }
            )
            return
        job = RunningJob(job_id, proc, float(launch["kill_grace_s"]))
        self.jobs[job_id] = job
        self.emit({"t": "job_started", "job_id": job_id, "pid": proc.pid})
        log.info(
            "job=%d node=%s state=RUNNING pid=%d gpus=%s",
            job_id,
            self.node_name,
            proc.pid,
            env["CUDA_VISIBLE_DEVICES"] or "-",
        )
        loop = asyncio.get_running_loop()
        if spec.time_limit_s > 0:
            job.limit_handle = loop.call_later(spec.time_limit_s, self._time_limit, job)
        if spec.interactive:
            assert proc.stdout is not None and proc.stderr is not None
            job.readers = [
                loop.create_task(self._relay(job_id, proc.stdout, 1)),
                loop.create_task(self._relay(job_id, proc.stderr, 2)),
            ]
        waiter = loop.create_task(self._wait(job))
        self._waiters.add(waiter)
        waiter.add_done_callback(self._waiters.discard)

    def _environment(self, job_id: int, spec: JobSpec, gpu_indices: list[int]) -> dict[str, str]:
        try:
            visible = [self.devices[i].visible_id for i in gpu_indices]
        except IndexError:
            raise ValueError(f"GPU index out of range: {gpu_indices}") from None
        env = dict(spec.env)
        env.update(
            {
                "CUDA_VISIBLE_DEVICES": ",".join(visible),
                "CUDA_DEVICE_ORDER": "PCI_BUS_ID",
                "MGPU_JOB_ID": str(job_id),
                "MGPU_JOB_NAME": spec.display_name(),
                "MGPU_NODE": self.node_name,
                "MGPU_GPUS": ",".join(str(i) for i in gpu_indices),
                "MGPU_SUBMIT_DIR": spec.cwd,
            }
        )
        return env

    def _argv(self, job_id: int, spec: JobSpec) -> list[str]:
        if spec.script is None:
            return spec.argv
        self.spool_dir.mkdir(parents=True, exist_ok=True)
        path = self.spool_dir / f"job-{job_id}.sh"
        path.write_text(spec.script)
        path.chmod(0o700)
        return [str(path), *spec.argv]

    def _open_output(self, job_id: int, spec: JobSpec, template: str, user: str) -> IO[bytes]:
        path = expand_path_template(
            template, job_id=job_id, name=spec.display_name(), user=user, node=self.node_name
        )
        return open(Path(spec.cwd) / path, "wb")

    async def _spawn(
        self, job_id: int, spec: JobSpec, argv: list[str], env: dict[str, str], user: str
    ) -> asyncio.subprocess.Process:
        if not Path(spec.cwd).is_dir():
            raise NotADirectoryError(
                f"working directory {spec.cwd} does not exist on {self.node_name}"
            )
        files: list[IO[bytes]] = []
        try:
            if spec.interactive:
                stdout: Any = asyncio.subprocess.PIPE
                stderr: Any = asyncio.subprocess.PIPE
            else:
                out_template = spec.stdout_path or "mgpu-%j.out"
                stdout = self._open_output(job_id, spec, out_template, user)
                files.append(stdout)
                if spec.stderr_path and spec.stderr_path != out_template:
                    stderr = self._open_output(job_id, spec, spec.stderr_path, user)
                    files.append(stderr)
                else:
                    stderr = asyncio.subprocess.STDOUT
            return await asyncio.create_subprocess_exec(
                *argv,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=stdout,
                stderr=stderr,
                cwd=spec.cwd,
                env=env,
                start_new_session=True,
                limit=OUTPUT_CHUNK_BYTES,
            )
        finally:
            for f in files:
                f.close()  # the child has its own descriptors now

    # ---- running -------------------------------------------------------------------------

    async def _relay(self, job_id: int, stream: asyncio.StreamReader, fd: int) -> None:
        while True:
            data = await stream.read(OUTPUT_CHUNK_BYTES)
            if not data:
                return
            self.emit({"t": "job_output", "job_id": job_id, "stream": fd, "data": data})

    async def _wait(self, job: RunningJob) -> None:
        rc = await job.proc.wait()
        _signal_group(job.pgid, signal.SIGKILL)  # leftovers of the job's group
        if job.readers:
            _done, pending = await asyncio.wait(job.readers, timeout=DRAIN_TIMEOUT_S)
            for task in pending:
                task.cancel()
        for handle in (job.kill_handle, job.limit_handle):
            if handle is not None:
                handle.cancel()
        del self.jobs[job.job_id]
        exit_code, sig = (None, -rc) if rc < 0 else (rc, None)
        reason = ""
        if job.timed_out:
            reason = "time limit reached"
        elif job.cancelled:
            reason = "cancelled"
        elif sig is not None:
            reason = f"killed by signal {_signal_name(sig)}"
        log.info(
            "job=%d node=%s exited code=%s signal=%s", job.job_id, self.node_name, exit_code, sig
        )
        self.emit(
            {
                "t": "job_exited",
                "job_id": job.job_id,
                "exit_code": exit_code,
                "signal": sig,
                "timed_out": job.timed_out,
                "reason": reason,
            }
        )

    def kill(self, job_id: int, reason: str) -> None:
        job = self.jobs.get(job_id)
        if job is None:
            return
        job.cancelled = True
        log.info("job=%d cancel requested (%s)", job_id, reason)
        self._terminate(job)

    def _time_limit(self, job: RunningJob) -> None:
        job.timed_out = True
        log.info("job=%d reached its time limit", job.job_id)
        self._terminate(job)

    def _terminate(self, job: RunningJob) -> None:
        if job.kill_handle is not None:
            return  # already terminating
        _signal_tree(job.proc.pid, signal.SIGTERM)
        loop = asyncio.get_running_loop()
        job.kill_handle = loop.call_later(
            job.kill_grace_s, _signal_tree, job.proc.pid, signal.SIGKILL
        )

    async def shutdown(self) -> None:
        """Kill every job and wait for their exits to be emitted."""
        for job in list(self.jobs.values()):
            job.cancelled = True
            _signal_tree(job.proc.pid, signal.SIGKILL)
        if self._waiters:
            await asyncio.wait(list(self._waiters), timeout=DRAIN_TIMEOUT_S + 1)


def _signal_group(pgid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def _signal_tree(pid: int, sig: int) -> None:
    """Signal the job's process group and any descendant that left it (setpgid/setsid)."""
    strays: list[psutil.Process] = []
    with contextlib.suppress(psutil.Error):
        strays = psutil.Process(pid).children(recursive=True)
    _signal_group(pid, sig)
    for child in strays:
        with contextlib.suppress(psutil.Error, OSError):
            if os.getpgid(child.pid) != pid:
                child.send_signal(sig)


def _spawn_error(exc: BaseException, spec: JobSpec) -> str:
    if (
        isinstance(exc, FileNotFoundError)
        and exc.filename
        and spec.argv
        and exc.filename == spec.argv[0]
    ):
        return f"execve(): {spec.argv[0]}: No such file or directory"
    if isinstance(exc, OSError) and exc.strerror:
        where = f": {exc.filename}" if exc.filename else ""
        return f"{exc.strerror}{where}"
    return str(exc)


def _signal_name(sig: int) -> str:
    try:
        return signal.Signals(sig).name
    except ValueError:
        return str(sig)
