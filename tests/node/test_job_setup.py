"""What a job finds when it starts, with real processes: Slurm's variables, its output files
(made in directories made for them, truncated or appended to), and the OOM killer's report."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path
from typing import Any

import pytest

from mgpu_core.daemons import JobUser
from mgpu_node.cgroups import JobCgroups, setup_isolation
from mgpu_node.executor import Executor
from mgpu_node.jobuser import JobUserPolicy
from tests.node.test_executor import Node, launch

pytestmark = pytest.mark.timeout(60)


def run_job(tmp_path: Path, script: str, **spec: Any) -> dict[str, Any]:
    """Run one job (id 5) to its end; its job_exited."""
    restart_count = spec.pop("restart_count", 0)

    async def main() -> dict[str, Any]:
        node = Node(tmp_path / "state")
        node.executor.launch(launch(5, tmp_path, script, restart_count=restart_count, **spec))
        return await node.wait_exit(5)

    return asyncio.run(main())


def test_the_job_sees_slurms_variables_and_no_stale_ones(tmp_path: Path) -> None:
    # What a job submitted from inside an array task's srun step would inherit.
    stale = {"SLURM_JOB_ID": "1", "SLURM_ARRAY_TASK_ID": "9", "SLURM_STEP_ID": "5", "KEEP": "1"}
    script = 'env | grep -e ^SLURM -e ^KEEP= | sort; echo "pid=$$"'
    exited = run_job(tmp_path, script, env=stale, name="probe", gpus=0, cpus=2)
    assert exited["exit_code"] == 0, exited
    lines = (tmp_path / "mgpu-5.out").read_text().splitlines()
    env = dict(line.split("=", 1) for line in lines)
    assert env["SLURM_JOB_ID"] == env["SLURM_JOBID"] == "5"
    assert env["SLURM_JOB_NAME"] == "probe"
    assert env["SLURMD_NODENAME"] == env["SLURM_JOB_NODELIST"] == "n1"
    assert env["SLURM_SUBMIT_DIR"] == str(tmp_path)
    assert env["SLURM_CPUS_ON_NODE"] == "2"
    assert env["SLURM_TASK_PID"] == env["pid"]  # the command's own pid
    assert env["SLURM_JOB_UID"] == str(os.geteuid())
    assert env["KEEP"] == "1"  # what is not ours passes through
    assert "SLURM_ARRAY_TASK_ID" not in env and "SLURM_STEP_ID" not in env


def test_output_goes_into_directories_made_for_it(tmp_path: Path) -> None:
    exited = run_job(
        tmp_path,
        "echo out; echo err >&2",
        name="train",
        stdout_path="logs/%x/%4j.out",
        stderr_path=str(tmp_path / "errs" / "%j.err"),
        umask=0o027,
    )
    assert exited["exit_code"] == 0, exited
    out, err = tmp_path / "logs" / "train" / "0005.out", tmp_path / "errs" / "5.err"
    assert (out.read_text(), err.read_text()) == ("out\n", "err\n")
    for directory in (out.parent, out.parent.parent, err.parent):
        assert directory.stat().st_mode & 0o777 == 0o750, directory  # 0777 less the umask
    assert out.stat().st_mode & 0o777 == 0o640


def test_a_directory_that_cannot_be_made_fails_the_job_naming_it(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("in the way")
    exited = run_job(tmp_path, "echo ran", stdout_path="file/sub/x.out")
    out = tmp_path / "file" / "sub" / "x.out"
    assert exited["exit_code"] == 1
    assert exited["reason"] == (
        f"cannot create directory {tmp_path / 'file'} for output file {out}: File exists"
    )


@pytest.mark.parametrize(
    ("open_append", "restart_count", "expected"),
    [
        (False, 0, "new\n"),  # Slurm's default: truncated at start
        (True, 0, "old\nnew\n"),  # --open-mode=append
        (False, 1, "old\nnew\n"),  # a requeued run never truncates its earlier log
    ],
)
def test_output_is_truncated_unless_appending(
    tmp_path: Path, open_append: bool, restart_count: int, expected: str
) -> None:
    for name in ("x.out", "x.err"):
        (tmp_path / name).write_text("old\n")
    exited = run_job(
        tmp_path,
        "echo new; echo new >&2",
        stdout_path="x.out",
        stderr_path="x.err",
        open_append=open_append,
        restart_count=restart_count,
    )
    assert exited["exit_code"] == 0, exited
    assert (tmp_path / "x.out").read_text() == (tmp_path / "x.err").read_text() == expected


def job_cgroups(state: Path) -> JobCgroups:
    isolation = setup_isolation(node_id="oom-test", state_dir=state, gpu_numbers=[])
    if isolation.cgroups is None or not any(
        "memory" in h.controllers for h in isolation.cgroups.hierarchies
    ):
        pytest.skip(f"needs a memory cgroup the agent can make: {isolation.summary}")
    return isolation.cgroups


def test_the_oom_killer_is_reported(tmp_path: Path) -> None:
    cgroups = job_cgroups(tmp_path / "state")
    hog = f"{sys.executable} -c \"b = b'x' * (512 << 20)\"; echo survived"

    async def main() -> tuple[dict[str, Any], dict[str, Any]]:
        node = Node(tmp_path / "state")
        node.executor = Executor(
            node_name="n1",
            devices=[],
            state_dir=tmp_path / "state",
            exits=node.exits,
            emit=node.emit,
            job_users=JobUserPolicy(JobUser.AGENT, allow_root=True),
            cgroups=cgroups,
        )
        node.executor.launch(launch(1, tmp_path, hog, mem_bytes=64 << 20))
        node.executor.launch(launch(2, tmp_path, "true", mem_bytes=64 << 20))
        return await node.wait_exit(1), await node.wait_exit(2)

    try:
        hogged, fine = asyncio.run(main())
    finally:
        cgroups.close()
    assert hogged["oom_killed"] is True, hogged
    assert hogged["reason"].startswith("out of memory: the kernel's OOM killer killed"), hogged
    # The script went on after its python was killed: the OOM is reported all the same.
    assert hogged["exit_code"] == 0
    assert (tmp_path / "mgpu-1.out").read_text().splitlines()[-1] == "survived"
    assert fine["oom_killed"] is False and fine["exit_code"] == 0
