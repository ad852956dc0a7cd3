"""The master's state and request handlers in process, for unit tests: a state on a memory
store with a fake clock, and the client handlers with fake sessions (uvicorn-style: no socket,
no loop), so every permission rule and every verb is a plain function call."""

from __future__ import annotations

from typing import Any

from mgpu_core.models import JobExited, JobSpec
from mgpu_server.api.handlers import ClientService
from mgpu_server.api.permissions import RequestContext, Transport, start_refusal
from mgpu_server.api.tokens import TokenRegistry
from mgpu_server.records.jobs import Job
from mgpu_server.scheduling.planner import INF, Release, UserLoad
from mgpu_server.scheduling.policy import PolicyConfig
from mgpu_server.state.cluster import ClusterState
from mgpu_server.state.effects import Effect, ToNode
from mgpu_server.storage.store import MemoryStore, Store


def make_state(
    *,
    policy: PolicyConfig | None = None,
    store: Store | None = None,
    kill_grace_s: float = 1.0,
    node_timeout_s: float = 1e9,
    fence_timeout_s: float = 1.0,
    now: float = 0.0,
) -> ClusterState:
    """A state on a memory store. A silent node's jobs count as lost after
    ``fence_timeout_s`` + ``kill_grace_s`` + FENCE_MARGIN_S (+1 %): 7.01 s by default."""
    return ClusterState(
        store if store is not None else MemoryStore(),
        kill_grace_s=kill_grace_s,
        node_timeout_s=node_timeout_s,
        fence_timeout_s=fence_timeout_s,
        now=now,
        policy=policy or PolicyConfig(),
        start_rule=start_refusal,
    )


def node_messages(state: ClusterState, kind: str) -> list[dict[str, Any]]:
    """The messages of one type the state has queued for nodes (not taken)."""
    return [e.msg for e in state.outbox.effects if isinstance(e, ToNode) and e.msg["t"] == kind]


def take(state: ClusterState) -> list[Effect]:
    return state.take_effects()


class FakeSessions:
    """What the network side does for handlers, recorded."""

    def __init__(self) -> None:
        self.watching: dict[int, list[object]] = {}
        self.ended: list[str] = []

    def watch(self, conn: object, job_id: int) -> None:
        self.watching.setdefault(job_id, []).append(conn)

    def watcher_count(self, job_id: int) -> int:
        return len(self.watching.get(job_id, ()))

    def end_sessions(self, token_ids: list[str]) -> None:
        self.ended.extend(token_ids)

    def notice_error(self, job_id: int) -> str:
        return ""


def make_service(
    state: ClusterState, *, private_commands: bool = False
) -> tuple[ClientService, FakeSessions]:
    sessions = FakeSessions()
    service = ClientService(
        state, sessions, TokenRegistry(state.store), private_commands=private_commands
    )
    return service, sessions


def ctx(user: str, *, admin: bool = False, transport: Transport = Transport.UNIX) -> RequestContext:
    return RequestContext(user, admin, transport, f"test:{user}")


def request(
    service: ClientService, who: RequestContext, kind: str, **fields: Any
) -> dict[str, Any]:
    """Send one request through the handler table, checked against its schema as the server
    checks it (defaults filled in)."""
    from mgpu_core.messages import CLIENT_REQUESTS, validate

    msg = validate({"t": kind, "id": 1, **fields}, CLIENT_REQUESTS)
    return service.handle(who, object(), msg)


def submit_job(service: ClientService, who: RequestContext, **spec: Any) -> Job:
    """Submit a ``sleep 1`` job with these spec fields as ``who``, through the handler table."""
    job = JobSpec(**{"argv": ["sleep", "1"], **spec}).to_wire()
    return service.state.get(request(service, who, "submit", job=job)["job_id"])


class Recount:
    """The running totals recomputed from a list of running jobs, the slow and obvious way:
    what the master's incremental RunningJobs must always equal."""

    def __init__(self, running: list[Job], policy: PolicyConfig, now: float) -> None:
        self.loads: dict[str, UserLoad] = {}
        self.live: dict[str, float] = {}
        self.releases: dict[str, list[Release]] = {}
        self.arrays: dict[int, int] = {}
        for job in running:
            spec = job.spec
            load = self.loads.setdefault(job.user, UserLoad())
            load.gpus += spec.gpus
            load.jobs += 1
            gpu_s = spec.gpus * max(0.0, now - job.start_time)
            self.live[job.user] = self.live.get(job.user, 0.0) + gpu_s
            limit = spec.time_limit_s + policy.qos_of(spec.qos).grace_s
            end = job.start_time + limit if spec.time_limit_s else INF
            self.releases.setdefault(job.node_id, []).append(
                Release(end, spec.gpus, spec.cpus, spec.mem_bytes)
            )
            if job.array_throttle and job.array_job_id is not None:
                self.arrays[job.array_job_id] = self.arrays.get(job.array_job_id, 0) + 1

    def check(self, state: ClusterState) -> None:
        running = state.running
        assert running.loads() == self.loads
        assert running.array_tasks() == self.arrays
        assert running.users() == set(self.loads)
        key = lambda r: (r.end_s, r.gpus, r.cpus, r.mem_bytes)  # noqa: E731
        for node_id in state.nodes:
            assert sorted(running.releases(node_id), key=key) == sorted(
                self.releases.get(node_id, []), key=key
            )


def exited(job_id: int, code: int | None = 0, sig: int | None = None, *, run: int = 0) -> JobExited:
    """A node's report that a job's process ended (run: the launch's restart_count)."""
    return JobExited(job_id=job_id, exit_code=code, signal=sig, restart_count=run)
