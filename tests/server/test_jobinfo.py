"""The ``job`` verb (mgpu_client show): a job in full, and who may see its script and command."""

from __future__ import annotations

from typing import Any

import pytest

from mgpu_core.errors import JobNotFound
from mgpu_server.api.handlers import ClientService
from mgpu_server.api.permissions import RequestContext
from mgpu_server.state.cluster import ClusterState
from tests.helpers.nodes import node_info
from tests.helpers.state import ctx, exited, make_service, make_state, request
from tests.helpers.state import submit_job as submit

ALICE, BOB, ADMIN = ctx("alice"), ctx("bob"), ctx("root", admin=True)
SCRIPT = "#!/bin/sh\n#SBATCH -G 1\nexport API_KEY=s3cret\npython train.py\n"


@pytest.fixture
def state() -> ClusterState:
    s = make_state()
    s.node_join(node_info("n1", 2), now=0.0)
    return s


def detail(service: ClientService, who: RequestContext, job_id: int | str) -> dict[str, Any]:
    reply = request(service, who, "job", job_ids=[job_id])
    [row] = reply["jobs"]
    return dict(row)


def test_a_running_job_shows_its_gpus_uuids_wait_and_no_priority(state: ClusterState) -> None:
    service = make_service(state)[0]
    job = submit(service, ALICE, gpus=2, script=SCRIPT, argv=[])
    state.schedule(now=job.submit_time + 3.0)
    row = detail(service, ALICE, job.job_id)
    assert row["state"] == "RUNNING" and row["node"] == "n1"
    node = state.nodes.get("n1")
    assert node is not None
    expected = [g.device.uuid for g in node.gpus if g.index in row["gpu_indices"]]
    assert row["gpu_uuids"] == expected and all(expected)
    assert row["wait_s"] == pytest.approx(3.0, abs=0.01)
    assert row["priority_factors"] is None  # a running job's priority no longer matters
    assert row["script"] == SCRIPT


def test_a_pending_job_shows_its_priority_factors_and_dependency(state: ClusterState) -> None:
    service = make_service(state)[0]
    first = submit(service, ALICE, gpus=2)
    second = submit(service, ALICE, gpus=2, dependency=f"afterok:{first.job_id}")
    state.schedule(now=first.submit_time + 1.0)
    row = detail(service, ALICE, second.job_id)
    assert row["state"] == "PENDING" and row["dependency_status"] == "waiting"
    factors = row["priority_factors"]
    assert set(factors) >= {"priority", "age", "fairshare", "qos", "nice", "weights"}
    state.job_exited("n1", exited(first.job_id, 1), now=first.submit_time + 2.0)
    after = detail(service, ALICE, second.job_id)
    assert after["dependency_status"] == "never", after


def test_a_failed_job_shows_its_reason_and_exit(state: ClusterState) -> None:
    service = make_service(state)[0]
    job = submit(service, ALICE, gpus=1)
    state.schedule(now=job.submit_time + 1.0)
    state.job_exited("n1", exited(job.job_id, 3), now=job.submit_time + 5.0)
    row = detail(service, ALICE, job.job_id)
    assert row["state"] == "FAILED" and row["exit_code"] == 3
    assert row["elapsed_s"] == pytest.approx(4.0, abs=0.01)


@pytest.mark.parametrize("private", [False, True])
def test_only_the_owner_and_admins_see_the_script(state: ClusterState, private: bool) -> None:
    service = make_service(state, private_commands=private)[0]
    job = submit(service, ALICE, gpus=1, script=SCRIPT, argv=[])
    assert detail(service, ALICE, job.job_id)["script"] == SCRIPT
    assert detail(service, ADMIN, job.job_id)["script"] == SCRIPT
    seen_by_bob = detail(service, BOB, job.job_id)
    assert seen_by_bob["script"] is None and seen_by_bob["env_keys"] is None
    # The command line follows the site's private_commands rule, as the queue's rows do.
    assert (seen_by_bob["command"] == "") is private


def test_an_array_id_shows_every_task_and_an_unknown_id_is_an_error(state: ClusterState) -> None:
    service = make_service(state)[0]
    job = submit(service, ALICE, gpus=1, array="0-2")
    array_id = job.array_job_id or job.job_id
    rows = request(service, ALICE, "job", job_ids=[array_id])["jobs"]
    assert sorted(r["array_task_id"] for r in rows) == [0, 1, 2]
    assert detail(service, ALICE, f"{array_id}_1")["array_task_id"] == 1
    with pytest.raises(JobNotFound):
        request(service, ALICE, "job", job_ids=[99999])
