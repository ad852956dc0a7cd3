"""Per-user fairness in the master's state: the pending-jobs cap and the submission rate
(state/quota.py) through the handlers, ``info`` from totals kept as nodes change, and an
array's tasks sharing one spec."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from mgpu_core.constants import SUBMIT_BURST
from mgpu_core.errors import ConfigError, LimitExceeded
from mgpu_core.models import GpuSample, JobSpec
from mgpu_server.api.handlers import ClientService
from mgpu_server.api.permissions import start_refusal
from mgpu_server.records.jobs import Job
from mgpu_server.scheduling.policy import PolicyConfig
from mgpu_server.settings import load_master_settings
from mgpu_server.state.cluster import ClusterState
from mgpu_server.state.quota import SubmitQuota, UserLimits
from mgpu_server.storage.store import MemoryStore
from tests.helpers.nodes import node_info
from tests.helpers.state import ctx, exited, make_service, make_state, request

ALICE = ctx("alice")
ADMIN = ctx("root", admin=True)


# ---- the token bucket and the cap --------------------------------------------------------------


def test_a_burst_then_the_rate() -> None:
    quota = SubmitQuota(UserLimits(max_pending_jobs=0, submit_rate_per_s=10, submit_burst=3))
    for _ in range(3):
        quota.admit("alice", new_jobs=1, pending=0, now=100.0)
    with pytest.raises(LimitExceeded, match=r"faster than the limit of 10 per second.*0\.10 s"):
        quota.admit("alice", new_jobs=1, pending=0, now=100.0)
    quota.admit("bob", new_jobs=1, pending=0, now=100.0)  # each user has a bucket
    quota.admit("alice", new_jobs=1, pending=0, now=100.1)  # one more token after 0.1 s
    with pytest.raises(LimitExceeded):
        quota.admit("alice", new_jobs=1, pending=0, now=100.1)
    # A clock stepped back refills nothing; a long pause refills up to the burst only.
    with pytest.raises(LimitExceeded):
        quota.admit("alice", new_jobs=1, pending=0, now=50.0)
    assert quota.tokens("alice", 1000.0) == 3


def test_the_pending_cap_counts_each_task_and_takes_no_token() -> None:
    quota = SubmitQuota(UserLimits(max_pending_jobs=10, submit_rate_per_s=1, submit_burst=1))
    with pytest.raises(LimitExceeded, match="would have 11 pending jobs, more than the limit"):
        quota.admit("alice", new_jobs=5, pending=6, now=0.0)
    quota.admit("alice", new_jobs=4, pending=6, now=0.0)  # the token was still there


def test_zero_means_no_limit() -> None:
    quota = SubmitQuota(UserLimits(max_pending_jobs=0, submit_rate_per_s=0, submit_burst=1))
    for _ in range(100):
        quota.admit("alice", new_jobs=10_000, pending=10**9, now=0.0)


# ---- through the handlers -------------------------------------------------------------------


def limited_service(limits: UserLimits) -> ClientService:
    state = ClusterState(
        MemoryStore(),
        kill_grace_s=1.0,
        node_timeout_s=1e9,
        now=0.0,
        policy=PolicyConfig(),
        start_rule=start_refusal,
        limits=limits,
    )
    state.node_join(node_info("n1", 2), now=0.0)
    return make_service(state)[0]


def submit(service: ClientService, who: Any, **spec: Any) -> dict[str, Any]:
    job = JobSpec(argv=["true"], hold=True, **spec).to_wire()
    return request(service, who, "submit", job=job)


def test_a_user_past_the_cap_is_refused_and_nothing_changes() -> None:
    service = limited_service(UserLimits(max_pending_jobs=5, submit_rate_per_s=0))
    submit(service, ALICE, array="0-3")
    with pytest.raises(LimitExceeded, match="alice would have 6 pending jobs"):
        submit(service, ALICE, array="0-1")
    state = service.state
    assert len(state.pending) == 4 and state.table.next_id == 5
    submit(service, ALICE)  # up to the cap
    # Admins are not limited.
    submit(service, ADMIN, array="0-99")
    assert len(state.pending) == 105


def test_a_user_submitting_too_fast_is_refused() -> None:
    service = limited_service(UserLimits(submit_rate_per_s=0.001, submit_burst=2))
    submit(service, ALICE)
    submit(service, ALICE)
    with pytest.raises(LimitExceeded, match="alice submits faster"):
        submit(service, ALICE)
    for _ in range(5):
        submit(service, ADMIN)


# ---- info -------------------------------------------------------------------------------------


def recounted(state: ClusterState) -> dict[str, Any]:
    """What info showed when it walked every node and GPU."""
    nodes = list(state.nodes.values())
    states: dict[str, int] = {}
    for node in nodes:
        states[node.display_state().value] = states.get(node.display_state().value, 0) + 1
    up = [n for n in nodes if n.up]
    return {
        "nodes_total": len(nodes),
        "node_states": states,
        "gpus_total": sum(len(n.gpus) for n in nodes),
        "gpus_up": sum(1 for n in up for g in n.gpus if g.healthy),
        "gpus_alloc": sum(1 for n in up for g in n.gpus if g.job_id is not None),
        "cpus_total": sum(n.cpus for n in up),
        "cpus_alloc": sum(n.cpus_alloc for n in up),
    }


def test_info_keeps_its_totals_as_nodes_change() -> None:
    state = make_state(node_timeout_s=10.0)
    service, _ = make_service(state)

    def check() -> None:
        info = request(service, ALICE, "info")
        assert {k: info[k] for k in recounted(state)} == recounted(state)

    check()
    for i, gpus in enumerate((2, 4, 0)):
        state.node_join(node_info(f"n{i}", gpus), now=0.0)
    check()
    jobs = [state.submit("alice", JobSpec(argv=["x"], gpus=1, cpus=2), 0.0) for _ in range(3)]
    state.schedule(now=1.0)
    check()
    state.heartbeat("n1", [GpuSample(index=2, healthy=False, error="lost")], now=2.0)
    check()
    state.update_node("n1", "drain", "maintenance")
    check()
    state.job_exited("n0", exited(jobs[0].job_id), now=3.0)
    check()
    state.node_leave("n2", now=3.0)
    check()
    state.expire_nodes(now=20.0)  # n0 and n1 silent: not responding
    check()
    state.heartbeat("n0", [], now=21.0)
    check()
    state.update_node("n2", "remove", "")
    check()
    assert request(service, ALICE, "info")["nodes_total"] == 2


# ---- an array's spec, once -------------------------------------------------------------------


def test_an_arrays_tasks_share_one_spec_and_launch_with_their_own() -> None:
    state = make_state()
    state.node_join(node_info("n1", 2), now=0.0)
    spec = JobSpec(argv=["run"], env={"BIG": "x" * 1000}, stdout_path="o-%A_%a-%j.log")
    spec.array = "3-5"
    first = state.submit("alice", spec, 0.0)
    tasks = [state.get(i) for i in state.table.arrays[first.job_id]]
    assert all(t.spec is first.spec and t.spec_shared for t in tasks)
    launched = tasks[1].launch_spec()
    assert launched.env == {
        "BIG": "x" * 1000,
        "MGPU_ARRAY_JOB_ID": str(first.job_id),
        "MGPU_ARRAY_TASK_ID": "4",
        "MGPU_ARRAY_TASK_COUNT": "3",
    }
    assert launched.stdout_path == f"o-{first.job_id}_4-%j.log"  # %j is the node's
    assert first.spec.env == {"BIG": "x" * 1000}  # the shared one is untouched
    rows = state.list_jobs(
        users=[], states=[], job_ids=None, include_finished=True, now=0.0, fields=["stdout_path"]
    )
    assert rows[1]["stdout_path"] == f"o-{first.job_id}_4-%j.log"
    # An update gives the task its own spec (its launch values included); the others keep
    # sharing.
    shared = first.spec
    state.control.update(tasks[0], {"nice": 7}, 0.0)
    own: Job = tasks[0]
    assert not own.spec_shared and own.spec is not shared and own.spec.nice == 7
    assert own.spec.env["MGPU_ARRAY_TASK_ID"] == "3" and own.launch_spec() is own.spec
    assert tasks[1].spec.nice == 0 and tasks[1].spec is tasks[2].spec


def test_limits_in_the_config_file(tmp_path: Path) -> None:
    path = tmp_path / "master.toml"
    path.write_text("[limits]\nmax_pending_jobs_per_user = 50\nsubmit_rate = 0.5\n")
    assert load_master_settings(path).limits == UserLimits(50, 0.5, SUBMIT_BURST)
    path.write_text("admins = []\n")
    assert load_master_settings(path).limits == UserLimits()
    for bad, why in (
        ("max_pending_jobs_per_user = 2.5", "max_pending_jobs_per_user must be a whole number"),
        ("submit_rate = -1", "submit_rate must be a number"),
        ("submit_burst = 0", "submit_burst must be at least 1"),
        ("submit_burst = true", "submit_burst must be a whole number"),
        ("max_jobs = 5", "unknown setting 'max_jobs'"),
    ):
        path.write_text(f"[limits]\n{bad}\n")
        with pytest.raises(ConfigError, match=why):
            load_master_settings(path)
