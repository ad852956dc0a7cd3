"""Placement options (issue 13): GPU types (``--gres=gpu:TYPE:N``), ``--exclusive``,
``-x/--exclude``, ``--test-only``, and the queue row fields that show them."""

from __future__ import annotations

import time
from typing import Any

import pytest

from mgpu_core.errors import InvalidPartition, InvalidRequest
from mgpu_core.models import GpuDevice, JobSpec, NodeHello
from mgpu_core.reasons import Reason
from mgpu_server.scheduling.planner import NodeView, PendingJob, Planner, Release
from mgpu_server.state.cluster import ClusterState
from tests.helpers.nodes import node_info
from tests.helpers.state import ctx, exited, make_service, make_state, request

A100 = "NVIDIA A100-SXM4-40GB"
H100 = "NVIDIA H100 80GB HBM3"


def submit(c: ClusterState, **spec: Any) -> Any:
    return c.submit("u", JobSpec(argv=["x"], **{"gpus": 1, **spec}), now=0.0)


# ---- GPU types --------------------------------------------------------------------------


def test_a_typed_job_gets_only_gpus_of_its_type() -> None:
    c = make_state()
    c.node_join(node_info("mixed", 4, gpu_name=[A100, H100, A100, H100]), now=0.0)
    h100s = submit(c, gpus=2, gpu_type="h100", time_limit_s=100)
    c.schedule(now=1.0)
    assert h100s.gpu_indices == (1, 3)
    another = submit(c, gpu_type="h100")
    anyone = submit(c, gpus=2)
    c.schedule(now=2.0)
    assert another.reason == Reason.RESOURCES  # the a100s are free, but not its type
    assert another.expected_start == 101.0
    assert anyone.gpu_indices == (0, 2)  # takes no h100: does not delay the reservation


def test_a_typed_job_runs_on_a_node_of_its_type() -> None:
    c = make_state()
    c.node_join(node_info("a", 2, gpu_name=A100), now=0.0)
    c.node_join(node_info("h", 2, gpu_name=H100), now=0.0)
    first = submit(c, gpu_type="h100")
    second = submit(c, gpus=2, gpu_type="a100")
    c.schedule(now=1.0)
    assert (first.node_id, second.node_id) == ("h", "a")


def test_an_unknown_gpu_type_is_refused_naming_the_clusters_types() -> None:
    c = make_state()
    early = submit(c, gpu_type="a10")  # no node yet: the job waits
    c.node_join(node_info("a", 2, gpu_name=A100), now=0.0)
    c.node_join(node_info("h", 2, gpu_name=H100), now=0.0)
    c.node_leave("h", now=0.0)  # a node that is down still has its type
    with pytest.raises(InvalidRequest) as err:
        submit(c, gpu_type="a10")
    assert str(err.value) == "unknown GPU type 'a10' (this cluster has: a100, h100)"
    assert submit(c, gpu_type="h100").reason == Reason.PRIORITY
    assert early.job_id in c.pending


def test_a_typed_request_no_node_could_hold_is_refused() -> None:
    c = make_state()
    c.node_join(node_info("mixed", 3, gpu_name=[A100, H100, H100]), now=0.0)
    with pytest.raises(InvalidRequest, match="3 h100 GPUs, 1 CPUs asked; largest node has 2"):
        submit(c, gpus=3, gpu_type="h100")
    assert submit(c, gpus=3).spec.gpus == 3


def test_gpus_of_an_agent_without_types_get_theirs_from_the_name() -> None:
    c = make_state()
    service, _ = make_service(c)
    device = GpuDevice(index=0, name=H100, visible_id="0")  # model "": an older agent
    c.node_join(NodeHello(node_id="old", cpus=4, gpus=[device]), now=0.0)
    [node] = request(service, ctx("u"), "nodes")["nodes"]
    assert node["gpus"][0]["model"] == "h100"
    assert submit(c, gpu_type="h100").spec.gpu_type == "h100"


# ---- --exclusive ------------------------------------------------------------------------


def two_nodes() -> ClusterState:
    c = make_state()
    c.node_join(node_info("n1", 4), now=0.0)
    c.node_join(node_info("n2", 4), now=0.0)
    return c


def test_an_exclusive_job_starts_only_on_an_empty_node_and_holds_it_whole() -> None:
    c = two_nodes()
    small = submit(c)
    c.schedule(now=0.0)
    assert small.node_id == "n1"  # best fit: the lowest name among equals
    whole = submit(c, exclusive=True)
    c.schedule(now=1.0)
    assert (whole.node_id, whole.gpu_indices) == ("n2", (0,))  # the GPUs it asked for
    beside = [submit(c) for _ in range(4)]
    c.schedule(now=2.0)
    assert [j.node_id for j in beside[:3]] == ["n1"] * 3
    assert beside[3].reason == Reason.RESOURCES  # n2 has 3 free GPUs, held by the job
    c.job_exited("n2", exited(whole.job_id), now=3.0)
    c.schedule(now=3.0)
    assert beside[3].node_id == "n2"


def test_an_exclusive_job_reserves_the_node_and_backfill_does_not_delay_it() -> None:
    c = make_state()
    c.node_join(node_info("n1", 4), now=0.0)
    running = submit(c, time_limit_s=100)
    c.schedule(now=0.0)
    whole = submit(c, exclusive=True, time_limit_s=50)
    short = submit(c, time_limit_s=50)  # ends before the reserved start: backfills
    long = submit(c, time_limit_s=500)  # would delay it
    c.schedule(now=10.0)
    assert whole.reason == Reason.RESOURCES and whole.expected_start == 100.0
    assert short.job_id in c.running
    assert long.job_id in c.pending and long.reason == Reason.PRIORITY
    c.job_exited("n1", exited(running.job_id), now=60.0)
    c.job_exited("n1", exited(short.job_id), now=60.0)
    c.schedule(now=60.0)
    assert whole.job_id in c.running and long.job_id in c.pending


# ---- -x/--exclude -----------------------------------------------------------------------


def test_excluded_nodes_are_never_used() -> None:
    c = two_nodes()
    job = submit(c, gpus=4, exclude=["n1"])
    c.schedule(now=0.0)
    assert job.node_id == "n2"
    waits = submit(c, exclude=["n2"], nodelist=["n1", "n2"][:1])
    blocked = submit(c, exclude=["n1"])
    c.schedule(now=1.0)
    assert waits.node_id == "n1"
    assert blocked.reason == Reason.RESOURCES  # n1 is free, and excluded


def test_excluding_a_node_the_job_requires_or_that_does_not_exist_is_refused() -> None:
    c = two_nodes()
    with pytest.raises(InvalidRequest, match="node n1 is both required"):
        submit(c, nodelist=["n1"], exclude=["n1"])
    with pytest.raises(InvalidRequest, match="invalid node name specified: n9"):
        submit(c, exclude=["n9"])
    with pytest.raises(InvalidRequest, match="is excluded"):
        submit(c, exclude=["n1", "n2"])


def test_a_reserved_node_is_not_offered_to_a_job_that_excludes_it() -> None:
    node = NodeView("a", True, [0, 1], 4, 8, 8, 0, 0, [Release(100.0, 2, 0, 0)])
    planner = Planner([node], now=0.0)
    planner.consider(PendingJob(1, 4, 0, 0, time_limit_s=10))  # reserves a at 100
    planner.consider(PendingJob(2, 1, 0, 0, time_limit_s=10, exclude=frozenset({"a"})))
    planner.consider(PendingJob(3, 1, 0, 0, time_limit_s=10))
    assert [s.job_id for s in planner.result.starts] == [3]
    assert planner.result.reasons[2] == Reason.NODE_NOT_AVAIL


# ---- --test-only ------------------------------------------------------------------------


def test_test_only_checks_the_job_stores_nothing_and_says_when_and_where() -> None:
    c = two_nodes()
    service, _ = make_service(c)
    user = ctx("u")
    now = time.time()
    for _ in range(2):
        c.submit("u", JobSpec(argv=["x"], gpus=4, time_limit_s=600), now=now)
    c.schedule(now=now)
    assert len(c.running) == 2
    ids, dirty = set(c.table.jobs), c.table.next_id
    job = JobSpec(argv=["x"], gpus=2, time_limit_s=60).to_wire()
    reply = request(service, user, "submit", job=job, test_only=True)
    assert reply["job_id"] is None and reply["partition"] == "gpu"
    assert reply["would_start"] == pytest.approx(now + 600, abs=5)
    assert reply["node"] in ("n1", "n2")
    assert set(c.table.jobs) == ids and c.table.next_id == dirty and not c.pending
    # An idle node: now, there.
    c.node_join(node_info("n3", 2), now=now)
    reply = request(service, user, "submit", job=job, test_only=True)
    assert reply["node"] == "n3" and reply["would_start"] == pytest.approx(time.time(), abs=5)
    # Refused as a submit would be.
    bad = JobSpec(argv=["x"], partition="nope").to_wire()
    with pytest.raises(InvalidPartition):
        request(service, user, "submit", job=bad, test_only=True)


def test_test_only_says_zero_when_the_start_is_not_known() -> None:
    c = two_nodes()
    for _ in range(2):
        submit(c, gpus=4)  # no time limit: when they end is unknown
    c.schedule(now=0.0)
    assert c.trial("u", JobSpec(argv=["x"], gpus=1), now=1.0)[0] == 0.0
    assert c.trial("u", JobSpec(argv=["x"], gpus=0), now=1.0) == (1.0, "n1", "gpu")
    # A held job would not start, whatever is free.
    assert c.trial("u", JobSpec(argv=["x"], gpus=0, hold=True), now=1.0) == (0.0, "", "gpu")


def test_test_only_counts_the_jobs_ahead_of_it() -> None:
    c = make_state()
    c.node_join(node_info("n1", 1), now=0.0)
    running = submit(c, time_limit_s=100)
    c.schedule(now=0.0)
    ahead = submit(c, time_limit_s=100, nice=-100)  # reserves n1 at 100
    c.schedule(now=1.0)
    assert ahead.expected_start == 100.0 and running.job_id in c.running
    when, node, _ = c.trial("u", JobSpec(argv=["x"], gpus=1, time_limit_s=10), now=1.0)
    # Not at 100: the job ahead has that slot; the estimate is not known (no later slot is
    # planned once the node is reserved).
    assert (when, node) == (0.0, "")


# ---- queue rows -------------------------------------------------------------------------


def test_queue_rows_show_the_new_job_fields() -> None:
    c = two_nodes()
    service, _ = make_service(c, private_commands=True)
    spec = JobSpec(
        argv=["x"],
        gpus=1,
        account="physics",
        ntasks=2,
        cpus=2,
        exclusive=True,
        submit_host="login1",
        stdout_path="o-%j",
        stderr_path="e-%j",
        hold=True,
    )
    job_id = request(service, ctx("alice"), "submit", job=spec.to_wire())["job_id"]
    [mine] = request(service, ctx("alice"), "queue")["jobs"]
    assert {k: mine[k] for k in ("account", "ntasks", "exclusive", "submit_host")} == {
        "account": "physics",
        "ntasks": 2,
        "exclusive": True,
        "submit_host": "login1",
    }
    assert (mine["stderr_path"], mine["gpu_type"], mine["expected_start"]) == ("e-%j", "", 0.0)
    assert mine["partition"] == "gpu" and mine["job_id"] == job_id
    [theirs] = request(service, ctx("bob"), "queue", fields=["stderr_path", "stdout_path"])["jobs"]
    assert theirs == {"stderr_path": None, "stdout_path": None}  # private_commands
