"""A real agent whose exit the master refuses (tests/helpers/fake_master.py plays the master):
the agent logs it and drops that exit from its journal instead of resending it forever, and the
link stays up for everything else (docs/protocol.md §5.5)."""

from __future__ import annotations

import os
import pwd
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from mgpu_node.spool import pending_exit_ids
from tests.helpers.cluster import stop_process, wait_for
from tests.helpers.fake_master import FakeMaster
from tests.helpers.wire import frame

pytestmark = pytest.mark.timeout(60)

USER = pwd.getpwuid(os.getuid()).pw_name  # jobs run as their submitter: the test's user
REFUSAL = "field 'reason': longer than 1024 characters"


def launch(job_id: int, script: str, work: Path) -> dict[str, Any]:
    spec = {"argv": ["sh", "-c", script], "cwd": str(work)}
    return {"t": "launch", "launch": {"job_id": job_id, "user": USER, "spec": spec}}


@pytest.fixture
def master(tmp_path: Path) -> Iterator[FakeMaster]:
    master = FakeMaster(tmp_path)
    agent = master.start_agent("--heartbeat-interval", "0.1", "--allow-root-jobs")
    try:
        yield master
    finally:
        stop_process(agent)
        master.close()


def test_a_refused_exit_is_logged_and_dropped_not_resent(
    master: FakeMaster, tmp_path: Path
) -> None:
    master.refuse_exits[1] = REFUSAL
    link = master.connect()
    link.send(frame(launch(1, "exit 3", tmp_path)))
    master.wait(lambda: 1 in master.exited, 10, "job 1's exit")
    wait_for(
        lambda: (
            f"job=1 exit refused by the master, dropped: bad_message: {REFUSAL}"
            in master.log_text()
        ),
        10,
        "the agent's ERROR line",
    )
    exits = master.state_dir / "exits"
    wait_for(lambda: 1 not in pending_exit_ids(exits), 10, "job 1's exit gone from the journal")

    # The link stays up: the next job runs and its exit is acknowledged as usual.
    link.send(frame(launch(2, "exit 0", tmp_path)))
    master.wait(lambda: 2 in master.exited, 10, "job 2's exit")
    wait_for(lambda: pending_exit_ids(exits) == [], 10, "job 2's exit acknowledged")
    assert len(master.links) == 1 and master.bad == []

    # A new link: the refused exit is neither reported as running nor resent. The agent resends
    # pending exits before its first heartbeat, on the same stream: once a heartbeat has
    # arrived on the new link, a resend would have arrived too.
    link.close()
    again = master.connect()
    assert 1 not in again.hello["node"]["running_job_ids"]
    master.wait(
        lambda: any(index == again.index for index, _ in master.heartbeats),
        10,
        "a heartbeat on the new link",
    )
    assert master.exit_counts[1] == 1 and master.exited[1]["exit_code"] == 3
