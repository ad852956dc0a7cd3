"""Containers: which runtimes this node has, and the exact command that runs a job in one.

A job with ``--container-image`` runs as ``RUNTIME ... IMAGE argv...`` under the usual wrapper
(wrapper.py), as the job's own account: the runtime's CLI is started already switched to that
user, as any job is (jobuser.py), so a user can do nothing through mgpu that the runtime would
not let them do at a shell. docs/sessions.md ("Containers") is the user's and admin's view.

**Which runtime.** At start the agent looks for apptainer, singularity, podman and docker on
its PATH, in that order of preference, and keeps those that run (``--version``; docker's
daemon must answer). ``mgpu_node --container-runtimes podman,apptainer`` names the ones to
look for, in the order to prefer; ``none`` turns containers off. A job runs in the first found.
Apptainer/Singularity come first because they run in the job's own process tree (no daemon,
no conmon): the job's process group, cgroup and time limit hold the container's processes
too. Podman's conmon and Docker's daemon start the container outside of both: a cancel reaches
it through the CLI's signal proxy (SIGTERM), and a CLI killed past the kill grace can leave the
container running; ``--label mgpu.job=ID`` finds such a leftover.

**Isolation, per runtime** (each flag one its documentation gives):

* podman, docker: ``run --rm`` with ``--cap-drop=ALL`` and ``--security-opt=no-new-privileges``
  (no capability, no setuid gain inside), ``--user=UID:GID`` (the job's account), the host's
  network (``--network=host``: a job's ``--ports`` are the host's), ``--init`` (a small init as
  PID 1 passes our SIGTERM on: a PID 1 without a handler would ignore it). Podman run by a user
  other than root is rootless and gets ``--userns=keep-id``, so that the user's uid is the same
  inside and files it writes to a mount are the user's; its init is the catatonit the node has
  (``--init-path``: Debian installs it where podman does not look).
* apptainer, singularity: ``exec --containall`` (its own PID and IPC namespaces, a minimal
  /dev, an empty /tmp and home, no host environment) and ``--no-privs`` (a root user keeps no
  capability inside). Apptainer always sets no_new_privs and runs as the calling user; it
  shares the host's network unless asked not to.

**GPUs.** Only the job's GPUs reach the container. Docker: ``--gpus "device=ID,..."`` (the
NVIDIA Container Toolkit); podman: CDI, ``--device=nvidia.com/gpu=ID`` (a spec made by
``nvidia-ctk cdi generate``). ID is the device's CUDA_VISIBLE_DEVICES entry: the NVML index of a
whole GPU, the UUID of a MIG slice. Those runtimes number the GPUs they hand over from 0, so the
job sees ``CUDA_VISIBLE_DEVICES=0,1,...`` (MIG UUIDs stay as they are). Apptainer's ``--nv``
binds the driver and every GPU device; ``CUDA_VISIBLE_DEVICES`` (the host's numbers) and the
job's devices cgroup, where the node has cgroups, keep the job to its own. A node's fake GPUs
(``--fake-gpus``) are not handed to a runtime (there is nothing to hand): the environment is
set as for real ones.

**Files.** Each ``--container-mounts`` entry, the job's workspace (``MGPU_WORKSPACE``) and a batch
script are bound at the same path as on the host (the script read-only). The working directory
is ``--container-workdir``, else the job's own when a bind makes it visible at the same path,
else the image's.

**Environment.** The job's environment, names and values, reaches the process inside but for
what belongs to the image (PATH, LD_LIBRARY_PATH) or the container (HOSTNAME; HOME for
apptainer, which gives a home of its own). Values never appear on the command line, which
other users can read in ``ps``: podman and docker get ``--env=NAME`` and read the value from
their own environment; apptainer gets ``APPTAINERENV_NAME`` (``SINGULARITYENV_NAME``) variables.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from mgpu_core.models import GpuDevice, Launch
from mgpu_core.mounts import Mount, check_image, check_workdir, parse_mount
from mgpu_node.workspaces import ENV_VAR as WORKSPACE_VAR
from mgpu_node.wrapper import NOTICE_VAR

log = logging.getLogger(__name__)

# In order of preference (the module's docstring says why).
RUNTIME_NAMES = ("apptainer", "singularity", "podman", "docker")
NO_RUNTIMES = "none"
PROBE_TIMEOUT_S = 5.0
# Where podman's init (catatonit) may be: podman's own default, and Debian's package.
PODMAN_INITS = ("/usr/libexec/podman/catatonit", "/usr/bin/catatonit")
# Variables a job's environment does not carry into its container (the wrapper prints and
# unsets the notice before it starts the runtime).
_KEPT_OUT = frozenset({"PATH", "LD_LIBRARY_PATH", "HOSTNAME", NOTICE_VAR})
_APPTAINER_OWNS = _KEPT_OUT | {"HOME"}  # apptainer refuses APPTAINERENV_HOME
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
_ENV_PREFIX = {"apptainer": "APPTAINERENV_", "singularity": "SINGULARITYENV_"}
_OWN_PREFIXES = tuple(_ENV_PREFIX.values())


@dataclass(frozen=True, slots=True)
class Runtime:
    """A container runtime found on this node: its name and its CLI's absolute path (a job's
    PATH need not have it)."""

    name: str
    path: str
    init_path: str = ""  # podman: the catatonit binary for --init ("": none found)


@dataclass(frozen=True, slots=True, kw_only=True)
class ContainerRun:
    """What one job's container is made of (spawn.py fills it from the launch)."""

    job_id: int
    image: str
    mounts: list[str] = field(default_factory=list)  # "SRC:DST[:ro|rw]", as submitted
    workdir: str = ""  # --container-workdir ("": see the module's docstring)
    cwd: str = "/"  # the job's working directory on the host
    uid: int
    gid: int
    devices: list[GpuDevice] = field(default_factory=list)  # the job's GPUs
    env: dict[str, str] = field(default_factory=dict)  # the job's, as it runs without one
    script: str = ""  # a batch script's host path: bound read-only at the same path


def parse_runtime_names(text: str) -> list[str]:
    """``--container-runtimes``: ``none`` -> [], else the comma list's names in its order;
    ValueError naming an unknown one."""
    names = [n.strip().lower() for n in text.split(",") if n.strip()]
    if names == [NO_RUNTIMES]:
        return []
    for name in names:
        if name not in RUNTIME_NAMES:
            known = ", ".join(RUNTIME_NAMES)
            raise ValueError(f"unknown container runtime '{name}' (known: {known}, or none)")
    if not names:
        raise ValueError("no container runtime named (use 'none' for none)")
    return list(dict.fromkeys(names))


def probe_command(name: str, path: str) -> list[str]:
    """What shows that a runtime runs: its version (docker's: the daemon's, which it needs)."""
    if name == "docker":
        return [path, "version", "--format", "{{.Server.Version}}"]
    return [path, "--version"]


def _all_succeed(commands: list[list[str]], timeout_s: float) -> list[bool]:
    """Run the commands side by side; whether each exited 0 within ``timeout_s`` in all."""
    procs: list[subprocess.Popen[bytes] | None] = []
    for argv in commands:
        try:
            procs.append(
                subprocess.Popen(
                    argv,
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
            )
        except OSError:
            procs.append(None)
    deadline = time.monotonic() + timeout_s
    results = []
    for proc in procs:
        if proc is None:
            results.append(False)
            continue
        try:
            results.append(proc.wait(max(0.0, deadline - time.monotonic())) == 0)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            results.append(False)
    return results


def detect_runtimes(
    names: Sequence[str] = RUNTIME_NAMES,
    *,
    which: Callable[[str], str | None] = shutil.which,
    succeed: Callable[[list[list[str]], float], list[bool]] = _all_succeed,
    inits: Sequence[str] = PODMAN_INITS,
) -> list[Runtime]:
    """The runtimes of ``names`` (in that order) on PATH that run; each one named but not
    usable is logged."""
    # Named by the admin: one missing is worth a warning; found by looking, only a mention
    # (a docker CLI without its daemon is common).
    level = logging.INFO if tuple(names) == RUNTIME_NAMES else logging.WARNING
    found = [(name, which(name)) for name in names]
    candidates = [(name, os.path.abspath(path)) for name, path in found if path]
    for name, path in found:
        if not path and level == logging.WARNING:
            log.warning("container runtime %s asked for, but not found on PATH", name)
    runs = succeed([probe_command(n, p) for n, p in candidates], PROBE_TIMEOUT_S)
    runtimes = []
    for (name, path), ok in zip(candidates, runs, strict=True):
        if not ok:
            log.log(level, "container runtime %s (%s) does not run: left out", name, path)
            continue
        init = ""
        if name == "podman":
            init = next((p for p in inits if os.access(p, os.X_OK)), "")
        runtimes.append(Runtime(name, path, init))
    return runtimes


def node_runtimes(names: Sequence[str] | None) -> tuple[Runtime, ...]:
    """The agent's runtimes at start: those of ``names`` (None: all, in the default order;
    []: none) that it finds, told in its log."""
    found = (
        () if names is not None and not names else tuple(detect_runtimes(names or RUNTIME_NAMES))
    )
    log.info(describe(found))
    return found


def describe(runtimes: Sequence[Runtime]) -> str:
    """One line for the agent's log."""
    if not runtimes:
        return "no container runtime: jobs with an image do not run here"
    return "container runtimes: " + ", ".join(f"{r.name} ({r.path})" for r in runtimes)


def command(
    runtime: Runtime, run: ContainerRun, argv: list[str], *, tty: bool = False
) -> tuple[list[str], dict[str, str]]:
    """The argv that runs ``argv`` in ``run``'s container with ``runtime``, and the environment
    to start it with; ``tty``: on the terminal its stdin is (a shell in a session: podman and
    docker give it a pty of their own inside, apptainer runs on ours). ValueError (one line,
    for the job's reason) if the image, a mount or the working directory is not valid."""
    image = check_image(run.image)
    binds = _binds(run)
    workdir = check_workdir(run.workdir) if run.workdir else _visible_cwd(run.cwd, binds)
    if runtime.name in _ENV_PREFIX:
        return _apptainer(runtime, run, binds, workdir, image, argv)
    oci_argv, env = _oci(runtime, run, binds, workdir, image, argv)
    if tty:
        oci_argv[2:2] = ["--interactive", "--tty"]  # after "run"
    return oci_argv, env


def _binds(run: ContainerRun) -> list[Mount]:
    """The user's mounts, then the workspace and the batch script at their host paths (unless
    a mount of the user's already has that destination: a runtime refuses two)."""
    mounts = [parse_mount(text) for text in run.mounts]
    taken = {m.destination for m in mounts}
    extra = []
    workspace = run.env.get(WORKSPACE_VAR, "")
    if workspace.startswith("/"):
        extra.append(Mount(workspace, workspace))
    if run.script:
        extra.append(Mount(run.script, run.script, read_only=True))
    return mounts + [m for m in extra if m.destination not in taken]


def _visible_cwd(cwd: str, binds: list[Mount]) -> str:
    """The job's working directory if a bind shows it at the same path inside, else ""."""
    for m in binds:
        if m.source == m.destination and _within(cwd, m.destination):
            return cwd
    return ""


def _within(path: str, directory: str) -> bool:
    directory = directory.rstrip("/") or "/"
    return path == directory or path.startswith(directory if directory == "/" else directory + "/")


def _passed(env: dict[str, str], kept_out: frozenset[str]) -> list[str]:
    """The names of ``env`` that go into the container (shell names only: another name could
    be read by a runtime as a pattern or an option; apptainer's own variables act as they are)."""
    return sorted(
        n
        for n in env
        if n not in kept_out and _ENV_NAME.match(n) and not n.startswith(_OWN_PREFIXES)
    )


def _real(devices: list[GpuDevice]) -> list[GpuDevice]:
    return [d for d in devices if not d.fake]


def _oci(
    runtime: Runtime,
    run: ContainerRun,
    binds: list[Mount],
    workdir: str,
    image: str,
    argv: list[str],
) -> tuple[list[str], dict[str, str]]:
    env = dict(run.env)
    if run.devices:
        # The runtime numbers the GPUs it hands over from 0; a MIG slice keeps its UUID.
        env["CUDA_VISIBLE_DEVICES"] = ",".join(
            d.visible_id if d.is_slice else str(i) for i, d in enumerate(run.devices)
        )
    args = [runtime.path, "run", "--rm"]
    if runtime.name == "docker":
        args.append("--init")
    elif runtime.init_path:
        args += ["--init", f"--init-path={runtime.init_path}"]
    args += [
        "--network=host",
        "--cap-drop=ALL",
        "--security-opt=no-new-privileges",
        f"--user={run.uid}:{run.gid}",
    ]
    if runtime.name == "podman" and run.uid != 0:
        args.append("--userns=keep-id")  # rootless: the user's uid inside is its own
    args.append(f"--label=mgpu.job={run.job_id}")
    real = _real(run.devices)
    if real and runtime.name == "docker":
        # --gpus reads its value as CSV: the quotes keep "device=0,1" one field.
        args.append('--gpus="device=' + ",".join(d.visible_id for d in real) + '"')
    elif real:
        args += [f"--device=nvidia.com/gpu={d.visible_id}" for d in real]
    args += [f"--volume={m.spec()}" for m in binds]
    if workdir:
        args.append(f"--workdir={workdir}")
    args += [f"--env={name}" for name in _passed(env, _KEPT_OUT)]
    return [*args, image, *argv], env


def _apptainer(
    runtime: Runtime,
    run: ContainerRun,
    binds: list[Mount],
    workdir: str,
    image: str,
    argv: list[str],
) -> tuple[list[str], dict[str, str]]:
    prefix = _ENV_PREFIX[runtime.name]
    env = dict(run.env)
    for name in _passed(run.env, _APPTAINER_OWNS):
        env[prefix + name] = run.env[name]
    args = [runtime.path, "exec", "--containall", "--no-privs"]
    if _real(run.devices):
        args.append("--nv")
    args += [f"--bind={m.spec()}" for m in binds]
    if workdir:
        args.append(f"--pwd={workdir}")
    return [*args, image, *argv], env


def contain(
    runtimes: Sequence[Runtime],
    launch: Launch,
    argv: list[str],
    env: dict[str, str],
    *,
    node: str,
    devices: list[GpuDevice],
    uid: int,
    gid: int,
    script: str = "",
    tty: bool = False,
) -> tuple[list[str], dict[str, str]]:
    """A launch's ``argv`` and ``env`` run in its container (--container-image) by the node's
    preferred runtime; ``script``: the batch script's host path, its first argument.
    ValueError (the job's reason) if the node has no runtime or the image cannot be asked for."""
    spec = launch.spec
    if not runtimes:
        raise ValueError(f"node {node} has no container runtime for image {spec.container_image}")
    run = ContainerRun(
        job_id=launch.job_id,
        image=spec.container_image,
        mounts=spec.container_mounts,
        workdir=spec.container_workdir,
        cwd=spec.cwd,
        uid=uid,
        gid=gid,
        devices=devices,
        env=env,
        script=script,
    )
    return command(runtimes[0], run, argv, tty=tty)


def share_spool(runtimes: Sequence[Runtime], spool_dir: str, user: str) -> None:
    """Let a runtime started as another ``user`` open that user's batch script by its path
    (the runtime binds it into the container; a descriptor does not get there): the spool
    becomes searchable by everyone, not listable, each script staying its owner's alone
    (0700). Docker's daemon opens it as root: nothing to do. ValueError if a directory above
    the spool is closed to other users."""
    if not runtimes or runtimes[0].name == "docker":
        return
    os.chmod(spool_dir, 0o711)
    blocked = unsearchable(spool_dir)
    if blocked:
        raise ValueError(
            f"a container job's batch script must be reachable by its user {user}, but other "
            f"users cannot search {blocked}: give the node a --state-dir they can pass through "
            "(e.g. under /var/lib/mgpu)"
        )


def unsearchable(directory: str) -> str:
    """The first of ``directory`` and its parents that other users cannot pass through (no
    search bit for others), or "" if there is none."""
    path = os.path.abspath(directory)
    while True:
        try:
            if not os.stat(path).st_mode & 0o001:
                return path
        except OSError:
            return path
        parent = os.path.dirname(path)
        if parent == path:
            return ""
        path = parent
