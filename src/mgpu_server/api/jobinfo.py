"""One job in full (``mgpu_client show``): the queue row's fields and what only a close look
needs: the wait, the GPUs' UUIDs, the dependency's status, the priority factors, the batch
script. Pure reads of the state; who may see what is decided here, with permissions' rules."""

from __future__ import annotations

from typing import Any

from mgpu_core.deps import DepStatus
from mgpu_core.errors import InvalidRequest
from mgpu_core.states import JobState
from mgpu_server.api import permissions as perm
from mgpu_server.api.permissions import RequestContext
from mgpu_server.records.jobs import Job
from mgpu_server.state.cluster import ClusterState

# Shown to the owner and admins only, whatever ``private_commands`` says: a batch script
# holds more than a command line (paths, hosts, sometimes credentials).
OWNER_ONLY = ("script", "env_keys")


def job_detail(
    state: ClusterState, ctx: RequestContext, job: Job, now: float, *, private_commands: bool
) -> dict[str, Any]:
    """Everything ``show`` prints about ``job``, as ``ctx`` may see it."""
    row = job.to_wire(now)
    row.update(
        eligible_time=max(job.submit_time, job.spec.begin_time),
        wait_s=_wait_s(job, now),
        gpu_uuids=_gpu_uuids(state, job),
        time_limit_s=job.spec.time_limit_s,
        spec_ports=job.spec.ports,
        nodelist=list(job.spec.nodelist),
        exclude=list(job.spec.exclude),
        requeue=job.spec.requeue,
        begin_time=job.spec.begin_time,
        dependency_status=_dependency_status(state, job),
        priority_factors=_priority_factors(state, job, now),
        script=job.spec.script,
        env_keys=sorted(job.spec.env),
        steps=_steps(state, job),
    )
    if not job.spec.interactive:  # the files as the node names them (%j, %u, %N ... filled in)
        row.update(stdout_path=job.output_file("stdout"), stderr_path=job.output_file("stderr"))
    if not perm.sees_command(ctx, job.user, private_commands=private_commands):
        row.update(command="", cwd="", stdout_path=None, stderr_path=None)
    if not (ctx.admin or ctx.user == job.user):
        for key in OWNER_ONLY:
            row[key] = None
    return row


def _steps(state: ClusterState, job: Job) -> list[dict[str, Any]]:
    if job.job_id in state.table:
        return state.steps.rows(job.job_id)
    return [s.to_wire() for s in state.store.history.steps_of([job.job_id]).get(job.job_id, [])]


def _wait_s(job: Job, now: float) -> float:
    """From eligible (submitted, or its --begin) to start; still growing while pending."""
    eligible = max(job.submit_time, job.spec.begin_time)
    if job.start_time:
        return max(0.0, job.start_time - eligible)
    if job.state is JobState.PENDING:
        return max(0.0, now - eligible)
    return max(0.0, (job.end_time or now) - eligible)  # ended without starting


def _gpu_uuids(state: ClusterState, job: Job) -> list[str]:
    """The UUIDs of the GPUs the job holds or held (empty where its node is unknown now)."""
    node = state.nodes.get(job.node_id) if job.node_id else None
    if node is None:
        return []
    by_index = {g.index: g.device.uuid for g in node.gpus}
    return [by_index.get(i, "") for i in job.gpu_indices]


def _dependency_status(state: ClusterState, job: Job) -> str:
    """ "" (none), or where the dependency stands: waiting, satisfied, never satisfiable."""
    if job.dependency is None:
        return ""
    status = state.lifecycle.deps.status(job, state.table.jobs)
    return {DepStatus.WAIT: "waiting", DepStatus.OK: "satisfied", DepStatus.NEVER: "never"}[status]


def _priority_factors(state: ClusterState, job: Job, now: float) -> dict[str, Any] | None:
    """A pending job's priority and its factors (None once it has started)."""
    if job.state is not JobState.PENDING:
        return None
    breakdown = state.priorities_at(now).breakdown(job)
    policy = state.policy
    return {
        "priority": round(breakdown.priority, 3),
        "age": round(breakdown.age, 4),
        "fairshare": round(breakdown.fairshare, 4),
        "qos": round(breakdown.qos, 4),
        "nice": breakdown.nice,
        "admin": breakdown.admin,
        "weights": {
            "age": policy.weight_age,
            "fairshare": policy.weight_fairshare,
            "qos": policy.weight_qos,
        },
    }


def one_job(state: ClusterState, ref: int | str) -> Job:
    """The one job ``ref`` names (a verb that acts on a single job: log, a terminal, a
    session's extension); an array's id names several: InvalidRequest."""
    jobs = state.find([ref])
    if len(jobs) != 1:
        raise InvalidRequest(f"job {ref} is an array of {len(jobs)} tasks: name one, as ID_TASK")
    return jobs[0]


def log_order(
    state: ClusterState, ctx: RequestContext, msg: dict[str, Any]
) -> tuple[Job, dict[str, Any] | None]:
    """(the job, the ``read_output`` its node is to answer; None: the job has not started,
    so there is no output yet) for a client's ``log`` request."""
    job = one_job(state, msg["job_id"])
    perm.check_owner(ctx, job, "read the output of")
    # An interactive job's output is its node's log of what srun showed ("": no file).
    path = job.output_file(msg["stream"]) or ""
    if not job.node_id:
        return job, None
    order = {
        "job_id": job.job_id,
        "path": path,
        "user": job.user,
        "offset": msg["offset"],
        "from_end": msg["from_end"],
        "max_bytes": msg["max_bytes"],
    }
    return job, order


def log_status(job: Job, now: float) -> dict[str, Any]:
    """What a log reader needs to know whether more output will come, and how it ended."""
    return job.to_wire(now, ["job_id", "state", "exit_code", "signal", "reason", "node"])
