"""Starting a job's process: environment, batch script, output files, the wrapped exec; and
relaying an interactive job's output pipes.

A job is spawned with :mod:`subprocess`, not asyncio's subprocess support: an asyncio
transport kills its child when it is closed or garbage-collected, and jobs must outlive the
agent that started them. The pipes of interactive jobs are read with ``loop.add_reader``.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from mgpu_core.models import JobSpec, expand_path_template
from mgpu_node.gpus import GpuDevice
from mgpu_node.wrapper import find_executable, wrap

OUTPUT_CHUNK_BYTES = 64 * 1024

Emit = Callable[[dict[str, Any]], None]


@dataclass(frozen=True, slots=True)
class Launcher:
    node_name: str
    devices: list[GpuDevice]
    spool_dir: Path  # batch scripts (absolute: jobs run in their own working directory)

    def start(
        self, launch: dict[str, Any], spec: JobSpec, status_file: Path
    ) -> subprocess.Popen[bytes]:
        """Spawn the job of ``launch`` under the wrapper; OSError/ValueError if it cannot."""
        job_id: int = launch["job_id"]
        if not Path(spec.cwd).is_dir():
            raise NotADirectoryError(
                f"working directory {spec.cwd} does not exist on {self.node_name}"
            )
        env = self._environment(job_id, spec, launch["gpu_indices"], launch["restart_count"])
        argv = self._argv(job_id, spec)
        program = find_executable(argv[0], env, spec.cwd)
        status_file.unlink(missing_ok=True)  # a previous run's, if the job was requeued here
        return self._spawn(job_id, spec, wrap(argv, status_file, program), env, launch["user"])

    def _environment(
        self, job_id: int, spec: JobSpec, gpu_indices: list[int], restart_count: int
    ) -> dict[str, str]:
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
                "MGPU_RESTART_COUNT": str(restart_count),
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

    def _spawn(
        self, job_id: int, spec: JobSpec, argv: list[str], env: dict[str, str], user: str
    ) -> subprocess.Popen[bytes]:
        files: list[IO[bytes]] = []
        try:
            if spec.interactive:
                stdout: Any = subprocess.PIPE
                stderr: Any = subprocess.PIPE
            else:
                out_template = spec.stdout_path or "mgpu-%j.out"
                stdout = self._open_output(job_id, spec, out_template, user)
                files.append(stdout)
                if spec.stderr_path and spec.stderr_path != out_template:
                    stderr = self._open_output(job_id, spec, spec.stderr_path, user)
                    files.append(stderr)
                else:
                    stderr = subprocess.STDOUT
            return subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=stdout,
                stderr=stderr,
                cwd=spec.cwd,
                env=env,
                start_new_session=True,
            )
        finally:
            for f in files:
                f.close()  # the child has its own descriptors now


def spawn_error(exc: BaseException, spec: JobSpec) -> str:
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


class Relay:
    """Forwards one output pipe of an interactive job as job_output events until EOF."""

    def __init__(self, pipe: IO[bytes], job_id: int, stream: int, emit: Emit) -> None:
        self.loop = asyncio.get_running_loop()
        self.pipe, self.job_id, self.stream, self.emit = pipe, job_id, stream, emit
        self.fd = pipe.fileno()
        os.set_blocking(self.fd, False)
        self.done: asyncio.Future[None] = self.loop.create_future()
        self.loop.add_reader(self.fd, self._readable)

    def _readable(self) -> None:
        try:
            data = os.read(self.fd, OUTPUT_CHUNK_BYTES)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if data:
            self.emit(
                {"t": "job_output", "job_id": self.job_id, "stream": self.stream, "data": data}
            )
        else:
            self.close()

    def close(self) -> None:
        """Stop reading (at EOF, or when the agent lets the job go)."""
        if not self.done.done():
            self.loop.remove_reader(self.fd)
            self.pipe.close()
            self.done.set_result(None)
