"""The GPU turn queue against a real master and node: rotation order with repeats, skipping,
outsiders, revoke, force-next, time slice, and persistence."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mgpu_core.models import JobSpec
from tests.helpers.cluster import Cluster, wait_for

pytestmark = pytest.mark.timeout(120)


def submit_as(cluster: Cluster, user: str, command: str, gpus: int = 1) -> int:
    with cluster.client(user) as client:
        spec = JobSpec(
            script=f"#!/bin/sh\n{command}\n",
            gpus=gpus,
            cwd=str(cluster.tmp),
            stdout_path="/dev/null",
            requeue=True,
        )
        return client.submit(spec)


def gpu(cluster: Cluster, *args: str) -> str:
    return cluster.cli("mgpu_client", "gpu", *args, check=True).stdout


def status(cluster: Cluster) -> dict[str, object]:
    return dict(json.loads(gpu(cluster, "queue", "--json")))


def test_rotation_order_repeats_skips_and_outsiders(cluster: Cluster) -> None:
    cluster.start_node("n1", gpus=1)
    release = cluster.tmp / "release"
    blocker = submit_as(cluster, "admin", f"while [ ! -e {release} ]; do sleep 0.02; done")
    cluster.wait_state(blocker, "RUNNING")
    gpu(cluster, "queue", "set", "alice", "bob", "alice", "carol")
    out = gpu(cluster, "policy", "set-mode", "queue")
    assert "mode      queue" in out and "[alice] bob alice carol" in out
    order = cluster.tmp / "order"
    jobs = {}
    for user, n in (("carol", 1), ("bob", 2), ("alice", 3), ("dave", 1)):
        for i in range(1, n + 1):
            jobs[f"{user}{i}"] = submit_as(cluster, user, f"echo {user}{i} >> {order}")
    cpu_job = submit_as(cluster, "dave", "true", gpus=0)
    cluster.wait_state(cpu_job, "COMPLETED")  # jobs without GPUs are not held back
    wait_for(lambda: cluster.job(jobs["dave1"])["reason"] == "NotInTurnRotation", 10, "outsider")
    assert status(cluster)["waiting"] == {"alice": 3, "bob": 2, "carol": 1, "dave": 1}
    release.touch()
    for name, job_id in jobs.items():
        if name != "dave1":
            cluster.wait_state(job_id, "COMPLETED")
    assert order.read_text().split() == ["alice1", "bob1", "alice2", "carol1", "alice3", "bob2"]
    assert cluster.job(jobs["dave1"])["state"] == "PENDING"
    history = json.loads(gpu(cluster, "history", "--json"))
    grants = [h["user"] for h in history if h["event"] == "grant"]
    assert grants == ["alice", "bob", "alice", "carol", "alice", "bob"]
    # Back to priority mode: the outsider runs.
    gpu(cluster, "policy", "set-mode", "priority")
    cluster.wait_state(jobs["dave1"], "COMPLETED")


def test_revoke_force_next_slice_and_restart(cluster: Cluster, tmp_path: Path) -> None:
    cluster.start_node("n1", gpus=1)
    gpu(cluster, "queue", "set", "alice", "bob")
    gpu(cluster, "queue", "repeat", "alice", "2")
    assert status(cluster)["configured_rotation"] == ["bob", "alice", "alice"]
    gpu(cluster, "policy", "set-mode", "queue")
    gpu(cluster, "revoke", "eve")
    with pytest.raises(Exception, match="no GPU access"):
        submit_as(cluster, "eve", "true")
    assert cluster.wait_state(submit_as(cluster, "eve", "true", gpus=0), "COMPLETED")
    runs = cluster.tmp / "runs"
    hold = f"echo $MGPU_RESTART_COUNT >> {runs}; while true; do sleep 0.05; done"
    long_job = submit_as(cluster, "bob", hold)
    cluster.wait_state(long_job, "RUNNING")
    waiting = submit_as(cluster, "alice", "true")
    assert status(cluster)["current"]["user"] == "bob"  # type: ignore[index]
    gpu(cluster, "force-next")
    cluster.wait_state(waiting, "COMPLETED")
    wait_for(lambda: cluster.job(long_job)["restart_count"] == 1, 10, "requeued")
    # Its next turn comes again (bob is in the rotation); a 1 s slice ends it by requeueing.
    gpu(cluster, "policy", "wait-timeout", "1")
    wait_for(lambda: cluster.job(long_job)["restart_count"] >= 2, 20, "slice to end the turn")
    # The rotation and mode survive a master restart.
    cluster.kill_master()
    cluster.start_master(port=cluster.port)
    data = status(cluster)
    assert data["mode"] == "queue" and data["configured_rotation"] == ["bob", "alice", "alice"]
    assert data["revoked"] == ["eve"] and data["slice_s"] == 1.0
    gpu(cluster, "assign", "eve")
    gpu(cluster, "policy", "set-mode", "priority")
    gpu(cluster, "policy", "wait-timeout", "0")
    cluster.cli("mgpu_cancel", str(long_job), check=True)
    assert cluster.wait_state(submit_as(cluster, "eve", "true"), "COMPLETED")


def test_non_admin_cannot_change_the_rotation(cluster: Cluster) -> None:
    with cluster.client("mallory") as client:
        assert client.request("turns", action="status")["mode"] == "priority"
        with pytest.raises(Exception, match="only an admin"):
            client.request("turns", action="set", users=["mallory"])


def test_auto_mode_next_and_monitor(cluster: Cluster) -> None:
    cluster.start_node("n1", gpus=1)
    release = cluster.tmp / "release"
    blocker = submit_as(cluster, "admin", f"while [ ! -e {release} ]; do sleep 0.02; done")
    cluster.wait_state(blocker, "RUNNING")
    gpu(cluster, "policy", "set-mode", "auto")
    order = cluster.tmp / "order"
    ids = [submit_as(cluster, u, f"echo {u} >> {order}") for u in ("alice", "alice", "bob")]
    data = status(cluster)
    # Derived from the waiting work: alice has two jobs, bob one.
    rotation = data["rotation"]
    assert isinstance(rotation, list) and sorted(rotation) == ["alice", "alice", "bob"]
    assert data["waiting"] == {"alice": 2, "bob": 1}
    screen = cluster.cli("mgpu_client", "gpu", "monitor", "--count", "1", check=True).stdout
    assert "mode      auto" in screen and "waiting   alice: 2, bob: 1" in screen
    release.touch()
    for job_id in ids:
        cluster.wait_state(job_id, "COMPLETED")
    assert sorted(order.read_text().split()) == ["alice", "alice", "bob"]
    gpu(cluster, "policy", "set-mode", "queue")
    gpu(cluster, "queue", "set", "alice", "bob", "carol")
    assert status(cluster)["position"] == 0
    gpu(cluster, "next")
    assert status(cluster)["position"] == 1
    assert "(next turn: bob)" in gpu(cluster, "status")
