"""``scontrol show job|node|partition|config`` as Slurm 23.11 prints them: the keys, their
order and their grouping on lines (src/api/job_info.c ``slurm_sprint_job_info``,
node_info.c ``slurm_sprint_node_table``, partition_info.c ``slurm_sprint_partition_info``,
config_info.c ``slurm_print_key_pairs``).

Each record is ``Key=Value`` pairs on lines indented by three spaces, ending with a blank
line; ``one_liner=True`` (scontrol's ``-o``) puts a record on one line. Values mgpu does not
have print as Slurm prints them unset (``(null)``, ``N/A``, ``None``, ``*``).
"""

from __future__ import annotations

from mgpu_core.slurm import jobfields as jf
from mgpu_core.slurm import nodestate as ns
from mgpu_core.slurm import timefmt as tf
from mgpu_core.slurm.common import (
    NULL,
    compress_hostlist,
    gid_of,
    group_name,
    has_started,
    integer,
    job_state,
    job_tres,
    number,
    or_null,
    priority_tier,
    text,
    tres_per_node,
    uid_of,
)
from mgpu_core.slurm.timefmt import megabytes

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Sequence

    from mgpu_core.slurm.common import Row


def _record(lines: Sequence[str], one_liner: bool) -> str:
    """Join a record's lines as Slurm does: ``"\\n   "`` between them (``" "`` for
    one-liners) and a blank line after the record (none for one-liners)."""
    return (" " if one_liner else "\n   ").join(lines) + ("\n" if one_liner else "\n\n")


def _user_id(user: str) -> str:
    """``alice(1000)``: uid_to_string(uid)(uid)."""
    uid = uid_of(user)
    return f"{user}({'' if uid is None else uid})" if user else NULL


def _group_id(user: str) -> str:
    gid = gid_of(user)
    if gid is None:
        return NULL
    return f"{group_name(gid)}({gid})"


def _expand_output(pattern: str, job: Row) -> str:
    """slurm_get_job_stdout: a batch job's default output name with its patterns filled."""
    array_id = text(job, "array_job_id") or text(job, "job_id")
    task = text(job, "array_task_id")
    return pattern.replace("%A", array_id).replace("%a", task).replace("%j", text(job, "job_id"))


def show_job(job: Row, *, now: float, one_liner: bool = False, details: bool = False) -> str:
    """``scontrol show job`` for one job row (``details``: ``-d``, which adds
    DerivedExitCode). ``now`` is the master's clock, for the RunTime of a running job."""
    state = job_state(job)
    batch = not job.get("interactive")
    started = has_started(job)
    user = text(job, "user")
    first = f"JobId={text(job, 'job_id')} "
    if jf.is_array_task(job):
        first += f"ArrayJobId={jf.array_job_id(job)} ArrayTaskId={text(job, 'array_task_id')} "
    lines = [
        f"{first}JobName={text(job, 'name')}",
        f"UserId={_user_id(user)} GroupId={_group_id(user)} MCS_label=N/A",
        f"Priority={jf.priority(job)} Nice={integer(job, 'nice')} "
        f"Account={or_null(text(job, 'account'))} QOS={or_null(text(job, 'qos'))}",
        # Slurm replaces white space in the reason text with "_" for easier parsing.
        f"JobState={state} Reason={'_'.join(jf.reason(job).split())} "
        f"Dependency={or_null(text(job, 'dependency'))}",
        f"Requeue=1 Restarts={integer(job, 'restart_count')} BatchFlag={int(batch)} Reboot=0 "
        f"ExitCode={tf.exit_code(job.get('exit_code'), job.get('signal'))}",
    ]
    if details:
        lines.append("DerivedExitCode=0:0")
    limit_s = number(job, "time_limit_s")
    end = jf.end_time(job)
    lines += [
        f"RunTime={tf.duration(jf.time_used(job, now))} TimeLimit={tf.limit(limit_s)} TimeMin=N/A",
        f"SubmitTime={tf.timestamp(number(job, 'submit_time'))} "
        f"EligibleTime={tf.timestamp(number(job, 'eligible_time'))}",
        f"AccrueTime={tf.timestamp(number(job, 'eligible_time'))}",
        f"StartTime={tf.timestamp(jf.start_time(job))} "
        f"EndTime={'Unknown' if end is None else tf.timestamp(end)} Deadline=N/A",
        "SuspendTime=None SecsPreSuspend=0 "
        f"LastSchedEval={tf.timestamp(jf.start_time(job) or number(job, 'submit_time'))} "
        "Scheduler=Main",
        f"Partition={or_null(text(job, 'partition'))} "
        f"AllocNode:Sid={or_null(text(job, 'submit_host'))}:0",
        "ReqNodeList=(null) ExcNodeList=(null)",
        f"NodeList={text(job, 'node') if started else ''}",
    ]
    if batch and started:
        lines.append(f"BatchHost={text(job, 'node')}")
    cpus, tasks = integer(job, "cpus"), integer(job, "ntasks") or 1
    tres = ",".join(job_tres(job))
    lines += [
        f"NumNodes=1 NumCPUs={cpus} NumTasks={tasks} CPUs/Task={jf.cpus_per_task(job)} "
        "ReqB:S:C:T=0:0:*:*",
        f"ReqTRES={tres}",
        f"AllocTRES={tres if started else NULL}",
        "Socks/Node=* NtasksPerN:B:S:C=0:0:*:* CoreSpec=*",
        f"MinCPUsNode={cpus} MinMemoryNode={tf.memory(integer(job, 'mem_bytes'))} MinTmpDiskNode=0",
        "Features=(null) DelayBoot=00:00:00",
        f"OverSubscribe={'NO' if job.get('exclusive') else 'OK'} Contiguous=0 "
        "Licenses=(null) Network=(null)",
        f"Command={or_null(text(job, 'command'))}",
        f"WorkDir={or_null(text(job, 'cwd'))}",
    ]
    if batch:
        stdout = _expand_output(jf.stdout_path(job), job)
        stderr = _expand_output(text(job, "stderr_path"), job) or stdout
        lines += [
            f"StdErr={stderr}",
            "StdIn=/dev/null",
            f"StdOut={stdout}",
        ]
    lines.append("Power=")
    if tres_per_node(job):
        lines.append(f"TresPerNode={tres_per_node(job)}")
    lines.append("")  # Slurm ends the record with one more line break before the blank line
    return _record(lines, one_liner)


def _node_alloc_tres(node: Row) -> str:
    """The TRES the node's jobs hold, in TRES id order; ``""`` when idle."""
    alloc = []
    if integer(node, "cpus_alloc"):
        alloc.append(f"cpu={integer(node, 'cpus_alloc')}")
    if integer(node, "mem_alloc_bytes"):
        alloc.append(f"mem={tf.memory(integer(node, 'mem_alloc_bytes'))}")
    if ns.gpus_used(node):
        alloc.append(f"gres/gpu={ns.gpus_used(node)}")
    return ",".join(alloc)


def show_node(node: Row, *, one_liner: bool = False, details: bool = False) -> str:
    """``scontrol show node`` for one node row (``details``: ``-d``, adding GresUsed with
    the GPU indices in use)."""
    code = ns.state_code(node)
    cpus, mem_mb = integer(node, "cpus"), megabytes(integer(node, "mem_bytes"))
    lines = [
        f"NodeName={text(node, 'node_id')} CoresPerSocket=1 ",
        f"CPUAlloc={integer(node, 'cpus_alloc')} CPUEfctv={cpus} CPUTot={cpus} CPULoad=0.00",
        "AvailableFeatures=(null)",
        "ActiveFeatures=(null)",
        f"Gres={ns.node_gres(node)}",
    ]
    if details:
        lines.append(f"GresUsed={ns.node_gres_used(node)}")
    addr = f"NodeAddr={text(node, 'address') or text(node, 'node_id')} "
    addr += f"NodeHostName={text(node, 'hostname') or text(node, 'node_id')} "
    if text(node, "agent_version"):
        addr += f"Version={text(node, 'agent_version')}"
    lines += [
        addr,
        f"RealMemory={mem_mb} AllocMem={megabytes(integer(node, 'mem_alloc_bytes'))} "
        f"FreeMem=N/A Sockets={cpus} Boards=1",
        f"State={ns.state_complete(code)} ThreadsPerCore=1 TmpDisk=0 Weight=1 Owner=N/A "
        "MCS_label=N/A",
    ]
    if node.get("partitions"):
        lines.append(f"Partitions={','.join(node['partitions'])} ")
    gpus = ns.gpu_count(node)
    cfg = f"cpu={cpus},mem={tf.convert_num_unit(mem_mb, tf.UNIT_MEGA)},billing={cpus}"
    lines += [
        "BootTime=None SlurmdStartTime=None",
        "LastBusyTime=Unknown ResumeAfterTime=None",
        f"CfgTRES={cfg}" + (f",gres/gpu={gpus}" if gpus else ""),
        f"AllocTRES={_node_alloc_tres(node)}",
        "CapWatts=n/a",
        "CurrentWatts=0 AveWatts=0",
        "ExtSensorsJoules=n/a ExtSensorsWatts=0 ExtSensorsTemp=n/a",
    ]
    reason = ns.reason(node)
    if reason:
        # A reason's further lines go under the first (node_info.c: line end + 7 spaces).
        first, *rest = reason.split("\n")
        lines.append(f"Reason={first}")
        lines += [f"       {line}" for line in rest]
    return _record(lines, one_liner)


def show_partition(part: Row, nodes: Sequence[Row] = (), *, one_liner: bool = False) -> str:
    """``scontrol show partition`` for one partition row; ``nodes`` are its node rows,
    for TotalCPUs and TRES."""
    members = set(part.get("nodes") or ())
    own = [n for n in nodes if text(n, "node_id") in members]
    cpus = sum(integer(n, "cpus") for n in own)
    mem_mb = sum(megabytes(integer(n, "mem_bytes")) for n in own)
    gpus = integer(part, "total_gpus") or sum(ns.gpu_count(n) for n in own)
    groups = ",".join(part.get("allowed_groups") or ()) or "ALL"
    qos = ",".join(part.get("allowed_qos") or ()) or "ALL"
    default_s, max_s = number(part, "default_time_s"), number(part, "max_time_s")
    tres = f"cpu={cpus},mem={tf.convert_num_unit(mem_mb, tf.UNIT_MEGA)},node={len(members)}"
    tres += f",billing={cpus}" + (f",gres/gpu={gpus}" if gpus else "")
    lines = [
        f"PartitionName={text(part, 'name')}",
        f"AllowGroups={groups} AllowAccounts=ALL AllowQos={qos}",
        f"AllocNodes=ALL Default={'YES' if part.get('default') else 'NO'} QoS=N/A",
        f"DefaultTime={tf.duration(default_s) if default_s else 'NONE'} DisableRootJobs=NO "
        "ExclusiveUser=NO GraceTime=0 Hidden=NO",
        f"MaxNodes=UNLIMITED MaxTime={tf.limit(max_s)} MinNodes=0 LLN=NO "
        "MaxCPUsPerNode=UNLIMITED MaxCPUsPerSocket=UNLIMITED",
        f"Nodes={compress_hostlist(part.get('nodes') or ()) or NULL}",
        f"PriorityJobFactor=1 PriorityTier={priority_tier(part)} RootOnly=NO "
        "ReqResv=NO OverSubscribe=NO",
        "OverTimeLimit=NONE PreemptMode=OFF",
        f"State={text(part, 'state').upper() or 'UP'} TotalCPUs={cpus} "
        f"TotalNodes={len(members)} SelectTypeParameters=NONE",
        "JobDefaults=(null)",
        "DefMemPerNode=UNLIMITED MaxMemPerNode=UNLIMITED",
        f"TRES={tres}",
    ]
    return _record(lines, one_liner)


def show_config(pairs: Sequence[tuple[str, str]], *, updated: float) -> str:
    """``scontrol show config``: ``Configuration data as of TIME`` then one
    ``Key = Value`` line per pair, the key padded to 23 characters (``%-23s = %s``)."""
    out = [f"Configuration data as of {tf.timestamp(updated)}"]
    out += [f"{key:<23} = {value}" for key, value in pairs]
    return "\n".join(out) + "\n"
