"""The audit log: one JSON object a line whatever the fields hold, refusals marked, failures
from one address aggregated, and the file reopened at its path."""

from __future__ import annotations

import json
import logging
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from mgpu_core.errors import PermissionDenied
from mgpu_core.models import JobSpec
from mgpu_server.api import audit
from mgpu_server.api.audit import FailureLimiter
from mgpu_server.state.cluster import ClusterState
from tests.helpers.nodes import node_info
from tests.helpers.state import ctx, make_service, make_state, request

pytestmark = pytest.mark.timeout(30)

FORGED = 'n1\n{"time": "x", "event": "node_auth", "node": "evil"}\x1b[2J "quoted" \\ \u2028'


@pytest.fixture
def audit_file(tmp_path: Path) -> Iterator[Path]:
    """The audit logger writing to a file of the test's (and nowhere else after it)."""
    path = tmp_path / "audit.log"
    level, root_level = audit.log.level, logging.getLogger().level
    logging.getLogger().setLevel(logging.WARNING)  # the ordinary log's level does not matter
    audit.open_log(path)
    (handler,) = [h for h in audit.log.handlers if isinstance(h, audit.AuditFile)]
    try:
        yield path
    finally:
        audit.log.removeHandler(handler)
        handler.close()
        audit.log.setLevel(level)
        logging.getLogger().setLevel(root_level)


def records(path: Path) -> list[dict[str, Any]]:
    lines = path.read_text().splitlines()
    assert all(line.isascii() and line.isprintable() for line in lines)
    return [json.loads(line) for line in lines]


def test_a_field_cannot_end_the_line_or_forge_another(audit_file: Path) -> None:
    audit.log_event("auth_failure", peer="10.0.0.1:5", node=FORGED, reason=["a\nb", 3])
    audit.log_event("client_auth", peer="10.0.0.1:6", user="alice")
    first, second = records(audit_file)
    assert first["event"] == "auth_failure" and first["node"] == FORGED
    assert first["reason"] == ["a\nb", 3]
    assert second["event"] == "client_auth" and second["user"] == "alice"
    assert first["time"].endswith("Z") and "T" in first["time"]


def test_a_value_json_cannot_hold_is_written_as_text(audit_file: Path) -> None:
    audit.log_event("odd", ratio=float("nan"), keys={(1, 2): "x"}, when=Path("/p"))
    (line,) = records(audit_file)
    assert (line["ratio"], line["keys"], line["when"]) == ("nan", "{(1, 2): 'x'}", "/p")


def test_a_field_cannot_pass_for_the_time_or_the_event(audit_file: Path) -> None:
    audit.log_event("submit", time="forged", user="alice")
    (line,) = records(audit_file)
    assert line["time"] != "forged" and line["time_"] == "forged" and line["event"] == "submit"


def test_the_file_is_private_and_reopened_at_its_path(audit_file: Path) -> None:
    audit_file.write_text("")
    audit_file.chmod(0o644)  # loosened by someone: made private again when opened
    audit.reopen()
    assert stat.S_IMODE(audit_file.stat().st_mode) == 0o600
    audit.log_event("before")
    rotated = audit_file.with_name("audit.log.1")
    audit_file.rename(rotated)
    audit.reopen()
    audit.log_event("after")
    assert [r["event"] for r in records(rotated)] == ["log_reopened", "before"]
    assert [r["event"] for r in records(audit_file)] == ["log_reopened", "after"]
    assert stat.S_IMODE(audit_file.stat().st_mode) == 0o600


def test_failures_beyond_the_burst_are_counted_in_one_line_per_interval() -> None:
    limiter = FailureLimiter(burst=3, interval_s=60.0)
    logged = [limiter.admit("10.0.0.1", "auth_failure", 100.0 + i / 100)[0] for i in range(1000)]
    assert logged == [True] * 3 + [False] * 997
    assert limiter.admit("10.0.0.2", "auth_failure", 101.0) == (True, [])  # its own count
    assert limiter.due(159.0) == []  # the interval has not ended
    (summary,) = limiter.due(160.0)
    assert summary["address"] == "10.0.0.1" and summary["count"] == 997
    assert summary["events"] == {"auth_failure": 997}
    assert summary["message"] == "997 more failures from 10.0.0.1 not logged (997 auth_failure)"
    # A new interval starts afresh; a failure after an unflushed interval tells its count.
    assert [limiter.admit("10.0.0.1", "x", 200.0)[0] for _ in range(5)] == [True] * 3 + [False] * 2
    logged_now, summaries = limiter.admit("10.0.0.1", "x", 261.0)
    assert logged_now and [s["count"] for s in summaries] == [2]
    assert limiter.due(0.0, everything=True) == []  # nothing suppressed since: no line


def test_addresses_beyond_the_tracked_many_share_one_count(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(audit, "MAX_TRACKED_ADDRESSES", 2)
    limiter = FailureLimiter(burst=1, interval_s=60.0)
    for address in ("a", "b", "c", "d", "e"):
        limiter.admit(address, "auth_failure", 0.0)
    assert set(limiter.windows) == {"a", "b", audit.OTHER_ADDRESSES}
    (summary,) = limiter.due(0.0, everything=True)
    assert summary["address"] == audit.OTHER_ADDRESSES and summary["count"] == 2


def test_log_failure_aggregates_by_address_not_port(
    audit_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(audit, "_failures", FailureLimiter(burst=2, interval_s=60.0))
    for port in range(50):
        audit.log_failure("auth_failure", peer=f"10.0.0.9:{port}", reason="wrong key")
    audit.log_failure("auth_failure", peer="unix:uid=1000", reason="wrong key")
    audit.flush_failures(everything=True)
    lines = records(audit_file)
    assert [r["peer"] for r in lines if r["event"] == "auth_failure"] == [
        "10.0.0.9:0",
        "10.0.0.9:1",
        "unix:uid=1000",
    ]
    (summary,) = [r for r in lines if r["event"] == "failures_suppressed"]
    assert summary["address"] == "10.0.0.9" and summary["count"] == 48


# ---- refusals, as the handlers log them --------------------------------------------------


@pytest.fixture
def state() -> ClusterState:
    s = make_state()
    s.node_join(node_info("n1", 2), now=0.0)
    return s


def test_a_refused_admin_action_is_logged_as_refused(state: ClusterState, audit_file: Path) -> None:
    service, _ = make_service(state)
    with pytest.raises(PermissionDenied):
        request(service, ctx("alice"), "node_update", node_id="n1", action="drain", reason="x")
    with pytest.raises(PermissionDenied):
        request(service, ctx("alice"), "turns", action="set", users=["alice"])
    drain, turns = records(audit_file)
    assert drain["event"] == "node_update" and drain["refused"] == "only an admin can drain a node"
    assert drain["user"] == "alice" and drain["node_id"] == "n1" and drain["action"] == "drain"
    assert drain["reason"] == "x"  # the drain's own reason, as asked
    assert turns["event"] == "turns" and "only an admin" in turns["refused"]
    assert turns["users"] == ["alice"]


def test_a_per_job_refusal_names_the_refused_jobs(state: ClusterState, audit_file: Path) -> None:
    service, _ = make_service(state)
    alice, bob = ctx("alice"), ctx("bob")
    job = JobSpec(argv=["true"]).to_wire()
    mine = request(service, bob, "submit", job=job)["job_id"]
    theirs = request(service, alice, "submit", job=job)["job_id"]
    request(service, bob, "cancel", job_ids=[mine, theirs])
    cancels = [r for r in records(audit_file) if r["event"] == "cancel"]
    assert "refused" not in cancels[0] and cancels[0]["job_ids"] == [mine, theirs]
    assert cancels[1]["job_ids"] == [theirs] and "belongs to alice" in cancels[1]["refused"]


def test_allowed_requests_carry_no_refusal(state: ClusterState, audit_file: Path) -> None:
    service, _ = make_service(state)
    admin = ctx("root", admin=True)
    request(service, admin, "node_update", node_id="n1", action="drain", reason="psu")
    (line,) = records(audit_file)
    assert line["event"] == "node_update" and "refused" not in line and line["reason"] == "psu"
