"""The client request handlers with a fake connection (no socket, no loop): every permission
rule in mgpu_server.api.permissions, asked the way a real request asks it."""

from __future__ import annotations

from typing import Any

import pytest

from mgpu_core.errors import PermissionDenied
from mgpu_core.reasons import Reason
from mgpu_core.states import JobState
from mgpu_server.api.handlers import ClientService
from mgpu_server.api.permissions import RequestContext, Transport, context
from mgpu_server.state.cluster import ClusterState
from tests.helpers.nodes import node_info
from tests.helpers.state import (
    FakeSessions,
    ctx,
    make_service,
    make_state,
    node_messages,
    request,
)
from tests.helpers.state import submit_job as submit

ALICE = ctx("alice")
BOB = ctx("bob")
ADMIN = ctx("root", admin=True)


@pytest.fixture
def state() -> ClusterState:
    s = make_state()
    s.node_join(node_info("n1", 2), now=0.0)
    return s


@pytest.fixture
def service(state: ClusterState) -> ClientService:
    return make_service(state)[0]


def results(reply: dict[str, Any]) -> dict[int | str, str]:
    """Per-job results as {job id: "ok" or the error code}."""
    return {r["job_id"]: "ok" if r["ok"] else r["code"] for r in reply["results"]}


def test_admins_are_root_and_the_named_users() -> None:
    assert context("root", Transport.UNIX, "p", admins=()).admin
    assert context("carol", Transport.TCP, "p", admins={"carol"}).admin
    assert not context("alice", Transport.UNIX, "p", admins={"carol"}).admin


@pytest.mark.parametrize("verb", ["cancel", "hold", "release", "requeue"])
def test_users_act_on_their_own_jobs_only(service: ClientService, verb: str) -> None:
    job = submit(service, ALICE, gpus=1, hold=verb == "release")
    if verb == "requeue":
        service.state.schedule(now=1.0)
    refused = results(request(service, BOB, verb, job_ids=[job.job_id]))
    assert refused == {job.job_id: PermissionDenied.code}
    assert results(request(service, ALICE, verb, job_ids=[job.job_id])) == {job.job_id: "ok"}


def test_an_admin_acts_on_anyones_job(service: ClientService) -> None:
    job = submit(service, ALICE)
    assert results(request(service, ADMIN, "cancel", job_ids=[job.job_id])) == {job.job_id: "ok"}
    assert job.state is JobState.CANCELLED


def test_a_user_cannot_bend_an_admins_hold(service: ClientService) -> None:
    job = submit(service, ALICE)
    request(service, ADMIN, "hold", job_ids=[job.job_id])
    assert job.reason == Reason.HELD_ADMIN
    # Neither released nor turned into a user hold (which the user could then release).
    for verb in ("release", "hold"):
        reply = request(service, ALICE, verb, job_ids=[job.job_id])
        assert results(reply) == {job.job_id: PermissionDenied.code}
    assert job.reason == Reason.HELD_ADMIN
    request(service, ADMIN, "release", job_ids=[job.job_id])
    assert job.reason == Reason.PRIORITY and not job.hold


def test_user_hold_is_the_users_to_release(service: ClientService) -> None:
    job = submit(service, ALICE)
    request(service, ALICE, "hold", job_ids=[job.job_id])
    assert job.reason == Reason.HELD_USER
    request(service, ALICE, "release", job_ids=[job.job_id])
    assert job.reason == Reason.PRIORITY


@pytest.mark.parametrize(
    ("changes", "allowed"),
    [
        ({"nice": 10}, True),
        ({"time_limit_s": 60}, True),
        ({"nice": -5}, False),
        ({"priority": 5}, False),
    ],
)
def test_update_rules(service: ClientService, changes: dict[str, int], allowed: bool) -> None:
    job = submit(service, ALICE, nice=0)
    if allowed:
        request(service, ALICE, "update", job_id=job.job_id, changes=changes)
    else:
        with pytest.raises(PermissionDenied):
            request(service, ALICE, "update", job_id=job.job_id, changes=changes)
        request(service, ADMIN, "update", job_id=job.job_id, changes=changes)
    with pytest.raises(PermissionDenied):
        request(service, BOB, "update", job_id=job.job_id, changes={"nice": 20})


def test_attach_is_for_the_owner_and_admins(state: ClusterState) -> None:
    service, sessions = make_service(state)
    job = submit(service, ALICE)
    with pytest.raises(PermissionDenied):
        request(service, BOB, "attach", job_id=job.job_id)
    assert request(service, ALICE, "attach", job_id=job.job_id)["job"]["job_id"] == job.job_id
    request(service, ADMIN, "attach", job_id=job.job_id)
    assert sessions.watcher_count(job.job_id) == 2


def test_attach_with_an_offset_asks_the_node_to_replay_interactive_output(
    state: ClusterState,
) -> None:
    service, _ = make_service(state)
    job = submit(service, ALICE, interactive=True)
    batch = submit(service, ALICE)
    state.schedule(1.0)
    assert job.state is JobState.RUNNING and batch.state is JobState.RUNNING
    state.outbox.effects.clear()
    request(service, ALICE, "attach", job_id=job.job_id)  # only what comes next
    request(service, ALICE, "attach", job_id=batch.job_id, offset=0)  # no output relayed
    assert node_messages(state, "replay") == []
    request(service, ALICE, "attach", job_id=job.job_id, offset=42)
    assert node_messages(state, "replay") == [{"t": "replay", "job_id": job.job_id, "offset": 42}]


def test_turn_queue_is_shown_to_all_and_changed_by_admins(service: ClientService) -> None:
    assert request(service, ALICE, "turns", action="status")["mode"] == "priority"
    with pytest.raises(PermissionDenied):
        request(service, ALICE, "turns", action="set", users=["alice"])
    reply = request(service, ADMIN, "turns", action="set", users=["alice", "bob"])
    assert reply["configured_rotation"] == ["alice", "bob"]


def test_nodes_are_administered_by_admins(service: ClientService) -> None:
    with pytest.raises(PermissionDenied):
        request(service, ALICE, "node_update", node_id="n1", action="drain")
    request(service, ADMIN, "node_update", node_id="n1", action="drain", reason="psu")
    assert service.state.nodes["n1"].drain_reason == "psu"


def test_tokens_are_created_only_by_admins_over_a_private_transport(state: ClusterState) -> None:
    service, sessions = make_service(state)
    with pytest.raises(PermissionDenied, match="admin"):
        request(service, ALICE, "token", action="create", user="alice")
    tcp_admin = ctx("root", admin=True, transport=Transport.TCP)
    with pytest.raises(PermissionDenied, match="clear"):
        request(service, tcp_admin, "token", action="create", user="alice")
    tls_admin = ctx("root", admin=True, transport=Transport.TLS)
    created = request(service, tls_admin, "token", action="create", user="alice")
    assert created["token"].startswith("mgpu1.")
    with pytest.raises(PermissionDenied):
        request(service, ALICE, "token", action="list")
    assert [t["user"] for t in request(service, tcp_admin, "token", action="list")["tokens"]] == [
        "alice"
    ]
    with pytest.raises(PermissionDenied):
        request(service, ALICE, "token", action="revoke", user="alice")
    request(service, ADMIN, "token", action="revoke", user="alice")
    assert sessions.ended == [created["token_id"]]


@pytest.mark.parametrize(("private", "who", "sees"), [(True, BOB, False), (True, ADMIN, True)])
def test_private_commands(
    state: ClusterState, private: bool, who: RequestContext, sees: bool
) -> None:
    service, _ = make_service(state, private_commands=private)
    submit(service, ALICE)
    rows = {r["user"]: r for r in request(service, who, "queue")["jobs"]}
    assert (rows["alice"]["command"] == "sleep 1") is sees
    own = {r["user"]: r for r in request(service, ALICE, "queue")["jobs"]}
    assert own["alice"]["command"] == "sleep 1"


def test_unknown_references_and_refusals_do_not_stop_the_others(
    service: ClientService,
) -> None:
    mine = submit(service, ALICE)
    theirs = submit(service, BOB)
    reply = request(service, ALICE, "cancel", job_ids=[mine.job_id, theirs.job_id, 999])
    assert results(reply) == {
        mine.job_id: "ok",
        theirs.job_id: PermissionDenied.code,
        999: "job_not_found",
    }
    assert mine.state is JobState.CANCELLED and theirs.state is JobState.PENDING


def test_fake_sessions_record_watchers() -> None:
    sessions = FakeSessions()
    sessions.watch(object(), 3)
    assert sessions.watcher_count(3) == 1 and sessions.watcher_count(4) == 0


def test_info_counts_only_states_that_have_jobs(service: ClientService) -> None:
    assert request(service, ALICE, "info")["jobs"] == {}
    submit(service, ALICE, gpus=1)
    submit(service, ALICE, gpus=2)
    service.state.schedule(now=1.0)
    assert request(service, ALICE, "info")["jobs"] == {"RUNNING": 1, "PENDING": 1}
