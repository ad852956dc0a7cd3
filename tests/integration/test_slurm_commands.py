"""Slurm's command names, for real: ``mgpu_client slurm-commands DIR`` writes sbatch, srun,
scancel, scontrol, ...; with DIR first on PATH, a shell runs them as a Slurm user would,
against a real master and node agent, and gets Slurm's output, files and exit codes."""

from __future__ import annotations

import os
import signal
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.helpers.cluster import Cluster, wait_for_text

pytestmark = pytest.mark.timeout(90)

COMMANDS = ("sbatch", "srun", "salloc", "squeue", "scancel", "sacct", "sinfo", "scontrol")


@dataclass
class Slurm:
    """A shell whose PATH finds the Slurm names first, talking to ``cluster``'s master."""

    cluster: Cluster
    bin_dir: Path
    env: dict[str, str]

    def sh(self, line: str, *, timeout_s: float = 60) -> subprocess.CompletedProcess[str]:
        """Run a shell command line in the cluster's directory."""
        return subprocess.run(
            ["/bin/sh", "-c", line],
            capture_output=True,
            text=True,
            env=self.env,
            cwd=self.cluster.tmp,
            timeout=timeout_s,
        )

    def ok(self, line: str) -> subprocess.CompletedProcess[str]:
        result = self.sh(line)
        assert result.returncode == 0, (line, result.stdout, result.stderr)
        return result

    def submit(self, line: str) -> int:
        """``sbatch --parsable ...``'s job id."""
        return int(self.ok(f"sbatch --parsable {line}").stdout)

    def job_ids(self) -> set[int]:
        return set(self.cluster.jobs())


@pytest.fixture
def slurm(cluster: Cluster) -> Slurm:
    cluster.start_node("n1", gpus=2)
    bin_dir = cluster.tmp / "slurm-bin"
    written = cluster.cli("mgpu_client", "slurm-commands", str(bin_dir), check=True).stdout
    assert all(f"wrote {bin_dir / name}" in written for name in COMMANDS), written
    # Outside any job: none of a job's variables leak in from whoever runs the tests.
    env = {
        k: v
        for k, v in cluster.env.items()
        if not k.startswith(("SLURM_", "MGPU_JOB", "MGPU_ALLOCATION", "MGPU_STEP"))
    }
    env["PATH"] = f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '/usr/bin:/bin')}"
    return Slurm(cluster, bin_dir, env)


def variables(text: str) -> dict[str, str]:
    return dict(line.split("=", 1) for line in text.splitlines() if "=" in line)


def test_the_names_are_found_on_path_first(slurm: Slurm) -> None:
    found = slurm.ok("for c in " + " ".join(COMMANDS) + "; do command -v $c; done").stdout
    assert found.split() == [str(slurm.bin_dir / name) for name in COMMANDS]


def test_sbatch_output_in_a_directory_not_made_yet_with_the_jobs_variables(slurm: Slurm) -> None:
    assert not (slurm.cluster.tmp / "out").exists()
    job_id = slurm.submit("-n 2 -o out/%j.log --wrap 'env'")
    assert slurm.cluster.wait_state(job_id, "COMPLETED", "FAILED")["state"] == "COMPLETED"
    env = variables((slurm.cluster.tmp / "out" / f"{job_id}.log").read_text())
    assert env["SLURM_JOB_ID"] == str(job_id)
    assert env["SLURM_NTASKS"] == "2"


def test_a_parsable_directive_prints_only_the_id(slurm: Slurm) -> None:
    script = slurm.cluster.tmp / "job.sh"
    script.write_text("#!/bin/sh\n#SBATCH --parsable\n#SBATCH -J quiet\ntrue\n")
    result = slurm.ok(f"sbatch {script}")
    assert result.stdout.strip().isdigit() and result.stdout == f"{int(result.stdout)}\n"
    assert result.stderr == ""
    assert slurm.cluster.job(int(result.stdout))["name"] == "quiet"


def test_an_ignored_directive_warns_and_the_job_is_submitted(slurm: Slurm) -> None:
    script = slurm.cluster.tmp / "mail.sh"
    script.write_text("#!/bin/sh\n#SBATCH --wckey=k\n#SBATCH --comment=c\ntrue\n")
    result = slurm.ok(f"sbatch {script}")
    assert result.stderr.splitlines() == [
        "sbatch: warning: --wckey is ignored: mgpu does not track it",
        "sbatch: warning: --comment is ignored: comments are not stored yet",
    ]
    assert result.stdout.startswith("Submitted batch job ")
    job_id = int(result.stdout.split()[-1])
    assert slurm.cluster.wait_state(job_id, "COMPLETED", "FAILED")["state"] == "COMPLETED"


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("sbatch -N 2 --wrap true", "multi-node jobs are not supported"),
        ("sbatch --bogus", "sbatch: error: unrecognized option '--bogus'"),
        ("sbatch --reservation=r --wrap true", "--reservation is not supported"),
        ("srun -N 2-4 true", "multi-node jobs are not supported"),
    ],
)
def test_a_refusal_is_one_line_and_exit_1_and_submits_nothing(
    slurm: Slurm, line: str, message: str
) -> None:
    before = slurm.job_ids()
    result = slurm.sh(line)
    assert result.returncode == 1, result.stderr
    assert result.stderr.count("\n") == 1 and message in result.stderr, result.stderr
    assert result.stdout == ""
    assert slurm.job_ids() == before


def test_srun_in_a_batch_script_runs_labelled_tasks_as_a_step(slurm: Slurm) -> None:
    script = slurm.cluster.tmp / "steps.sh"
    script.write_text("#!/bin/sh\n#SBATCH -n 2\nsrun -n 2 -l sh -c 'echo $SLURM_PROCID'\n")
    job_id = slurm.submit(str(script))
    assert slurm.cluster.wait_state(job_id, "COMPLETED", "FAILED")["state"] == "COMPLETED"
    lines = (slurm.cluster.tmp / f"slurm-{job_id}.out").read_text().splitlines()
    assert sorted(lines) == ["0: 0", "1: 1"], lines


def test_srun_outside_a_job_runs_each_task(slurm: Slurm) -> None:
    result = slurm.sh("srun --label -n 2 sh -c 'echo task $SLURM_PROCID of $SLURM_NTASKS'")
    assert result.returncode == 0, result.stderr
    assert sorted(result.stdout.splitlines()) == ["task 0 of 2", "task 1 of 2"]


def test_sbatch_wait_exits_with_the_jobs_code(slurm: Slurm) -> None:
    result = slurm.sh("sbatch --wait --wrap 'exit 3'")
    assert result.returncode == 3, result.stderr
    assert result.stdout.startswith("Submitted batch job ")


def test_sbatch_test_only_says_when_and_submits_nothing(slurm: Slurm) -> None:
    before = slurm.job_ids()
    result = slurm.sh("sbatch --test-only -G 1 --wrap true")
    assert result.returncode == 0, result.stderr
    assert "to start at" in result.stderr and result.stdout == ""
    assert slurm.job_ids() == before


def test_scancel_signal_reaches_a_job_that_traps_it(slurm: Slurm) -> None:
    tmp = slurm.cluster.tmp
    ready, got = tmp / "ready", tmp / "got"
    body = (
        f"trap 'echo USR1 > {got}' USR1; echo up > {ready}; "
        f"while [ ! -s {got} ]; do sleep 0.05; done; true"  # not the killed sleep's status
    )
    job_id = slurm.submit(f'--wrap "{body}"')
    wait_for_text(ready, 30)  # the trap is set
    slurm.ok(f"scancel --signal=USR1 {job_id}")
    assert wait_for_text(got, 30) == "USR1"
    assert slurm.cluster.wait_state(job_id, "COMPLETED", "FAILED")["state"] == "COMPLETED"


def test_scancel_by_name_cancels_only_that_names_jobs(slurm: Slurm) -> None:
    victims = [slurm.submit("-H -J victim --wrap true") for _ in range(2)]
    keeper = slurm.submit("-H -J keeper --wrap true")
    slurm.ok("scancel -n victim")
    for job_id in victims:
        assert slurm.cluster.wait_state(job_id, "CANCELLED")["state"] == "CANCELLED"
    assert slurm.cluster.job(keeper)["state"] == "PENDING"
    slurm.ok(f"scancel {keeper}")
    assert slurm.cluster.wait_state(keeper, "CANCELLED")["state"] == "CANCELLED"


def test_scontrol_expands_a_hostlist(slurm: Slurm) -> None:
    assert slurm.ok("scontrol show hostnames 'n[1-3]'").stdout.splitlines() == ["n1", "n2", "n3"]


def test_squeue_lists_a_held_job_with_slurms_columns(slurm: Slurm) -> None:
    job_id = slurm.submit("-H -J held --wrap true")
    rows = slurm.ok("squeue -h -o '%i %j %T'").stdout.splitlines()
    assert rows == [f"{job_id} held PENDING"], rows


def test_salloc_gives_a_shell_in_the_allocation_and_releases_it(slurm: Slurm) -> None:
    """salloc waits for the allocation, runs the command here with the job's variables; srun
    in it is a step of the job (this host is the job's node); at the end the job is given
    back (cancelled), as Slurm's salloc relinquishes it."""
    step = 'srun -l sh -c "echo step \\$SLURM_STEP_ID"'
    line = f"salloc -n 2 -J alloc sh -c 'echo JOB=$SLURM_JOB_ID; {step}'"
    result = slurm.ok(line)
    job_id = int(variables(result.stdout)["JOB"])
    assert sorted(result.stdout.splitlines()[1:]) == ["0: step 0", "1: step 0"]
    assert f"Granted job allocation {job_id}" in result.stderr
    assert f"Relinquishing job allocation {job_id}" in result.stderr
    row = slurm.cluster.wait_state(job_id, "CANCELLED")
    assert row["name"] == "alloc"
    steps = slurm.ok(f"sacct -j {job_id} -P -n -o JobID,JobName").stdout.split()
    assert f"{job_id}.0|sh" in steps


def test_salloc_exits_with_its_commands_status(slurm: Slurm) -> None:
    assert slurm.sh("salloc -Q sh -c 'exit 7'").returncode == 7


def test_scontrol_hold_update_show_release(slurm: Slurm) -> None:
    job_id = slurm.submit("-H -J held -t 10 --wrap true")
    slurm.ok(f"scontrol update JobId={job_id} TimeLimit=20 Nice=5")
    shown = slurm.ok(f"scontrol show job {job_id}").stdout
    assert f"JobId={job_id} JobName=held" in shown
    assert "JobState=PENDING Reason=JobHeldUser" in shown
    assert "TimeLimit=00:20:00" in shown and "Nice=5" in shown
    slurm.ok(f"scontrol release {job_id}")
    slurm.cluster.wait_state(job_id, "COMPLETED")
    refused = slurm.sh(f"scontrol suspend {job_id}")
    assert refused.returncode == 1
    assert (
        refused.stderr
        == "scontrol: error: suspend is not supported: suspending jobs is not supported\n"
    )
    unknown = slurm.sh("scontrol show job 999999")
    assert (unknown.returncode, unknown.stderr) == (
        1,
        "scontrol: error: Invalid job id specified\n",
    )


def test_sacct_shows_states_exit_codes_and_steps(slurm: Slurm) -> None:
    failed = slurm.submit("--wrap 'srun true; exit 3'")
    slurm.cluster.wait_state(failed, "FAILED")
    rows = slurm.ok(f"sacct -j {failed} -P -n -o JobID,State,ExitCode").stdout.splitlines()
    assert rows == [
        f"{failed}|FAILED|3:0",
        f"{failed}.batch|FAILED|3:0",
        f"{failed}.0|COMPLETED|0:0",
    ]
    only_jobs = slurm.ok(f"sacct -X -j {failed} -p -n -o JobID,State").stdout
    assert only_jobs == f"{failed}|FAILED|\n"
    table = slurm.ok(f"sacct -j {failed} -X").stdout.splitlines()
    assert table[0].split() == [
        "JobID",
        "JobName",
        "Partition",
        "Account",
        "AllocCPUS",
        "State",
        "ExitCode",
    ]
    assert set(table[1]) == {"-", " "}


def test_sinfo_shows_the_default_partition_and_its_gpus(slurm: Slurm) -> None:
    lines = slurm.ok("sinfo").stdout.splitlines()
    assert lines[0].split() == ["PARTITION", "AVAIL", "TIMELIMIT", "NODES", "STATE", "NODELIST"]
    assert lines[1].split() == ["gpu*", "up", "infinite", "1", "idle", "n1"]
    gres = slurm.ok("sinfo -h -N -o '%N %G'").stdout.split()
    assert gres[0] == "n1" and gres[1].startswith("gpu:") and gres[1].endswith(":2")


def test_salloc_keeps_its_allocation_through_ctrl_c_and_gives_it_back_on_sigterm(
    slurm: Slurm,
) -> None:
    """Ctrl-C belongs to the shell salloc runs (salloc ignores SIGINT meanwhile); SIGTERM ends
    salloc, its shell, and the allocation."""
    marker = slurm.cluster.tmp / "alloc-id"
    proc = subprocess.Popen(
        ["salloc", "-J", "held", "sh", "-c", f"echo $SLURM_JOB_ID > {marker}; exec sleep 60"],
        env=slurm.env,
        cwd=slurm.cluster.tmp,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        job_id = int(wait_for_text(marker, timeout_s=30))
        proc.send_signal(signal.SIGINT)
        assert slurm.cluster.job(job_id)["state"] == "RUNNING"
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert proc.returncode == 128 + signal.SIGTERM
    assert f"Relinquishing job allocation {job_id}" in err
    slurm.cluster.wait_state(job_id, "CANCELLED")
