"""Submission: checking a job against the cluster, its partitions and its QoS and its user
against the per-user limits (quota.py), expanding a job array into one job per task (all sharing the
array's spec), and rewriting dependency references to job ids (parsed once, here). The new
jobs enter the state through the lifecycle.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from dataclasses import replace

from mgpu_core.arrays import ArraySpec, parse_array
from mgpu_core.deps import Dependency, parse_dependency
from mgpu_core.errors import InvalidRequest, JobNotFound
from mgpu_core.gputypes import valid_type
from mgpu_core.limits import MAX_DEPENDENCY_LEN
from mgpu_core.models import JobSpec
from mgpu_core.states import Hold
from mgpu_core.units import format_duration
from mgpu_server.records.jobs import Job
from mgpu_server.records.nodes import NodeRecord
from mgpu_server.scheduling.partitions import Partition
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
        self.check(spec, new=True)
        if spec.session:
            self._check_session(user, spec)
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

    def _check_session(self, user: str, spec: JobSpec) -> None:
        """A session has a TTL, is one job, and counts against its QoS's sessions per user."""
        if spec.array:
            raise InvalidRequest("a session is one allocation: it cannot be a job array")
        if not spec.time_limit_s:
            raise InvalidRequest("a session needs a TTL (its time limit), e.g. 8h")
        qos = self.policy.qos_of(spec.qos)
        if qos.max_sessions_per_user:
            held = sum(
                1
                for job in self.table.jobs.values()
                if job.user == user and job.spec.session and not job.state.terminal
            )
            if held >= qos.max_sessions_per_user:
                raise InvalidRequest(
                    f"session refused: {user} holds {held} session(s), QOS {qos.name} allows "
                    f"{qos.max_sessions_per_user} (stop one: mgpu_client session stop ID)"
                )

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

    def trial(self, user: str, spec: JobSpec, now: float) -> Job:
        """sbatch --test-only: check a job exactly as :meth:`submit` does (the per-user limits
        aside: it takes no place in the queue) and return it, id 0, neither queued nor
        stored."""
        self.check(spec, new=True)
        job = Job(job_id=0, user=user, spec=spec, submit_time=now)
        job.dependency = self._canonical_dependency(spec) if spec.dependency else None
        job.hold = Hold.USER if spec.hold else Hold.NONE
        if spec.array:
            _parse_array(spec.array)
        return job

    def check(self, spec: JobSpec, *, new: bool = False) -> None:
        """Refuse what the cluster, its partitions or the QoS can never run; name the job's
        partitions (the default one if it names none) and give a job without a time limit
        its partitions' default (or QoS's wall time). Used at submit (``new``: a drained or
        inactive partition takes no new job) and by an update of a pending job."""
        self._check_spec(spec)
        partitions = self.policy.partitions.resolve(spec.partition)
        spec.partition = ",".join(p.name for p in partitions)
        if new and not any(p.state.accepts_jobs for p in partitions):
            raise InvalidRequest(
                f"required partition not available (inactive or drain): {spec.partition}"
            )
        self._apply_qos(spec, partitions)
        self._check_nodes(spec, partitions)

    def _check_spec(self, spec: JobSpec) -> None:
        if not spec.argv and spec.script is None:
            raise InvalidRequest("a job needs a command or a batch script")
        unknown = [n for n in (*spec.nodelist, *spec.exclude) if n not in self.nodes]
        if unknown:
            raise InvalidRequest(f"invalid node name specified: {', '.join(unknown[:5])}")
        both = sorted(set(spec.nodelist) & set(spec.exclude))
        if both:
            raise InvalidRequest(f"node {both[0]} is both required (-w) and excluded (-x)")
        if spec.gpu_type:
            if not valid_type(spec.gpu_type):
                raise InvalidRequest(f"invalid GPU type {spec.gpu_type!r}")
            types = self.nodes.gpu_types()
            if len(self.nodes) and spec.gpu_type not in types:
                raise InvalidRequest(
                    f"unknown GPU type '{spec.gpu_type}' "
                    f"(this cluster has: {', '.join(types) or 'no typed GPUs'})"
                )

    def _check_nodes(self, spec: JobSpec, partitions: Sequence[Partition]) -> None:
        """Some registered node the job may use could hold it, idle (none registered in its
        partitions yet: it waits for one). Against the nodes' configured sizes: a GPU that is
        down for now does not make a request impossible, only pending. The walk stops at the
        first node that could: a submit costs O(nodes) only when it is refused."""
        typed = spec.gpu_type if spec.gpus else ""
        excluded = set(spec.exclude)
        registered = False
        for node in self._nodes_of(spec, partitions):
            registered = True
            if node.node_id not in excluded and _holds(node, spec, typed):
                return
        if not registered:
            if spec.nodelist:
                raise InvalidRequest(
                    f"requested node configuration is not available: "
                    f"{', '.join(spec.nodelist[:5])} not in partition {spec.partition}"
                )
            return  # no node of its partitions has registered yet: the job waits for one
        candidates = [n for n in self._nodes_of(spec, partitions) if n.node_id not in excluded]
        if not candidates:
            raise InvalidRequest(
                f"requested node configuration is not available: every node of partition "
                f"{spec.partition} it may use is excluded"
            )
        most = max(_gpus_of(n, typed) for n in candidates)
        cpus = max(n.cpus for n in candidates)
        if spec.ports and any(_holds(n, replace(spec, ports=0), typed) for n in candidates):
            ports = max(n.total_ports for n in candidates)
            raise InvalidRequest(
                f"requested node configuration is not available: {spec.ports} ports asked "
                f"(--ports); the most a node offers is {ports} (its --port-range)"
            )
        kind = f"{typed} GPUs" if typed else "GPUs"
        raise InvalidRequest(
            f"requested node configuration is not available: {spec.gpus} {kind}, "
            f"{spec.cpus} CPUs asked; largest node has {most} {kind}, {cpus} CPUs"
        )

    def _nodes_of(self, spec: JobSpec, partitions: Sequence[Partition]) -> Iterator[NodeRecord]:
        """The registered nodes of the job's partitions (of its node list, if it has one),
        each once."""
        nodes = self.nodes
        if spec.nodelist:
            for name in dict.fromkeys(spec.nodelist):
                if name in nodes and any(p.has(name) for p in partitions):
                    yield nodes[name]
        elif any(p.nodes is None for p in partitions):
            yield from nodes.values()
        else:
            names = {n for p in partitions for n in p.nodes or ()}
            yield from (nodes[n] for n in sorted(names) if n in nodes)

    def _apply_qos(self, spec: JobSpec, partitions: Sequence[Partition]) -> None:
        """Reject what the QoS or every partition can never allow; give an unlimited job its
        partitions' default time (the shortest: it may run in any of them) or the QoS's wall
        time, whichever is shorter."""
        name = spec.qos or self.policy.default_qos
        qos = self.policy.qos.get(name)
        if qos is None:
            known = ", ".join(sorted(self.policy.qos))
            raise InvalidRequest(f"invalid qos specification '{name}': use one of {known}")
        spec.qos = name
        if not spec.time_limit_s:
            limits = [p.time_default_s() for p in partitions] + [qos.max_wall_s]
            spec.time_limit_s = min((t for t in limits if t), default=0)
        elif qos.max_wall_s and spec.time_limit_s > qos.max_wall_s:
            raise InvalidRequest(
                f"job violates QOS {name} MaxWall: {spec.time_limit_s} s asked, "
                f"{qos.max_wall_s} s allowed"
            )
        first = partitions[0]
        if not any(p.max_time_s == 0 or spec.time_limit_s <= p.max_time_s for p in partitions):
            raise InvalidRequest(
                f"requested time limit is invalid (over partition {first.name}'s MaxTime): "
                f"{format_duration(spec.time_limit_s)} asked, "
                f"{format_duration(first.max_time_s)} allowed"
            )
        if not any(p.allowed_qos is None or name in p.allowed_qos for p in partitions):
            allowed = ", ".join(sorted(first.allowed_qos or ())) or "none"
            raise InvalidRequest(
                f"job's QOS not permitted to use this partition "
                f"({first.name} allows {allowed} not {name})"
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
                # The history's too: a dependency may name a finished job let go from memory.
                ids = [str(j.job_id) for ref in refs for j in self.table.find([ref])]
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


def _gpus_of(node: NodeRecord, typed: str) -> int:
    """The node's GPUs (of type ``typed``; whole GPUs, not MIG slices, if "")."""
    return node.model_counts.get(typed, 0) if typed else node.whole_gpus


def _holds(node: NodeRecord, spec: JobSpec, typed: str) -> bool:
    """Whether the node, idle, could hold the job."""
    return (
        spec.gpus <= _gpus_of(node, typed)
        and spec.cpus <= node.cpus
        and spec.mem_bytes <= node.mem_bytes
        and spec.ports <= node.total_ports
    )


def _parse_array(text: str) -> ArraySpec:
    try:
        return parse_array(text)
    except ValueError as exc:
        raise InvalidRequest(str(exc)) from None
