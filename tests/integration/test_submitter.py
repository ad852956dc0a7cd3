"""Jobs respect their submitter: the job and its output files get the submitter's umask, and
what the commands print of a job's name shows control characters escaped."""

from __future__ import annotations

import stat
import subprocess

import pytest

from tests.helpers.cluster import CLIENT_MODULES, PY, Cluster

pytestmark = pytest.mark.timeout(90)


def as_submitted_with(cluster: Cluster, umask: int, *args: str) -> str:
    """Run a client command from a shell with ``umask``, as a user's shell would; its stdout."""
    tool, rest = args[0], args[1:]
    result = subprocess.run(
        [PY, "-m", CLIENT_MODULES[tool], *rest],
        capture_output=True,
        text=True,
        timeout=60,
        env=cluster.env,
        cwd=cluster.tmp,
        umask=umask,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_output_files_and_the_job_get_the_submitters_umask(cluster: Cluster) -> None:
    cluster.start_node("n1", 1)
    job = "umask; echo done"
    private = int(
        as_submitted_with(cluster, 0o077, "mgpu_sbatch", "--parsable", "-o", "p.out", "--wrap", job)
    )
    shared = int(
        as_submitted_with(cluster, 0o002, "mgpu_sbatch", "--parsable", "-o", "s.out", "--wrap", job)
    )
    for job_id in (private, shared):
        assert cluster.wait_state(job_id, "COMPLETED", "FAILED")["state"] == "COMPLETED"
    # The agent's own umask (this test's, 022 as a rule) decides neither.
    assert (cluster.tmp / "p.out").read_text() == "0077\ndone\n"
    assert stat.S_IMODE((cluster.tmp / "p.out").stat().st_mode) == 0o600
    assert (cluster.tmp / "s.out").read_text() == "0002\ndone\n"
    assert stat.S_IMODE((cluster.tmp / "s.out").stat().st_mode) == 0o664


def test_srun_quick_path_sends_the_umask(cluster: Cluster) -> None:
    cluster.start_node("n1", 1)
    assert as_submitted_with(cluster, 0o027, "mgpu_srun", "sh", "-c", "umask") == "0027\n"


def test_an_escape_sequence_in_a_job_name_is_shown_escaped(cluster: Cluster) -> None:
    name = "x\x1b[2J\x1b]0;owned\x07\nfake"
    job_id = cluster.sbatch("-H", "-J", name, "--wrap", "true")
    for args in ((), ("--noheader",), ("-t", "all")):  # the quick path and the click path
        out = cluster.cli("mgpu_queue", *args, check=True).stdout
        (line,) = [line for line in out.splitlines() if line.split()[0] == str(job_id)]
        assert "x\\x1b[2J\\x1b]0;owned\\x07\\x0afake" in line
        assert "\x1b" not in out and "\x07" not in out
    assert cluster.job(job_id)["name"] == name  # --json: escaped by JSON, the name as given
