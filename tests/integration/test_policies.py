"""Scheduling policies end to end: dependencies, holds, priorities, QoS, time limits, backfill,
requeue and update — against a real master and node agents."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from mgpu_core.exitcodes import EXIT_USAGE
from tests.helpers.cluster import Cluster, running_cluster, wait_for

pytestmark = pytest.mark.timeout(120)

HOLD = "while [ ! -e {release} ]; do sleep 0.02; done"


def blocker(cluster: Cluster, gpus: int = 1, *extra: str) -> tuple[int, Path]:
    release = cluster.tmp / f"release-{len(list(cluster.tmp.iterdir()))}"
    job_id = cluster.sbatch("--gpus", str(gpus), *extra, "--wrap", HOLD.format(release=release))
    cluster.wait_state(job_id, "RUNNING")
    return job_id, release


def reason(cluster: Cluster, job_id: int, expected: str) -> None:
    wait_for(lambda: cluster.job(job_id)["reason"] == expected, 15, f"job {job_id} {expected}")


def test_dependencies(cluster: Cluster) -> None:
    cluster.start_node("n1", gpus=2)
    good = cluster.sbatch("--wrap", "exit 0")
    bad = cluster.sbatch("--wrap", "exit 3")
    cluster.wait_state(good, "COMPLETED")
    cluster.wait_state(bad, "FAILED")
    after_ok = cluster.sbatch("-d", f"afterok:{good}", "--wrap", "true")
    after_not_ok = cluster.sbatch("-d", f"afternotok:{bad}", "--wrap", "true")
    never = cluster.sbatch("-d", f"afterok:{bad}", "--wrap", "true")
    killed = cluster.sbatch(
        "-d", f"afterok:{bad}", "--kill-on-invalid-dep", "yes", "--wrap", "true"
    )
    either = cluster.sbatch("-d", f"afterok:{bad}?afterany:{good}", "--wrap", "true")
    cluster.wait_state(after_ok, "COMPLETED")
    cluster.wait_state(after_not_ok, "COMPLETED")
    cluster.wait_state(either, "COMPLETED")
    reason(cluster, never, "DependencyNeverSatisfied")
    assert cluster.job(never)["state"] == "PENDING"
    assert cluster.wait_state(killed, "CANCELLED")["reason"] == "DependencyNeverSatisfied"
    # Waiting on a running job, then satisfied when it ends.
    first, release = blocker(cluster)
    second = cluster.sbatch("-d", f"afterany:{first}", "--wrap", "true")
    started = cluster.sbatch("-d", f"after:{first}", "--wrap", "true")
    cluster.wait_state(started, "COMPLETED")
    reason(cluster, second, "Dependency")
    release.touch()
    cluster.wait_state(second, "COMPLETED")
    bad_spec = cluster.cli("mgpu_sbatch", "-d", "afterok:999999", "--wrap", "true")
    assert bad_spec.returncode == 1 and "999999" in bad_spec.stderr
    syntax = cluster.cli("mgpu_sbatch", "-d", "afterwards:1", "--wrap", "true")
    assert syntax.returncode == EXIT_USAGE and "afterwards" in syntax.stderr


def test_singleton(cluster: Cluster) -> None:
    cluster.start_node("n1", gpus=2)
    first, release = blocker(cluster, 1, "-J", "solo", "-d", "singleton")
    second = cluster.sbatch("-J", "solo", "-d", "singleton", "--wrap", "true")
    other = cluster.sbatch("-J", "other", "-d", "singleton", "--wrap", "true")
    cluster.wait_state(other, "COMPLETED")
    reason(cluster, second, "Dependency")
    release.touch()
    cluster.wait_state(second, "COMPLETED")
    assert cluster.job(first)["state"] == "COMPLETED"


def test_hold_release_and_admin_hold(cluster: Cluster) -> None:
    cluster.start_node("n1", gpus=1)
    held = cluster.sbatch("-H", "--wrap", "true")
    reason(cluster, held, "JobHeldUser")
    cluster.cli("mgpu_client", "release", str(held), check=True)
    cluster.wait_state(held, "COMPLETED")
    first, release = blocker(cluster)
    waiting = cluster.sbatch("--gpus", "1", "--wrap", "true")
    cluster.cli("mgpu_client", "hold", str(waiting), check=True)  # the tests run as root: admin
    reason(cluster, waiting, "JobHeldAdmin")
    not_pending = cluster.cli("mgpu_client", "hold", str(first))
    assert not_pending.returncode == 1 and "RUNNING" in not_pending.stderr
    release.touch()
    cluster.wait_state(first, "COMPLETED")
    assert cluster.job(waiting)["state"] == "PENDING"
    cluster.cli("mgpu_client", "release", str(waiting), check=True)
    cluster.wait_state(waiting, "COMPLETED")


def test_nice_and_admin_priority_order(cluster: Cluster) -> None:
    cluster.start_node("n1", gpus=1)
    _first, release = blocker(cluster)
    order = cluster.tmp / "order"
    record = f"echo $MGPU_JOB_ID >> {order}"
    nice = cluster.sbatch("--gpus", "1", "--nice", "5000", "--wrap", record)
    plain = cluster.sbatch("--gpus", "1", "--wrap", record)
    boosted = cluster.sbatch("--gpus", "1", "--nice", "5000", "--wrap", record)
    cluster.cli("mgpu_client", "update", str(boosted), "--priority", "1000000", check=True)
    sprio = cluster.cli("mgpu_client", "priority", check=True).stdout.splitlines()
    assert sprio[0].split()[:3] == ["JOBID", "USER", "PRIORITY"]
    assert [int(line.split()[0]) for line in sprio[1:]] == [boosted, plain, nice]
    release.touch()
    for job_id in (nice, plain, boosted):
        cluster.wait_state(job_id, "COMPLETED")
    assert [int(x) for x in order.read_text().split()] == [boosted, plain, nice]


def test_qos_limits(tmp_path: Path) -> None:
    config = tmp_path / "master.toml"
    config.write_text(
        "[scheduler]\ndefault_qos = 'normal'\n"
        "[qos.normal]\nmax_gpus_per_user = 1\n"
        "[qos.short]\nmax_wall = '0:30'\npriority = 10\n"
    )
    with running_cluster(tmp_path, "--config", str(config)) as c:
        c.start_node("n1", gpus=2)
        too_long = c.cli("mgpu_sbatch", "-q", "short", "-t", "5", "--wrap", "true")
        assert too_long.returncode == 1 and "MaxWall" in too_long.stderr
        too_many = c.cli("mgpu_sbatch", "--gpus", "2", "--wrap", "true")
        assert too_many.returncode == 1 and "MaxGpuPerUser" in too_many.stderr
        unknown = c.cli("mgpu_sbatch", "-q", "gold", "--wrap", "true")
        assert unknown.returncode == 1 and "gold" in unknown.stderr
        _first, release = blocker(c)
        second = c.sbatch("--gpus", "1", "--wrap", "true")
        reason(c, second, "QOSMaxGpuPerUserLimit")
        short = c.sbatch("-q", "short", "--wrap", "true")
        assert c.wait_state(short, "COMPLETED")["time_limit_s"] == 30  # the QoS's wall time
        release.touch()
        c.wait_state(second, "COMPLETED")
        bad = tmp_path / "bad.toml"
        bad.write_text("[qos.x]\nmax_gpu = 1\n")
        refused = subprocess.run(
            [
                sys.executable,
                "-m",
                "mgpu_server",
                "--port",
                "0",
                "--config",
                str(bad),
                "--state-dir",
                str(tmp_path / "other"),
            ],
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert refused.returncode != 0 and "max_gpu" in refused.stderr
        assert refused.stderr.count("\n") == 1


def test_time_limit_and_warning_signal(cluster: Cluster) -> None:
    cluster.start_node("n1", gpus=1)
    warned = cluster.tmp / "warned"
    script = f"trap 'echo warned > {warned}' USR1; while true; do sleep 0.05; done"
    job_id = cluster.sbatch("-t", "0:03", "--signal", "USR1@2", "--wrap", script)
    row = cluster.wait_state(job_id, "TIMEOUT", "COMPLETED", "FAILED", timeout_s=30)
    assert row["state"] == "TIMEOUT"
    assert warned.read_text() == "warned\n"
    assert 2.5 <= row["elapsed_s"] <= 15


def test_backfill_short_job_jumps_ahead_but_not_a_long_one(cluster: Cluster) -> None:
    cluster.start_node("n1", gpus=2)
    _first, release = blocker(cluster, 1, "-t", "10:00")
    big = cluster.sbatch("--gpus", "2", "--wrap", "true")  # top of the queue: waits for first
    reason(cluster, big, "Resources")
    short = cluster.sbatch("--gpus", "1", "-t", "0:30", "--wrap", "true")  # ends before it
    cluster.wait_state(short, "COMPLETED")
    unlimited = cluster.sbatch("--gpus", "1", "--wrap", "true")  # would delay `big`
    reason(cluster, unlimited, "Priority")
    release.touch()
    cluster.wait_state(big, "COMPLETED")
    cluster.wait_state(unlimited, "COMPLETED")


def test_requeue_and_update(cluster: Cluster) -> None:
    cluster.start_node("n1", gpus=2)
    runs = cluster.tmp / "runs"
    release = cluster.tmp / "release"
    job_id = cluster.sbatch(
        "--wrap", f"echo $MGPU_RESTART_COUNT >> {runs}; " + HOLD.format(release=release)
    )
    cluster.wait_state(job_id, "RUNNING")
    wait_for(lambda: runs.exists() and runs.read_text(), 10, "first run")
    cluster.cli("mgpu_client", "requeue", str(job_id), check=True)
    wait_for(lambda: len(runs.read_text().split()) == 2, 15, "second run")
    assert runs.read_text().split() == ["0", "1"]
    assert cluster.job(job_id)["restart_count"] == 1
    release.touch()
    cluster.wait_state(job_id, "COMPLETED")

    held = cluster.sbatch("-H", "--gpus", "1", "--wrap", "echo $CUDA_VISIBLE_DEVICES")
    cluster.cli("mgpu_client", "update", str(held), "--gpus", "2", "--time", "1:00", check=True)
    row = cluster.job(held)
    assert row["gpus"] == 2 and row["time_limit_s"] == 60
    too_big = cluster.cli("mgpu_client", "update", str(held), "--gpus", "9")
    assert too_big.returncode == 1 and "not available" in too_big.stderr
    assert cluster.job(held)["gpus"] == 2  # unchanged by the refused update
    cluster.cli("mgpu_client", "release", str(held), check=True)
    cluster.wait_state(held, "COMPLETED")
    assert (cluster.tmp / f"mgpu-{held}.out").read_text() == "0,1\n"


def test_job_arrays(cluster: Cluster) -> None:
    cluster.start_node("n1", gpus=4)
    running = cluster.tmp / "running"
    peak = cluster.tmp / "peak"
    # Each task notes how many tasks of its array run at the same time (throttle %2).
    script = (
        "#!/bin/sh\n"
        f"echo $MGPU_ARRAY_TASK_ID >> {running}.$MGPU_ARRAY_TASK_ID\n"
        # The shell's glob, not ls: a file another task removes meanwhile is no error.
        f"set -- {running}.*; echo $# >> {peak}\n"
        "sleep 0.3\n"
        f"rm {running}.$MGPU_ARRAY_TASK_ID\n"
        "echo task=$MGPU_ARRAY_TASK_ID array=$MGPU_ARRAY_JOB_ID job=$MGPU_JOB_ID\n"
    )
    path = cluster.tmp / "array.sh"
    path.write_text(script)
    array_id = cluster.sbatch("--array", "0-6:2%2", "--gpus", "1", str(path))
    rows = [r for r in cluster.jobs().values() if r["array_job_id"] == array_id]
    assert sorted(r["array_task_id"] for r in rows) == [0, 2, 4, 6]
    assert {r["job_ref"] for r in rows} == {f"{array_id}_{t}" for t in (0, 2, 4, 6)}
    for row in rows:
        cluster.wait_state(row["job_id"], "COMPLETED")
    assert max(int(x) for x in peak.read_text().split()) <= 2  # the %2 throttle held
    for row in rows:
        out = (cluster.tmp / f"mgpu-{array_id}_{row['array_task_id']}.out").read_text()
        assert out == f"task={row['array_task_id']} array={array_id} job={row['job_id']}\n"
    # References: a whole array, one task; queue, cancel and dependencies take both.
    held = cluster.sbatch("-H", "--array", "1-3", "--wrap", "true")
    table = cluster.cli("mgpu_queue", "-j", f"{held}_2", check=True).stdout.splitlines()
    assert len(table) == 2 and table[1].split()[0] == f"{held}_2"
    after_one = cluster.sbatch("-d", f"afterany:{held}_1", "--wrap", "true")
    after_all = cluster.sbatch("-d", f"afterany:{held}", "--wrap", "true")
    cluster.cli("mgpu_cancel", f"{held}_1", check=True)
    cluster.wait_state(after_one, "COMPLETED")
    reason(cluster, after_all, "Dependency")
    cluster.cli("mgpu_cancel", str(held), check=True)
    cluster.wait_state(after_all, "COMPLETED")
    states = {
        r["job_ref"]: r["state"] for r in cluster.jobs().values() if r["array_job_id"] == held
    }
    assert states == {f"{held}_{t}": "CANCELLED" for t in (1, 2, 3)}
    bad = cluster.cli("mgpu_sbatch", "--array", "5-1", "--wrap", "true")
    assert bad.returncode == EXIT_USAGE and "5-1" in bad.stderr
    missing = cluster.cli("mgpu_cancel", f"{held}_9")
    assert missing.returncode == 1 and f"{held}_9" in missing.stderr


def test_begin_time_starts_the_job_on_time_without_an_event(cluster: Cluster) -> None:
    cluster.start_node("n1", gpus=1)
    job_id = cluster.sbatch("--begin", "now+2", "--wrap", "date +%s.%N")
    row = cluster.job(job_id)
    assert row["state"] == "PENDING"
    reason(cluster, job_id, "BeginTime")
    done = cluster.wait_state(job_id, "COMPLETED", timeout_s=20)
    # Started by the master's own timer, about 2 s after submission (no other event).
    assert 1.5 <= done["start_time"] - done["submit_time"] <= 4.0
    bad = cluster.cli("mgpu_sbatch", "--begin", "someday", "--wrap", "true")
    assert bad.returncode == EXIT_USAGE and "someday" in bad.stderr
