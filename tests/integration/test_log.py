"""``mgpu_client log``, for real: a batch job's output read on its node through the master,
running and finished, its tail, its stderr file, followed to the job's end (with the job's
exit code), and refused where it would hand out what the job's account could not read."""

from __future__ import annotations

import os
import subprocess

import pytest

from mgpu_core.errors import PermissionDenied
from tests.helpers.cluster import CLIENT_MODULES, PY, Cluster, wait_for

pytestmark = pytest.mark.timeout(90)


def log(cluster: Cluster, *args: str) -> subprocess.CompletedProcess[str]:
    return cluster.cli("mgpu_client", "log", *args)


def test_a_finished_jobs_output_its_tail_and_its_stderr(cluster: Cluster) -> None:
    cluster.start_node("n1", gpus=1)
    lines = "".join(f"line {i}\n" for i in range(1, 2001))
    script = "for i in $(seq 1 2000); do echo line $i; done; echo oops >&2"
    job_id = cluster.sbatch("-o", "out/%x-%j.txt", "-e", "err-%j.txt", "-J", "lg", "--wrap", script)
    cluster.wait_state(job_id, "COMPLETED")
    whole = log(cluster, str(job_id))
    assert whole.returncode == 0 and whole.stdout == lines, whole.stderr
    tail = log(cluster, "--tail", "3", str(job_id))
    assert tail.stdout == "line 1998\nline 1999\nline 2000\n"
    assert log(cluster, "--stderr", str(job_id)).stdout == "oops\n"
    # The file is on the node: gone there, the log says so in one line.
    os.unlink(cluster.tmp / f"err-{job_id}.txt")
    gone = log(cluster, "--stderr", str(job_id))
    assert gone.returncode == 1 and "does not exist on node n1" in gone.stderr
    assert len(gone.stderr.strip().splitlines()) == 1


def test_follow_prints_as_the_job_writes_and_exits_with_its_code(cluster: Cluster) -> None:
    cluster.start_node("n1", gpus=1)
    flag = cluster.tmp / "go"
    script = f"echo first; while [ ! -e {flag} ]; do sleep 0.05; done; echo second; exit 7"
    job_id = cluster.sbatch("--wrap", script)
    follower = subprocess.Popen(
        [PY, "-m", CLIENT_MODULES["mgpu_client"], "log", "-f", str(job_id)],
        env=cluster.env,
        cwd=cluster.tmp,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert follower.stdout is not None
        assert follower.stdout.readline() == "first\n"  # printed while the job still runs
        flag.touch()
        out, err = follower.communicate(timeout=30)
    finally:
        follower.kill()
        follower.communicate()  # reaped, pipes closed
    assert out == "second\n" and follower.returncode == 7, err


def test_a_symlinked_output_is_not_read(cluster: Cluster) -> None:
    cluster.start_node("n1", gpus=1)
    secret = cluster.tmp / "secret"
    secret.write_text("not yours\n")
    out = cluster.tmp / "o.txt"
    job_id = cluster.sbatch("-o", str(out), "--wrap", f"rm -f {out}; ln -s {secret} {out}")
    cluster.wait_state(job_id, "COMPLETED")
    refused = log(cluster, str(job_id))
    assert refused.returncode == 1 and "symbolic link" in refused.stderr
    assert "not yours" not in refused.stdout


def test_a_pending_job_has_no_output_yet_and_others_jobs_are_not_readable(
    cluster: Cluster,
) -> None:
    cluster.start_node("n1", gpus=1)
    job_id = cluster.sbatch("-G", "1", "--hold", "--wrap", "echo hi")
    pending = log(cluster, str(job_id))
    assert pending.returncode == 0 and "has not started" in pending.stderr
    with cluster.client("bob") as bob, pytest.raises(PermissionDenied, match="only its owner"):
        bob.request("log", job_id=job_id)
    unknown = log(cluster, "999999")
    assert unknown.returncode == 1 and len(unknown.stderr.strip().splitlines()) == 1
    wait_for(lambda: cluster.cli("mgpu_cancel", str(job_id)).returncode == 0, 10, "cancel")


def test_attach_to_a_batch_job_follows_its_output_file(cluster: Cluster) -> None:
    cluster.start_node("n1", gpus=1)
    job_id = cluster.sbatch("--wrap", "echo hi; sleep 1; echo bye; exit 4")
    cluster.wait_state(job_id, "RUNNING")
    attached = cluster.cli("mgpu_client", "attach", str(job_id), timeout=60)
    assert attached.stdout == "hi\nbye\n" and attached.returncode == 4, attached.stderr


def test_an_interactive_jobs_output_after_its_srun_is_gone(cluster: Cluster) -> None:
    cluster.start_node("n1", gpus=1)
    ran = cluster.cli("mgpu_srun", "-J", "inter", "--", "sh", "-c", "echo out; echo err >&2")
    assert ran.returncode == 0 and ran.stdout == "out\n"
    job_id = next(i for i, j in cluster.jobs().items() if j["name"] == "inter")
    # The node keeps what srun showed (both streams, in order) after the exit is acknowledged.
    shown = wait_for(lambda: log(cluster, str(job_id)).stdout or None, 20, "the kept output")
    assert shown == "out\nerr\n"
