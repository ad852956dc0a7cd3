"""Submission side of the master's state: checking a job against the cluster and its QoS,
job arrays (one job per task), dependency references, and resolving job references.

A mixin of :class:`~mgpu_server.state.cluster.Cluster`, which owns all state.
"""

from __future__ import annotations

import copy
import logging
from typing import TYPE_CHECKING, Any

from mgpu_core.arrays import expand_array_patterns, parse_array, parse_job_ref
from mgpu_core.deps import parse_dependency
from mgpu_core.errors import InvalidRequest, JobNotFound
from mgpu_core.models import JobSpec
from mgpu_server.records.jobs import Job
from mgpu_server.scheduling.planner import REASON_PRIORITY

if TYPE_CHECKING:
    from mgpu_server.records.nodes import NodeRecord
    from mgpu_server.scheduling.policy import PolicyConfig
    from mgpu_server.scheduling.turns import TurnQueue
    from mgpu_server.state.pending import PendingQueue
    from mgpu_server.storage.store import Store

log = logging.getLogger(__name__)


class Submission:
    # Provided by Cluster (declared here for the type checker).
    jobs: dict[int, Job]
    pending: PendingQueue
    arrays: dict[int, list[int]]
    nodes: dict[str, NodeRecord]
    policy: PolicyConfig
    new_jobs: list[Job]
    changed: bool
    store: Store
    _next_id: int
    turns: TurnQueue

    def submit(self, user: str, spec: JobSpec, now: float) -> Job:
        """Accept a job (or a job array: one job per task); returns the (first) job."""
        if spec.gpus and user in self.turns.revoked:
            raise InvalidRequest(
                f"user {user} has no GPU access (revoked by an admin); jobs without GPUs still run"
            )
        self._check_spec(spec)
        self._apply_qos(spec)
        if spec.dependency:
            spec.dependency = self._canonical_dependency(spec.dependency)
        if not spec.array:
            return self._add_job(user, spec, now)
        try:
            array = parse_array(spec.array)
        except ValueError as exc:
            raise InvalidRequest(str(exc)) from None
        array_id = self._next_id
        first: Job | None = None
        for task in array.task_ids:
            task_spec = copy.deepcopy(spec)
            task_spec.env.update(
                MGPU_ARRAY_JOB_ID=str(array_id),
                MGPU_ARRAY_TASK_ID=str(task),
                MGPU_ARRAY_TASK_COUNT=str(len(array.task_ids)),
            )
            for attr in ("stdout_path", "stderr_path"):
                template = getattr(task_spec, attr)
                if template:
                    setattr(task_spec, attr, expand_array_patterns(template, array_id, task))
            job = self._add_job(user, task_spec, now, array=(array_id, task, array.max_running))
            first = first or job
        assert first is not None
        return first

    def _add_job(
        self, user: str, spec: JobSpec, now: float, array: tuple[int, int, int] | None = None
    ) -> Job:
        job = Job(job_id=self._next_id, user=user, spec=spec, submit_time=now)
        if array is not None:
            job.array_job_id, job.array_task_id, job.array_throttle = array
            self.arrays.setdefault(array[0], []).append(job.job_id)
        if spec.hold:
            job.hold = "user"
        job.reason = waiting_reason(job, now)
        self._next_id += 1
        self.jobs[job.job_id] = job
        self.pending.add(job)
        self.new_jobs.append(job)
        self.changed = True
        self.store.put_job(job)
        log.info("job=%d user=%s state=PENDING gpus=%d", job.job_id, user, spec.gpus)
        return job

    def resolve(self, ref: int | str) -> list[int]:
        """A job reference -> job ids: ``ID`` (a job, or every task of array ID) or
        ``ARRAYID_TASK``. JobNotFound for anything else."""
        try:
            job_id, task = parse_job_ref(str(ref))
        except ValueError as exc:
            raise JobNotFound(str(exc)) from None
        if task is not None:
            for member in self.arrays.get(job_id, ()):
                if self.jobs[member].array_task_id == task:
                    return [member]
        elif job_id in self.arrays:
            return list(self.arrays[job_id])
        elif job_id in self.jobs:
            return [job_id]
        raise JobNotFound(f"invalid job id specified: {ref}")

    def resolve_all(
        self, refs: list[int | str], *, live: bool = False
    ) -> tuple[list[int], list[dict[str, Any]]]:
        """(job ids, error results for the references that name nothing). With ``live``, a
        whole array stands for its unfinished tasks (cancelling an array whose first tasks
        are done is not an error), as long as it has any."""
        ids: list[int] = []
        errors: list[dict[str, Any]] = []
        for ref in refs:
            try:
                found = self.resolve(ref)
                if live and len(found) > 1:
                    found = [i for i in found if not self.jobs[i].state.terminal] or found
                ids.extend(i for i in found if i not in ids)
            except JobNotFound as err:
                errors.append({"job_id": ref, "ok": False, **err.to_wire()})
        return ids, errors

    def _check_spec(self, spec: JobSpec) -> None:
        if not spec.argv and spec.script is None:
            raise InvalidRequest("a job needs a command or a batch script")
        unknown = [n for n in spec.nodelist if n not in self.nodes]
        if unknown:
            raise InvalidRequest(f"invalid node name specified: {', '.join(unknown[:5])}")
        candidates = [self.nodes[n] for n in spec.nodelist] or list(self.nodes.values())
        if not candidates:
            return  # no node has registered yet: the job waits for one
        # Against the nodes' configured sizes: a GPU that is down for now does not make a
        # request impossible, only pending.
        if not any(
            spec.gpus <= len(n.gpus) and spec.cpus <= n.cpus and spec.mem_bytes <= n.mem_bytes
            for n in candidates
        ):
            most = max(len(n.gpus) for n in candidates)
            cpus = max(n.cpus for n in candidates)
            raise InvalidRequest(
                f"requested node configuration is not available: {spec.gpus} GPUs, "
                f"{spec.cpus} CPUs asked; largest node has {most} GPUs, {cpus} CPUs"
            )

    def _apply_qos(self, spec: JobSpec) -> None:
        """Reject what the QoS can never allow; give an unlimited job the QoS's wall time."""
        name = spec.qos or self.policy.default_qos
        qos = self.policy.qos.get(name)
        if qos is None:
            known = ", ".join(sorted(self.policy.qos))
            raise InvalidRequest(f"invalid qos specification '{name}': use one of {known}")
        spec.qos = name
        if qos.max_wall_s:
            if not spec.time_limit_s:
                spec.time_limit_s = qos.max_wall_s
            elif spec.time_limit_s > qos.max_wall_s:
                raise InvalidRequest(
                    f"job violates QOS {name} MaxWall: {spec.time_limit_s} s asked, "
                    f"{qos.max_wall_s} s allowed"
                )
        if qos.max_gpus_per_user and spec.gpus > qos.max_gpus_per_user:
            raise InvalidRequest(
                f"job violates QOS {name} MaxGpuPerUser: {spec.gpus} GPUs asked, "
                f"{qos.max_gpus_per_user} allowed"
            )

    def _canonical_dependency(self, text: str) -> str:
        """Check a dependency and rewrite its references to plain job ids (an array id
        stands for all its tasks, ``A_T`` for one)."""
        sep = "?" if "?" in text else ","
        parts = []
        for part in text.split(sep):
            kind, colon, rest = part.strip().partition(":")
            refs = rest.split(":") if colon else []
            try:
                ids = [str(i) for ref in refs for i in self.resolve(ref)]
            except JobNotFound as err:
                raise InvalidRequest(f"job dependency problem: {err}") from None
            parts.append(":".join([kind, *ids]))
        canonical = sep.join(parts)
        try:
            return parse_dependency(canonical).to_text()
        except ValueError as exc:
            raise InvalidRequest(str(exc)) from None


def waiting_reason(job: Job, now: float | None) -> str:
    """The reason a pending job shows until a scheduling pass examines it (a pass reads only
    the top of the queue): held, not before its --begin time, waiting on a dependency, or
    else behind higher-priority jobs (Slurm's "Priority")."""
    if job.hold:
        return "JobHeldAdmin" if job.hold == "admin" else "JobHeldUser"
    if now is not None and job.spec.begin_time > now:
        return "BeginTime"
    return "Dependency" if job.spec.dependency else REASON_PRIORITY
