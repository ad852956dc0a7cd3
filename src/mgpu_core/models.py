"""The records that cross process boundaries, each declared once, and their wire conversion.

Three representations, converted only here: record <-> wire dict <-> bytes
(:mod:`mgpu_core.protocol`). Every field is declared once, with its type, its default and its
validator (:mod:`mgpu_core.records`); the schemas that check these records on the way in
(``JobSpec.SCHEMA`` ..., used by the tables of :mod:`mgpu_core.messages`) are derived from the
declarations, so a job option or a GPU field is added here, plus where it is used.

* :class:`JobSpec`: what a user asks for (``submit.job``, ``launch.spec``).
* :class:`SubmitRequest`: a client's ``submit`` (its ``id`` and ``t`` are the envelope's).
* :class:`GpuDevice`, :class:`NodeHello`: a node's registration (``hello.node``).
* :class:`GpuSample`, :class:`GpuProcess`: one GPU's state in a node's ``heartbeat``.
* :class:`Launch`: the master's order to a node to start a job (``launch.launch``).
* :class:`JobExited`: a node's report that a job's process ended (``job_exited``).
* :class:`JobResult`: what a per-job verb (cancel, hold, release, requeue) did to one job.

All are frozen but :class:`JobSpec`, which the master still completes at submit (the QoS's
time limit, a canonical dependency, an array task's paths) and changes on ``update``.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass, field

from mgpu_core.constants import KILL_GRACE_S
from mgpu_core.errors import MgpuError, error_from_wire
from mgpu_core.limits import (
    GPU_INDEX,
    JOB_ID,
    JOB_REF,
    MAX_ARG_LEN,
    MAX_ARGS,
    MAX_BYTES,
    MAX_CPUS,
    MAX_DEPENDENCY_LEN,
    MAX_ENV_CHARS,
    MAX_ENV_ENTRIES,
    MAX_GPU_PROCESSES,
    MAX_GPUS_PER_NODE,
    MAX_IDS_PER_REQUEST,
    MAX_JOB_PORTS,
    MAX_MESSAGE_LEN,
    MAX_NAME_LEN,
    MAX_NICE,
    MAX_PATH_LEN,
    MAX_REASON_LEN,
    MAX_SCRIPT_BYTES,
    MAX_TIME_LIMIT_S,
    NAME,
    PID,
    shorten,
)
from mgpu_core.records import WireRecord, wire, wire_record
from mgpu_core.schema import Bool, Float, Int, ListOf, MapOf, OneOf, Optional, OsStr, Str
from mgpu_core.text import printable as printable  # re-exported: its older home

_PATH = Str(MAX_PATH_LEN)
PORT = Int(1, 65_535)
# What a job's owner (--mail-type) and the cluster's webhooks can be told of: Slurm's mail
# types (ALL is BEGIN, END, FAIL, REQUEUE, INVALID_DEPEND; TIME_LIMIT_N: N % of the limit).
NOTIFY_EVENTS = (
    "BEGIN", "END", "FAIL", "REQUEUE", "INVALID_DEPEND",
    "TIME_LIMIT", "TIME_LIMIT_90", "TIME_LIMIT_80", "TIME_LIMIT_50",
)  # fmt: skip
# Arguments, environment entries and scripts are passed to the job byte for byte, UTF-8 or
# not (OsStr); names and paths are shown in the queue and must be text.
_ARG = OsStr(MAX_ARG_LEN)


@wire_record
@dataclass(slots=True)
class JobSpec(WireRecord):
    """What a user asks for. The master completes it at submit and changes it on ``update``;
    nothing else changes it.

    Exactly one of ``argv`` (run directly, srun-style) or ``script`` (a batch script's text,
    copied at submit time as sbatch does) is set. Memory and CPUs are scheduling quantities.
    docs/protocol.md §5.1 says what each field means.
    """

    name: str = field(default="", metadata=wire(NAME))
    argv: list[str] = field(default_factory=list, metadata=wire(ListOf(_ARG, MAX_ARGS)))
    script: str | None = field(default=None, metadata=wire(Optional(OsStr(MAX_SCRIPT_BYTES))))
    interactive: bool = field(default=False, metadata=wire(Bool()))
    gpus: int = field(default=0, metadata=wire(Int(0, MAX_GPUS_PER_NODE)))
    cpus: int = field(default=1, metadata=wire(Int(1, MAX_CPUS)))
    mem_bytes: int = field(default=0, metadata=wire(Int(0, MAX_BYTES)))
    time_limit_s: int = field(default=0, metadata=wire(Int(0, MAX_TIME_LIMIT_S)))
    nodelist: list[str] = field(default_factory=list, metadata=wire(ListOf(NAME, 4096)))
    env: dict[str, str] = field(
        default_factory=dict,
        metadata=wire(MapOf(_ARG, MAX_ENV_ENTRIES, max_total=MAX_ENV_CHARS, key=_ARG)),
    )
    cwd: str = field(default="/", metadata=wire(_PATH))
    stdout_path: str | None = field(default=None, metadata=wire(Optional(_PATH)))
    stderr_path: str | None = field(default=None, metadata=wire(Optional(_PATH)))
    # --array, e.g. "0-15%4": the master makes one job per task.
    array: str = field(default="", metadata=wire(Str(4096)))
    # Requeue (rather than end NODE_FAIL) when the node fails under the job.
    requeue: bool = field(default=False, metadata=wire(Bool()))
    nice: int = field(default=0, metadata=wire(Int(-MAX_NICE, MAX_NICE)))
    qos: str = field(default="", metadata=wire(NAME))
    dependency: str = field(default="", metadata=wire(Str(MAX_DEPENDENCY_LEN)))
    kill_on_invalid_dep: bool = field(default=False, metadata=wire(Bool()))
    hold: bool = field(default=False, metadata=wire(Bool()))
    # --begin: not before this Unix time (0 = now).
    begin_time: float = field(default=0.0, metadata=wire(Float()))
    # --signal SIG@SECONDS: warn the job this long before its time limit.
    warn_signal: int = field(default=0, metadata=wire(Int(0, 64)))
    warn_before_s: int = field(default=0, metadata=wire(Int(0, 65_535)))
    # The submitter's umask, which the node gives the job's process and its output files
    # (None: the node's own, as for a client older than the field).
    umask: int | None = field(default=None, metadata=wire(Optional(Int(0, 0o777))))
    # Slurm's -n/--ntasks: tasks of the job (all on its one node). ``cpus`` is the job's
    # total (ntasks x --cpus-per-task); srun steps inside the job start this many tasks.
    ntasks: int = field(default=1, metadata=wire(Int(1, MAX_CPUS)))
    # -p: the partitions the job may run in, in the user's order ("" = the default one).
    partition: str = field(default="", metadata=wire(Str(MAX_PATH_LEN)))
    account: str = field(default="", metadata=wire(NAME))  # -A (shown; no limits yet)
    # --gres=gpu:TYPE:N / -G TYPE:N: a normalised GPU model (mgpu_core.gputypes), "" = any.
    gpu_type: str = field(default="", metadata=wire(NAME))
    # --exclusive: the whole node, nobody else's jobs beside it.
    exclusive: bool = field(default=False, metadata=wire(Bool()))
    # -x/--exclude: never on these nodes.
    exclude: list[str] = field(default_factory=list, metadata=wire(ListOf(NAME, 4096)))
    # --open-mode=append: append to existing output files (a requeued run always appends).
    open_append: bool = field(default=False, metadata=wire(Bool()))
    # The host the job was submitted from (SLURM_SUBMIT_HOST).
    submit_host: str = field(default="", metadata=wire(NAME))
    # --mail-type: the events its owner is told of (NOTIFY_EVENTS), by mail to --mail-user
    # (else the owner at the master's [mail] domain) and to --notify's URL.
    mail_types: list[str] = field(
        default_factory=list, metadata=wire(ListOf(OneOf(*NOTIFY_EVENTS), len(NOTIFY_EVENTS)))
    )
    mail_user: str = field(default="", metadata=wire(Str(254)))
    notify_url: str = field(default="", metadata=wire(Str(2048)))
    # --ports N: TCP ports the master gives the job from its node's range (MGPU_PORTS).
    ports: int = field(default=0, metadata=wire(Int(0, MAX_JOB_PORTS)))
    # --container-image and pyxis's companions: run in a container with only its GPUs
    # (docs/sessions.md). Mounts: "SRC:DST[:ro]" each.
    container_image: str = field(default="", metadata=wire(_PATH))
    container_mounts: list[str] = field(default_factory=list, metadata=wire(ListOf(_PATH, 64)))
    container_workdir: str = field(default="", metadata=wire(_PATH))
    # An interactive session (mgpu_client session start): it holds its allocation until its
    # time limit (the TTL) and a grace period, `session stop`, or its idle policy.
    session: bool = field(default=False, metadata=wire(Bool()))

    def command_display(self) -> str:
        """A one-line rendering of what runs, for queue listings and logs (bytes that are not
        UTF-8 escaped)."""
        if self.script is not None:
            return f"(batch script) {self.name}".strip()
        return printable(shlex.join(self.argv))

    def display_name(self) -> str:
        """The name, else the program's; as given (see :func:`printable` to show it)."""
        if self.name:
            return self.name
        if self.argv:
            return self.argv[0].rsplit("/", 1)[-1]
        return "batch"


@wire_record
@dataclass(frozen=True, slots=True, kw_only=True)
class SubmitRequest(WireRecord):
    """A client's ``submit``: the job, and whether this connection follows its events."""

    job: JobSpec = field(metadata=wire(JobSpec.SCHEMA))
    attach: bool = field(default=False, metadata=wire(Bool()))
    # sbatch --test-only: check the job and say when and where it would start; submit nothing.
    test_only: bool = field(default=False, metadata=wire(Bool()))


@wire_record
@dataclass(frozen=True, slots=True, kw_only=True)
class GpuDevice(WireRecord):
    """One schedulable GPU (a whole GPU or one MIG instance) of a node, as it registers it."""

    # The scheduler's index on the node: 0..n-1 in a stable order (PCI bus order for NVML).
    index: int = field(metadata=wire(GPU_INDEX))
    uuid: str = field(default="", metadata=wire(NAME))  # "GPU-..." or "MIG-..."
    name: str = field(default="", metadata=wire(NAME))  # e.g. "NVIDIA H100 80GB HBM3"
    # Its type as jobs ask for it (--gres=gpu:TYPE:N): mgpu_core.gputypes.normalise(name),
    # e.g. "h100"; "" from agents older than the field (the master normalises the name).
    model: str = field(default="", metadata=wire(NAME))
    memory_total_bytes: int = field(default=0, metadata=wire(Int(0, MAX_BYTES)))
    # The CUDA_VISIBLE_DEVICES entry: the NVML index (a whole GPU) or the MIG UUID.
    visible_id: str = field(metadata=wire(NAME))
    fake: bool = field(default=False, metadata=wire(Bool()))
    # A MIG slice (its model is its profile, "1g.10gb"): the whole GPU it is part of, by UUID
    # and by its number among the node's physical GPUs (PCI order). "" and -1: a whole GPU,
    # which jobs asking for GPUs without a type may have (a slice only by its profile).
    parent_uuid: str = field(default="", metadata=wire(NAME))
    parent_index: int = field(default=-1, metadata=wire(Int(-1, MAX_GPUS_PER_NODE - 1)))

    @property
    def is_slice(self) -> bool:
        return self.parent_index >= 0


@wire_record
@dataclass(frozen=True, slots=True, kw_only=True)
class GpuProcess(WireRecord):
    """A process that holds a context on a GPU."""

    pid: int = field(metadata=wire(PID))
    user: str = field(default="?", metadata=wire(NAME))  # its owner's user name, "?" if unknown
    used_memory_bytes: int = field(default=0, metadata=wire(Int(0, MAX_BYTES)))  # 0: unknown
    command: str = field(default="", metadata=wire(NAME))  # short process name, "" if unknown


@wire_record
@dataclass(frozen=True, slots=True, kw_only=True)
class GpuSample(WireRecord):
    """The state of one GPU at one moment, as a node's heartbeat reports it. The defaults are
    a healthy GPU of which nothing is measured: what the master assumes until a heartbeat."""

    index: int = field(metadata=wire(GPU_INDEX))  # the GpuDevice's index
    healthy: bool = field(default=True, metadata=wire(Bool()))
    error: str = field(default="", metadata=wire(NAME))  # why it is unhealthy, "" if healthy
    utilization_pct: int = field(default=-1, metadata=wire(Int(-1, 100)))  # -1: unknown
    memory_used_bytes: int = field(default=-1, metadata=wire(Int(-1, MAX_BYTES)))  # -1: unknown
    # Strangers' processes only: the agent leaves out those of its jobs.
    processes: list[GpuProcess] = field(
        default_factory=list, metadata=wire(ListOf(GpuProcess.SCHEMA, MAX_GPU_PROCESSES))
    )


@wire_record
@dataclass(frozen=True, slots=True, kw_only=True)
class NodeHello(WireRecord):
    """A node's registration, the ``node`` of its ``hello``."""

    node_id: str = field(metadata=wire(Str(MAX_NAME_LEN, min_len=1)))
    hostname: str = field(default="", metadata=wire(NAME))  # "": the master uses node_id
    address: str = field(default="", metadata=wire(NAME))  # "": the master uses the peer's IP
    cpus: int = field(default=1, metadata=wire(Int(1, MAX_CPUS)))
    mem_bytes: int = field(default=0, metadata=wire(Int(0, MAX_BYTES)))
    gpus: list[GpuDevice] = field(
        default_factory=list, metadata=wire(ListOf(GpuDevice.SCHEMA, MAX_GPUS_PER_NODE))
    )
    gpu_backend: str = field(default="", metadata=wire(NAME))  # "nvml", "fake" or "none"
    # What isolates the node's jobs beyond CUDA_VISIBLE_DEVICES: "cgroup v1 (devices, memory,
    # cpu)", or "none: <why>"; "": an agent older than the field.
    isolation: str = field(default="", metadata=wire(NAME))
    # Jobs the node runs, and jobs whose exit the master has not acknowledged yet.
    running_job_ids: list[int] = field(
        default_factory=list, metadata=wire(ListOf(JOB_ID, MAX_IDS_PER_REQUEST))
    )
    agent_version: str = field(default="", metadata=wire(NAME))
    # --port-range LO-HI: the ports the master may give this node's jobs ([] = none).
    port_range: list[int] = field(default_factory=list, metadata=wire(ListOf(PORT, 2)))
    # The container runtimes found on the node ("podman", "apptainer", ...), for jobs with an
    # image (containers.py); [] = none, or an agent older than the field.
    runtimes: list[str] = field(default_factory=list, metadata=wire(ListOf(NAME, 8)))
    # Where each user's persistent workspace is on this node ("" = none).
    workspace_root: str = field(default="", metadata=wire(_PATH))
    # The workspace root's id (mgpu_node/workspaces.py): nodes that report the same one share
    # the directory (a shared filesystem); "" = not known to be shared with any.
    workspace_id: str = field(default="", metadata=wire(NAME))


@wire_record
@dataclass(frozen=True, slots=True, kw_only=True)
class Launch(WireRecord):
    """The master's order to start a job on a node."""

    job_id: int = field(metadata=wire(JOB_ID))
    user: str = field(default="", metadata=wire(NAME))  # the owner (%u in output paths)
    spec: JobSpec = field(metadata=wire(JobSpec.SCHEMA))
    # The node's GPU indices; the node maps them to visible_ids for CUDA_VISIBLE_DEVICES.
    gpu_indices: list[int] = field(
        default_factory=list, metadata=wire(ListOf(GPU_INDEX, MAX_GPUS_PER_NODE))
    )
    kill_grace_s: float = field(default=KILL_GRACE_S, metadata=wire(Float()))
    # The job's run: 0, then +1 per requeue (MGPU_RESTART_COUNT).
    restart_count: int = field(default=0, metadata=wire(Int(0, 2**31)))
    # The master's count of launches sent to this node (per link), echoed in heartbeats so
    # that a heartbeat sent before a launch arrived does not make the job look vanished.
    launch_seq: int = field(default=0, metadata=wire(Int(0, 2**53)))
    # The partition the master placed the job in (the job sees SLURM_JOB_PARTITION); "" from
    # a master older than the field, or one without partitions.
    partition: str = field(default="", metadata=wire(NAME))
    # The master's cluster name (SLURM_CLUSTER_NAME); "": the node says "mgpu".
    cluster_name: str = field(default="", metadata=wire(NAME))
    # The TCP ports given to the job (--ports), from the node's range: MGPU_PORTS.
    ports: list[int] = field(default_factory=list, metadata=wire(ListOf(PORT, MAX_JOB_PORTS)))
    # A session's grace after its TTL (the time limit), before it is ended (its QoS's).
    grace_s: int = field(default=0, metadata=wire(Int(0, MAX_TIME_LIMIT_S)))


@wire_record
@dataclass(frozen=True, slots=True, kw_only=True)
class JobExited(WireRecord):
    """A node's report that a launched job ended (exactly one per launch, failed spawns too)."""

    job_id: int = field(metadata=wire(JOB_ID))
    exit_code: int | None = field(default=None, metadata=wire(Optional(Int(-(2**31), 2**31))))
    signal: int | None = field(default=None, metadata=wire(Optional(Int(1, 128))))
    timed_out: bool = field(default=False, metadata=wire(Bool()))
    reason: str = field(default="", metadata=wire(Str(MAX_REASON_LEN)))
    # The run this exit belongs to (Launch.restart_count); None from older agents.
    restart_count: int | None = field(default=None, metadata=wire(Optional(Int(0, 2**31))))
    # Killed by the node's fence (no word from the master for fence_timeout_s): for the job,
    # a node failure (requeued, or NODE_FAIL), not a failure of its own.
    fenced: bool = field(default=False, metadata=wire(Bool()))
    # An interactive job's output, in bytes (where its output log ends): a client that
    # printed less knows it missed some. None for batch jobs and from older agents.
    output_bytes: int | None = field(default=None, metadata=wire(Optional(Int(0, 2**62))))
    # The kernel's OOM killer ended the job (its cgroup's memory.events / oom_control counted
    # a kill): the master ends it OUT_OF_MEMORY, as Slurm does.
    oom_killed: bool = field(default=False, metadata=wire(Bool()))


@wire_record
@dataclass(frozen=True, slots=True, kw_only=True)
class JobResult(WireRecord):
    """What a per-job verb (cancel, hold, release, requeue) did to one job: done, or refused
    with an error's code and message. The one way such a result is made and read back."""

    job_id: int | str = field(metadata=wire(JOB_REF))  # the job, or the reference as given
    ok: bool = field(metadata=wire(Bool()))
    code: str = field(default="", metadata=wire(NAME))  # "" when ok
    message: str = field(default="", metadata=wire(Str(MAX_MESSAGE_LEN)))

    @classmethod
    def success(cls, job_id: int | str) -> JobResult:
        return cls(job_id=job_id, ok=True)

    @classmethod
    def from_error(cls, job_id: int | str, err: MgpuError) -> JobResult:
        # Cut to the wire's limit here, so that no message can make the reply unreadable.
        return cls(
            job_id=job_id,
            ok=False,
            code=err.code[:MAX_NAME_LEN],
            message=shorten(err.message, MAX_MESSAGE_LEN),
        )

    def error(self) -> MgpuError | None:
        """The typed exception the master refused with (``error_from_wire``), None if ok."""
        return None if self.ok else error_from_wire(self.code, self.message)
