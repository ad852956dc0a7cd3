"""History, for real: finished jobs leave the master's memory after ``[history]
keep_in_memory`` and stay answerable from its database: ``history``, ``show``, ``log``,
sacct, ``report``, a dependency on them, and across a restart, with job ids never reused."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.helpers.cluster import Cluster, running_cluster, wait_for

pytestmark = pytest.mark.timeout(120)


def history(c: Cluster, *args: str) -> dict[int, dict[str, object]]:
    out = c.cli("mgpu_client", "history", "--json", "-a", *args, check=True).stdout
    return {int(j["job_id"]): j for j in json.loads(out)["jobs"]}


def in_memory(c: Cluster, job_id: int) -> bool:
    return job_id in c.jobs()  # mgpu_queue -t all: the master's memory only


def test_finished_jobs_leave_memory_and_stay_in_the_history(tmp_path: Path) -> None:
    config = tmp_path / "master.toml"
    config.write_text('[history]\nkeep_in_memory = "1s"\nretention = "90d"\n')
    with running_cluster(tmp_path, "--config", str(config)) as c:
        c.start_node("n1", gpus=2)
        done = c.sbatch("-G", "1", "-J", "ok", "--wrap", "sleep 1.2; echo hello")
        failed = c.sbatch("-J", "bad", "--wrap", "exit 3")
        for job_id in (done, failed):
            c.wait_state(job_id, "COMPLETED", "FAILED")
        wait_for(lambda: not in_memory(c, done) and not in_memory(c, failed), 20, "eviction")

        rows = history(c)
        assert rows[done]["state"] == "COMPLETED" and rows[failed]["state"] == "FAILED"
        assert rows[failed]["exit_code"] == 3 and rows[done]["name"] == "ok"
        assert list(history(c, "-t", "F")) == [failed]
        assert list(history(c, "-n", "ok")) == [done]
        table = c.cli("mgpu_client", "history", "-a", check=True).stdout
        assert str(done) in table and "COMPLETED" in table

        # Read like any job: show, its output, sacct.
        shown = c.cli("mgpu_client", "show", str(done), check=True).stdout
        assert "COMPLETED" in shown and "Exit:" in shown
        assert c.cli("mgpu_client", "log", str(done), check=True).stdout == "hello\n"
        # A dependency on a job the master let go is decided from the history.
        after_ok = c.sbatch("-d", f"afterok:{done}", "--wrap", "true")
        c.wait_state(after_ok, "COMPLETED")
        never = c.sbatch("-d", f"afterok:{failed}", "--wrap", "true")
        wait_for(
            lambda: c.job(never)["reason"] == "DependencyNeverSatisfied", 20, "never satisfied"
        )
        c.cli("mgpu_cancel", str(never), check=True)

        # GPU-hours per user: the 1-GPU job ran more than a second.
        report = json.loads(
            c.cli("mgpu_client", "report", "--json", "-S", "now-1hour", check=True).stdout
        )
        [mine] = report["rows"]
        assert mine["gpu_hours"] > 1.0 / 3600 and mine["failed"] == 1 and mine["completed"] >= 2
        png = tmp_path / "r.png"
        c.cli("mgpu_client", "report", "--png", str(png), check=True)
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

        # Restarted, the master loads none of them; the history still has them.
        c.kill_master()  # as in a crash: what was committed is what there is
        c.start_master("--config", str(config), port=c.port)
        assert not in_memory(c, done) and set(history(c)) >= {done, failed, after_ok}
        newer = c.sbatch("--wrap", "true")
        assert newer > max(done, failed, after_ok, never)
