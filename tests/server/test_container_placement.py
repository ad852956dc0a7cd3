"""Containers in the master (issue 15): a job with ``--container-image`` runs only on a node
that registered a container runtime, and says so while none it may use has one; the nodes
listing and the store keep each node's runtimes."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from mgpu_core.models import JobSpec
from mgpu_core.reasons import Reason
from mgpu_server.records.nodes import NodeRecord
from mgpu_server.state.cluster import ClusterState
from tests.helpers.nodes import node_info
from tests.helpers.state import ctx, make_service, make_state, request


def submit(c: ClusterState, **spec: Any) -> Any:
    return c.submit("u", JobSpec(argv=["x"], **{"gpus": 1, **spec}), now=0.0)


def test_a_job_with_an_image_waits_for_a_node_with_a_runtime() -> None:
    c = make_state()
    c.node_join(node_info("plain", 4), now=0.0)
    boxed = submit(c, container_image="localhost/img")
    plain = submit(c)
    c.schedule(now=1.0)
    assert boxed.reason == Reason.NO_CONTAINER_RUNTIME and not boxed.node_id
    assert plain.node_id == "plain"  # a job without an image goes anywhere
    c.node_join(replace(node_info("boxes", 1), runtimes=["podman"]), now=2.0)
    c.schedule(now=3.0)
    assert boxed.node_id == "boxes"


def test_a_busy_node_with_a_runtime_means_resources_not_no_runtime() -> None:
    c = make_state()
    c.node_join(node_info("plain", 4), now=0.0)
    c.node_join(replace(node_info("boxes", 1), runtimes=["apptainer"]), now=0.0)
    first = submit(c, container_image="img", time_limit_s=60)
    second = submit(c, container_image="img")
    c.schedule(now=1.0)
    assert first.node_id == "boxes"
    assert not second.node_id and second.reason == Reason.RESOURCES  # GPUs free on plain
    assert second.expected_start == 61.0


def test_only_the_nodes_a_job_may_use_count() -> None:
    c = make_state()
    c.node_join(node_info("plain", 4), now=0.0)
    c.node_join(replace(node_info("boxes", 4), runtimes=["docker"]), now=0.0)
    excluded = submit(c, container_image="img", exclude=["boxes"])
    listed = submit(c, container_image="img", nodelist=["plain"])
    c.schedule(now=1.0)
    assert excluded.reason == listed.reason == Reason.NO_CONTAINER_RUNTIME
    c.node_leave("boxes", now=2.0)
    down = submit(c, container_image="img")
    c.schedule(now=3.0)
    assert down.reason == Reason.NO_CONTAINER_RUNTIME  # its only node with one is down


def test_the_nodes_listing_and_the_store_keep_the_runtimes() -> None:
    c = make_state()
    service, _ = make_service(c)
    c.node_join(replace(node_info("boxes", 1), runtimes=["podman", "docker"]), now=0.0)
    c.node_join(node_info("plain", 1), now=0.0)
    nodes = {n["node_id"]: n for n in request(service, ctx("u"), "nodes")["nodes"]}
    assert nodes["boxes"]["runtimes"] == ["podman", "docker"]
    assert nodes["plain"]["runtimes"] == []
    record = NodeRecord.from_hello(replace(node_info("b", 1), runtimes=["apptainer"]), 0.0)
    assert NodeRecord.from_info(record.to_info(), 1.0).runtimes == ("apptainer",)
