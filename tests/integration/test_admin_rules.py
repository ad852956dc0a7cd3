"""Scheduling rules only admins can bend, end to end with a real master, node and two users
(tokens over TCP; the test's own user, root, is the admin on the socket): every bypass the
review found is refused, in one line, and audited."""

from __future__ import annotations

import grp
import json
import os
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from mgpu_core.errors import PermissionDenied
from mgpu_core.models import JobSpec
from tests.helpers.cluster import CLIENT_MODULES, PY, Cluster, running_cluster, wait_for

pytestmark = pytest.mark.timeout(120)

HOLD = "while [ ! -e {release} ]; do sleep 0.02; done"


def spec(cluster: Cluster, **fields: Any) -> JobSpec:
    return JobSpec(argv=["true"], cwd=str(cluster.tmp), stdout_path="/dev/null", **fields)


def blocker(cluster: Cluster) -> Path:
    """A job of the admin's on the node's one GPU, until the returned file exists."""
    release = cluster.tmp / "release"
    job_id = cluster.sbatch("--gpus", "1", "--wrap", HOLD.format(release=release))
    cluster.wait_state(job_id, "RUNNING")
    return release


def reason(cluster: Cluster, job_id: int, expected: str) -> None:
    wait_for(lambda: cluster.job(job_id)["reason"] == expected, 15, f"job {job_id} {expected}")


def refusals(cluster: Cluster, user: str, text: str) -> list[dict[str, object]]:
    """The audit log's refusals of ``user``'s requests that say ``text``."""
    return [
        r
        for r in cluster.audit()
        if r.get("refused") and r.get("user") == user and text in json.dumps(r)
    ]


def test_a_users_negative_nice_is_refused_in_one_line_and_audited(cluster: Cluster) -> None:
    with cluster.client("alice") as alice, pytest.raises(PermissionDenied, match="negative nice"):
        alice.submit(spec(cluster, nice=-10_000))
    token_file = cluster.tmp / "alice.token"
    cluster.cli(
        "mgpu_client", "admin", "token", "create", "--output", str(token_file), "alice", check=True
    )
    as_alice = {**cluster.env, "MGPU_MASTER": cluster.address, "MGPU_TOKEN_FILE": str(token_file)}
    refused = subprocess.run(
        [PY, "-m", CLIENT_MODULES["mgpu_sbatch"], "--nice", "-10000", "--wrap", "true"],
        capture_output=True,
        text=True,
        timeout=60,
        env=as_alice,
        cwd=cluster.tmp,
    )
    assert refused.returncode == 1, refused.stderr
    assert refused.stderr.count("\n") == 1 and "negative nice" in refused.stderr
    assert "Traceback" not in refused.stderr
    admins = cluster.sbatch("-H", "--nice", "-10000", "--wrap", "true")  # root: an admin
    assert cluster.job(admins)["nice"] == -10_000
    assert len(refusals(cluster, "alice", "negative nice")) == 2


def test_the_owner_cannot_release_an_admins_hold(cluster: Cluster) -> None:
    cluster.start_node("n1", gpus=1)
    with cluster.client("alice") as alice:
        held = alice.submit(spec(cluster, gpus=1, hold=True))
        cluster.cli("mgpu_client", "hold", str(held), check=True)  # the admin's hold now
        reason(cluster, held, "JobHeldAdmin")
        (result,) = alice.per_job("release", [held])
        assert isinstance(result.error(), PermissionDenied)
        # Passes ran since (this job started and ended on the GPU): the held one did not.
        cluster.wait_state(alice.submit(spec(cluster, gpus=1)), "COMPLETED")
    row = cluster.job(held)
    assert (row["state"], row["reason"]) == ("PENDING", "JobHeldAdmin")
    assert refusals(cluster, "alice", "held by an admin")
    cluster.cli("mgpu_client", "release", str(held), check=True)
    cluster.wait_state(held, "COMPLETED")


def test_revoked_gpu_access_holds_queued_jobs_and_cannot_be_bypassed(cluster: Cluster) -> None:
    cluster.start_node("n1", gpus=1)
    release = blocker(cluster)
    with cluster.client("alice") as alice, cluster.client("bob") as bob:
        queued = alice.submit(spec(cluster, gpus=1))  # queued before the revoke
        cluster.cli("mgpu_client", "gpu", "revoke", "alice", check=True)
        reason(cluster, queued, "AssocGrpGRES")
        # The review's bypass: a held CPU job, grown to 2 GPUs, then released.
        cpu_job = alice.submit(spec(cluster, gpus=0, hold=True))
        with pytest.raises(PermissionDenied, match="no GPU access"):
            alice.request("update", job_id=cpu_job, changes={"gpus": 2})
        refused, done = alice.per_job("release", [queued, cpu_job])
        assert isinstance(refused.error(), PermissionDenied) and done.ok
        release.touch()
        cluster.wait_state(cpu_job, "COMPLETED")
        assert cluster.job(cpu_job)["gpus"] == 0
        # The GPU is free and passes run (bob's job gets it): alice's queued job stays held.
        cluster.wait_state(bob.submit(spec(cluster, gpus=1)), "COMPLETED")
    row = cluster.job(queued)
    assert (row["state"], row["reason"]) == ("PENDING", "AssocGrpGRES")
    assert len(refusals(cluster, "alice", "no GPU access")) == 2
    cluster.cli("mgpu_client", "gpu", "assign", "alice", check=True)
    cluster.wait_state(queued, "COMPLETED")


def test_qos_access_lists_bind_at_submit_update_release_and_restart(tmp_path: Path) -> None:
    root_group = grp.getgrgid(os.getgid()).gr_name  # the test's user's primary group
    config = tmp_path / "master.toml"
    qos = "[qos.normal]\n[qos.high]\npriority = 100\nallowed_users = {users}\n"
    qos += f"[qos.staff]\nallowed_groups = ['{root_group}']\n"
    config.write_text(qos.format(users="['alice']"))
    with running_cluster(tmp_path, "--config", str(config)) as c:
        c.start_node("n1", gpus=1)
        ran = c.sbatch("-q", "staff", "--wrap", "true")  # root is in its own group
        c.wait_state(ran, "COMPLETED")
        with c.client("bob") as bob:
            for qos_name in ("high", "staff"):
                with pytest.raises(PermissionDenied, match="not open to user bob"):
                    bob.submit(spec(c, qos=qos_name))
            own = bob.submit(spec(c, hold=True))
            with pytest.raises(PermissionDenied, match="not open to user bob"):
                bob.request("update", job_id=own, changes={"qos": "high"})
        assert len(refusals(c, "bob", "not open to user bob")) == 3
        with c.client("alice") as alice:
            later = alice.submit(spec(c, qos="high", begin_time=time.time() + 3600))
        # The admin takes alice off high's list: her queued job may not start after a restart.
        config.write_text(qos.format(users="[]"))
        c.kill_master()
        c.start_master("--config", str(config), port=c.port)
        reason(c, later, "InvalidQOS")
        with c.client("alice") as alice:
            (result,) = alice.per_job("release", [later])
            assert isinstance(result.error(), PermissionDenied)
        assert refusals(c, "alice", "not open to user alice")
