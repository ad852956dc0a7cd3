"""Submission: checking a job against the cluster and its QoS and its user against the
per-user limits (quota.py), expanding a job array into one job per task (all sharing the
array's spec), and rewriting dependency references to job ids (parsed once, here). The new
jobs enter the state through the lifecycle.
"""

from __future__ import annotations

import logging

from mgpu_core.arrays import ArraySpec, parse_array
from mgpu_core.deps import Dependency, parse_dependency
from mgpu_core.errors import InvalidRequest, JobNotFound
from mgpu_core.limits import MAX_DEPENDENCY_LEN
from mgpu_core.models import JobSpec
from mgpu_core.states import Hold
from mgpu_server.records.jobs import Job
from mgpu_server.scheduling.policy import PolicyConfig
from mgpu_server.state.lifecycle import Lifecycle
from mgpu_server.state.quota import SubmitQuota
from mgpu_server.state.registry import NodeRegistry
from mgpu_server.state.table import JobTable

log = logging.getLogger(__name__)


class Submission:
    def __init__(
        self,
        *,
        table: JobTable,
        nodes: NodeRegistry,
        policy: PolicyConfig,
        lifecycle: Lifecycle,
        quota: SubmitQuota,
    ) -> None:
        self.table = table
        self.nodes = nodes
        self.policy = policy
        self.lifecycle = lifecycle
        self.quota = quota

    def submit(self, user: str, spec: JobSpec, now: float, *, limited: bool = False) -> Job:
        """Accept a job (or a job array: one job per task); returns the (first) job. Who may
        ask for what (nice, QoS access, GPU access) and whether the per-user limits bind
        (``limited``) was decided by api.permissions."""
        self.check(spec)
        dependency = self._canonical_dependency(spec) if spec.dependency else None
        array = _parse_array(spec.array) if spec.array else None
        if limited:
            self.quota.admit(
                user,
                new_jobs=len(array.task_ids) if array else 1,
                pending=self.lifecycle.pending.count_of(user),
                now=now,
            )
        if array is None:
            return self._add_job(user, spec, dependency, now)
        array_id = self.table.next_id
        first: Job | None = None
        for task in array.task_ids:
            # One spec for all the tasks, in memory and in the store: a 256 KiB spec in an
            # array of 1,000 is 256 KiB, not 256 MB. A task's own variables and output paths
            # are made when it is launched (Job.launch_spec).
            job = self._add_job(user, spec, dependency, now, array=(array_id, task, array))
            first = first or job
        assert first is not None
        return first

    def _add_job(
        self,
        user: str,
        spec: JobSpec,
        dependency: Dependency | None,
        now: float,
        array: tuple[int, int, ArraySpec] | None = None,
    ) -> Job:
        job = Job(job_id=self.table.take_id(), user=user, spec=spec, submit_time=now)
        job.dependency = dependency
        if array is not None:
            job.array_job_id, job.array_task_id, tasks = array
            job.array_throttle = tasks.max_running
            job.spec_shared = True
        if spec.hold:
            job.hold = Hold.USER
        self.lifecycle.submit(job, now)
        return job

    def check(self, spec: JobSpec) -> None:
        """Refuse what the cluster or the QoS can never run; give an unlimited job its QoS's
        wall time. Used at submit and by an update of a pending job."""
        self._check_spec(spec)
        self._apply_qos(spec)

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

    def _canonical_dependency(self, spec: JobSpec) -> Dependency:
        """Check a dependency and rewrite its references to plain job ids (an array id
        stands for all its tasks, ``A_T`` for one); the text kept on the spec is the
        canonical one, the parsed form is kept on the job."""
        text = spec.dependency
        sep = "?" if "?" in text else ","
        parts = []
        for part in text.split(sep):
            kind, colon, rest = part.strip().partition(":")
            refs = rest.split(":") if colon else []
            try:
                ids = [str(i) for ref in refs for i in self.table.resolve(ref)]
            except JobNotFound as err:
                raise InvalidRequest(f"job dependency problem: {err}") from None
            parts.append(":".join([kind, *ids]))
        try:
            dependency = parse_dependency(sep.join(parts))
        except ValueError as exc:
            raise InvalidRequest(str(exc)) from None
        canonical = dependency.to_text()
        if len(canonical) > MAX_DEPENDENCY_LEN:
            # Arrays expand to their task ids: the text the job keeps (and its launch carries)
            # must still fit the field.
            raise InvalidRequest(
                f"job dependency problem: it names {len(dependency.job_ids())} jobs, "
                f"{len(canonical)} characters once arrays are expanded "
                f"(at most {MAX_DEPENDENCY_LEN}): depend on fewer jobs or arrays"
            )
        spec.dependency = canonical
        return dependency


def _parse_array(text: str) -> ArraySpec:
    try:
        return parse_array(text)
    except ValueError as exc:
        raise InvalidRequest(str(exc)) from None
