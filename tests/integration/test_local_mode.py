"""``mgpu_client local start|status|stop``: a task-spooler-style cluster on one machine."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers.cluster import pid_alive

pytestmark = pytest.mark.timeout(120)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def run(*args: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mgpu_client", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        cwd=cwd,
    )


def test_local_start_run_stop(tmp_path: Path) -> None:
    port = free_port()
    # No MGPU_MASTER: clients find the local cluster's Unix socket by themselves.
    env = {k: v for k, v in os.environ.items() if k not in ("MGPU_MASTER", "MGPU_SOCKET")}
    env["XDG_STATE_HOME"] = str(tmp_path / "xdg")
    state = tmp_path / "xdg" / "mgpu" / "local"
    started = run(
        "local",
        "start",
        "--gpu-count",
        "2",
        "--port",
        str(port),
        "--state-dir",
        str(state),
        env=env,
        cwd=tmp_path,
    )
    try:
        assert started.returncode == 0, started.stderr
        pids = [int((state / f"{n}.pid").read_text()) for n in ("master", "node")]
        assert all(pid_alive(p) for p in pids)
        assert (state / "master.log").exists() and (state / "node.log").exists()
        again = run(
            "local", "start", "--port", str(port), "--state-dir", str(state), env=env, cwd=tmp_path
        )
        assert again.returncode == 1 and "already running" in again.stderr
        job = run(
            "run",
            "--gpus",
            "2",
            "--",
            "sh",
            "-c",
            "echo $CUDA_VISIBLE_DEVICES",
            env=env,
            cwd=tmp_path,
        )
        assert job.returncode == 0 and job.stdout == "0,1\n", job.stderr
        status = run("local", "status", "--state-dir", str(state), env=env, cwd=tmp_path)
        assert status.returncode == 0 and status.stdout.count("running") == 2
    finally:
        stopped = run("local", "stop", "--state-dir", str(state), env=env, cwd=tmp_path)
    assert stopped.returncode == 0 and "master" in stopped.stdout
    assert not any(pid_alive(p) for p in pids)
    status = run("local", "status", "--state-dir", str(state), env=env, cwd=tmp_path)
    assert status.returncode == 1 and status.stdout.count("stopped") == 2
