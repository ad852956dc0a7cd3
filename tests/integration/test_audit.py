"""The audit log of a real master: a hello cannot forge a line, a refused admin action leaves
one, a flood of bad hellos grows it by a bounded amount, and SIGHUP reopens it at its path."""

from __future__ import annotations

import os
import signal
import stat
import time
from pathlib import Path
from typing import Any

import pytest

from mgpu_client.launch import PLAINTEXT_FLAG
from mgpu_core import auth
from mgpu_core.constants import AUDIT_FAILURE_BURST, AUDIT_FAILURE_INTERVAL_S
from mgpu_core.errors import PermissionDenied
from tests.helpers.cluster import Cluster, running_cluster, wait_for
from tests.helpers.wire import client_hello, closed_after_error, frame, node_hello, read_frame

pytestmark = pytest.mark.timeout(120)

FORGED = '{"time": "2000-01-01T00:00:00Z", "event": "node_auth", "node": "gpu9"}'
FLOOD = 3000


def events(cluster: Cluster, name: str) -> list[dict[str, Any]]:
    return [e for e in cluster.audit() if e["event"] == name]


def test_a_hello_cannot_forge_an_audit_line(cluster: Cluster) -> None:
    node_id = f"n1\n{FORGED}\n\x1b[2J"
    with cluster.connect_tcp() as sock:
        sock.sendall(frame(node_hello(node_id, auth.new_nonce())))
        challenge = read_frame(sock)
        assert challenge is not None and challenge["t"] == "challenge"
    # Hung up without a proof: logged with the node id as the peer gave it.
    failure = wait_for(
        lambda: next((e for e in events(cluster, "auth_failure") if "node" in e), None),
        15,
        "the node's auth failure in the audit log",
    )
    assert failure["node"] == node_id
    token_id = f"t\n{FORGED}"[:64]
    with cluster.connect_tcp() as sock:
        sock.sendall(frame(client_hello(token=token_id, nonce=auth.new_nonce())))
        assert closed_after_error(sock) == "authentication_failed"
    failure = wait_for(
        lambda: next((e for e in events(cluster, "auth_failure") if "node" not in e), None),
        15,
        "the token's auth failure in the audit log",
    )
    assert failure["reason"] == f"token {token_id} is unknown or revoked"
    # cluster.audit() parsed every line as one object: none was forged.
    assert events(cluster, "node_auth") == []


def test_a_refused_admin_action_is_audited(cluster: Cluster) -> None:
    with cluster.client("alice") as alice, pytest.raises(PermissionDenied):
        alice.request("node_update", node_id="n1", action="drain", reason="mine now")
    (refused,) = [e for e in events(cluster, "node_update") if e.get("refused")]
    assert refused["user"] == "alice" and refused["node_id"] == "n1"
    assert refused["refused"] == "only an admin can drain a node"
    assert refused["reason"] == "mine now"  # the drain's reason, as asked
    assert refused["peer"].startswith("127.0.0.1:")


def test_a_flood_of_bad_hellos_grows_the_log_by_a_bounded_amount(tmp_path: Path) -> None:
    # Plain TCP: the aggregation is the same over TLS, and 3,000 handshakes would cost this
    # shared machine's CPU for nothing.
    with running_cluster(tmp_path, PLAINTEXT_FLAG) as c:
        log = c.master_state / "audit.log"
        before_bytes = log.stat().st_size
        started_s = time.monotonic()
        for _ in range(FLOOD):
            with c.connect_tcp() as sock:
                sock.sendall(frame(client_hello(token="0" * 16, nonce=auth.new_nonce())))
                assert closed_after_error(sock) in ("authentication_failed", "too_many_connections")
        # One interval per minute the flood took (a slow machine may need two or three).
        intervals = 1 + int((time.monotonic() - started_s) // AUDIT_FAILURE_INTERVAL_S) + 1
        grown_bytes = log.stat().st_size - before_bytes
        assert grown_bytes < intervals * (AUDIT_FAILURE_BURST + 1) * 300, grown_bytes
        assert c.cli("mgpu_queue").returncode == 0  # and the master serves on
    # The master, stopping, told how many it did not log: together, every one.
    audit = c.audit()
    failures = [e for e in audit if e["event"] in ("auth_failure", "connection_refused")]
    summaries = [e for e in audit if e["event"] == "failures_suppressed"]
    assert AUDIT_FAILURE_BURST <= len(failures) <= intervals * AUDIT_FAILURE_BURST
    assert 1 <= len(summaries) <= intervals
    assert len(failures) + sum(s["count"] for s in summaries) == FLOOD
    assert {s["address"] for s in summaries} == {"127.0.0.1"}
    assert " more failures from 127.0.0.1 not logged" in summaries[0]["message"]


def test_sighup_reopens_the_log_at_its_path(cluster: Cluster) -> None:
    assert cluster.master is not None
    log = cluster.master_state / "audit.log"
    rotated = log.with_name("audit.log.1")
    log.rename(rotated)
    os.kill(cluster.master.pid, signal.SIGHUP)
    wait_for(log.exists, 15, "a new audit log at its path")
    job_id = cluster.sbatch("-H", "--wrap", "true")
    new = cluster.audit(log)
    assert [e["event"] for e in new] == ["log_reopened", "submit"]
    assert new[1]["job_id"] == job_id
    assert all(e["event"] != "submit" for e in cluster.audit(rotated))
    assert stat.S_IMODE(log.stat().st_mode) == 0o600
    assert cluster.master.poll() is None  # SIGHUP did not end it
