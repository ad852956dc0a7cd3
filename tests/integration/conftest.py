"""Real processes on 127.0.0.1: a master, node agents, and the real client commands."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
import pytest

from mgpu_client.client import Client
from mgpu_core.auth import Token, parse_token
from mgpu_core.config import parse_address

PY = sys.executable
START_TIMEOUT_S = 20.0


def wait_for(predicate: Callable[[], Any], timeout_s: float = 15.0, what: str = "condition") -> Any:
    """Poll ``predicate`` until it returns something truthy, or fail after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        time.sleep(0.02)


def stop_process(proc: subprocess.Popen[bytes], timeout_s: float = 10) -> None:
    """SIGTERM, then SIGKILL if it does not end in time (only processes the tests started)."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)


def agent_command(
    port: int,
    node_id: str,
    *,
    gpus: int,
    cpus: int,
    state_dir: Path,
    key_file: Path,
    extra: tuple[str, ...] = (),
) -> list[str]:
    """The command line of a real node agent with fake GPUs, talking to 127.0.0.1:``port``."""
    return [
        PY,
        "-m",
        "mgpu_node",
        "--master-host",
        "127.0.0.1",
        "--master-port",
        str(port),
        "--node-id",
        node_id,
        "--gpu-count",
        str(gpus),
        "--cpus",
        str(cpus),
        "--state-dir",
        str(state_dir),
        "--key-file",
        str(key_file),
        *extra,
    ]


@dataclass
class Cluster:
    tmp: Path
    port: int = 0
    master_state: Path = Path()
    master: subprocess.Popen[bytes] | None = None
    nodes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    tokens: dict[str, Token] = field(default_factory=dict)

    @property
    def address(self) -> str:
        """The master's TCP address (nodes; clients with a token)."""
        return f"127.0.0.1:{self.port}"

    @property
    def socket_address(self) -> str:
        """The master's Unix socket: the test's own user (root, an admin) needs no token."""
        return f"unix:{self.master_state / 'master.sock'}"

    @property
    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env["MGPU_MASTER"] = self.socket_address
        env["PYTHONUNBUFFERED"] = "1"
        return env

    def token(self, user: str) -> Token:
        """A token for ``user``, issued by the test's own user over the socket."""
        if user not in self.tokens:
            with Client(parse_address(self.socket_address)) as admin:
                reply = admin.request("token", action="create", user=user)
            self.tokens[user] = parse_token(reply["token"], "the master's reply")
        return self.tokens[user]

    def client(self, user: str) -> Client:
        """A TCP session as ``user``, proven by that user's token."""
        return Client(parse_address(self.address), token=self.token(user))

    def start_master(self, *extra: str, port: int = 0, state_dir: Path | None = None) -> None:
        """Start (or restart, with ``port=cluster.port``) the master on its state directory."""
        self.master_state = state_dir or self.tmp / "master"
        port_file = self.tmp / "master.port"
        port_file.unlink(missing_ok=True)
        log = open(self.tmp / "master.log", "ab")  # noqa: SIM115 - the child owns it
        self.master = subprocess.Popen(
            [
                PY,
                "-m",
                "mgpu_server",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--port-file",
                str(port_file),
                "--state-dir",
                str(self.master_state),
                *extra,
            ],
            stdout=log,
            stderr=log,
        )
        log.close()
        wait_for(
            lambda: port_file.exists() or self.master.poll() is not None,
            START_TIMEOUT_S,
            "master port",
        )
        assert self.master.poll() is None, (self.tmp / "master.log").read_text()
        self.port = int(port_file.read_text())

    def start_node(
        self,
        node_id: str,
        gpus: int = 2,
        *extra: str,
        wait: bool = True,
        stop_jobs_on_exit: bool = True,
        jobs_as_agent: bool = True,
    ) -> None:
        """Start an agent; by default it kills its jobs when stopped, so tests leak nothing,
        and runs every job as the test's own user, root included (``jobs_as_agent=False``:
        the agent's defaults, jobs run as their submitters)."""
        if stop_jobs_on_exit:
            extra = ("--stop-jobs-on-exit", *extra)
        log = open(self.tmp / f"node-{node_id}.log", "ab")  # noqa: SIM115
        self.nodes[node_id] = subprocess.Popen(
            agent_command(
                self.port,
                node_id,
                gpus=gpus,
                cpus=16,
                state_dir=self.tmp / f"node-{node_id}",
                key_file=self.master_state / "cluster.key",
                extra=(
                    "--heartbeat-interval",
                    "0.5",
                    *(("--job-user", "agent", "--allow-root-jobs") if jobs_as_agent else ()),
                    *extra,
                ),
            ),
            stdout=log,
            stderr=log,
        )
        log.close()
        if wait:
            wait_for(
                lambda: self.node_state(node_id) not in (None, "down"),
                START_TIMEOUT_S,
                f"node {node_id}",
            )

    def node_state(self, node_id: str) -> str | None:
        for node in self.nodes_json():
            if node["node_id"] == node_id:
                return str(node["state"])
        return None

    def cli(
        self,
        *args: str,
        timeout: float = 60,
        check: bool = False,
        cwd: Path | None = None,
        input: bytes | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """Run a real client command: ``cli("mgpu_queue", "--json")``."""
        tool, rest = args[0], args[1:]
        module = {
            "mgpu_srun": "mgpu_client.srun",
            "mgpu_sbatch": "mgpu_client.sbatch",
            "mgpu_queue": "mgpu_client.queue",
            "mgpu_cancel": "mgpu_client.cancel",
            "mgpu_client": "mgpu_client",
        }[tool]
        result = subprocess.run(
            [PY, "-m", module, *rest],
            capture_output=True,
            timeout=timeout,
            env=self.env,
            cwd=cwd or self.tmp,
            input=input.decode() if input is not None else None,
            text=True,
        )
        if check:
            assert result.returncode == 0, result.stderr
        return result

    def nodes_json(self) -> list[dict[str, Any]]:
        out = self.cli("mgpu_client", "nodes", "--json", check=True).stdout
        return list(json.loads(out)["nodes"])

    def jobs(self, *args: str) -> dict[int, dict[str, Any]]:
        out = self.cli("mgpu_queue", "--json", "-t", "all", *args, check=True).stdout
        return {j["job_id"]: j for j in json.loads(out)["jobs"]}

    def job(self, job_id: int) -> dict[str, Any]:
        return self.jobs("-j", str(job_id))[job_id]

    def wait_state(self, job_id: int, *states: str, timeout_s: float = 20.0) -> dict[str, Any]:
        return wait_for(
            lambda: (j := self.job(job_id))["state"] in states and j,
            timeout_s,
            f"job {job_id} in {states}",
        )

    def sbatch(self, *args: str, cwd: Path | None = None) -> int:
        result = self.cli("mgpu_sbatch", "--parsable", *args, cwd=cwd)
        assert result.returncode == 0, result.stderr
        return int(result.stdout.strip())

    def kill_master(self) -> None:
        """SIGKILL: no shutdown code runs, as in a crash."""
        assert self.master is not None
        self.master.kill()
        self.master.wait(timeout=10)

    def stop(self) -> None:
        for proc in self.nodes.values():
            stop_process(proc)
        if self.master is not None:
            stop_process(self.master)
        self.kill_leftover_jobs()

    def kill_leftover_jobs(self) -> None:
        """End job processes this test's agents left behind (an agent killed with SIGKILL
        cannot stop its jobs). They are ours: their environment names this cluster."""
        for proc in psutil.process_iter():
            try:
                env = proc.environ()
                if env.get("MGPU_JOB_ID") and env.get("MGPU_MASTER") == self.socket_address:
                    proc.kill()
            except (psutil.Error, OSError):
                continue


@contextlib.contextmanager
def running_cluster(tmp: Path, *master_args: str, **master_kwargs: Any) -> Iterator[Cluster]:
    """A cluster whose master takes extra options; everything it started is stopped after."""
    c = Cluster(tmp)
    c.start_master(*master_args, **master_kwargs)
    try:
        yield c
    finally:
        c.stop()


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    c = Cluster(tmp_path)
    c.start_master("--kill-grace", "2")
    try:
        yield c
    finally:
        c.stop()


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False
