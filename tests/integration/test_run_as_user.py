"""A root node agent runs each job as the user who submitted it, never as root unless told to.

Root only: these tests create real users (useradd) and let a real agent switch to them.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import secrets
import shutil
import signal
import stat
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from mgpu_client.client import Client
from mgpu_core.config import parse_address
from mgpu_core.models import JobSpec
from tests.helpers.cluster import Cluster, pid_alive, wait_for_text

pytestmark = [
    pytest.mark.timeout(120),
    pytest.mark.skipif(
        os.geteuid() != 0 or shutil.which("useradd") is None,
        reason="creates users and switches to them: root only",
    ),
]

PATH = "/usr/local/bin:/usr/bin:/bin"


def client_as(cluster: Cluster, user: str) -> Client:
    """A session with the master as ``user`` (the one place that knows how to be someone)."""
    return cluster.client(user)


def root_client(cluster: Cluster) -> Client:
    """The test's own user, root, over the master's socket."""
    return Client(parse_address(cluster.socket_address))


@contextlib.contextmanager
def system_user() -> Iterator[pwd.struct_passwd]:
    """A real user with a home and one supplementary group, removed afterwards."""
    name = f"mgpu-t-{secrets.token_hex(3)}"
    group = f"{name}-g"
    subprocess.run(["groupadd", group], check=True, capture_output=True)
    try:
        subprocess.run(
            ["useradd", "--create-home", "--groups", group, name], check=True, capture_output=True
        )
        try:
            yield pwd.getpwnam(name)
        finally:
            subprocess.run(["userdel", "--remove", name], capture_output=True)
    finally:
        subprocess.run(["groupdel", group], capture_output=True)


@pytest.fixture
def user() -> Iterator[pwd.struct_passwd]:
    with system_user() as entry:
        yield entry


@pytest.fixture
def workdir(user: pwd.struct_passwd) -> Iterator[Path]:
    """A working directory of the user's own (pytest's are under a 0700 directory)."""
    path = Path(tempfile.mkdtemp(prefix="mgpu-t-", dir="/tmp"))
    try:
        os.chown(path, user.pw_uid, user.pw_gid)
        path.chmod(0o755)
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def spec(cwd: Path, argv: list[str] | None = None, **fields: Any) -> JobSpec:
    # The client's environment, as a remote submitter's would be: HOME is not this host's.
    env = {"PATH": PATH, "HOME": "/home/somewhere-else", "USER": "someone-else"}
    return JobSpec(argv=argv or [], cwd=str(cwd), env=env, **fields)


def ended(cluster: Cluster, job_id: int) -> dict[str, Any]:
    return cluster.wait_state(job_id, "COMPLETED", "FAILED", "CANCELLED", timeout_s=30)


def test_jobs_run_as_their_submitter(
    cluster: Cluster, user: pwd.struct_passwd, workdir: Path
) -> None:
    cluster.start_node("n1", 1, jobs_as_agent=False)
    probe = 'id -u; id -G; echo "$HOME $USER $LOGNAME $SHELL"; pwd; echo oops >&2'
    script = '#!/bin/sh\nid -un\necho "arg=$1"\necho to-stderr >&2\n'
    with client_as(cluster, user.pw_name) as client:
        argv_job = client.submit(spec(workdir, ["sh", "-c", probe], stdout_path="%u-%j.out"))
        batch_job = client.submit(
            spec(workdir, ["first"], script=script, stdout_path="b.out", stderr_path="b.err")
        )
    for job_id in (argv_job, batch_job):
        row = ended(cluster, job_id)
        assert (row["state"], row["exit_code"]) == ("COMPLETED", 0), row

    out = workdir / f"{user.pw_name}-{argv_job}.out"
    uid, groups, identity, cwd, err = out.read_text().splitlines()
    assert int(uid) == user.pw_uid
    expected_groups = set(os.getgrouplist(user.pw_name, user.pw_gid))
    assert {int(g) for g in groups.split()} == expected_groups
    assert len(expected_groups) == 2 and 0 not in expected_groups  # its own group and -g
    assert identity == f"{user.pw_dir} {user.pw_name} {user.pw_name} {user.pw_shell}"
    assert (cwd, err) == (str(workdir), "oops")
    for path in (out, workdir / "b.out", workdir / "b.err"):
        info = path.stat()
        assert (info.st_uid, info.st_gid) == (user.pw_uid, user.pw_gid), path
    assert (workdir / "b.out").read_text() == f"{user.pw_name}\narg=first\n"
    assert (workdir / "b.err").read_text() == "to-stderr\n"
    # The script was handed over without opening the agent's state directory to anyone.
    spool = cluster.tmp / "node-n1" / "spool"
    assert stat.S_IMODE(spool.stat().st_mode) == 0o700
    assert (spool / f"job-{batch_job}.sh").stat().st_uid == user.pw_uid


def attached_output(client: Client, spec: JobSpec) -> tuple[dict[int, bytes], dict[str, Any]]:
    """Run an interactive job attached: its output by stream, and its job_ended event."""
    client.submit(spec, attach=True)
    output: dict[int, bytes] = {1: b"", 2: b""}
    while (event := client.next_event(30))["t"] != "job_ended":
        if event["t"] == "job_output":
            output[event["stream"]] += event["data"]
    return output, event


def test_interactive_jobs_run_as_their_submitter_and_say_why_they_fail(
    cluster: Cluster, user: pwd.struct_passwd, workdir: Path
) -> None:
    cluster.start_node("n1", 1, jobs_as_agent=False)
    with client_as(cluster, user.pw_name) as client:
        script = "id -un; echo err >&2; exit 3"
        output, end = attached_output(client, spec(workdir, ["sh", "-c", script], interactive=True))
        assert output == {1: f"{user.pw_name}\n".encode(), 2: b"err\n"}
        assert (end["state"], end["exit_code"]) == ("FAILED", 3)
        output, end = attached_output(client, spec(Path("/root"), ["true"], interactive=True))
    reason = f"working directory /root is not accessible to user {user.pw_name} on node n1"
    assert output[2] == f"mgpu: {reason}\n".encode()
    assert (end["state"], end["reason"]) == ("FAILED", reason)
    assert not list(workdir.iterdir())


def test_refused_users_fail_with_a_reason(cluster: Cluster, workdir: Path) -> None:
    cluster.start_node("n1", 1, jobs_as_agent=False)
    nobody = f"mgpu-t-nobody-{secrets.token_hex(3)}"
    with client_as(cluster, nobody) as client:
        unknown = client.submit(spec(workdir, ["true"]))
    with root_client(cluster) as client:
        as_root = client.submit(spec(workdir, ["touch", "ran-as-root"]))
    row = ended(cluster, unknown)
    assert row["state"] == "FAILED"
    assert row["reason"] == f"user {nobody} does not exist on node n1"
    row = ended(cluster, as_root)
    assert row["state"] == "FAILED"
    assert row["reason"] == (
        "node n1 does not run jobs as root (the job was submitted by root); "
        "start its agent with --allow-root-jobs to allow that"
    )
    assert not (workdir / "ran-as-root").exists()


def test_root_agent_in_agent_mode_needs_allow_root_jobs(
    cluster: Cluster, user: pwd.struct_passwd, workdir: Path
) -> None:
    cluster.start_node("n1", 1, "--job-user", "agent", jobs_as_agent=False)
    with client_as(cluster, user.pw_name) as client:
        job_id = client.submit(spec(workdir, ["touch", "ran"]))
    row = ended(cluster, job_id)
    assert row["state"] == "FAILED" and "--allow-root-jobs" in row["reason"], row
    assert not (workdir / "ran").exists()


def test_output_is_opened_with_the_users_permissions(
    cluster: Cluster, user: pwd.struct_passwd, workdir: Path
) -> None:
    """-o naming a file the user may not write must not let the agent truncate it as root."""
    cluster.start_node("n1", 1, jobs_as_agent=False)
    precious = cluster.tmp / "precious"  # under pytest's 0700 directory: root's alone
    precious.write_text("root's data\n")
    shared = Path(tempfile.mkdtemp(prefix="mgpu-t-root-", dir="/tmp"))
    try:
        shared.chmod(0o755)
        readable = shared / "roots-file"
        readable.write_text("root's data\n")
        with client_as(cluster, user.pw_name) as client:
            hidden = client.submit(spec(workdir, ["true"], stdout_path=str(precious)))
            denied = client.submit(spec(workdir, ["true"], stdout_path=str(readable)))
            no_dir = client.submit(spec(shared / "missing", ["true"]))
            no_program = client.submit(spec(workdir, ["mgpu-no-such-program"]))
        reasons = {job_id: ended(cluster, job_id) for job_id in (hidden, denied, no_dir)}
        assert all(r["state"] == "FAILED" for r in reasons.values()), reasons
        name = user.pw_name
        assert reasons[hidden]["reason"].startswith(
            f"cannot open output file {precious} as user {name}: "
        )
        assert reasons[denied]["reason"] == (
            f"cannot open output file {readable} as user {name}: Permission denied"
        )
        assert reasons[no_dir]["reason"] == (
            f"working directory {shared / 'missing'} does not exist on node n1 "
            f"(as seen by user {name})"
        )
        row = ended(cluster, no_program)
        assert (row["state"], row["exit_code"]) == ("FAILED", 127)
        assert row["reason"] == "execve(): mgpu-no-such-program: No such file or directory"
        assert precious.read_text() == readable.read_text() == "root's data\n"
    finally:
        shutil.rmtree(shared, ignore_errors=True)


def test_a_restarted_agent_reports_the_real_exit_of_a_users_job(
    cluster: Cluster, user: pwd.struct_passwd, workdir: Path
) -> None:
    """The status file is the user's to write, yet stays where a re-adopting agent reads it."""
    cluster.start_node("n1", 1, stop_jobs_on_exit=False, jobs_as_agent=False)
    release = workdir / "release"
    hold = f"echo $$ > pid; while [ ! -e {release} ]; do sleep 0.02; done; exit 7"
    with client_as(cluster, user.pw_name) as client:
        job_id = client.submit(spec(workdir, ["sh", "-c", hold]))
    cluster.wait_state(job_id, "RUNNING")
    pid_file = workdir / "pid"
    pid = int(wait_for_text(pid_file, 20))
    try:
        proc = cluster.nodes.pop("n1")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
        assert pid_alive(pid)
        status = cluster.tmp / "node-n1" / "jobs" / f"{job_id}.status"
        info = status.stat()
        assert (info.st_uid, stat.S_IMODE(info.st_mode)) == (user.pw_uid, 0o600)
        cluster.start_node("n1", 1, stop_jobs_on_exit=False, jobs_as_agent=False)
        release.touch()
        row = ended(cluster, job_id)
        assert (row["state"], row["exit_code"]) == ("FAILED", 7), row
    finally:
        with contextlib.suppress(ProcessLookupError):
            if os.getpgid(pid) != os.getpgrp():  # never our own group, should a pid be reused
                os.killpg(os.getpgid(pid), signal.SIGKILL)


def test_a_users_job_and_its_output_get_the_submitters_umask(
    cluster: Cluster, user: pwd.struct_passwd, workdir: Path
) -> None:
    """The as-user wrapper opens the output files itself: with the submitter's umask too."""
    cluster.start_node("n1", 1, jobs_as_agent=False)
    with client_as(cluster, user.pw_name) as client:
        private = client.submit(
            spec(workdir, ["sh", "-c", "umask"], stdout_path="p.out", umask=0o077)
        )
        shared = client.submit(
            spec(workdir, ["sh", "-c", "umask"], stdout_path="s.out", umask=0o002)
        )
    for job_id in (private, shared):
        assert ended(cluster, job_id)["state"] == "COMPLETED"
    assert (workdir / "p.out").read_text() == "0077\n"
    assert stat.S_IMODE((workdir / "p.out").stat().st_mode) == 0o600
    assert (workdir / "s.out").read_text() == "0002\n"
    assert stat.S_IMODE((workdir / "s.out").stat().st_mode) == 0o664


def test_output_directories_are_made_as_the_submitter(
    cluster: Cluster, user: pwd.struct_passwd, workdir: Path
) -> None:
    """A missing -o directory is made by the job's user, with its umask; the job sees its own
    uid as SLURM_JOB_UID."""
    cluster.start_node("n1", 1, jobs_as_agent=False)
    probe = "echo $SLURM_JOB_UID $SLURM_JOB_USER"
    with client_as(cluster, user.pw_name) as client:
        job_id = client.submit(
            spec(workdir, ["sh", "-c", probe], stdout_path="logs/%j/out", umask=0o027)
        )
    assert ended(cluster, job_id)["state"] == "COMPLETED"
    out = workdir / "logs" / str(job_id) / "out"
    assert out.read_text() == f"{user.pw_uid} {user.pw_name}\n"
    for directory in (out.parent, out.parent.parent):
        info = directory.stat()
        assert (info.st_uid, stat.S_IMODE(info.st_mode)) == (user.pw_uid, 0o750), directory
