"""Structured logs, for real: a master and an agent started with ``--log-format json
--log-file`` write one JSON object a line with the job, node and user as fields; after a
rotation (the file moved away, then SIGHUP) both write to a new file at the path, and so does
the master's audit log."""

from __future__ import annotations

import json
import os
import pwd
import signal
from pathlib import Path
from typing import Any

import pytest

from tests.helpers.cluster import running_cluster, wait_for

pytestmark = pytest.mark.timeout(90)


def entries(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def test_json_logs_with_job_fields_and_rotation_on_sighup(tmp_path: Path) -> None:
    master_log, node_log = tmp_path / "master.log", tmp_path / "node.log"
    args = ("--log-format", "json", "--log-file")
    with running_cluster(tmp_path, *args, str(master_log)) as c:
        c.start_node("n1", 1, *args, str(node_log))
        job_id = c.sbatch("-G", "1", "--wrap", "true")
        c.wait_state(job_id, "COMPLETED")

        def started(path: Path) -> dict[str, Any] | None:
            found = [e for e in entries(path) if e.get("job") == job_id and "RUNNING" in str(e)]
            return found[0] if found else None

        on_master = wait_for(lambda: started(master_log), 10, "the master's line")
        assert on_master["node"] == "n1" and on_master["user"] == pwd.getpwuid(os.geteuid()).pw_name
        assert on_master["level"] == "INFO" and on_master["state"] == "RUNNING"
        assert wait_for(lambda: started(node_log), 10, "the agent's line")["node"] == "n1"

        audit = c.master_state / "audit.log"
        for path in (master_log, node_log, audit):
            path.rename(path.with_suffix(".1"))
        assert c.master is not None
        os.kill(c.master.pid, signal.SIGHUP)
        os.kill(c.nodes["n1"].pid, signal.SIGHUP)
        wait_for(lambda: master_log.exists() and node_log.exists(), 10, "new log files")
        wait_for(audit.exists, 10, "a new audit log")
        later = c.sbatch("--wrap", "true")
        c.wait_state(later, "COMPLETED")
        wait_for(lambda: any(e.get("job") == later for e in entries(master_log)), 10, "new lines")
        assert not any(e.get("job") == later for e in entries(master_log.with_suffix(".1")))
