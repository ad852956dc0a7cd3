"""Starting a job's process: environment, batch script, output files, the wrapped exec; and
relaying an interactive job's output pipes.

A job that runs as the agent's own user is set up by the agent (working directory, script
path, output files opened here). A job that runs as another user (jobuser.py) is started
already switched to that user, and its wrapper does the setup with that user's permissions.

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

from mgpu_core.constants import DEFAULT_BATCH_OUTPUT
from mgpu_core.models import GpuDevice, JobSpec, Launch, printable
from mgpu_core.patterns import expand_path_template
from mgpu_node.cgroups import UNGATED, Gate, JobCgroups
from mgpu_node.containers import Runtime, contain, share_spool
from mgpu_node.jobuser import (
    Account,
    create_status_file,
    supplementary_groups,
    write_script,
)
from mgpu_node.slurmenv import OWNED, array_task, slurm_environment
from mgpu_node.workspaces import ENV_VAR as WORKSPACE_VAR
from mgpu_node.workspaces import Workspace
from mgpu_node.wrapper import NOTICE_VAR, find_executable, wrap, wrap_as_user

OUTPUT_CHUNK_BYTES = 64 * 1024
# The job's own runtime's copies of its variables (apptainer's), made again for a terminal.
_RUNTIME_ENV_PREFIXES = ("APPTAINERENV_", "SINGULARITYENV_")
DEFAULT_OUTPUT = DEFAULT_BATCH_OUTPUT

Emit = Callable[[dict[str, Any]], None]
Write = Callable[[int, int, bytes], None]  # job id, stream, data: an interactive job's output


@dataclass(frozen=True, slots=True)
class Launcher:
    node_name: str
    devices: list[GpuDevice]
    spool_dir: Path  # batch scripts (absolute: jobs run in their own working directory)
    cgroups: JobCgroups | None = None  # where the node isolates jobs in cgroups
    # The container runtimes for jobs with an image, the preferred first (containers.py).
    runtimes: tuple[Runtime, ...] = ()

    def start(
        self,
        launch: Launch,
        status_file: Path,
        account: Account | None = None,
        *,
        workspace: Workspace | None = None,
    ) -> subprocess.Popen[bytes]:
        """Spawn the job of ``launch`` under the wrapper, as ``account`` if given (else as the
        agent's own user), in its cgroup if the node has them, with ``workspace`` (made by
        workspaces.py) as MGPU_WORKSPACE; OSError/ValueError if it cannot."""
        if self.cgroups is None:
            return self._start(launch, status_file, account, UNGATED, workspace)
        return self.cgroups.spawn(
            launch,
            lambda g: self._start(launch, status_file, account, g, workspace),
            uid=account.uid if account is not None else None,
        )

    def _start(
        self,
        launch: Launch,
        status_file: Path,
        account: Account | None,
        gate: Gate,
        workspace: Workspace | None,
    ) -> subprocess.Popen[bytes]:
        job_id, spec = launch.job_id, launch.spec
        if spec.script is None and not spec.argv:
            raise ValueError("the job has no command to run")
        if account is not None:
            if not os.path.isabs(spec.cwd):  # the wrapper resolves paths after entering it
                raise ValueError(f"working directory {spec.cwd} is not an absolute path")
            env = self._environment(launch, account, workspace)
            env.update(account.environment())
            return self._spawn_as(launch, env, status_file, account, gate)
        if not Path(spec.cwd).is_dir():
            raise NotADirectoryError(
                f"working directory {spec.cwd} does not exist on {self.node_name}"
            )
        env = self._environment(launch, None, workspace)
        argv = self._argv(job_id, spec)
        if spec.container_image:
            argv, env = self._contained(launch, argv, env, None)
        program = find_executable(argv[0], env, spec.cwd)
        status_file.unlink(missing_ok=True)  # a previous run's, if the job was requeued here
        wrapped, env = gate.wrap(wrap(argv, status_file, program), env)
        return self._spawn(launch, wrapped, env)

    def _environment(
        self, launch: Launch, account: Account | None, workspace: Workspace | None = None
    ) -> dict[str, str]:
        """The job's environment: the submitted one, then ours (slurmenv.py says why the
        SLURM_* variables, and why inherited ones are dropped)."""
        spec, gpu_indices = launch.spec, launch.gpu_indices
        try:
            visible = [self.devices[i].visible_id for i in gpu_indices]
        except IndexError:
            raise ValueError(f"GPU index out of range: {gpu_indices}") from None
        env = {name: value for name, value in spec.env.items() if name not in OWNED}
        # A submitter's (from inside a job on another node, say) would name another workspace,
        # or print a warning that is not this job's.
        env.pop(WORKSPACE_VAR, None)
        env.pop(NOTICE_VAR, None)
        if workspace is not None:
            env[WORKSPACE_VAR] = str(workspace.path)
            if workspace.notice:
                env[NOTICE_VAR] = workspace.notice  # printed by the wrapper, then unset
        uid, gid = (account.uid, account.gid) if account else (os.geteuid(), os.getegid())
        env.update(slurm_environment(launch, node=self.node_name, uid=uid, gid=gid))
        env.update(
            {
                "CUDA_VISIBLE_DEVICES": ",".join(visible),
                "CUDA_DEVICE_ORDER": "PCI_BUS_ID",
                "MGPU_JOB_ID": str(launch.job_id),
                "MGPU_JOB_NAME": spec.display_name(),
                "MGPU_NODE": self.node_name,
                "MGPU_GPUS": ",".join(str(i) for i in gpu_indices),
                "MGPU_SUBMIT_DIR": spec.cwd,
                "MGPU_RESTART_COUNT": str(launch.restart_count),
            }
        )
        if launch.ports:  # --ports: given by the master from this node's --port-range
            env["MGPU_PORTS"] = ",".join(map(str, launch.ports))
            env["MGPU_PORT"] = str(launch.ports[0])
        return env

    def _contained(
        self, launch: Launch, argv: list[str], env: dict[str, str], account: Account | None
    ) -> tuple[list[str], dict[str, str]]:
        """``argv`` and ``env`` run in the job's container (containers.py). A batch script is
        passed by its path, which the runtime binds into the container."""
        script = ""
        if launch.spec.script is not None:
            script = str(self._script_path(launch.job_id))
            argv = [script, *argv[1:]]
            if account is not None:
                share_spool(self.runtimes, str(self.spool_dir), account.name)
        uid, gid = (account.uid, account.gid) if account else (os.geteuid(), os.getegid())
        devices = [self.devices[i] for i in launch.gpu_indices]
        return contain(
            self.runtimes,
            launch,
            argv,
            env,
            node=self.node_name,
            devices=devices,
            uid=uid,
            gid=gid,
            script=script,
        )

    def terminal_command(
        self, launch: Launch, argv: list[str], env: dict[str, str], uid: int, gid: int
    ) -> tuple[list[str], dict[str, str]]:
        """``argv`` (a terminal's shell) and ``env`` (the job's) run in a container of the
        job's image, mounts and GPUs, on the terminal (terminals.py)."""
        devices = [self.devices[i] for i in launch.gpu_indices]
        kept = {k: v for k, v in env.items() if not k.startswith(_RUNTIME_ENV_PREFIXES)}
        return contain(
            self.runtimes, launch, argv, kept, node=self.node_name, devices=devices, uid=uid,
            gid=gid, tty=True,
        )  # fmt: skip

    def _script_path(self, job_id: int) -> Path:
        self.spool_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        return self.spool_dir / f"job-{job_id}.sh"

    def _argv(self, job_id: int, spec: JobSpec) -> list[str]:
        if spec.script is None:
            return spec.argv
        path = self._script_path(job_id)
        path.write_bytes(os.fsencode(spec.script))  # its bytes as submitted, UTF-8 or not
        path.chmod(0o700)
        return [str(path), *spec.argv]

    def _output_path(self, launch: Launch, template: str) -> Path:
        spec = launch.spec
        path = expand_path_template(
            template,
            job_id=launch.job_id,
            name=spec.display_name(),
            user=launch.user,
            node=self.node_name,
            array=array_task(launch),
            step=0 if spec.interactive else None,
        )
        return Path(spec.cwd) / path

    def _open_output(self, launch: Launch, template: str) -> IO[bytes]:
        spec = launch.spec
        path = self._output_path(launch, template)
        make_parents(path, spec.umask)
        append = appends(launch)
        if spec.umask is None:
            return open(path, "ab" if append else "wb")
        # A new file gets the mode the job's own shell would give it (0666 less the
        # submitter's umask), whatever the agent's umask; an existing one keeps its mode.
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            os.fchmod(fd, 0o666 & ~spec.umask)
        except FileExistsError:
            fd = os.open(path, os.O_WRONLY | (os.O_APPEND if append else os.O_TRUNC))
        return open(fd, "ab" if append else "wb")

    def _spawn(
        self, launch: Launch, argv: list[str], env: dict[str, str]
    ) -> subprocess.Popen[bytes]:
        spec = launch.spec
        files: list[IO[bytes]] = []
        try:
            if spec.interactive:
                stdout: Any = subprocess.PIPE
                stderr: Any = subprocess.PIPE
            else:
                out_template = spec.stdout_path or DEFAULT_OUTPUT
                stdout = self._open_output(launch, out_template)
                files.append(stdout)
                if spec.stderr_path and spec.stderr_path != out_template:
                    stderr = self._open_output(launch, spec.stderr_path)
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
                umask=_umask(spec),
            )
        finally:
            for f in files:
                f.close()  # the child has its own descriptors now

    def _spawn_as(
        self,
        launch: Launch,
        env: dict[str, str],
        status_file: Path,
        account: Account,
        gate: Gate,
    ) -> subprocess.Popen[bytes]:
        """Start the job switched to ``account``: nothing the user named (directory, program,
        output files and their directories) is touched with the agent's privileges; the
        wrapper does it."""
        job_id, spec = launch.job_id, launch.spec
        stdout = stderr = ""
        if not spec.interactive:
            out_template = spec.stdout_path or DEFAULT_OUTPUT
            stdout = str(self._output_path(launch, out_template))
            if spec.stderr_path and spec.stderr_path != out_template:
                stderr = str(self._output_path(launch, spec.stderr_path))
        groups = supplementary_groups(account)
        fds: list[int] = []
        try:
            fds.append(create_status_file(status_file, account))
            argv = spec.argv
            if spec.script is not None:
                fds.append(write_script(self._script_path(job_id), spec.script, account))
                argv = [f"/dev/fd/{fds[-1]}", *spec.argv]
            if spec.container_image:
                argv, env = self._contained(launch, argv, env, account)
            pipe = subprocess.PIPE if spec.interactive else subprocess.DEVNULL
            gated, env = gate.wrap(
                wrap_as_user(
                    argv,
                    cwd=spec.cwd,
                    stdout=stdout,
                    stderr=stderr,
                    append=appends(launch),
                    user=account.name,
                    node=self.node_name,
                ),
                env,
            )
            return subprocess.Popen(
                gated,
                stdin=fds[0],  # the status file: the wrapper's to write
                stdout=pipe,
                stderr=pipe,
                cwd="/",  # the wrapper enters the job's directory as the user
                env=env,
                start_new_session=True,
                umask=_umask(spec),  # the wrapper opens the output files with it too
                pass_fds=fds[1:],
                user=account.uid,
                group=account.gid,
                extra_groups=groups,
            )
        finally:
            for fd in fds:
                os.close(fd)


def appends(launch: Launch) -> bool:
    """Whether the job's output files are appended to rather than truncated: with
    --open-mode=append, and always for a requeued run, so that a requeued job never truncates
    the log of its earlier runs (Slurm truncates by default, at every start)."""
    return launch.spec.open_append or launch.restart_count > 0


def make_parents(path: Path, umask: int | None) -> None:
    """Create the missing directories above ``path`` as the job's own ``mkdir -p`` would: mode
    0777 less the job's umask (the agent's when not known). One made meanwhile (by a tool that
    creates the folder once sbatch has returned) is fine. OSError naming the directory if one
    cannot be made."""
    missing: list[Path] = []
    parent = path.parent
    while not parent.is_dir() and parent != parent.parent:
        missing.append(parent)
        parent = parent.parent
    for directory in reversed(missing):
        try:
            os.mkdir(directory, 0o777 if umask is None else 0o700)
            if umask is not None:
                os.chmod(directory, 0o777 & ~umask)  # whatever the agent's own umask took
        except OSError as exc:
            if isinstance(exc, FileExistsError) and directory.is_dir():
                continue
            raise OSError(
                f"cannot create directory {directory} for output file {path}: {exc.strerror or exc}"
            ) from None


def _umask(spec: JobSpec) -> int:
    """The job's umask for Popen: the submitter's, or -1 (keep the agent's) if not sent."""
    return -1 if spec.umask is None else spec.umask


def spawn_error(exc: BaseException, spec: JobSpec) -> str:
    """Why the job could not start, as text the wire carries (a name that is not UTF-8
    escaped)."""
    return printable(_spawn_error(exc, spec))


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


class Relay:
    """Hands one output pipe of an interactive job to ``write`` (the job's output log, which
    sends it as job_output events) until EOF."""

    def __init__(self, pipe: IO[bytes], job_id: int, stream: int, write: Write) -> None:
        self.loop = asyncio.get_running_loop()
        self.pipe, self.job_id, self.stream, self.write = pipe, job_id, stream, write
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
            self.write(self.job_id, self.stream, data)
        else:
            self.close()

    def close(self) -> None:
        """Stop reading (at EOF, or when the agent lets the job go)."""
        if not self.done.done():
            self.loop.remove_reader(self.fd)
            self.pipe.close()
            self.done.set_result(None)
