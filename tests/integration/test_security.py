"""Only who belongs gets in: node authentication with the cluster key, and the audit log."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from mgpu_client.launch import agent_command
from mgpu_core import auth
from tests.helpers.cluster import Cluster, running_cluster, wait_for
from tests.helpers.wire import closed_after_error, frame, node_hello, read_frame

pytestmark = pytest.mark.timeout(60)


def test_cluster_key_is_created_private(cluster: Cluster) -> None:
    key_file = cluster.master_state / "cluster.key"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert len(bytes.fromhex(key_file.read_text().strip())) >= 32


def test_node_with_the_wrong_key_is_refused(cluster: Cluster, tmp_path: Path) -> None:
    wrong = tmp_path / "wrong.key"
    auth.create_key(wrong)
    result = subprocess.run(
        agent_command(
            master_port=cluster.port,
            node_id="intruder",
            gpus=1,
            state_dir=tmp_path / "n",
            key_file=wrong,
            tls_ca=cluster.ca_file,
        ),
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 3
    assert "cluster key" in result.stderr and "Traceback" not in result.stderr
    assert cluster.nodes_json() == []
    assert any(e["event"] == "auth_failure" for e in cluster.audit())


def test_loose_key_permissions_are_refused(cluster: Cluster, tmp_path: Path) -> None:
    loose = tmp_path / "loose.key"
    auth.create_key(loose)
    os.chmod(loose, 0o644)
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "mgpu_node",
            "--master-port",
            str(cluster.port),
            "--state-dir",
            str(tmp_path / "n"),
            "--key-file",
            str(loose),
            "--tls-ca",
            str(cluster.ca_file),
        ],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode != 0 and "chmod 600" in result.stderr


def test_a_replayed_proof_is_refused(cluster: Cluster) -> None:
    key = auth.load_key(cluster.master_state / "cluster.key")
    nonce = auth.new_nonce()
    # A genuine exchange (as an eavesdropper would record it) ...
    with cluster.connect_tcp() as sock:
        sock.sendall(frame(node_hello("n9", nonce)))
        challenge = read_frame(sock)
        assert challenge is not None and challenge["t"] == "challenge"
        master_nonce = challenge["nonce"]
        assert isinstance(master_nonce, bytes)
        binding = cluster.binding
        assert challenge["proof"] == auth.proof(key, "master", "n9", nonce, master_nonce, binding)
        recorded = auth.proof(key, "node", "n9", master_nonce, nonce, cluster.binding)
        sock.sendall(frame({"t": "auth", "proof": recorded}))
        reply = read_frame(sock)
        assert reply is not None and reply["t"] == "ok"
    wait_for(lambda: cluster.node_state("n9") == "down", 10, "n9 to disconnect")
    # ... replayed later: the master's nonce is new, so the old proof is worthless.
    with cluster.connect_tcp() as sock:
        sock.sendall(frame(node_hello("n9", nonce)))
        challenge = read_frame(sock)
        assert challenge is not None and challenge["nonce"] != master_nonce
        sock.sendall(frame({"t": "auth", "proof": recorded}))
        assert closed_after_error(sock) == "authentication_failed"


def test_unauthenticated_node_can_send_nothing_but_hello(cluster: Cluster) -> None:
    with cluster.connect_tcp() as sock:
        sock.sendall(frame(node_hello("n8", auth.new_nonce())))
        assert read_frame(sock) is not None  # the challenge
        sock.sendall(frame({"t": "heartbeat", "gpus": []}))
        assert closed_after_error(sock) == "protocol_error"
    assert cluster.node_state("n8") is None


def test_audit_log_records_submissions_cancels_and_admin_actions(cluster: Cluster) -> None:
    cluster.start_node("n1", gpus=1)
    job_id = cluster.sbatch("-H", "--wrap", "true")
    cluster.cli("mgpu_cancel", str(job_id), check=True)
    cluster.cli("mgpu_client", "node", "drain", "n1", "--reason", "fan noise", check=True)
    events = cluster.audit()
    assert any(e["event"] == "node_auth" and e["node"] == "n1" for e in events)
    assert any(
        e["event"] == "submit" and e["user"] == "root" and e["job_id"] == job_id for e in events
    )
    assert any(e["event"] == "cancel" and e["job_ids"] == [job_id] for e in events)
    assert any(e["event"] == "node_update" and e["reason"] == "fan noise" for e in events)


def test_users_act_only_on_their_own_jobs(cluster: Cluster) -> None:
    from mgpu_core.errors import PermissionDenied
    from mgpu_core.models import JobSpec

    with cluster.client("alice") as alice, cluster.client("bob") as bob:
        job_id = alice.submit(JobSpec(argv=["sleep", "30"], hold=True, cwd="/"))
        for verb in ("cancel", "hold", "release", "requeue"):
            (result,) = bob.per_job(verb, [job_id])
            assert isinstance(result.error(), PermissionDenied), verb
            assert result.job_id == job_id and "alice" in result.message
        with pytest.raises(PermissionDenied):
            bob.request("update", job_id=job_id, changes={"nice": 5})
        with pytest.raises(PermissionDenied):
            bob.request("attach", job_id=job_id)
        assert cluster.job(job_id)["state"] == "PENDING"
        alice.request("update", job_id=job_id, changes={"nice": 5})
        (mine,) = alice.cancel([job_id])
        assert mine.ok and mine.error() is None
    assert cluster.job(job_id)["state"] == "CANCELLED"
    # An admin (root, here) may act on anyone's job.
    with cluster.client("alice") as alice:
        other = alice.submit(JobSpec(argv=["true"], hold=True, cwd="/"))
    cluster.cli("mgpu_cancel", str(other), check=True)


def test_connection_limit_per_address(tmp_path: Path) -> None:
    with running_cluster(tmp_path, "--max-connections-per-address", "3") as c:
        idle = [c.connect_tcp() for _ in range(3)]
        try:
            # Refused when accepted, before the TLS handshake (which a refused stranger must
            # not cost): the socket is closed, there is no TLS to send an error in.
            with pytest.raises(OSError):
                c.connect_tcp()
        finally:
            for sock in idle.pop(), idle.pop():
                sock.close()
        # Freed slots are usable again (the master noticed the closes).
        wait_for(lambda: c.cli("mgpu_queue").returncode == 0, 10, "a free connection slot")
        for sock in idle:
            sock.close()
        assert any(e["event"] == "connection_refused" for e in c.audit())


def test_private_commands_hide_others_command_lines(tmp_path: Path) -> None:
    from mgpu_core.models import JobSpec

    config = tmp_path / "master.toml"
    config.write_text("private_commands = true\n")
    with running_cluster(tmp_path, "--config", str(config)) as c:
        with c.client("alice") as alice, c.client("bob") as bob:
            job_id = alice.submit(JobSpec(argv=["train", "--secret-flag"], hold=True, cwd="/x"))
            (seen_by_bob,) = bob.queue(job_ids=[job_id])["jobs"]
            # Asking for the command alone (no owner field) hides it just the same.
            assert bob.queue(job_ids=[job_id], fields=["command"])["jobs"] == [{"command": ""}]
            (seen_by_alice,) = alice.queue(job_ids=[job_id])["jobs"]
        assert seen_by_bob["user"] == "alice" and seen_by_bob["command"] == ""
        assert seen_by_bob["cwd"] == ""
        assert seen_by_alice["command"] == "train --secret-flag"
        assert "--secret-flag" in c.job(job_id)["command"]  # root is an admin
