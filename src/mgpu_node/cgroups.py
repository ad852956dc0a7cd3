"""Job isolation beyond ``CUDA_VISIBLE_DEVICES``: each job in a cgroup of its own, with the
GPUs, CPUs and memory it was given.

``CUDA_VISIBLE_DEVICES`` is a request: a program that unsets it, or opens /dev/nvidiaN itself,
can use every GPU of the node, and a 0-GPU job sees them all. Where the host allows it, the
kernel enforces the allocation instead:

* devices (cgroup v1): the device nodes of the node's GPUs the job was not given are denied
  (``c 195:N rwm`` in ``devices.deny``: opening one fails with EPERM); everything else stays
  allowed, /dev/nvidiactl and /dev/nvidia-uvm included, as Slurm's ConstrainDevices does. A
  MIG instance's job is given its GPU's node (instances of one GPU are not told apart here).
  cgroup v2 has no devices files: it filters with an eBPF program (BPF_CGROUP_DEVICE), which
  the agent does not load, so on v2 GPUs are not isolated, and the summary says so.
* memory: the job's ``mem_bytes`` as its limit, swap included (v1 ``memory.limit_in_bytes``,
  and ``memory.memsw.limit_in_bytes`` where swap is accounted; v2 ``memory.max`` and
  ``memory.swap.max`` 0); a job that asks for none (0) is not limited.
* cpu: the job's ``cpus`` as a CFS quota (``cpus`` x 100 ms per 100 ms) and as a weight.

Where: v1 puts mgpu's groups in the agent's own group of each hierarchy (/proc/self/cgroup), so
whatever an admin limits the agent's service to still covers its jobs. v2 puts them under the
hierarchy's root: there a group that hands controllers down may hold no process itself, and
the agent's own group holds the agent (the root is exempt). Below that, ``mgpu/<agent>/job<ID>``,
``<agent>`` being the node's name and a hash of its state directory: two agents on one host
(tests) never share a group, and a restarted agent finds its jobs' groups again.

How a job gets in: a child starts in its parent's group, so the job's first process must be in
its group before it forks anything. Moving it from the agent after ``Popen`` races with the
wrapper's fork of the command; a ``preexec_fn`` runs after the switch to the job's user, who may
not write to the group (nor, for the same reason, may the wrapper move itself), and is unsafe in
a process with threads. So the process starts as a gate, a few lines of sh in front of the wrapper.

On cgroup v1 (every hierarchy), the gate moves itself: it writes ``0`` (itself) into each of
the job's ``tasks`` files, made beforehand with the job's limits, then execs the wrapper (same
pid); if a write fails it exits :data:`ENTER_FAILED` and nothing of the job runs. The kernel
moves a process into a group under a global lock taken for writing, which waits for an RCU grace
period (12-20 ms on the first move after an idle spell) -- except when a thread moves itself.
A job run as another user gets its ``tasks`` files given to that user for this (the kernel lets
a user move only their own processes: they can shuffle their own jobs' processes among their
own jobs' groups, no further).

On cgroup v2 (whose ``cgroup.procs`` a user may not write into without owning the common
ancestor too), the gate stops itself (SIGSTOP) first thing; the agent writes its pid into the
job's ``cgroup.procs`` files, waits for it to have stopped (``waitid(WSTOPPED)``: it is the
agent's child), and sends SIGCONT; the gate then execs the wrapper, inside the groups. If the
move fails the agent kills the gate instead: nothing of the job ran, and the launch fails with
the reason. (A gate that waited on a pipe would need its descriptor's number in its script,
and dash takes only 0 to 9 there.) Either way it costs one exec of sh (~1 ms) per job, none
where the wrapper is a shell script already.

When the job ends the executor removes its group: whatever is still in it, a process that left
the job's session with setsid included, is killed first, as Slurm does when a step ends.

Root is needed. An agent that is not root, finds none of the controllers, or cannot make its
groups isolates nothing and says why: ``none: <why>`` in its log, its hello and the nodes view.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import logging
import os
import re
import shlex
import signal
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from mgpu_core.limits import MAX_NAME_LEN, shorten
from mgpu_core.models import Launch
from mgpu_node import cgroupfs
from mgpu_node.cgroupfs import CONTROLLERS, Hierarchy, find_hierarchies
from mgpu_node.nvml import DeviceNumber
from mgpu_node.wrapper import SHELL

log = logging.getLogger(__name__)

TOP_GROUP = "mgpu"
# How long an ended job's killed processes may take to leave its group before it is left for
# the next prune (a process stuck in the kernel, a hung GPU driver, ignores SIGKILL).
REMOVE_TIMEOUT_S = 2.0
REMOVE_POLL_S = 0.02
REMOVE_FIRST_POLL_S = 0.0005
_JOB_GROUP = re.compile(r"job(\d+)")

# The arguments are the wrapper's argv. The agent's SIGCONT comes once the gate is in its groups.
STOP = "kill -STOP $$"
GATE = STOP + '; exec "$@"'
# A v1 gate that could not write itself into its groups exits with this, having run nothing.
ENTER_FAILED = 125
NOT_ENTERED = "cannot put the job in its cgroup"


def enter_script(tasks_files: tuple[str, ...]) -> str:
    """sh that writes the shell itself (``0``) into each ``tasks`` file, or exits
    :data:`ENTER_FAILED` saying why."""
    writes = " && ".join(f"echo 0 >{shlex.quote(path)}" for path in tasks_files)
    failed = f"echo 'mgpu: {NOT_ENTERED}' >&2; exit {ENTER_FAILED}"
    return f"{{ {writes}; }} 2>/dev/null || {{ {failed}; }}"


@dataclass(frozen=True, slots=True)
class Gate:
    """What a job's first process runs before the wrapper: nothing (:data:`UNGATED`), the
    gate that waits, stopped, to be put in its groups (:data:`GATED`), or the one that enters
    them itself (``enter``: the v1 ``tasks`` files)."""

    held: bool = False
    enter: tuple[str, ...] = ()

    def wrap(self, argv: list[str], env: dict[str, str]) -> tuple[list[str], dict[str, str]]:
        """``argv`` behind the gate, and ``env`` with the dynamic loader's variables held aside
        until the gate has passed (a job's LD_PRELOAD would otherwise run code in the gate's
        shell before it is in the job's groups, and could leave a process outside them)."""
        if not self.held and not self.enter:
            return argv, env
        env, restore = hold_loader_vars(env)
        return self.argv(argv, restore), env

    def argv(self, argv: list[str], restore: str = "") -> list[str]:
        if not self.held and not self.enter:
            return argv
        first = enter_script(self.enter) if self.enter else STOP
        if restore:  # the loader's variables, given back once past the gate
            first += "\n" + restore.rstrip("\n")
        if argv[:2] == [SHELL, "-c"]:
            # The wrapper is a shell script already: its first lines are the gate's, one
            # shell start fewer on every job's way in (~0.7 ms) than a gate in front of it.
            return [SHELL, "-c", f"{first}\n{argv[2]}", *argv[3:]]
        return [SHELL, "-c", f'{first}\nexec "$@"', "mgpu-gate", *argv]


UNGATED = Gate()
GATED = Gate(held=True)
_HELD = "MGPU_HELD_"  # a dynamic loader variable held aside until a gate has passed


def hold_loader_vars(env: dict[str, str]) -> tuple[dict[str, str], str]:
    """``env`` without the dynamic loader's variables (LD_*, held aside under another name),
    and the sh that gives them back once past a gate; names that are not plain are dropped."""
    held, restore = {}, ""
    for name, value in env.items():
        if name.startswith("LD_"):
            if name.replace("_", "").isalnum() and name.isascii():
                held[_HELD + name] = value
                restore += f'export {name}="${_HELD}{name}"; unset {_HELD}{name}\n'
        else:
            held[name] = value
    return held, restore


def given_back(env: dict[str, str]) -> dict[str, str]:
    """A gated process's environment as the job has it past the gate (its /proc environ still
    holds the loader's variables aside: :func:`hold_loader_vars`)."""
    return {name.removeprefix(_HELD): value for name, value in env.items()}


def agent_group(node_id: str, state_dir: Path) -> str:
    """The name of the agent's group: its node's name and a hash of its state directory."""
    safe = re.sub(r"[^A-Za-z0-9._-]", "_", node_id)[:64]
    digest = hashlib.sha256(os.fsencode(state_dir.absolute())).hexdigest()[:8]
    return f"{safe}-{digest}"


class JobCgroups:
    """The agent's job groups: made and entered when a job starts, removed when it ends."""

    def __init__(
        self, hierarchies: list[Hierarchy], agent: str, gpu_numbers: list[DeviceNumber | None]
    ) -> None:
        self.hierarchies = hierarchies
        self.agent = agent
        self.gpu_numbers = gpu_numbers  # per GPU index: its device node's numbers
        self._pruning: dict[int, asyncio.Task[None]] = {}

    def summary(self) -> str:
        """What the jobs are isolated with: "cgroup v1 (devices, memory, cpu)"."""
        by_version: dict[int, list[str]] = {}
        for h in self.hierarchies:
            by_version.setdefault(h.version, []).extend(h.controllers)
        text = "cgroup " + ", ".join(
            f"v{v} ({', '.join(sorted(c, key=CONTROLLERS.index))})"
            for v, c in sorted(by_version.items())
        )
        if not any("devices" in h.controllers for h in self.hierarchies):
            why = "cgroup v2 needs eBPF" if 2 in by_version else "no devices controller"
            text += f"; GPU devices not isolated: {why}"
        return text

    def agent_dir(self, hierarchy: Hierarchy) -> Path:
        return hierarchy.base / TOP_GROUP / self.agent

    def job_dirs(self, job_id: int) -> list[tuple[Hierarchy, Path]]:
        return [(h, self.agent_dir(h) / f"job{job_id}") for h in self.hierarchies]

    def open(self) -> None:
        """Make the agent's groups; OSError if it cannot."""
        for h in self.hierarchies:
            path = self.agent_dir(h)
            path.mkdir(parents=True, exist_ok=True)
            if h.version == 2:  # each level hands the controllers down to the next
                for level in (h.base, h.base / TOP_GROUP, path):
                    for controller in h.controllers:
                        cgroupfs.write(level / "cgroup.subtree_control", f"+{controller}")

    def create(self, launch: Launch) -> list[Path]:
        """Make the job's groups with its limits; OSError if one cannot be made or limited."""
        if not all(self.agent_dir(h).is_dir() for h in self.hierarchies):
            self.open()  # removed under us (by an admin, say): made again
        pruning = self._pruning.pop(launch.job_id, None)
        if pruning is not None:  # an earlier run's leftover group, being removed: reused
            pruning.cancel()
        known = {n for n in self.gpu_numbers if n is not None}
        given = {self.gpu_numbers[i] for i in launch.gpu_indices if i < len(self.gpu_numbers)}
        dirs = []
        for h, path in self.job_dirs(launch.job_id):
            path.mkdir(exist_ok=True)
            dirs.append(path)
            if "devices" in h.controllers:
                for major, minor in sorted(known - given):
                    cgroupfs.write(path / "devices.deny", f"c {major}:{minor} rwm")
            if "memory" in h.controllers:
                cgroupfs.limit_memory(h.version, path, launch.spec.mem_bytes)
            if "cpu" in h.controllers:
                cgroupfs.limit_cpu(h.version, path, launch.spec.cpus)
        return dirs

    def spawn(
        self,
        launch: Launch,
        start: Callable[[Gate], subprocess.Popen[bytes]],
        uid: int | None = None,
    ) -> subprocess.Popen[bytes]:
        """``start(gate)``, the process it starts put in the job's groups before it runs
        anything (``uid``: the job's user, when it is not the agent's). OSError if that cannot
        be done: then nothing of the job ran, and no group of it is left."""
        if all(h.version == 1 for h in self.hierarchies):
            return self._spawn_entering(launch, start, uid)
        job_id = launch.job_id
        try:
            # Started first: the groups are made while its shell starts up (it runs nothing
            # of the job before our SIGCONT), which takes them off the job's way in.
            proc = start(GATED)
            try:
                dirs = self.create(launch)
                for path in dirs:
                    cgroupfs.write(path / "cgroup.procs", str(proc.pid))
                wait_stopped(proc.pid)  # a SIGCONT before its SIGSTOP would be lost
            except OSError as exc:
                proc.kill()  # stopped or not: nothing of the job ran
                _reap(proc)
                raise _not_placed(exc) from None
            os.kill(proc.pid, signal.SIGCONT)
        except BaseException:
            self.remove_now(job_id)
            raise
        return proc

    def _spawn_entering(
        self, launch: Launch, start: Callable[[Gate], subprocess.Popen[bytes]], uid: int | None
    ) -> subprocess.Popen[bytes]:
        """cgroup v1: the groups made with their limits, then the gate that enters them."""
        job_id = launch.job_id
        try:
            try:
                dirs = self.create(launch)
                if uid is not None and uid != os.geteuid():
                    for path in dirs:
                        os.chown(path / "tasks", uid, -1)
            except OSError as exc:
                raise _not_placed(exc) from None
            return start(Gate(enter=tuple(str(path / "tasks") for path in dirs)))
        except BaseException:
            self.remove_now(job_id)
            raise

    def enter(self, job_id: int, pid: int) -> None:
        """Put ``pid`` (stopped, not yet running anything) in the job's groups, as the job's
        first process was: a terminal's shell inside the job. OSError if it cannot."""
        for h, path in self.job_dirs(job_id):
            procs_file = "cgroup.procs" if h.version == 2 else "tasks"
            cgroupfs.write(path / procs_file, str(pid))

    def oom_kills(self, job_id: int) -> int:
        """The processes of the job the kernel's OOM killer killed, read before its groups are
        removed (an earlier run's group that was reused still counts that run's)."""
        return sum(
            cgroupfs.oom_kills(h.version, path)
            for h, path in self.job_dirs(job_id)
            if "memory" in h.controllers
        )

    def remove_now(self, job_id: int) -> bool:
        """Kill what is in the job's groups and remove those that are empty; True if none is
        left."""
        return all([cgroupfs.kill_and_remove(path) for _, path in self.job_dirs(job_id)])

    async def remove(self, job_id: int) -> None:
        """Kill what is in the job's groups and remove them, waiting (a little) for the killed
        processes to go. The job's exit is reported after this, so the first retries come
        quickly: a process that has just exited usually leaves its group within a millisecond
        (cgroup v1 gives no event for it), and a 20 ms step would delay every job's end."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + REMOVE_TIMEOUT_S
        delay_s = REMOVE_FIRST_POLL_S
        while not self.remove_now(job_id):
            if loop.time() >= deadline:
                log.warning("job=%d cgroup not removed: processes still in it", job_id)
                return
            await asyncio.sleep(delay_s)
            delay_s = min(delay_s * 2, REMOVE_POLL_S)

    def prune(self, keep: set[int]) -> None:
        """Remove the groups of jobs not in ``keep`` (ended while no agent ran); in the
        background where their killed processes take a moment to go."""
        loop = asyncio.get_running_loop()
        for job_id in sorted(self.job_ids() - keep - set(self._pruning)):
            if not self.remove_now(job_id):
                task = loop.create_task(self.remove(job_id))
                self._pruning[job_id] = task
                task.add_done_callback(functools.partial(self._forget, job_id))

    def _forget(self, job_id: int, task: asyncio.Task[None]) -> None:
        if self._pruning.get(job_id) is task:
            del self._pruning[job_id]

    def job_ids(self) -> set[int]:
        """The jobs that have a group here."""
        ids: set[int] = set()
        for h in self.hierarchies:
            with contextlib.suppress(OSError), os.scandir(self.agent_dir(h)) as entries:
                ids.update(int(m[1]) for e in entries if (m := _JOB_GROUP.fullmatch(e.name)))
        return ids

    def close(self) -> None:
        """Remove the agent's groups if no job's group is left in them (jobs left running
        keep theirs, for the next agent), and mgpu's if no other agent's is."""
        for task in self._pruning.values():
            task.cancel()
        for h in self.hierarchies:
            for path in (self.agent_dir(h), h.base / TOP_GROUP):
                try:
                    os.rmdir(path)
                except OSError:
                    break


@dataclass(frozen=True, slots=True)
class Isolation:
    """How the node isolates its jobs: its job groups, or None; and the summary that says so
    (its hello's ``isolation``)."""

    cgroups: JobCgroups | None
    summary: str


def setup_isolation(
    *,
    node_id: str,
    state_dir: Path,
    gpu_numbers: list[DeviceNumber | None],
    euid: int | None = None,
    proc_self: Path = Path("/proc/self"),
    disabled: bool = False,
) -> Isolation:
    """Find the host's cgroups and make the agent's groups, or say why jobs are not isolated
    (logged: the node says at start what isolates its jobs)."""
    cgroups, why = None, ""
    if disabled:
        why = "turned off (--no-cgroups)"
    elif (os.geteuid() if euid is None else euid) != 0:
        why = "the agent is not root (cgroups need root)"
    else:
        try:
            mountinfo = (proc_self / "mountinfo").read_text()
            own = (proc_self / "cgroup").read_text()
        except OSError as exc:
            why = f"cannot read {exc.filename}: {exc.strerror}"
        else:
            hierarchies = find_hierarchies(mountinfo, own)
            if not hierarchies:
                why = f"no cgroup controller of {', '.join(CONTROLLERS)} is mounted"
            else:
                cgroups = JobCgroups(hierarchies, agent_group(node_id, state_dir), gpu_numbers)
                try:
                    cgroups.open()
                except OSError as exc:
                    cgroups, why = None, f"cannot make {exc.filename}: {exc.strerror}"
    if cgroups is None:
        summary = shorten(f"none: {why}", MAX_NAME_LEN)
        log.warning("jobs are not isolated beyond CUDA_VISIBLE_DEVICES: %s", summary)
        return Isolation(None, summary)
    summary = shorten(cgroups.summary(), MAX_NAME_LEN)
    log.info("jobs run in cgroups: %s", summary)
    return Isolation(cgroups, summary)


def with_oom(reason: str, oom_kills: int) -> str:
    """The exit's reason, saying first that the kernel's OOM killer killed some of the job
    (its memory limit reached: the master ends it OUT_OF_MEMORY, as Slurm does)."""
    if not oom_kills:
        return reason
    what = "a process" if oom_kills == 1 else f"{oom_kills} processes"
    oom = f"out of memory: the kernel's OOM killer killed {what} of the job"
    return f"{oom} ({reason})" if reason else oom


def _not_placed(exc: OSError) -> OSError:
    """The launch failure's reason (a plain OSError: a spawn error, exit code 1)."""
    where = f" ({exc.filename})" if exc.filename else ""
    return OSError(f"cannot put the job in its cgroup: {exc.strerror or exc}{where}")


def wait_stopped(pid: int) -> None:
    """Wait until the gate ``pid`` (our child) has stopped itself, which is its first step;
    OSError if it ended instead (the status is left for Popen to collect)."""
    info = os.waitid(os.P_PID, pid, os.WSTOPPED | os.WEXITED | os.WNOWAIT)
    if info is None or info.si_code != os.CLD_STOPPED:
        raise OSError("its first process ended before it could be put there")


def _reap(proc: subprocess.Popen[bytes]) -> None:
    """Collect a killed gate, and close its pipes."""
    proc.wait()
    for pipe in (proc.stdout, proc.stderr):
        if pipe is not None:
            pipe.close()
