"""Scheduling rules only admins can bend (negative nice, admin holds, priorities, a QoS's
access list, revoked GPU access): the rules of mgpu_server.api.permissions as plain calls, then
as requests through the handler table, then in the state (a revoked user's queued jobs, a
group that changes under a queued job, a restart with other rules)."""

from __future__ import annotations

import grp
import logging
from pathlib import Path
from typing import Any

import pytest

from mgpu_core.errors import ConfigError, PermissionDenied
from mgpu_core.models import JobSpec
from mgpu_core.reasons import Reason
from mgpu_core.states import Hold, JobState
from mgpu_server.api import permissions as perm
from mgpu_server.api.handlers import ClientService
from mgpu_server.api.permissions import SiteRules
from mgpu_server.records.jobs import Job
from mgpu_server.scheduling.policy import PolicyConfig, Qos
from mgpu_server.settings import load_master_settings
from mgpu_server.storage.store import MemoryStore
from tests.helpers.nodes import node_info
from tests.helpers.state import ctx, exited, make_service, make_state, request, submit_job

pytestmark = pytest.mark.timeout(30)

ALICE = ctx("alice")
BOB = ctx("bob")
ADMIN = ctx("root", admin=True)
POLICY = PolicyConfig(
    qos={
        "normal": Qos("normal"),
        "high": Qos("high", priority=100, allowed_users=frozenset({"alice"})),
        "staff": Qos("staff", allowed_groups=frozenset({"staff"})),
        "closed": Qos("closed", allowed_users=frozenset()),
    }
)
REVOKED = "user alice has no GPU access"
NOT_OPEN = "is not open to user"


def job_of(user: str, **spec: Any) -> Job:
    return Job(job_id=1, user=user, spec=JobSpec(argv=["x"], **spec), submit_time=0.0)


@pytest.fixture
def staff(monkeypatch: pytest.MonkeyPatch) -> set[str]:
    """The members of a Unix group "staff" as the system would list them (changeable)."""
    members: set[str] = set()
    real = grp.getgrnam

    def getgrnam(name: str) -> grp.struct_group:
        if name != "staff":
            return real(name)
        return grp.struct_group(("staff", "x", 4242, sorted(members)))

    monkeypatch.setattr(grp, "getgrnam", getgrnam)  # what permissions.in_group asks
    return members


# ---- the rules, as plain calls -----------------------------------------------------------


def test_a_qos_access_list_admits_the_users_and_groups_it_names(staff: set[str]) -> None:
    qos = POLICY.qos
    assert perm.may_use_qos("anyone", qos["normal"])  # no list: open to all
    assert perm.may_use_qos("alice", qos["high"]) and not perm.may_use_qos("bob", qos["high"])
    assert not perm.may_use_qos("alice", qos["closed"])  # an empty list names nobody
    assert not perm.may_use_qos("carol", qos["staff"])
    staff.add("carol")  # asked at each check: a group change counts at once
    assert perm.may_use_qos("carol", qos["staff"])


def test_group_membership_is_the_systems_word() -> None:
    # root's primary group (no member list names it): the system's group list for root does.
    assert perm.in_group("root", grp.getgrgid(0).gr_name)
    assert not perm.in_group("no-such-user-mgpu", grp.getgrgid(0).gr_name)
    assert not perm.in_group("root", "no-such-group-mgpu")


def test_submit_rules() -> None:
    rules = SiteRules(POLICY, {"alice"})
    with pytest.raises(PermissionDenied, match="negative nice"):
        perm.check_submit(BOB, JobSpec(argv=["x"], nice=-10_000), rules)
    perm.check_submit(ADMIN, JobSpec(argv=["x"], nice=-10_000), rules)
    perm.check_submit(BOB, JobSpec(argv=["x"], nice=10_000), rules)
    with pytest.raises(PermissionDenied, match=NOT_OPEN):
        perm.check_submit(BOB, JobSpec(argv=["x"], qos="high"), rules)
    with pytest.raises(PermissionDenied, match=REVOKED):
        perm.check_submit(ALICE, JobSpec(argv=["x"], gpus=1, qos="high"), rules)
    perm.check_submit(ALICE, JobSpec(argv=["x"], gpus=0, qos="high"), rules)
    perm.check_submit(BOB, JobSpec(argv=["x"], qos="gold"), rules)  # unknown: submit says so


def test_update_rules_bind_admins_too_where_the_owner_may_not_run_the_job() -> None:
    rules = SiteRules(POLICY, {"alice"})
    job = job_of("alice", gpus=0, nice=5)
    for who in (ALICE, ADMIN):
        with pytest.raises(PermissionDenied, match=REVOKED):
            perm.check_update(who, job, {"gpus": 2}, rules)
    perm.check_update(ALICE, job, {"gpus": 0, "nice": 9}, rules)
    with pytest.raises(PermissionDenied, match="lower a job's nice"):
        perm.check_update(ALICE, job, {"nice": -5}, rules)
    with pytest.raises(PermissionDenied, match="priority"):
        perm.check_update(ALICE, job, {"priority": 10**6}, rules)
    perm.check_update(ADMIN, job, {"nice": -5, "priority": 10**6}, rules)
    bobs = job_of("bob")
    for who in (BOB, ADMIN):
        with pytest.raises(PermissionDenied, match=NOT_OPEN):
            perm.check_update(who, bobs, {"qos": "high"}, rules)


def test_release_rules() -> None:
    rules = SiteRules(POLICY, {"alice"})
    held = job_of("bob")
    held.hold = Hold.ADMIN
    with pytest.raises(PermissionDenied, match="held by an admin"):
        perm.check_release(BOB, held, rules)
    perm.check_release(ADMIN, held, rules)
    gpu_job = job_of("alice", gpus=1)
    gpu_job.hold = Hold.USER
    for who in (ALICE, ADMIN):
        with pytest.raises(PermissionDenied, match=REVOKED):
            perm.check_release(who, gpu_job, rules)
    perm.check_release(ALICE, job_of("alice", gpus=0), rules)


def test_start_refusal_names_the_rule() -> None:
    assert perm.start_refusal(job_of("alice", gpus=1), POLICY, {"alice"}) == "AssocGrpGRES"
    assert perm.start_refusal(job_of("alice", gpus=0), POLICY, {"alice"}) is None
    assert perm.start_refusal(job_of("bob", qos="high"), POLICY, ()) == "InvalidQOS"
    assert perm.start_refusal(job_of("alice", qos="high"), POLICY, ()) is None


def test_access_lists_in_the_config_file(tmp_path: Path) -> None:
    path = tmp_path / "master.toml"
    path.write_text(
        "[qos.normal]\n[qos.high]\nallowed_users = ['alice']\nallowed_groups = ['gpu']\n"
    )
    qos = load_master_settings(path).policy.qos
    assert qos["high"].allowed_users == frozenset({"alice"})
    assert qos["high"].allowed_groups == frozenset({"gpu"})
    assert not qos["normal"].restricted
    for bad in ("'alice'", "[1]", "['']"):
        path.write_text(f"[qos.high]\nallowed_users = {bad}\n")
        with pytest.raises(ConfigError, match="allowed_users"):
            load_master_settings(path)


# ---- as requests ---------------------------------------------------------------------------


@pytest.fixture
def service() -> ClientService:
    """The handlers on a state with POLICY's QoS table and one node of 2 GPUs."""
    state = make_state(policy=POLICY)
    state.node_join(node_info("n1", 2), now=0.0)
    return make_service(state)[0]


def state_of(job: Job) -> JobState:
    return job.state


def refused_lines(caplog: pytest.LogCaptureFixture, text: str) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == "mgpu.audit" and "refused" in r.getMessage() and text in r.getMessage()
    ]


def test_a_negative_nice_is_refused_and_audited(
    service: ClientService, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="mgpu.audit")
    with pytest.raises(PermissionDenied):
        submit_job(service, BOB, nice=-10_000)
    assert refused_lines(caplog, "negative nice")
    assert submit_job(service, ADMIN, nice=-10_000).spec.nice == -10_000


def test_a_qos_not_open_to_the_user_is_refused_at_submit_and_update(
    service: ClientService, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="mgpu.audit")
    with pytest.raises(PermissionDenied, match=NOT_OPEN):
        submit_job(service, BOB, qos="high")
    assert submit_job(service, ALICE, qos="high").spec.qos == "high"
    job = submit_job(service, BOB)
    with pytest.raises(PermissionDenied, match=NOT_OPEN):
        request(service, BOB, "update", job_id=job.job_id, changes={"qos": "high"})
    assert job.spec.qos == "normal"
    assert len(refused_lines(caplog, NOT_OPEN)) == 2


def test_a_revoked_user_cannot_grow_a_cpu_job_into_a_gpu_job(
    service: ClientService, caplog: pytest.LogCaptureFixture
) -> None:
    """The review's bypass: a held 0-GPU job, updated to 2 GPUs, then released."""
    caplog.set_level(logging.INFO, logger="mgpu.audit")
    request(service, ADMIN, "turns", action="revoke", user="alice")
    with pytest.raises(PermissionDenied, match=REVOKED):
        submit_job(service, ALICE, gpus=1)
    job = submit_job(service, ALICE, gpus=0, hold=True)
    with pytest.raises(PermissionDenied, match=REVOKED):
        request(service, ALICE, "update", job_id=job.job_id, changes={"gpus": 2})
    assert job.spec.gpus == 0
    request(service, ALICE, "release", job_ids=[job.job_id])
    service.state.schedule(now=1.0)
    assert state_of(job) is JobState.RUNNING and job.gpu_indices == ()
    assert len(refused_lines(caplog, REVOKED)) == 2


def test_revoking_holds_the_queued_gpu_jobs_until_access_is_given_back(
    service: ClientService, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="mgpu.audit")
    state = service.state
    queued = submit_job(service, ALICE, gpus=1)
    held = submit_job(service, ALICE, gpus=1, hold=True)
    cpu_only = submit_job(service, ALICE, gpus=0, hold=True)
    request(service, ADMIN, "turns", action="revoke", user="alice")
    assert queued.reason == Reason.GPU_ACCESS_REVOKED and state.pending.is_parked(queued.job_id)
    assert held.reason == Reason.HELD_USER  # its own hold shows first
    state.wake()
    state.schedule(now=1.0)
    assert state_of(queued) is JobState.PENDING
    reply = request(service, ALICE, "release", job_ids=[held.job_id, cpu_only.job_id])
    codes = {r["job_id"]: r["code"] for r in reply["results"]}
    assert codes == {held.job_id: PermissionDenied.code, cpu_only.job_id: ""}
    assert refused_lines(caplog, f"cannot release job {held.job_id}")
    request(service, ADMIN, "turns", action="assign", user="alice")
    assert queued.reason == Reason.PRIORITY and not state.pending.is_parked(queued.job_id)
    state.schedule(now=2.0)
    assert state_of(queued) is JobState.RUNNING


def test_the_owner_cannot_release_or_rehold_an_admins_hold(service: ClientService) -> None:
    job = submit_job(service, ALICE, gpus=1)
    request(service, ADMIN, "hold", job_ids=[job.job_id])
    for verb in ("release", "hold"):
        reply = request(service, ALICE, verb, job_ids=[job.job_id])
        assert reply["results"][0]["code"] == PermissionDenied.code
    service.state.schedule(now=1.0)
    assert state_of(job) is JobState.PENDING and job.reason == Reason.HELD_ADMIN


# ---- in the state: the pass and a restart --------------------------------------------------


def test_a_pass_does_not_start_a_job_whose_qos_closed_under_it(
    service: ClientService, staff: set[str]
) -> None:
    state = service.state
    staff.add("carol")
    job = state.submit("carol", JobSpec(argv=["x"], gpus=1, qos="staff"), now=0.0)
    blocker = state.submit("dave", JobSpec(argv=["x"], gpus=2, nice=-1), now=0.0)
    state.schedule(now=1.0)
    assert state_of(blocker) is JobState.RUNNING and job.reason == Reason.RESOURCES
    staff.discard("carol")  # no event tells the master: the pass asks
    state.job_exited("n1", exited(blocker.job_id), now=2.0)
    state.schedule(now=2.0)
    assert state_of(job) is JobState.PENDING and job.reason == Reason.QOS_NOT_ALLOWED
    assert state.pending.is_parked(job.job_id)
    with pytest.raises(PermissionDenied):
        perm.check_release(ctx("carol"), job, SiteRules(state.policy, set()))
    staff.add("carol")
    request(service, ctx("carol"), "release", job_ids=[job.job_id])  # asks the rules again
    state.schedule(now=3.0)
    assert state_of(job) is JobState.RUNNING


def test_a_restart_applies_the_rules_to_the_stored_queue() -> None:
    store = MemoryStore()
    before = make_state(store=store, policy=POLICY)
    before.node_join(node_info("n1", 2), now=0.0)
    gpu_job = before.submit("eve", JobSpec(argv=["x"], gpus=1, hold=True), now=0.0)
    high_job = before.submit("alice", JobSpec(argv=["x"], qos="high", hold=True), now=0.0)
    before.turns.request("revoke", {"user": "eve"}, now=0.0)
    store.commit()
    # alice is no longer on high's list; both jobs were released while the master was down.
    closed = dict(POLICY.qos, high=Qos("high", priority=100, allowed_users=frozenset()))
    for job in (gpu_job, high_job):
        job.hold = Hold.NONE
        store.put_job(job)
    store.commit()
    after = make_state(store=store, policy=PolicyConfig(qos=closed), now=1.0)
    after.node_join(node_info("n1", 2), now=1.0)
    after.schedule(now=1.0)
    assert after.get(gpu_job.job_id).reason == Reason.GPU_ACCESS_REVOKED
    assert after.get(high_job.job_id).reason == Reason.QOS_NOT_ALLOWED
    assert not after.running
