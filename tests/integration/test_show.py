"""Seeing a job, for real: ``mgpu_client show`` tells a failed job's reason and a running
job's GPUs, ``mgpu_queue`` shows why a job failed, and ``mgpu_client attach`` says why a job
waits and detaches on Ctrl-C, leaving the job running."""

from __future__ import annotations

import json
import signal
import subprocess

import pytest

from tests.helpers.cluster import CLIENT_MODULES, PY, Cluster, as_at_a_terminal, wait_for

pytestmark = pytest.mark.timeout(90)


def test_a_failed_job_says_why_in_show_and_in_the_queue(cluster: Cluster) -> None:
    cluster.start_node("n1", gpus=1)
    # Its output file cannot be created: the job fails before it starts, with the reason.
    job_id = cluster.sbatch("-o", "/proc/no-such-dir/out", "--wrap", "true")
    row = cluster.wait_state(job_id, "FAILED")
    assert row["reason"]
    table = cluster.cli("mgpu_queue", "-t", "all", check=True).stdout
    [line] = [ln for ln in table.splitlines() if ln.split()[0] == str(job_id)]
    assert "FAILED" in line and f"({row['reason'][:20]}" in line
    shown = cluster.cli("mgpu_client", "show", str(job_id), check=True).stdout
    fields = dict(line.split(":", 1) for line in shown.splitlines() if ":" in line)
    assert fields["State"].strip().startswith("FAILED (") and row["reason"][:20] in shown
    assert fields["Stdout"].strip() == "/proc/no-such-dir/out"


def test_show_tells_where_a_job_runs_and_its_script(cluster: Cluster) -> None:
    cluster.start_node("n1", gpus=2)
    script = cluster.tmp / "job.sh"
    script.write_text("#!/bin/sh\n#SBATCH -G 2\n#SBATCH -J showme\nsleep 30\n")
    job_id = cluster.sbatch(str(script))
    cluster.wait_state(job_id, "RUNNING")
    shown = cluster.cli("mgpu_client", "show", str(job_id), check=True).stdout
    assert "showme" in shown and "Node:" in shown and "n1 gpu 0,1" in shown
    assert "Batch script:" in shown and "  sleep 30" in shown
    [row] = json.loads(cluster.cli("mgpu_client", "show", "--json", str(job_id)).stdout)
    assert len(row["gpu_uuids"]) == 2 and all(u.startswith("GPU-") for u in row["gpu_uuids"])
    missing = cluster.cli("mgpu_client", "show", "999999")
    assert missing.returncode != 0 and len(missing.stderr.strip().splitlines()) == 1
    cluster.cli("mgpu_cancel", str(job_id), check=True)


def test_attach_says_why_a_job_waits_and_ctrl_c_detaches(cluster: Cluster) -> None:
    cluster.start_node("n1", gpus=1)
    first = cluster.sbatch("-G", "1", "--wrap", "sleep 60")
    cluster.wait_state(first, "RUNNING")
    second = cluster.sbatch("-G", "1", "--wrap", "sleep 60")
    wait_for(lambda: cluster.job(second)["reason"] == "Resources", 20, "a pending reason")
    attach = subprocess.Popen(
        [PY, "-m", CLIENT_MODULES["mgpu_client"], "attach", str(second)],
        env=cluster.env,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=as_at_a_terminal,
    )
    try:
        wait_for(lambda: cluster.job(second)["attached"] == 1, 20, "attach to follow the job")
        attach.send_signal(signal.SIGINT)
        _, err = attach.communicate(timeout=60)
    finally:
        attach.kill()
        attach.communicate()  # reaped, pipes closed: nothing leaks into a later test
    assert f"job {second} pending: Resources" in err
    assert "detached" in err and attach.returncode == 130
    # The job is not cancelled: it starts when the first one ends.
    cluster.cli("mgpu_cancel", str(first), check=True)
    cluster.wait_state(second, "RUNNING")
    cluster.cli("mgpu_cancel", str(second), check=True)
